"""A self-contained HTML leaderboard: one file, plots inlined as base64 PNG, one small inline script, no external
assets.

It has to open from an e-mail attachment or an air-gapped cluster, and it must not phone home: the script is
inline (no src, no CDN), loads nothing and sends nothing (no fetch, no XMLHttpRequest, no imports); it only sorts
the leaderboard table by a clicked header and filters its rows by data set, model, flag and source. Without
JavaScript the page still renders every table in full (the filter bar stays hidden), and the interval bars are
plain CSS. Links to per-run failure reports and configs are relative to where the page is written, so the page and
the results folder can move together; a row from a bundle links to the bundle.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from agebench import __version__
from agebench.report.leaderboard import DISPLAY_COLUMNS, FLAG_HELP, Row, format_p
from agebench.report.reference import SOURCE
from agebench.report.results import Cell, provenance_summary

if TYPE_CHECKING:
    from agebench.report.matrix import Matrix
    from agebench.report.significance import Analysis, DatasetComparison

PLOT_CAPTIONS = {
    "cs_curves": "Cumulative score CS@k: share of test images whose absolute error is at most k years; the band "
    "is the bootstrap confidence interval.",
    "cross_matrix": "Cross-dataset MAE per model: rows are the data set trained on, columns the test split "
    "predicted; the bold diagonal is the in-domain result. Darker is worse.",
    "mae_by_age_group": "MAE per decade of true age; n is the number of test images in the group.",
    "mae_vs_latency": "MAE against batch-1 latency (median after warmup) on the device named in the title; "
    "marker area follows the parameter count. The paper's point was timed on the authors' "
    "hardware and is a landmark, not a like-for-like comparison. Vertical bars: bootstrap confidence interval "
    "of the MAE.",
    "cd_diagram": "Critical-difference diagram: each model's average rank of MAE over the data sets (1 = best); "
    "a thick bar joins models whose average ranks differ by less than the Nemenyi critical difference (CD), "
    "i.e. models the analysis cannot tell apart.",
}
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr.reference td { background: #f4f7ff; font-style: italic; }
tr.failed td, tr.invalid td { background: #fff1f0; }
.flag { background: #ffe8a3; border-radius: 3px; padding: 0 4px; white-space: nowrap; }
.error { color: #a00; }
td.better { background: #dff3df; } td.worse { background: #fbe3e1; } td.tie { background: #f3f3f3; color: #555; }
td.self { background: #fff; } p.summary { font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
dt { font-weight: bold; } code { background: #f4f4f4; padding: 0 3px; }
th.sortable { cursor: pointer; user-select: none; } th.sortable:hover { background: #e4e4e4; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
.ci { display: block; position: relative; height: 6px; background: #eee; margin-top: 3px; min-width: 90px; }
.ci-bar { position: absolute; top: 0; height: 6px; min-width: 2px; background: #4a78c2; border-radius: 3px; }
.ci-mean { position: absolute; top: -2px; width: 2px; height: 10px; background: #111; }
#filters { margin: 0.6em 0; } #filters label { margin-right: 1.2em; } #shown { color: #555; }
"""
# Sorts #leaderboard by a clicked (or Enter/Space) header, toggling the direction, empty cells last; the filter
# bar's selects keep the rows whose data-<name> holds the chosen value. Stable, so ties keep the MAE order.
_SCRIPT = """
(function () {
  "use strict";
  var table = document.getElementById("leaderboard");
  if (!table) { return; }
  var body = table.tBodies[0], heads = table.tHead.rows[0].cells, each = Array.prototype.forEach;
  function value(row, i) {
    var cell = row.cells[i], raw = cell.getAttribute("data-sort");
    return raw === null ? cell.textContent.trim() : raw;
  }
  function compare(a, b) {
    var x = Number(a), y = Number(b);
    return isNaN(x) || isNaN(y) ? a.localeCompare(b) : x - y;
  }
  each.call(heads, function (th, i) {
    th.classList.add("sortable");
    th.tabIndex = 0;
    th.title = "sort by " + th.textContent;
    function sort() {
      var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
      each.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
      var rows = Array.prototype.map.call(body.rows, function (r, k) { return [r, value(r, i), k]; });
      rows.sort(function (p, q) {
        if (p[1] === "" || q[1] === "") { return (p[1] === "") - (q[1] === "") || p[2] - q[2]; }
        return dir * compare(p[1], q[1]) || p[2] - q[2];
      });
      rows.forEach(function (p) { body.appendChild(p[0]); });
    }
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sort(); }
    });
  });
  var bar = document.getElementById("filters");
  if (!bar) { return; }
  bar.hidden = false;
  var selects = bar.querySelectorAll("select"), shown = document.getElementById("shown");
  function apply() {
    var n = 0;
    each.call(body.rows, function (row) {
      var keep = Array.prototype.every.call(selects, function (s) {
        return !s.value || (row.getAttribute("data-" + s.name) || "").split("|").indexOf(s.value) >= 0;
      });
      row.hidden = !keep;
      n += keep ? 1 : 0;
    });
    shown.textContent = "showing " + n + " of " + body.rows.length + " rows";
  }
  each.call(selects, function (s) { s.addEventListener("change", apply); });
  apply();
})();
"""


