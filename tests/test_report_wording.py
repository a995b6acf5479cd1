"""The report's words follow what was analysed: a learned cell or a black-box optax optimizer."""

import optax

import probes
from probes.report.sections import WORDING, wording


def test_black_box_report_heading_and_caption_come_from_the_black_box_words(tmp_path):
    analysis = probes.analyze_optax(optax.sgd(0.1, momentum=0.9)).to_json()
    assert analysis["source"] == "optax"
    report = probes.write_report(analysis, tmp_path)
    page = (tmp_path / "index.html").read_text()
    assert wording("optax")["summary_heading"] in page
    assert WORDING["cell"]["summary_heading"] not in page
    caps = [f["caption"] for f in report["figures"] if f["file"].endswith("alpha_beta.png")]
    assert caps and all(WORDING["optax"]["dominant_mode"] in c for c in caps)
    assert not any(WORDING["cell"]["dominant_mode"] in f["caption"] for f in report["figures"])


def test_every_source_has_every_word():
    assert set(WORDING["cell"]) == set(WORDING["optax"])
    assert wording("something else") == WORDING["optax"]
