"""Probes: dissect optimizers into known mechanisms (momentum, clipping, schedules, adaptation)."""
