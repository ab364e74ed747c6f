"""The age-assurance section: leaderboard rows -> group, by-age, gate and band figures (assurance_stats), and their
Markdown, JSON, HTML, terminal lines and plots. Reads result files only (predictions.csv and its columns).

Why a section of its own: deployed age estimation is mostly an age gate (13+, 16+, 18+, 25+), judged by how often
minors pass and for whom it errs (NIST IR 8525). The leaderboard's MAE answers neither; this section puts, per
row, the Challenge-25 false positive rate, the 13-16 child band and the largest group gap beside it.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np

from agebench.report import assurance_stats as A
from agebench.report.leaderboard import Row

CHALLENGE = (18.0, 7.0)  # Challenge-25: threshold 18, buffer 7 (a face passes when estimated 25 or older)
TRADEOFF_BUFFERS = tuple(float(b) for b in range(0, 11))
PLOT_NAMES = ("assurance_by_age", "assurance_groups", "assurance_tradeoff")


@dataclass(frozen=True)
class Settings:
    thresholds: tuple[float, ...] = tuple(float(t) for t in A.DEFAULT_THRESHOLDS)
    buffer: float = 0.0
    boot: A.Boot = A.Boot()


def row_testset(row: Row) -> tuple[A.TestSet, dict[str, tuple[str, ...]], list[int]] | None:
    """The row's seeds as one TestSet (images in the first seed's order), its demographic columns, and the seeds
    used; seeds whose test images differ from the first's are left out. None without readable predictions."""
    cells = [c for c in row.cells if c.predictions is not None]
    if row.status != "ok" or not cells:
        return None
    first = cells[0].predictions
    assert first is not None
    preds, seeds = [], []
    for cell in cells:
        p = cell.predictions
        assert p is not None
        if len(p.paths) != len(first.paths) or set(p.paths) != set(first.paths):
            continue
        where = {path: i for i, path in enumerate(p.paths)}
        preds.append(p.preds[[where[path] for path in first.paths]])
        seeds.append(cell.seed)
    subjects = first.subjects if first.has_subjects else None
    columns = {c: v for c, v in first.columns.items() if c in DEMOGRAPHIC}
    return A.TestSet(first.ages, np.stack(preds), subjects), columns, seeds


DEMOGRAPHIC = ("gender", "race", "skin_tone")


def _clean(value: Any) -> Any:
    """JSON-ready: tuples to [low, high] lists, floats rounded (reruns print identically), NaN to None."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return round(float(value), 6) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def assess_row(row: Row, settings: Settings = Settings()) -> dict[str, Any]:
    """One row's record: groups, gaps, pairwise group tests, by_age, gates, band, Challenge-25, trade-off, notes."""
    base: dict[str, Any] = {"dataset": row.dataset, "model": row.model}
    found = row_testset(row)
    if found is None:
        return {**base, "status": "n/a", "notes": ["no readable predictions.csv"]}
    ts, columns, seeds = found
    key = f"assurance/{row.dataset}/{row.model}"
    boot = settings.boot
    notes = []
    if not (ts.ages < 18).any():
        notes.append("no test image under 18: the gates below 18 and the child band are n/a")
    if not columns:
        notes.append("predictions.csv has no demographic column (gender, race, skin_tone): group figures n/a")
    groups, gaps, pairs = {}, {}, {}
    for column, values in columns.items():
        out = A.column_groups(ts, values, settings.thresholds, settings.buffer, boot, f"{key}/{column}")
        groups[column] = out["values"]
        gaps[column] = {k: out["gap"].get(k) for k in ("mae_gap", "mae_gap_ci", "max_group", "min_group", "groups")}
        pairs[column] = out["pairs"]
    record = {
        **base,
        "status": "ok",
        "seeds": seeds,
        "unit": "subjects" if ts.has_subjects else "images",
        "overall": A.accuracy(ts, np.ones(len(ts.ages), bool), boot, key),
        "groups": groups,
        "gaps": gaps,
        "pairs": pairs,
        "by_age": A.by_age(ts),
        "gates": [
            A.gate(ts, t, settings.buffer, boot, f"{key}/gate{t:g}+{settings.buffer:g}") for t in settings.thresholds
        ],
        "challenge25": A.gate(ts, *CHALLENGE, boot, f"{key}/challenge25", per_year=False),
        "band": A.band(ts, boot, f"{key}/band"),
        "tradeoff": {f"{t:g}": A.tradeoff(ts, t, TRADEOFF_BUFFERS) for t in settings.thresholds},
        "settings": {"thresholds": list(settings.thresholds), "buffer": settings.buffer, "min_units": A.MIN_UNITS},
        "notes": notes,
    }
    return _clean(record)


