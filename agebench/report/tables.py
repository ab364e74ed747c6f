"""The leaderboard as Markdown and JSON documents, and the pairwise table: rows (agebench.report.leaderboard) with
their statistics (agebench.report.significance), so this module sits above both and neither imports the other.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agebench.report.factors import effects, factors_markdown
from agebench.report.leaderboard import DISPLAY_COLUMNS, FLAG_HELP, FORMAT_VERSION, Row, _round, cell_record, format_p
from agebench.report.reference import SOURCE
from agebench.report.results import Cell, provenance_summary
from agebench.report.significance import row_label

if TYPE_CHECKING:
    from agebench.report.significance import Analysis


@dataclass(frozen=True)
class Ablation:
    """A row that ablates another (``model.ablation_of``) and their paired comparison, if the two could be paired.

    ``delta`` is MAE(full) - MAE(ablation): negative when the component the ablation removes helps.
    """

    dataset: str
    full: str
    ablation: str
    delta: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    p_holm: float | None = None
    level: float | None = None
    reason: str | None = None  # why there is no comparison

    def text(self) -> str:
        head = f"{self.dataset}: {self.full} - {self.ablation} (its ablation)"
        if self.delta is None or self.ci is None:
            return f"{head}: not compared ({self.reason})"
        # The table's own rule (Holm-adjusted paired test at alpha = 1 - level), so the two never disagree; a
        # bootstrap interval that just excludes 0 beside p >= alpha is not called an effect.
        alpha = 1.0 - (self.level if self.level is not None else 0.95)
        resolved = self.p_holm is not None and self.p_holm < alpha
        helps = "no resolved effect" if not resolved else "the removed part helps" if self.delta < 0 else "hurts"
        return (
            f"{head} = {self.delta:+.2f} years, {self.level:.0%} CI [{self.ci[0]:+.2f}, {self.ci[1]:+.2f}], "
            f"p {format_p(self.p_value)} (Holm {format_p(self.p_holm)}): {helps}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "full": self.full,
            "ablation": self.ablation,
            "delta_mae": _round(self.delta),
            "ci_low": _round(self.ci[0]) if self.ci else None,
            "ci_high": _round(self.ci[1]) if self.ci else None,
            "p_value": _round(self.p_value),
            "p_holm": _round(self.p_holm),
            "level": self.level,
            "reason": self.reason,
        }


def ablations(rows: list[Row], analysis: Analysis | None) -> list[Ablation]:
    """Every measured row that names the row it ablates, with their paired test from ``analysis``."""
    out = []
    for row in rows:
        if row.status != "ok" or not row.ablation_of:
            continue
        full = next(
            (
                r
                for r in rows
                if (r.dataset, r.origin, r.table) == (row.dataset, row.origin, row.table)
                and r.model == row.ablation_of
                and r.status == "ok"
            ),
            None,
        )
        if full is None:
            out.append(Ablation(row.dataset, row.ablation_of, row.model, reason="no finished row of that name"))
            continue
        comp = analysis.datasets.get(row.table or row.dataset) if analysis else None
        a, b = row_label(full), row_label(row)
        pair = comp.pair(a, b) if comp else None
        sign = 1.0
        if comp and pair is None:
            pair, sign = comp.pair(b, a), -1.0
        if pair is None:
            out.append(Ablation(row.dataset, full.model, row.model, reason="the two rows could not be paired"))
            continue
        lo, hi = sorted((sign * pair.ci_low, sign * pair.ci_high))
        out.append(
            Ablation(
                row.dataset,
                full.model,
                row.model,
                delta=sign * pair.delta,
                ci=(lo, hi),
                p_value=pair.p_value,
                p_holm=pair.p_holm,
                level=pair.level,
            )  # fmt: skip
        )
    return out


def to_json(
    rows: list[Row],
    cells: list[Cell],
    analysis: Analysis | None = None,
    cross: dict[str, Any] | None = None,
    assurance: list[dict[str, Any]] | None = None,
) -> str:
    """``cross``: the cross-dataset matrices (agebench.report.matrix.to_dict), when any cell has them;
    ``assurance``: the rows' age-assurance records (agebench.report.assurance), key absent when not given."""
    doc = {
        "format": "agebench-leaderboard",
        "format_version": FORMAT_VERSION,
        "reference": SOURCE,
        "rows": [r.to_dict() for r in rows],
        "ablations": [a.to_dict() for a in ablations(rows, analysis)],
        "factor_effects": [e.to_dict() for e in effects(rows, analysis)],
        "statistics": analysis.to_dict() if analysis else None,
        "cross_matrix": cross,
        "unpooled": unpooled(cells),
        "cells": [cell_record(c) for c in cells],
    }
    if assurance is not None:
        doc["assurance"] = assurance
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def unpooled(cells: list[Cell]) -> list[dict[str, Any]]:
    """Cells of a merged leaderboard kept out of their data set's table (another test split), with the reason."""
    return [
        {"cell": c.rel, "origin": c.origin, "dataset": c.dataset, "table": c.split_table, "reason": c.split_note}
        for c in cells
        if c.split_note
    ]


