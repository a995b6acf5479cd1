"""The house plan: ``tasks`` <- ``lopt`` <- ``probes`` <- ``lopt_cli``, no import cycles."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
#: Each package may import only itself and the packages below it (seaborn: plots, probes only).
LAYERS = ["tasks", "lopt", "probes", "lopt_cli"]


def _modules() -> dict[str, Path]:
    mods = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Every project module ``name`` imports, at any depth (inside functions too)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_package else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def test_no_module_imports_a_layer_above_it_not_even_inside_a_function():
    mods = _modules()
    bad = []
    for name, path in mods.items():
        layer = LAYERS.index(name.split(".")[0])
        for target in _imports(name, path, mods):
            if LAYERS.index(target.split(".")[0]) > layer:
                bad.append(f"{name} -> {target}")
        if layer < LAYERS.index("probes") and re.search(
            r"^\s*import seaborn", path.read_text(), re.M
        ):
            bad.append(f"{name} -> seaborn")
    assert not bad


def test_no_import_cycles():
    # A package's __init__ re-exports its modules; a module that imports its own package's
    # __init__ (``import probes`` inside probes) closes a cycle, which this test reports.
    mods = _modules()
    graph = {n: _imports(n, p, mods) for n, p in mods.items()}
    cycles = []
    state: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(" -> ".join([*stack[stack.index(m) :], m]))
            elif m not in state:
                visit(m, [*stack, m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    # Submodules importing their parent package's names (``from probes import figures``) are
    # edges to the __init__; only cycles between two modules that are not __init__ count.
    real = [c for c in cycles if sum(1 for part in c.split(" -> ") if part in LAYERS) == 0]
    assert not real


def test_the_layer_check_sees_a_lazy_import(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from probes.runs import analyze_run\n")
    assert "probes.runs" in _imports("lopt.m", path, _modules())


@pytest.mark.parametrize("package", LAYERS)
def test_no_module_is_longer_than_700_lines(package):
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / package).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 700
    }
    assert not long


def _private_uses(name: str, path: Path, mods: dict[str, Path]) -> list[str]:
    """``module._name`` that ``name`` takes from another project module (import or attribute)."""
    out, aliases = [], {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module in mods:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full in mods:
                    aliases[a.asname or a.name] = full
                elif a.name.startswith("_") and node.module != name:
                    out.append(f"{node.module}.{a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in mods and a.asname:
                    aliases[a.asname] = a.name
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and aliases.get(node.value.id, name) != name
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            out.append(f"{aliases[node.value.id]}.{node.attr}")
    return out


def test_no_private_names_across_modules():
    # A name with a leading underscore is its module's own: another module that needs it
    # should get a public name (or the public function that wraps it).
    mods = _modules()
    uses = {n: u for n, p in mods.items() if (u := _private_uses(n, p, mods))}
    assert uses == {}


def test_the_private_name_check_sees_both_forms(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from probes.update_function import _slope\nfrom probes import figures as F\n")
    path.write_text(path.read_text() + "F._figure(1)\n")
    assert _private_uses("probes.m", path, _modules()) == [
        "probes.update_function._slope",
        "probes.figures._figure",
    ]
