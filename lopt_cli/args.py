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
        if first < 0 or last < first or last >= SEED_LIMIT:
            raise argparse.ArgumentTypeError(f"seeds: {part!r} is not a range of seeds")
        seeds += range(first, last + 1)
    return seeds


#: Seeds are 64-bit signed integers in JAX (``jax.random.key``); negative ones are refused.
SEED_LIMIT = 2**63


def seed(text: str) -> int:
    """A PRNG seed: an integer in ``[0, 2**63)`` (what ``jax.random.key`` accepts)."""
    try:
        value = int(text)
    except ValueError:
        msg = f"expected a seed (an integer >= 0), got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"a seed must be in [0, 2^63), got {text!r}")
    return value
