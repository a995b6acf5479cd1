"""The seed lists that experiments/seed_sweep.py reads from the command line."""

import argparse

import pytest

from lopt_cli.args import seed_list


@pytest.mark.parametrize(
    "text, seeds",
    [("0-7", list(range(8))), ("3", [3]), ("0,3,5", [0, 3, 5]), ("0-2,5", [0, 1, 2, 5])],
)
def test_seed_ranges_and_lists(text, seeds):
    assert seed_list(text) == seeds


@pytest.mark.parametrize("text", ["3-1", "a", "0-", "-2", ""])
def test_malformed_seed_lists_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        seed_list(text)