def sources_markdown(cells: list[Cell]) -> list[str]:
    """A merged leaderboard's sources and the cells not pooled; nothing for a single results folder."""
    origins = list(dict.fromkeys(c.origin for c in cells if c.origin))
    if not origins:
        return []
    lines = ["## Sources", ""]
    for origin in origins:
        mine = [c for c in cells if c.origin == origin]
        where = next((c.bundle for c in mine if c.bundle), None)
        lines.append(
            f"- **{_md_cell(origin)}**: {len(mine)} cell(s)" + (f", bundle `{Path(where).name}`" if where else "")
        )
    lines.append("")
    found = unpooled(cells)
    if found:
        lines += ["## Not pooled: other test splits", ""]
        lines += [f"- {_md_cell(u['cell'])} (table *{_md_cell(u['table'])}*): {_md_cell(u['reason'])}" for u in found]
        lines.append("")
    return lines


# The pairwise table (pairwise.csv and the Markdown / terminal section): one row per compared pair.
PAIR_COLUMNS = [
    "dataset", "a", "b", "n_images", "n_seeds", "unit", "n_units", "mae_a", "mae_b", "delta_mae", "ci_low",
    "ci_high", "p_value", "p_holm", "verdict",
]  # fmt: skip


def pairs_csv(analysis: Analysis) -> str:
    """Every compared pair of every data set, with its Holm-adjusted p-value and verdict."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=PAIR_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for comp in analysis.datasets.values():
        for pair in comp.pairs:
            writer.writerow({**pair.to_dict(), "verdict": pair.verdict(analysis.config.alpha)})
    return buf.getvalue()


def _md_cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def statistics_markdown(analysis: Analysis, cd_link: str | None = None) -> list[str]:
    """Per data set: what the groups say, then every pair; then the Friedman / Nemenyi analysis or why not."""
    alpha, level = analysis.config.alpha, analysis.config.level
    lines = ["## Paired comparisons", ""]
    for comp in analysis.datasets.values():
        lines += [f"**{_md_cell(comp.summary(alpha))}**", ""]
        if comp.pairs:
            lines += [
                f"| a | b | images (units) | seeds | MAE a | MAE b | a - b | {level:.0%} CI | p | p (Holm) | verdict |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for p in comp.pairs:
                cells = [
                    p.a, p.b, f"{p.n_images} ({p.n_units} {p.unit})", str(len(p.seeds)), f"{p.mae_a:.2f}",
                    f"{p.mae_b:.2f}", f"{p.delta:+.2f}", f"[{p.ci_low:+.2f}, {p.ci_high:+.2f}]", format_p(p.p_value),
                    format_p(p.p_holm), p.verdict(alpha),
                ]  # fmt: skip
                lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
            lines.append("")
        for r in comp.refused:
            lines.append(f"- not compared: {_md_cell(r['a'])} vs {_md_cell(r['b'])}: {_md_cell(r['reason'])}")
        if comp.refused:
            lines.append("")
    lines += ["## Across data sets", "", _md_cell(analysis.friedman_note), ""]
    f = analysis.friedman
    if f is not None:
        lines += ["| model | average rank | " + " | ".join(f"MAE {d}" for d in f.datasets) + " |"]
        lines += ["|---|---|" + "---|" * len(f.datasets)]
        for j in sorted(range(len(f.models)), key=lambda j: f.result.avg_ranks[j]):
            maes = " | ".join(f"{f.mae[i][j]:.2f}" for i in range(len(f.datasets)))
            lines.append(f"| {_md_cell(f.models[j])} | {f.result.avg_ranks[j]:.2f} | {maes} |")
        lines.append("")
        if cd_link:
            lines += [f"![critical-difference diagram]({cd_link})", ""]
    return lines


def to_markdown(
    rows: list[Row], cells: list[Cell], analysis: Analysis | None = None, cd_link: str | None = None
) -> str:
    """The table, then what the flags and timings mean, warnings, and a provenance footer (no clock time)."""
    lines = ["# agebench leaderboard", ""]
    lines.append("| " + " | ".join(h for _, h in DISPLAY_COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in DISPLAY_COLUMNS) + "|")
    for row in rows:
        text = row.display()
        lines.append("| " + " | ".join(_md_cell(text[k]) for k, _ in DISPLAY_COLUMNS) + " |")
    lines += [
        "",
        "MAE is the mean over seeds ± the sample standard deviation (ddof=1, from two seeds on); "
        "CS@5 is the share of test images within 5 years, averaged over seeds. Latency is the median at "
        "batch 1 after warmup; throughput is inference images/s at the benchmark batch; both on the device "
        "named under *timed on*.",
        f"Rows marked *{SOURCE}* are the published figures, not measured here; the paper gives parameters "
        "and latency for the hybrid only, timed on the authors' hardware.",
        "",
    ]
    if analysis is not None:
        lines[-1:-1] = ["", analysis.legend()]
        lines += [f"- {_md_cell(c.summary(analysis.config.alpha))}" for c in analysis.datasets.values()] + [""]
    found = ablations(rows, analysis)
    if found:
        lines += ["## Ablations", ""] + [f"- {_md_cell(a.text())}" for a in found] + [""]
    lines += factors_markdown(rows, analysis)
    used = sorted({f for r in rows for f in r.flags})
    if used:
        lines += ["## Flags", ""] + [f"- **{f}**: {FLAG_HELP[f]}" for f in used] + [""]
    lines += sources_markdown(cells)
    warnings = [w for r in rows for w in r.warnings]
    if warnings:
        lines += ["## Warnings", ""] + [f"- {_md_cell(w)}" for w in warnings] + [""]
    if analysis is not None:
        lines += statistics_markdown(analysis, cd_link)
    prov = provenance_summary(cells)
    if prov:
        lines += ["## Provenance", ""] + [f"- {k}: {', '.join(v)}" for k, v in prov.items()] + [""]
    return "\n".join(lines)
