"""Argument types shared by the command-line tools and the experiment scripts."""

from __future__ import annotations

import argparse


def seed_list(text: str) -> list[int]:
    """``"0-7"`` or ``"0,3,5"`` (or a mix, ``"0-2,5"``) as a list of seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi if dash else lo)
        except ValueError:
            msg = f"seeds: expected e.g. 0-7 or 0,3,5, got {text!r}"
            raise argparse.ArgumentTypeError(msg) from None
        if first < 0 or last < first:
            raise argparse.ArgumentTypeError(f"seeds: {part!r} is not a range of seeds")
        seeds += range(first, last + 1)
    return seeds
