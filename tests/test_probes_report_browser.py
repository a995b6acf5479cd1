"""The report renders in a real browser: headless Chromium screenshots ``index.html``.

Slow (installs Chromium with ``scripts/install_chromium.sh`` when it is missing, through the
system's package manager); skipped with the reason when the installation fails.
"""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import optax
import pytest
from PIL import Image

import probes

ROOT = Path(__file__).resolve().parents[1]


def _chromium() -> str:
    exe = shutil.which("chromium")
    if exe:
        return exe
    script = ROOT / "scripts" / "install_chromium.sh"
    try:
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"could not install chromium ({e})")
    exe = shutil.which("chromium")
    if proc.returncode != 0 or not exe:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        pytest.skip(f"chromium is missing and scripts/install_chromium.sh failed: {last[0]}")
    return exe


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path):
    exe = _chromium()
    probes.write_report(probes.analyze_optax(optax.adam(1e-2)), tmp_path / "report")
    index = tmp_path / "report" / "index.html"
    shot = tmp_path / "shot.png"
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        index.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"), np.float64)
    assert img.shape[:2] == (2000, 1200)
    # Not blank: real contrast, and many distinct colours (text, table, figures' lines).
    assert img.std() > 20.0, img.std()
    colours = np.unique((img // 8).reshape(-1, 3), axis=0)
    assert len(colours) > 200, len(colours)
    # The figures are drawn: the lower part of the page (figures) is not empty either.
    assert img[1000:].std() > 10.0


@pytest.mark.slow
def test_report_run_of_a_black_box_learned_optimizer(tmp_path):
    """The per-parameter MLP optimizer has no cell: behavioural sections only."""
    import jax

    import lopt
    from lopt.rundir import read_json, write_json

    opt = lopt.MLPOptimizer()
    lopt.save(tmp_path / "theta.npz", opt, opt.init(jax.random.key(0)), step=0)
    task = {"name": "linear_regression", "settings": {"dim": 3, "num_steps": 8}}
    write_json(tmp_path / "config.json", {"optimizer": opt.config(), "task": task})
    index = probes.report_run(tmp_path, progress=False)
    report = read_json(index.parent / "report.json")
    assert report["source"] == "optax" and not report["white_box"]
    assert report["figures"] and not any(f["white_box"] for f in report["figures"])
    assert read_json(tmp_path / "analysis.json")["source"] == "optax"