def _link(target: Path, base: Path) -> str:
    return quote(Path(os.path.relpath(target, base)).as_posix())


def _sort_values(row: Row) -> dict[str, float | int | None]:
    """Numbers the script sorts by (a column absent here sorts by its text); None: empty, sorted last."""
    iv = row.interval
    return {
        "rank": row.rank,
        "group": row.group,
        "seeds": len(row.cells) if row.cells else None,
        "mae": row.mae_mean,
        "mae_ci": iv.mae[0] if iv else None,
        "cs5": row.cs5_mean,
        "baseline": row.baseline_mae,
        "params": row.params_m,
        "latency": row.latency_ms,
        "throughput": row.throughput,
    }


def _scales(rows: list[Row]) -> dict[str, tuple[float, float]]:
    """Per data set, the span the interval bars are drawn on: every row's interval, 5% margin each side."""
    spans: dict[str, list[float]] = {}
    for row in rows:
        if row.interval is not None:
            spans.setdefault(row.dataset, []).extend(row.interval.mae)
    out = {}
    for dataset, values in spans.items():
        lo, hi = min(values), max(values)
        pad = 0.05 * (hi - lo) or 0.5
        out[dataset] = (lo - pad, hi + pad)
    return out


def _ci_bar(row: Row, scale: tuple[float, float] | None) -> str:
    if row.interval is None or scale is None or row.mae_mean is None:
        return ""
    lo, hi = scale
    (a, b), m = row.interval.mae, row.mae_mean

    def pct(x: float) -> float:
        return round(100 * (x - lo) / (hi - lo), 2)

    return (
        f'<span class="ci" aria-hidden="true" title="{escape(row.display()["mae_ci"])}">'
        f'<span class="ci-bar" style="left:{pct(a)}%;width:{pct(b) - pct(a)}%"></span>'
        f'<span class="ci-mean" style="left:{pct(m)}%"></span></span>'
    )


def _config_links(row: Row, base: Path) -> list[str]:
    """Each seed's config.yaml: beside the results, or inside the bundle the row came from."""
    out = []
    for c in row.cells:
        if c.bundle:
            inner = f"{c.rel.split(':', 1)[-1]}/config.yaml"
            out.append(f'<a href="{_link(Path(c.bundle).resolve(), base)}" title="{escape(inner)}">seed {c.seed}</a>')
        elif (c.path / "config.yaml").is_file():
            out.append(f'<a href="{_link(c.path / "config.yaml", base)}">seed {c.seed}</a>')
    return out


def _filter_values(row: Row) -> dict[str, list[str]]:
    return {
        "dataset": [row.dataset],
        "model": [row.model],
        "flag": list(row.flags) or ["none"],
        "source": [row.origin or row.source],
    }


