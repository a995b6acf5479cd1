"""Command-line front ends: ``lopt`` and ``probes``.

They sit above every library package and nothing in a library imports them.
"""
