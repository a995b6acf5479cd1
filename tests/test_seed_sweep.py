"""experiments/seed_sweep.py: the seed list it reads from the command line."""

import argparse
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _sweep():
    spec = importlib.util.spec_from_file_location("seed_sweep", ROOT / "experiments/seed_sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "text, seeds",
    [("0-7", list(range(8))), ("3", [3]), ("0,3,5", [0, 3, 5]), ("0-2,5", [0, 1, 2, 5])],
)
def test_seed_ranges_and_lists(text, seeds):
    assert _sweep().seed_list(text) == seeds


@pytest.mark.parametrize("text", ["3-1", "a", "0-", "-2", ""])
def test_malformed_seed_lists_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        _sweep().seed_list(text)
