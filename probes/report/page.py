"""The HTML engine of the report and comparison pages: one stylesheet, one escaping point.

Pages are built from :class:`Html` fragments. :func:`html` fills a template and passes every
argument through :func:`esc`, the one place where text becomes HTML: plain strings (numbers,
names, sentences, anything read from a JSON file) are escaped, fragments that are already
:class:`Html` are not. Nothing else builds markup from data, so no string from ``eval.json``,
``analysis.json`` or ``distill.json`` reaches a page unescaped. Every figure is embedded as a
base64 PNG and the styles are inline (:data:`CSS`): a page opens offline and fetches nothing.
"""

from __future__ import annotations

import base64
import html as _html
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from probes.report.sections import wording
from probes.words import fmt, label, pm

CSS = """
:root { --fg:#1d2330; --muted:#5b6472; --line:#e3e6eb; --bg:#ffffff; --soft:#f5f7fa;
  --accent:#0173b2; --ok:#1a7f4b; --okbg:#e3f4ea; --no:#6b7280; --nobg:#eef0f3; }
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:15px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  "Noto Sans", "DejaVu Sans", sans-serif; }
main { max-width:1120px; margin:0 auto; padding:32px 28px 64px; }
h1 { font-size:28px; line-height:1.2; margin:0 0 4px; letter-spacing:-0.01em; }
h2 { font-size:21px; margin:44px 0 6px; padding-top:12px; border-top:1px solid var(--line); }
.sub { color:var(--muted); margin:0 0 18px; font-size:13.5px; }
nav { display:flex; flex-wrap:wrap; gap:6px 16px; font-size:13.5px; margin:8px 0 22px; }
nav a { color:var(--accent); text-decoration:none; }
.summary { background:var(--soft); border-left:4px solid var(--accent); padding:16px 20px;
  border-radius:6px; font-size:16.5px; }
.summary p { margin:0 0 6px; } .summary p:last-child { margin:0; }
.badge { display:inline-block; font-size:12px; font-weight:600; padding:2px 9px;
  border-radius:999px; vertical-align:middle; margin-left:8px; letter-spacing:.02em; }
.badge.yes { color:var(--ok); background:var(--okbg); }
.badge.no { color:var(--no); background:var(--nobg); }
.lead { color:var(--muted); margin:4px 0 14px; max-width:860px; }
table { border-collapse:collapse; font-size:13.5px; font-variant-numeric:tabular-nums;
  margin:8px 0 16px; }
th, td { padding:5px 12px; border-bottom:1px solid var(--line); text-align:right; }
th { color:var(--muted); font-weight:600; background:var(--soft); }
td:first-child, th:first-child { text-align:left; }
table.numbers { width:100%; margin-top:0; }
table.numbers td:first-child { color:var(--muted); } table.numbers td { text-align:left; }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:7px; }
.better { color:var(--ok); font-weight:600; } .worse { color:#b42318; font-weight:600; }
.figs { display:grid; grid-template-columns:repeat(auto-fill, minmax(440px, 1fr)); gap:18px 22px;
  grid-auto-flow:dense; }
figure { margin:0; }
figure.wide { grid-column:1 / -1; }
figure img { width:100%; height:auto; border:1px solid var(--line); border-radius:6px; }
figcaption { font-size:13px; color:var(--muted); margin-top:6px; }
.note { font-size:14px; border-left:3px solid var(--line); padding:4px 12px; margin:8px 0; }
.mech { color:var(--muted); font-size:13.5px; }
.codelabel { margin:10px 0 2px; color:var(--muted); font-size:13px; }
pre { white-space:pre-wrap; overflow-wrap:anywhere;
  background:#0f172a; color:#e2e8f0; padding:12px 14px; border-radius:6px; overflow-x:auto;
  font:12.5px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
code { font:12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
footer { margin-top:48px; color:var(--muted); font-size:12.5px; }
"""


class Html(str):
    """Text that is HTML already (built by :func:`html`); :func:`esc` leaves it as it is."""


def esc(x: Any) -> Html:
    """``x`` as HTML text (``&``, ``<``, ``>`` and quotes escaped), unless it is :class:`Html`."""
    return x if isinstance(x, Html) else Html(_html.escape(str(x), quote=True))


def html(template: str, *args: Any) -> Html:
    """``template.format(*args)`` with every argument passed through :func:`esc`.

    Example:
        >>> html("<td>{}</td>", "a < b")
        '<td>a &lt; b</td>'
    """
    return Html(template.format(*(esc(a) for a in args)))


