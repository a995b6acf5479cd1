"""The documentation: the site builds strictly, its names resolve and its Python examples run.

Covers ``README.md`` and every ``docs/*.md`` page.

* ``mkdocs build --strict`` succeeds (into a temporary directory), API reference included.
* Every dotted name ``lopt.x``, ``probes.x`` or ``tasks.x`` written in inline code resolves
  after a plain ``import lopt, probes, tasks`` (attribute by attribute, in a fresh process, so
  that modules other tests imported cannot make a name resolve). A name directly followed by
  ``/`` is a schema identifier (``"probes.report/1"``), not an attribute, and is skipped.
* Every fenced ``python`` block runs: the blocks of one file run in one fresh process, in a
  temporary working directory, each block in its own namespace (a reader copies one block, so
  each must define what it uses).

**Blocks that cannot run in a test.** A block that meta-trains for minutes or needs several
processes carries the marker ``<!-- no-test: REASON -->`` on the last non-blank line before its
opening fence. The reason is required; keep such blocks few.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Wall-clock budget for all Python blocks of one file (they train small problems on a CPU).
BLOCK_BUDGET_S = 600

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
NO_TEST = re.compile(r"<!--\s*no-test:\s*(.*?)\s*-->")
INLINE = re.compile(r"`([^`]+)`")  # inline code may wrap onto the next line
NAME = re.compile(r"(?<![\w./-])((?:lopt|probes|tasks)(?:\.[A-Za-z_]\w*)+)(?![\w/-])")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, no_test_reason)`` for every fenced ``python`` block of a Markdown text."""
    blocks = []
    for m in FENCE.finditer(text):
        if m.group(1) != "python":
            continue
        before = [ln for ln in text[: m.start()].splitlines() if ln.strip()]
        marker = NO_TEST.search(before[-1]) if before else None
        line = text.count("\n", 0, m.start()) + 1
        blocks.append((line, m.group(2), marker.group(1) if marker else None))
    return blocks


def dotted_names(text: str) -> set[str]:
    """Dotted ``lopt``/``probes``/``tasks`` names written in inline code (outside fences)."""
    prose = FENCE.sub("", text)
    spans = [s for s in INLINE.findall(prose) if "\n\n" not in s]
    return {n for span in spans for n in NAME.findall(span)}


def test_the_helpers_find_what_they_should():
    text = textwrap.dedent(
        """\
        Use `lopt.tune(...)`, `probes.report/1`, `experiments/benchmarks/probes.py` and
        `lopt.apply_cell(..., block_rows=)`.

        ```python
        x = "`lopt.not_checked_here`"
        ```

        <!-- no-test: needs two processes -->

        ```python
        y = 2
        ```
        """
    )
    assert dotted_names(text) == {"lopt.tune", "lopt.apply_cell"}
    assert [(line, reason) for line, _, reason in python_blocks(text)] == [
        (4, None),
        (10, "needs two processes"),
    ]


def test_mkdocs_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "index.html").exists()
    for page in ["guide", "probes", "method", "reproduction", "performance", "design"]:
        assert (tmp_path / page / "index.html").exists(), page
    api = (tmp_path / "api" / "index.html").read_text()
    assert "meta_train" in api and "analyze_optax" in api and "TaskFamily" in api


def test_no_page_cites_a_file_outside_the_repository():
    # METHOD.md was a brief kept outside the repository; docs/method.md replaces it.
    cited = [_rel(p) for p in DOCS if "METHOD.md" in p.read_text()]
    assert not cited


def test_every_dotted_name_in_inline_code_resolves():
    names = sorted({n for p in DOCS for n in dotted_names(p.read_text())})
    assert len(names) > 20  # the check sees the names the pages mention
    script = textwrap.dedent(
        """\
        import json, sys
        import lopt, probes, tasks

        missing = []
        for name in json.loads(sys.argv[1]):
            obj = {"lopt": lopt, "probes": probes, "tasks": tasks}[name.split(".")[0]]
            for part in name.split(".")[1:]:
                if not hasattr(obj, part):
                    missing.append(name)
                    break
                obj = getattr(obj, part)
        print(json.dumps(missing))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(names)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    missing = json.loads(proc.stdout.strip().splitlines()[-1])
    where = {n: [_rel(p) for p in DOCS if n in dotted_names(p.read_text())] for n in missing}
    assert not missing, where


def test_no_test_markers_are_few_and_give_a_reason():
    skipped = [
        (_rel(p), line, reason)
        for p in DOCS
        for line, _, reason in python_blocks(p.read_text())
        if reason is not None
    ]
    assert all(reason for _, _, reason in skipped), skipped
    assert len(skipped) <= 3, skipped


_RUNNER = """\
import json, sys, time, traceback

blocks = json.load(open(sys.argv[1]))
for line, code in blocks:
    t0 = time.perf_counter()
    try:
        exec(compile(code, f"{sys.argv[2]}:{line}", "exec"), {"__name__": "__main__"})
    except BaseException:
        traceback.print_exc()
        print(f"FAILED: the block at {sys.argv[2]}:{line}", file=sys.stderr)
        sys.exit(1)
    print(f"ok {sys.argv[2]}:{line} {time.perf_counter() - t0:.1f} s", flush=True)
"""

RUNNABLE = [p for p in DOCS if any(reason is None for _, _, reason in python_blocks(p.read_text()))]


@pytest.mark.parametrize("path", RUNNABLE, ids=[_rel(p) for p in RUNNABLE])
def test_python_blocks_run(path, tmp_path):
    blocks = [(line, code) for line, code, reason in python_blocks(path.read_text()) if not reason]
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    (tmp_path / "runner.py").write_text(_RUNNER)
    work = tmp_path / "work"
    work.mkdir()
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath, "MPLBACKEND": "Agg", "TQDM_DISABLE": "1"}
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "blocks.json"), _rel(path)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_BUDGET_S,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