def _filters(rows: list[Row]) -> list[str]:
    """The filter bar: hidden until the script shows it (without JavaScript it could do nothing)."""
    names = {"dataset": "data set", "model": "model", "flag": "flag", "source": "source"}
    out = ['<div id="filters" hidden>']
    for key, label in names.items():
        values = sorted({v for r in rows for v in _filter_values(r)[key]})
        if key == "source" and len(values) < 2:
            continue
        options = "".join(
            f'<option value="{escape(v)}">{escape("no flag" if key == "flag" and v == "none" else v)}</option>'
            for v in values
        )
        out.append(
            f'<label>{escape(label)} <select name="{key}"><option value="">all</option>{options}</select></label>'
        )
    return out + ['<span id="shown"></span></div>']


def _table(rows: list[Row], base: Path) -> list[str]:
    out = _filters(rows) + ['<table id="leaderboard">', "<thead><tr>"]
    out += [f"<th>{escape(h)}</th>" for _, h in DISPLAY_COLUMNS]
    out += ["<th>reports</th>", "<th>config</th>", "</tr></thead><tbody>"]
    scales = _scales(rows)
    for row in rows:
        text = row.display()
        numbers = _sort_values(row)
        cells = []
        for key, _ in DISPLAY_COLUMNS:
            if key == "flags":
                value = " ".join(
                    f'<span class="flag" title="{escape(FLAG_HELP[f])}">{escape(f)}</span>' for f in row.flags
                )
            elif key == "mae" and row.status in ("failed", "invalid"):
                value = f'<span class="error">{escape(text[key])}</span>'
            elif key == "mae_ci":
                value = escape(text[key]) + _ci_bar(row, scales.get(row.dataset))
            else:
                value = escape(text[key])
            sort = ""
            if key in numbers:
                number = numbers[key]
                sort = f' data-sort="{"" if number is None else f"{number:.6g}"}"'
            cells.append(f"<td{sort}>{value}</td>")
        links = [
            f'<a href="{_link(target, base)}">seed {c.seed}: {escape(label)}</a>'
            for c in row.cells
            for label, target in c.report_links()
        ]
        cells.append(f"<td>{'<br>'.join(links)}</td>")
        cells.append(f"<td>{' '.join(_config_links(row, base))}</td>")
        data = "".join(f' data-{k}="{escape("|".join(v))}"' for k, v in _filter_values(row).items())
        out.append(f'<tr class="{escape(row.status)}"{data}>' + "".join(cells) + "</tr>")
    return out + ["</tbody></table>"]


def _sources(cells: list[Cell]) -> list[str]:
    """A merged leaderboard's sources and the cells kept out of their data set's table (another test split)."""
    from agebench.report.tables import unpooled

    origins = list(dict.fromkeys(c.origin for c in cells if c.origin))
    if not origins:
        return []
    out = ["<h2>Sources</h2>", "<ul>"]
    for origin in origins:
        mine = [c for c in cells if c.origin == origin]
        where = next((c.bundle for c in mine if c.bundle), None)
        out.append(
            f"<li><strong>{escape(origin)}</strong>: {len(mine)} cell(s)"
            + (f", bundle <code>{escape(Path(where).name)}</code>" if where else "")
            + "</li>"
        )
    out.append("</ul>")
    found = unpooled(cells)
    if found:
        out += [
            '<h2 id="unpooled">Not pooled: other test splits</h2>',
            "<p>Cells whose test split (the paths and ages of their predictions) differs from their data set's "
            "reference split, the first source's: they are ranked and paired only in a table of their own.</p>",
            "<ul>",
        ]
        out += [
            f"<li><code>{escape(u['cell'])}</code> (table <em>{escape(u['table'])}</em>): {escape(u['reason'])}</li>"
            for u in found
        ]
        out.append("</ul>")
    return out


ATTENTION_REGIONS = ("forehead", "eye_corners", "nasolabial", "hair", "eyes", "mouth", "any")