def concat(parts: Iterable[Any], sep: str = "") -> Html:
    """The fragments of ``parts`` joined by ``sep`` (plain strings are escaped)."""
    return Html(sep.join(esc(p) for p in parts))


def badge(detected: bool | None) -> Html:
    """``detected`` / ``not detected`` as a coloured badge (nothing for ``None``)."""
    if detected is None:
        return Html("")
    return Html(
        '<span class="badge yes">detected</span>'
        if detected
        else '<span class="badge no">not detected</span>'
    )


def figure(png: bytes, caption: str, *, wide: bool = False) -> Html:
    """A figure embedded as a base64 PNG, with its caption (also the image's alt text)."""
    return html(
        '<figure class="{}"><img alt="{}" src="data:image/png;base64,{}">'
        "<figcaption>{}</figcaption></figure>",
        "wide" if wide else "normal",
        caption,
        base64.b64encode(png).decode(),
        caption,
    )


def figure_grid(cells: Sequence[Any]) -> Html:
    """Figures (and cards) in the page's responsive grid."""
    return html('<div class="figs">{}</div>', concat(cells))


def numbers_table(nums: Sequence[Mapping[str, Any]]) -> Html:
    """A section's numbers (``label``, ``display``) as a two-column table."""
    rows = concat(html("<tr><td>{}</td><td>{}</td></tr>", n["label"], n["display"]) for n in nums)
    return html('<table class="numbers">{}</table>', rows) if rows else Html("")


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> Html:
    """A table: one header row, then one row per item (cells escaped unless :class:`Html`)."""
    head = concat(html("<th>{}</th>", h) for h in header)
    body = concat(html("<tr>{}</tr>", concat(html("<td>{}</td>", c) for c in r)) for r in rows)
    return html("<table><tr>{}</tr>{}</table>", head, body)


def results_html(res: Mapping[str, Any], colors: Callable[[str], str]) -> Html:
    """The results tables, one per horizon, from the report's ``results``."""
    out = []
    head = Html(
        "<tr><th>optimizer</th><th>mean f_t/f_0 ± s.e.m.</th><th>final loss</th>"
        "<th>diverged</th><th>baseline − learned (paired)</th><th>hyperparameters</th></tr>"
    )
    for h in res["horizons"]:
        mult = f" ({h['multiple']:.0f}× the training horizon)" if h.get("multiple") else ""
        rows = []
        for r in h["rows"]:
            d = r["diff_baseline_minus_learned"]
            if r["name"] == res.get("learned"):
                vs = Html("")
            elif d is None:
                vs = (
                    Html('baseline diverged: <span class="better">learned better</span>')
                    if r["learned_better"]
                    else esc("diverged runs")
                )
            else:
                cls = (
                    "better"
                    if r["learned_better"]
                    else ("worse" if d < -2 * (r["diff_sem"] or 0) else "")
                )
                verdict = (
                    "learned better"
                    if r["learned_better"]
                    else ("baseline better" if cls == "worse" else "not significant")
                )
                if not r["learned_better"] and r.get("learned_diverged"):
                    verdict += f" (learned diverged on {r['learned_diverged']})"
                vs = html('{} <span class="{}">{}</span>', pm(d, r["diff_sem"]), cls, verdict)
            hp = ", ".join(f"{k} = {fmt(v)}" for k, v in (r["hyperparams"] or {}).items())
            swatch = html('<span class="swatch" style="background:{}"></span>', colors(r["name"]))
            rows.append(
                html(
                    "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    swatch,
                    label(r["name"]),
                    pm(r["metric"], r["sem"]),
                    fmt(r["final"]),
                    r["diverged"],
                    vs,
                    hp,
                )
            )
        out.append(
            html("<h3>{} steps{}</h3><table>{}{}</table>", h["steps"], mult, head, concat(rows))
        )
    return concat(out)


