"""The dependency direction of DESIGN.md: ``tasks`` <- ``lopt`` <- ``probes``."""

import ast
import subprocess
import sys

import pytest

_CHECK = """
import importlib, pkgutil, sys
import {package}
for m in pkgutil.walk_packages({package}.__path__, "{package}."):
    importlib.import_module(m.name)
print(sorted({{n.split(".")[0] for n in sys.modules}} & {{"lopt", "probes", "seaborn"}}))
"""


@pytest.mark.parametrize(
    "package, allowed",
    [("tasks", set()), ("lopt", {"lopt"})],
)
def test_importing_every_module_of_a_package_leaves_the_upper_layers_out(package, allowed):
    # Every module of the package is imported (the command-line modules too); only their
    # functions may reach upwards, lazily (lopt's CLI hands probes.cli.analyze_run to distill).
    out = subprocess.run(
        [sys.executable, "-c", _CHECK.format(package=package)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert set(ast.literal_eval(out.strip().splitlines()[-1])) == allowed