def _cam_label(entry: dict[str, Any]) -> str:
    """The explained layer, and the method when it is not Grad-CAM (``agebench explain --method``) and the label
    does not already name it (occlusion's label is ``input (occlusion 8 px, stride 4)``)."""
    label = str(entry.get("label", entry.get("layer", "")))
    method = str(entry.get("method", "gradcam"))
    label = label if method == "gradcam" or method in label else f"{label} ({method})"
    return f"{label}, {entry['control']} control" if entry.get("control") else label


def _attention_table(cells: list[Cell]) -> list[str]:
    """Share of Grad-CAM (or occlusion) mass in the synthetic set's age-cue regions, next to a constant map's."""
    rows = [(c, e) for c in cells for e in c.attention()]
    if not rows:
        return []

    def pct(value: Any) -> str:
        return "n/a" if not isinstance(value, (int, float)) else f"{100 * value:.1f}%"

    out = [
        "<h2>Where the models look (Grad-CAM attention share)</h2>",
        "<p>Share of Grad-CAM mass (or of the method named after the layer) inside the regions where the "
        "synthetic generator draws age cues, averaged "
        "over the explained test faces, with its 95% bootstrap interval over the images; in round brackets, the "
        "share a constant (uniform) map would get, i.e. the regions' area. A model that uses the cues scores "
        "above its round bracket.</p>",
        "<table><thead><tr><th>data set</th><th>model</th><th>seed</th><th>layer</th><th>images</th>",
    ]
    out += [f"<th>{escape(r.replace('_', ' '))}</th>" for r in ATTENTION_REGIONS] + ["</tr></thead><tbody>"]
    for cell, entry in rows:
        share, uniform = entry.get("share", {}), entry.get("uniform_baseline", {})
        cis = entry.get("share_ci") or {}

        def ci(region: str, cis: dict[str, Any] = cis) -> str:
            bounds = cis.get(region)
            return f" <small>[{pct(bounds[0])}, {pct(bounds[1])}]</small>" if bounds else ""

        values = "".join(
            f"<td>{pct(share.get(r))}{ci(r)} <small>({pct(uniform.get(r))})</small></td>" for r in ATTENTION_REGIONS
        )
        out.append(
            f"<tr><td>{escape(cell.dataset)}</td><td>{escape(cell.model)}</td><td>{cell.seed}</td>"
            f"<td>{escape(_cam_label(entry))}</td>"
            f"<td>{escape(str(entry.get('n_images', '')))}</td>{values}</tr>"
        )
    return out + ["</tbody></table>"]


def _figure(name: str, data: bytes) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    caption = escape(PLOT_CAPTIONS.get(name, name))
    return (
        f'<figure><img id="plot-{escape(name)}" alt="{caption}" '
        f'src="data:image/png;base64,{encoded}"><figcaption>{caption}</figcaption></figure>'
    )


def _pair_matrix(comp: DatasetComparison, alpha: float) -> list[str]:
    """Row model minus column model: MAE difference, its CI and Holm p; green where the row model is better."""
    labels = comp.labels
    out = [f"<h3>{escape(comp.dataset)}</h3>", f'<p class="summary">{escape(comp.summary(alpha))}</p>']
    if len(labels) < 2:
        return out
    out += ["<table><thead><tr><th>row - column</th>"] + [f"<th>{escape(b)}</th>" for b in labels]
    out.append("</tr></thead><tbody>")
    for a in labels:
        tds = [f"<th>{escape(a)}</th>"]
        for b in labels:
            if a == b:
                tds.append('<td class="self"></td>')
                continue
            pair, sign = comp.pair(a, b), 1.0
            if pair is None:
                pair, sign = comp.pair(b, a), -1.0
            if pair is None:
                tds.append('<td class="tie">not compared</td>')
                continue
            delta, low, high = sign * pair.delta, *sorted((sign * pair.ci_low, sign * pair.ci_high))
            kind = "tie" if not pair.significant(alpha) else ("better" if delta < 0 else "worse")
            word = {"tie": "no significant difference", "better": "row better", "worse": "row worse"}[kind]
            tds.append(
                f'<td class="{kind}" title="{escape(word)}; {pair.n_images} images, {len(pair.seeds)} seed(s), '
                f'{pair.n_units} {escape(pair.unit)}">{delta:+.2f} [{low:+.2f}, {high:+.2f}]<br>'
                f"<small>p<sub>Holm</sub> = {escape(format_p(pair.p_adjusted))}</small></td>"
            )
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    out += [f"<p>Not compared: {escape(r['a'])} vs {escape(r['b'])}: {escape(r['reason'])}</p>" for r in comp.refused]
    return out


