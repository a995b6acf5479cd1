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


def test_every_dotted_name_the_readme_mentions_exists():
    # `lopt.x.y`, `probes.x.y` and `tasks.x` in the README's inline code resolve after a plain
    # `import lopt, probes, tasks` (schema names such as `lopt.eval/1` are not names).
    import re
    from pathlib import Path

    import lopt
    import probes
    import tasks

    text = (Path(__file__).parents[1] / "README.md").read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    names = {
        m.group(1)
        for span in re.findall(r"`([^`\n]+)`", text)
        for m in re.finditer(
            r"(?<![\w./-])((?:lopt|probes|tasks)(?:\.[A-Za-z_]\w*)+)(?![\w/])", span
        )
    }
    assert len(names) > 30  # the README names a good part of the API this way
    roots = {"lopt": lopt, "probes": probes, "tasks": tasks}
    missing = []
    for name in sorted(names):
        root, *attrs = name.split(".")
        obj = roots[root]
        for a in attrs:
            obj = getattr(obj, a, None)
        if obj is None:
            missing.append(name)
    assert not missing