def assess(rows: Sequence[Row], settings: Settings = Settings()) -> list[dict[str, Any]]:
    """Records of the measured rows that ran (references and failures have no predictions)."""
    return [assess_row(r, settings) for r in rows if r.status == "ok" and r.cells]


def compare_rows(a: Row, b: Row, settings: Settings = Settings()) -> dict[str, Any]:
    """a - b on each gate's fpr and each column's MAE gap, on the images both rows scored (paired bootstrap)."""
    fa, fb = row_testset(a), row_testset(b)
    if fa is None or fb is None:
        return {"a": a.model, "b": b.model, "status": "n/a", "note": "no readable predictions.csv"}
    (ta, cols, _), (tb, _, _) = fa, fb
    paths_a = a.cells[0].predictions.paths  # type: ignore[union-attr]
    paths_b = b.cells[0].predictions.paths  # type: ignore[union-attr]
    where_b = {p: i for i, p in enumerate(paths_b)}
    common = [i for i, p in enumerate(paths_a) if p in where_b]
    if not common:
        return {"a": a.model, "b": b.model, "status": "n/a", "note": "the two rows share no test image"}
    ib = [where_b[paths_a[i]] for i in common]
    sub_a = A.TestSet(
        ta.ages[common], ta.preds[:, common], None if ta.subjects is None else tuple(ta.subjects[i] for i in common)
    )
    sub_b = A.TestSet(tb.ages[ib], tb.preds[:, ib], sub_a.subjects)
    if not np.allclose(sub_a.ages, sub_b.ages, atol=1e-3):
        return {"a": a.model, "b": b.model, "status": "n/a", "note": "the same images carry different ages"}
    sub_b = A.TestSet(sub_a.ages, sub_b.preds, sub_a.subjects)
    labels = {c: A.group_labels([v[i] for i in common]) for c, v in cols.items()}
    key = f"assurance-compare/{a.dataset}/{a.model}/{b.model}"
    out = A.paired_differences(sub_a, sub_b, labels, settings.thresholds, settings.buffer, settings.boot, key)
    return _clean({"dataset": a.dataset, "a": a.model, "b": b.model, "status": "ok", "n_images": len(common), **out})


# ---- text ----------------------------------------------------------------------------------------------------