def section_html(sec: Mapping[str, Any], pngs: Mapping[str, bytes]) -> Html:
    """One section of the report: title and badge, lead, chain, code, rows, notes, figures."""
    parts = [html('<h2 id="{}">{}{}</h2>', sec["id"], sec["title"], badge(sec.get("detected")))]
    if sec.get("lead"):
        parts.append(html('<p class="lead">{}</p>', sec["lead"]))
    if sec.get("chain"):
        items = concat(
            html(
                "<li><code>{}</code>{}</li>",
                c["call"],
                html(' <span class="mech">— {}</span>', c["mechanism"]) if c["mechanism"] else "",
            )
            for c in sec["chain"]
        )
        parts.append(html("<p>Chain of transformations:</p><ol>{}</ol>", items))
    for name, code in sec.get("code") or []:
        parts.append(html('<p class="codelabel">{}</p><pre>{}</pre>', name, code))
    if sec.get("rows"):
        rows = []
        for r in sec["rows"]:
            vs = r.get("vs_best_baseline") or {}
            rows.append(
                html(
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    r["name"],
                    pm(r["metric"], r["sem"]),
                    pm(vs.get("mean"), vs.get("sem")) if vs else "",
                )
            )
        parts.append(
            html(
                "<table><tr><th>optimizer</th><th>mean f_t/f_0 ± s.e.m.</th>"
                "<th>best baseline − this (paired)</th></tr>{}</table>",
                concat(rows),
            )
        )
    for t in sec.get("tables") or []:
        if t.get("rows"):
            parts.append(table(t["header"], t["rows"]))
    for n in sec.get("notes") or []:
        parts.append(html('<p class="note">{}</p>', n))
    # The numbers table is the first cell of the figure grid: beside the first figure.
    numbers = numbers_table(sec.get("numbers") or [])
    cells = [html('<div class="card">{}</div>', numbers)] if numbers else []
    cells += [
        figure(pngs[f["file"]], f["caption"], wide=bool(f.get("wide")))
        for f in sec.get("figures") or []
    ]
    if cells:
        parts.append(figure_grid(cells))
    return concat(parts, "\n")


def header(title: str, subtitle: str, nav: Sequence[tuple[str, str]]) -> list[Html]:
    """The page's title, subtitle and navigation links (``(anchor, text)`` pairs)."""
    links = concat(html('<a href="#{}">{}</a>', anchor, text) for anchor, text in nav)
    return [
        html("<h1>{}</h1>", title),
        html('<p class="sub">{}</p>', subtitle),
        html("<nav>{}</nav>", links),
    ]


def document(title: str, body: Sequence[Any]) -> str:
    """A complete, self-contained page: ``body`` fragments inside the shared stylesheet."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        + html("<title>{}</title><style>{}</style></head>", title, Html(CSS))
        + "<body><main>\n"
        + concat(body, "\n")
        + "\n</main></body></html>\n"
    )


def report_page(
    report: Mapping[str, Any],
    sections: Sequence[Mapping],
    results_figs: Sequence[Mapping],
    res: Mapping | None,
    pngs: Mapping[str, bytes],
    colors: Callable[[str], str],
) -> str:
    """``index.html`` of a report: summary, results, one section per mechanism, footer."""
    nav = [("summary", "Summary")]
    if res:
        nav.append(("results", "Results"))
    nav += [(s["id"], s["title"].split(":")[0]) for s in sections]
    kind = (
        "white box: the optimizer's own dynamical system (cell)"
        if report["white_box"]
        else (
            "white box (no extra evidence)"
            if report["source"] == "cell"
            else "black box: behaviour only (optax transformation)"
        )
    )
    body = header(
        report["title"], f"Interpretation report · {kind} · schema {report['schema']}", nav
    )
    body += [
        html(
            '<h2 id="summary" style="border:0;margin-top:8px">{}</h2>',
            wording(report["source"])["summary_heading"],
        ),
        html(
            '<div class="summary">{}</div>', concat(html("<p>{}</p>", s) for s in report["summary"])
        ),
    ]
    if res:
        body.append(Html('<h2 id="results">Results against tuned baselines</h2>'))
        if report.get("results_sentence"):
            body.append(html('<p class="lead">{}</p>', report["results_sentence"]))
        body.append(results_html(res, colors))
        if results_figs:
            body.append(
                figure_grid(
                    [
                        figure(pngs[f["file"]], f["caption"], wide=bool(f.get("wide")))
                        for f in results_figs
                    ]
                )
            )
    body += [section_html(sec, pngs) for sec in sections]
    body.append(
        Html(
            "<footer>Generated by <code>probes.write_report</code>. Every number on this page is "
            "in <code>report.json</code>; the figures are also in <code>figures/</code>. Method: "
            "Maheswaranathan et al., <i>Reverse engineering learned optimizers reveals known and "
            "novel mechanisms</i>, NeurIPS 2021.</footer>"
        )
    )
    return document(report["title"], body)