def _statistics(analysis: Analysis, pngs: dict[str, bytes]) -> list[str]:
    level = analysis.config.level
    out = [
        "<h2>Paired comparisons</h2>",
        f"<p>Each cell: MAE of the row model minus the column model over the images and seeds both have "
        f"(negative: the row model errs less), its {level:.0%} bootstrap interval, and the Holm-adjusted p-value "
        "of a paired sign-flip test. Green: the row model is significantly better; red: worse; grey: the data "
        "cannot tell them apart. Every pair is also in <code>pairwise.csv</code> and "
        "<code>leaderboard.json</code>.</p>",
    ]
    for comp in analysis.datasets.values():
        out += _pair_matrix(comp, analysis.config.alpha)
    out += ["<h2>Across data sets</h2>", f"<p>{escape(analysis.friedman_note)}</p>"]
    if "cd_diagram" in pngs:
        out.append(_figure("cd_diagram", pngs["cd_diagram"]))
    return out


def _cross(matrices: list[Matrix]) -> list[str]:
    """The cross-dataset matrices as tables (their heat map is among the plots)."""
    from agebench.report.matrix import OVERLAP_MARK, drop_summary

    parts = [
        "<h2>Cross-dataset MAE</h2>",
        "<p>Rows: the data set trained on; columns: the test split predicted. The diagonal (bold) is the in-domain "
        f"result of the table above; brackets hold the {matrices[0].level:.0%} interval; the last row is each test "
        f"set's mean predictor. {OVERLAP_MARK}: the training data shares images or people with that test split.</p>",
    ]
    for m in matrices:
        summary = drop_summary(m)
        parts.append(f"<h3>{escape(m.model)}</h3>" + (f"<p>{escape(summary)}</p>" if summary else ""))
        parts.append("<table><tr><th>train \\ test</th>" + "".join(f"<th>{escape(t)}</th>" for t in m.test) + "</tr>")
        for train in m.train:
            cells_html = []
            for test in m.test:
                e = m.get(train, test)
                if e is None or e.mae_mean is None:
                    cells_html.append("<td>–</td>")
                    continue
                text = f"{e.mae_mean:.2f}" + (f" [{e.ci[0]:.2f}, {e.ci[1]:.2f}]" if e.ci else "")
                text += f" {OVERLAP_MARK}" if e.overlap else ""
                cells_html.append(
                    f"<td><strong>{escape(text)}</strong></td>" if e.in_domain else f"<td>{escape(text)}</td>"
                )
            parts.append(f"<tr><th>{escape(train)}</th>{''.join(cells_html)}</tr>")
        base = m.baselines()
        parts.append(
            "<tr><th><em>mean predictor</em></th>"
            + "".join(f"<td><em>{base[t]:.2f}</em></td>" if t in base else "<td>–</td>" for t in m.test)
            + "</tr></table>"
        )
    from agebench.report.matrix import data_sets
    from agebench.report.reference import CROSS_SOURCE, cross_references_for

    published = cross_references_for(data_sets(matrices))
    if published:
        parts.append(f"<p>Published landmark ({escape(CROSS_SOURCE)}; another model, their protocol and crops):</p>")
        parts.append("<table><tr><th>model</th><th>trained on</th><th>tested on</th><th>MAE</th></tr>")
        parts += [
            f"<tr class='reference'><td>{escape(r.model)}</td><td>{escape(r.train)}</td><td>{escape(r.test)}</td>"
            f"<td>{r.mae:.2f}</td></tr>"
            for r in published
        ]
        parts.append("</table>")
    return parts