def fmt_rate(value: float | None, ci: Sequence[float] | None = None, n: int | None = None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    if ci:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text + (f" (n {n})" if n is not None else "")


def fmt_years(value: float | None, ci: Sequence[float] | None = None, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    spec = "+.2f" if sign else ".2f"
    return f"{value:{spec}}" + (f" [{ci[0]:{spec}}, {ci[1]:{spec}}]" if ci else "")


def largest_gap(record: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    gaps = [(c, g) for c, g in (record.get("gaps") or {}).items() if g.get("mae_gap") is not None]
    return max(gaps, key=lambda cg: cg[1]["mae_gap"]) if gaps else None


def gap_text(record: dict[str, Any]) -> str:
    found = largest_gap(record)
    if found is None:
        return "n/a"
    column, g = found
    return f"{column} {fmt_years(g['mae_gap'], g['mae_gap_ci'])} y ({g['max_group']} vs {g['min_group']})"


def summary(record: dict[str, Any]) -> dict[str, str]:
    """The leaderboard's three figures per row, as text."""
    if record.get("status") != "ok":
        return {"challenge25": "n/a", "band": "n/a", "gap": "n/a"}
    c25, band = record["challenge25"], record["band"]
    return {
        "challenge25": fmt_rate(c25["fpr"], c25["fpr_ci"], c25["n_below"]),
        "band": f"tpr {fmt_rate(band['tpr'], band['tpr_ci'])}; 8-12 in band {fmt_rate(band['fpr_below'])}; "
        f"17-22 in band {fmt_rate(band['fpr_above'])}",
        "gap": gap_text(record),
    }


def terminal_line(record: dict[str, Any]) -> str:
    """One line per row for `agebench leaderboard` (and so `make bench`)."""
    s = summary(record)
    head = f"assurance {record['dataset']}/{record['model']}:"
    if record.get("status") != "ok":
        return f"{head} n/a ({'; '.join(record.get('notes') or [])})"
    note = f" [{'; '.join(record['notes'])}]" if record["notes"] else ""
    return f"{head} Challenge-25 fpr {s['challenge25']}; 13-16 band {s['band']}; largest group MAE gap {s['gap']}{note}"


def summary_markdown(records: list[dict[str, Any]], plots_dir: str | None = None) -> list[str]:
    """The leaderboard's "Age assurance" section."""
    if not records:
        return []
    lines = [
        "## Age assurance",
        "",
        "Challenge-25 fpr: share of true ages 13-17 estimated 25 or older (threshold 18, buffer 7). Child band "
        "[13, 17): tpr is the share of 13-16 year-olds estimated inside it; 8-12 and 17-22 in band are the shares "
        "of those ages wrongly put inside. Largest gap: the largest max - min group MAE over the demographic "
        "columns of predictions.csv, groups with at least "
        f"{A.MIN_UNITS} subjects (images where identities are unknown). 95% subject-cluster bootstrap intervals; "
        "`agebench assurance RESULTS` prints every figure (per group, per year of age, per gate).",
        "",
        "| data set | model | Challenge-25 fpr | 13-16 band | largest group MAE gap (years) |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        s = summary(r)
        lines.append(f"| {r['dataset']} | {r['model']} | {s['challenge25']} | {s['band']} | {s['gap']} |")
    notes = [f"- {r['dataset']}/{r['model']}: {n}" for r in records for n in r.get("notes") or []]
    lines += [""] + notes + ([""] if notes else [])
    if plots_dir:
        lines += [f"![{name}]({plots_dir}/{name}.png)" for name in PLOT_NAMES] + [""]
    return lines


def detail_markdown(record: dict[str, Any]) -> list[str]:
    """Every figure of one row (what `agebench assurance` prints)."""
    lines = [f"## {record['dataset']} / {record['model']}", ""]
    if record.get("status") != "ok":
        return lines + [f"n/a: {'; '.join(record.get('notes') or [])}", ""]
    o = record["overall"]
    lines += [
        f"{o['n']} images"
        + (f" of {o['n_units']} subjects" if record["unit"] == "subjects" else " (no identities: images resampled)")
        + f", seeds {record['seeds']}: "
        f"MAE {fmt_years(o['mae'], o['mae_ci'])}, "
        f"bias {fmt_years(o['bias'], o['bias_ci'], True)}, CS@5 {fmt_rate(o['cs5'])}",
        "",
    ]
    lines += [f"- {n}" for n in record["notes"]] + ([""] if record["notes"] else [])
    thresholds = record["settings"]["thresholds"]
    for column, values in record["groups"].items():
        lines += [
            f"### by {column}",
            "",
            "| value | images | subjects | MAE | bias | CS@5 | "
            + " | ".join(f"fpr T{t:g}" for t in thresholds)
            + " | band tpr |",
            "|---|---|---|---|---|---|" + "---|" * len(thresholds) + "---|",
        ]
        for value, g in values.items():
            rates = " | ".join(fmt_rate(x["fpr"], x["fpr_ci"], x["n_below"]) for x in g["gates"])
            lines.append(
                f"| {value} | {g['n']} | {g['n_subjects'] if g['n_subjects'] is not None else '-'} | "
                f"{fmt_years(g['mae'], g['mae_ci'])} | {fmt_years(g['bias'], g['bias_ci'], True)} | "
                f"{fmt_rate(g['cs5'])} | {rates} | {fmt_rate(g['band']['tpr'], g['band']['tpr_ci'])} |"
            )
        gap = record["gaps"][column]
        lines += ["", f"MAE gap (max - min over {', '.join(gap['groups'] or []) or 'no comparable groups'}): "
                  f"{fmt_years(gap['mae_gap'], gap['mae_gap_ci'])}"]  # fmt: skip
        for p in record["pairs"][column]:
            lines.append(
                f"- {p['a']} - {p['b']}: MAE {fmt_years(p['delta'], p['delta_ci'], True)}, p {p['p']:.4f}, "
                f"Holm p {p['p_holm']:.4f}"
            )
        lines.append("")
    buffer = record["settings"]["buffer"]
    lines += [
        f"### gates (buffer {buffer:g}: a face passes when estimated >= T + {buffer:g})",
        "",
        "| T | fpr (true [T-5, T) passing) | n below | fnr (true [T, T+10) not passing) | n above | fpr per year |",
        "|---|---|---|---|---|---|",
    ]
    for g in record["gates"] + [record["challenge25"]]:
        years = ", ".join(f"{k}: {fmt_rate(v['fpr'])} ({v['n']})" for k, v in (g.get("fpr_by_year") or {}).items())
        name = f"{g['threshold']:g}" + (" (Challenge-25, B 7)" if g is record["challenge25"] else "")
        lines.append(
            f"| {name} | {fmt_rate(g['fpr'], g['fpr_ci'])} | {g['n_below']} | {fmt_rate(g['fnr'], g['fnr_ci'])} | "
            f"{g['n_above']} | {years or '-'} |"
        )
    b = record["band"]
    lines += [
        "",
        f"child band [13, 17): tpr {fmt_rate(b['tpr'], b['tpr_ci'], b['tpr_n'])}; true 8-12 in band "
        f"{fmt_rate(b['fpr_below'], b['fpr_below_ci'], b['fpr_below_n'])}; true 17-22 in band "
        f"{fmt_rate(b['fpr_above'], b['fpr_above_ci'], b['fpr_above_n'])}",
        "",
        "### by year of age",
        "",
        "| age | n | MAE | bias |",
        "|---|---|---|---|",
    ]
    lines += [f"| {k} | {v['n']} | {v['mae']:.2f} | {v['bias']:+.2f} |" for k, v in record["by_age"].items()]
    return lines + [""]


def compare_markdown(c: dict[str, Any]) -> list[str]:
    lines = [f"### {c.get('dataset', '')}: {c['a']} - {c['b']} (paired over subjects)", ""]
    if c.get("status") != "ok":
        return lines + [f"n/a: {c.get('note')}", ""]
    for g in c["gates"]:
        lines.append(
            f"- fpr at T {g['threshold']:g} (B {g['buffer']:g}): {fmt_rate(g['delta_fpr'], g['delta_fpr_ci'])}"
        )
    for column, g in c["gaps"].items():
        lines.append(f"- MAE gap by {column}: {fmt_years(g['delta_gap'], g['delta_gap_ci'], True)} years")
    return lines + [""]


# ---- HTML and plots --------------------------------------------------------------------------------------------


def html_section(records: list[dict[str, Any]], pngs: dict[str, bytes]) -> list[str]:
    """The "Age assurance" section of leaderboard.html: the summary table, notes and the three plots inline."""
    if not records:
        return []
    parts = [
        '<h2 id="assurance">Age assurance</h2>',
        "<p>Challenge-25 fpr: share of true ages 13-17 estimated 25 or older. Child band [13, 17): tpr, and the "
        "shares of true 8-12 and 17-22 year-olds estimated inside it. Largest gap: max - min group MAE over the "
        f"demographic columns (groups of at least {A.MIN_UNITS} subjects). Brackets: 95% subject-cluster bootstrap "
        "intervals; n: images in the band.</p>",
        "<table><thead><tr><th>data set</th><th>model</th><th>Challenge-25 fpr</th><th>13-16 band</th>"
        "<th>largest group MAE gap (years)</th></tr></thead><tbody>",
    ]
    for r in records:
        s = summary(r)
        parts.append(
            f"<tr><td>{escape(r['dataset'])}</td><td>{escape(r['model'])}</td><td>{escape(s['challenge25'])}</td>"
            f"<td>{escape(s['band'])}</td><td>{escape(s['gap'])}</td></tr>"
        )
    parts.append("</tbody></table>")
    notes = [f"{r['dataset']}/{r['model']}: {n}" for r in records for n in r.get("notes") or []]
    if notes:
        parts += ["<ul>"] + [f"<li>{escape(n)}</li>" for n in notes] + ["</ul>"]
    for name in PLOT_NAMES:
        if name in pngs:
            data = base64.b64encode(pngs[name]).decode()
            parts.append(f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}'
                         "</figcaption></figure>")  # fmt: skip
    return parts


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def _colors(records: list[dict[str, Any]]) -> dict[str, Any]:
    from matplotlib import colormaps

    names = sorted({r["model"] for r in records})
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def render_plots(records: list[dict[str, Any]]) -> dict[str, bytes]:
    """MAE and bias by year of age; group MAE with intervals; fpr-fnr trade-off per threshold (B 0..10)."""
    from matplotlib.figure import Figure

    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        return {}
    colors = _colors(ok)
    datasets = sorted({r["dataset"] for r in ok})
    out: dict[str, bytes] = {}

    fig = Figure(figsize=(6.4 * len(datasets), 4.4), layout="constrained")
    for ax, ds in zip(fig.subplots(1, len(datasets), squeeze=False)[0], datasets, strict=True):
        for r in (r for r in ok if r["dataset"] == ds):
            keys = list(r["by_age"])
            x = [int(k.split("-")[0]) + (2.5 if "-" in k else 0.5) for k in keys]
            ax.plot(x, [r["by_age"][k]["mae"] for k in keys], "-", color=colors[r["model"]], label=f"{r['model']} MAE")
            ax.plot(
                x, [r["by_age"][k]["bias"] for k in keys], "--", color=colors[r["model"]], label=f"{r['model']} bias"
            )
        ax.axhline(0, color="grey", lw=0.8)
        for t in (13, 18, 25):
            ax.axvline(t, color="grey", lw=0.6, ls=":")
        ax.set(title=f"{ds}: error by true age (years to 24, then 5-year bins)", xlabel="true age", ylabel="years")
        ax.legend(fontsize=7)
    out["assurance_by_age"] = _png(fig)

    panels = [
        (ds, col) for ds in datasets for col in sorted({c for r in ok if r["dataset"] == ds for c in r["groups"]})
    ]
    if panels:
        fig = Figure(figsize=(6.4 * min(2, len(panels)), 4.2 * math.ceil(len(panels) / 2) + 0.4), layout="constrained")
        axes = fig.subplots(math.ceil(len(panels) / 2), min(2, len(panels)), squeeze=False).ravel()
        for ax, (ds, col) in zip(axes, panels, strict=False):
            rows = [r for r in ok if r["dataset"] == ds and col in r["groups"]]
            values = sorted({v for r in rows for v in r["groups"][col]})
            width = 0.8 / max(1, len(rows))
            for j, r in enumerate(rows):
                xs, ys, lo, hi = [], [], [], []
                for i, v in enumerate(values):
                    g = r["groups"][col].get(v)
                    if not g or g["mae"] is None:
                        continue
                    xs.append(i + (j - (len(rows) - 1) / 2) * width)
                    ys.append(g["mae"])
                    ci = g["mae_ci"] or [g["mae"], g["mae"]]
                    lo.append(g["mae"] - ci[0])
                    hi.append(ci[1] - g["mae"])
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, color=colors[r["model"]], label=r["model"])
            ax.set_xticks(range(len(values)), values, rotation=30 if len(values) > 4 else 0)
            ax.set_xlim(-0.6, len(values) - 0.4)
            ax.set(title=f"{ds}: MAE by {col} (95% CI)", ylabel="MAE (years)")
            ax.legend(fontsize=7)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        out["assurance_groups"] = _png(fig)

    pairs = [(ds, t) for ds in datasets for t in next(r for r in ok if r["dataset"] == ds)["tradeoff"]]
    cols = min(3, len(pairs))
    fig = Figure(figsize=(4.6 * cols, 4.0 * math.ceil(len(pairs) / cols) + 0.4), layout="constrained")
    axes = fig.subplots(math.ceil(len(pairs) / cols), cols, squeeze=False).ravel()
    for ax, (ds, t) in zip(axes, pairs, strict=False):
        for r in (r for r in ok if r["dataset"] == ds):
            pts = [p for p in r["tradeoff"][t] if p["fpr"] is not None and p["fnr"] is not None]
            if pts:
                ax.plot([p["fnr"] for p in pts], [p["fpr"] for p in pts], "o-", ms=3, color=colors[r["model"]],
                        label=r["model"])  # fmt: skip
                ax.annotate("B 0", (pts[0]["fnr"], pts[0]["fpr"]), fontsize=6)
        ax.set(title=f"{ds}: gate {t}+ (buffer 0..10)", xlabel="fnr (true [T, T+10) refused)",
               ylabel="fpr (true [T-5, T) passing)", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))  # fmt: skip
        ax.legend(fontsize=7)
    for ax in axes[len(pairs) :]:
        ax.set_visible(False)
    out["assurance_tradeoff"] = _png(fig)
    return out