def render_html(
    rows: list[Row],
    cells: list[Cell],
    pngs: dict[str, bytes],
    base: str | Path,
    analysis: Analysis | None = None,
    matrices: list[Matrix] | None = None,
    sections: Sequence[str] = (),
) -> str:
    """The page as text; ``base`` is the folder the page will live in (report links are relative to it).
    ``sections``: HTML of further sections (e.g. agebench.report.assurance's), placed before the plots."""
    base = Path(base).resolve()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>agebench leaderboard</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>agebench leaderboard</h1>",
        "<p>MAE in years: mean over seeds ± sample standard deviation (ddof=1, from two seeds on). CS@5: share "
        "of test images within 5 years, mean over seeds. Mean-predictor MAE: predicting the training mean age "
        "on the same test split (a model should beat it by far). Latency: median per image at batch 1 after "
        "warmup; throughput: inference images/s at the benchmark batch; both timed on the device in "
        "<em>timed on</em>.</p>",
        f"<p>Rows in <em>italics</em> are <strong>{escape(SOURCE)}</strong>: published figures, not measured "
        "here. The paper publishes parameters and latency for the hybrid only; other cells stay empty.</p>",
    ]
    if analysis is not None:
        parts.append(f"<p>{escape(analysis.legend())}</p>")
    parts += _table(rows, base)
    if analysis is not None:
        alpha = analysis.config.alpha
        parts += [f'<p class="summary">{escape(c.summary(alpha))}</p>' for c in analysis.datasets.values()]
    failures = [r for r in rows if r.status in ("failed", "invalid")]
    if failures:
        parts.append(
            f"<p class='error'>{len(failures)} row(s) did not produce results; their error is shown "
            "instead of a number.</p>"
        )
    parts += ["<h2>Flags</h2>", "<dl>"]
    for flag, help_text in FLAG_HELP.items():
        parts.append(f"<dt><span class='flag'>{escape(flag)}</span></dt><dd>{escape(help_text)}</dd>")
    parts.append("</dl>")
    warnings = [w for r in rows for w in r.warnings]
    if warnings:
        parts += ["<h2>Warnings</h2>", "<ul>"] + [f"<li>{escape(w)}</li>" for w in warnings] + ["</ul>"]
    parts += _sources(cells)
    parts += _attention_table(cells)
    # `agebench explain --run A --run B ... --out RESULTS/explain` (as `make bench` runs it): the comparison grid.
    names = {"gradcam.png": "Grad-CAM", "hirescam.png": "HiResCAM", "occlusion.png": "Occlusion"}
    for grid in sorted({c.path.parents[2] / "explain" / name for c in cells for name in names}):
        if grid.is_file():
            parts.append(
                f"<p>{names[grid.name]} of the models on the same test faces, side by side: "
                f'<a href="{_link(grid, base)}">{escape(grid.parent.name)}/{escape(grid.name)}</a>.</p>'
            )
    if analysis is not None:
        parts += _statistics(analysis, pngs)
    if matrices:
        parts += _cross(matrices)
    parts += list(sections)
    parts.append("<h2>Plots</h2>")
    if not pngs:
        parts.append("<p>No successful result cell: nothing to plot.</p>")
    parts += [_figure(name, data) for name, data in pngs.items() if name != "cd_diagram"]
    parts += [
        "<h2>Provenance</h2>",
        "<p>Distinct values over all result cells (per-cell values are in leaderboard.json).</p>",
        "<table>",
    ]
    for key, values in provenance_summary(cells).items():
        parts.append(f"<tr><th>{escape(key)}</th><td>{' '.join(f'<code>{escape(v)}</code>' for v in values)}</td></tr>")
    parts += [
        "</table>",
        f"<p>Page built by agebench {escape(__version__)} from {len(cells)} result cell(s).</p>",
        f"<script>{_SCRIPT}</script>",
        "</body></html>",
        "",
    ]
    return "\n".join(parts)
