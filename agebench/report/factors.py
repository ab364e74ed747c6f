"""Factor studies on the leaderboard: a model's grid variants grouped, their factors as columns, each factor's
main effect, and the paired tests of the variants that differ in that factor alone (agebench 0.6, issue 24).

Rows come from agebench.report.leaderboard (``Row.variant_of``, ``Row.factors``), the paired tests from the
analysis agebench.report.significance already ran over every pair of a data set's rows (Holm over that table), so
this module computes no statistic of its own: a main effect is the mean of row MAEs at one level of a factor,
averaged over the levels of the others (the balanced-design marginal mean; descriptive, not a test).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agebench.report.leaderboard import Row, _round, format_p, tuning_text
from agebench.report.significance import row_label

if TYPE_CHECKING:
    from agebench.report.significance import Analysis


@dataclass(frozen=True)
class FactorEffect:
    """One factor of one study: the mean MAE at each level and the pairs that differ in this factor alone."""

    dataset: str
    study: str  # the model entry the variants vary (variant_of)
    factor: str
    level_mae: dict[str, float]  # level (as text) -> mean MAE over the study's rows at that level
    pairs: list[dict[str, Any]]  # {"a", "b", "delta", "p_holm", "verdict"} from the analysis

    @property
    def spread(self) -> float:
        """max - min of the level means: how far this factor moved the MAE."""
        return max(self.level_mae.values()) - min(self.level_mae.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "study": self.study,
            "factor": self.factor,
            "level_mae": {k: _round(v) for k, v in self.level_mae.items()},
            "spread": _round(self.spread),
            "pairs": self.pairs,
        }


def studies(rows: list[Row]) -> dict[tuple[str, str], list[Row]]:
    """(data set, variant_of) -> its measured rows, in leaderboard order."""
    out: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        if row.variant_of and row.factors:
            out.setdefault((row.dataset, row.variant_of), []).append(row)
    return out


def _level(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


def effects(rows: list[Row], analysis: Analysis | None) -> list[FactorEffect]:
    """Every factor of every study, with its level means and its one-factor paired comparisons."""
    out = []
    for (dataset, study), members in studies(rows).items():
        ok = [r for r in members if r.status == "ok" and r.mae_mean is not None]
        keys = list(dict.fromkeys(k for r in members for k in r.factors))
        comp = analysis.datasets.get(dataset) if analysis else None
        alpha = analysis.config.alpha if analysis else 0.05
        for key in keys:
            levels: dict[str, list[float]] = {}
            for r in ok:
                levels.setdefault(_level(r.factors.get(key)), []).append(float(r.mae_mean))
            if len(levels) < 2:
                continue
            pairs = []
            for i, a in enumerate(ok):
                for b in ok[i + 1 :]:
                    others = [k for k in keys if k != key]
                    if a.factors.get(key) == b.factors.get(key) or any(
                        a.factors.get(k) != b.factors.get(k) for k in others
                    ):
                        continue
                    pair = (
                        (comp.pair(row_label(a), row_label(b)) or comp.pair(row_label(b), row_label(a)))
                        if comp
                        else None
                    )
                    pairs.append(
                        {
                            "a": a.model,
                            "b": b.model,
                            "delta_mae": _round(float(a.mae_mean) - float(b.mae_mean)),
                            "p_holm": _round(pair.p_holm) if pair else None,
                            "verdict": pair.verdict(alpha) if pair else "not compared",
                        }
                    )
            level_mae = {lv: statistics.fmean(v) for lv, v in levels.items()}
            out.append(FactorEffect(dataset, study, key, level_mae, pairs))
    return out


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def factors_markdown(rows: list[Row], analysis: Analysis | None) -> list[str]:
    """The "Factor studies" section: per study a table (factors as columns), then each factor's effect."""
    found = studies(rows)
    if not found:
        return []
    lines = ["## Factor studies", ""]
    all_effects = effects(rows, analysis)
    for (dataset, study), members in found.items():
        keys = list(dict.fromkeys(k for r in members for k in r.factors))
        lines += [f"**{_md(dataset)}: {_md(study)}** ({len(members)} variants)", ""]
        lines.append("| variant | " + " | ".join(_md(k) for k in keys) + " | tuning | trainable (M) | MAE | rank |")
        lines.append("|---|" + "---|" * len(keys) + "---|---|---|---|")
        for r in members:
            d = r.to_dict()
            mae = r.display()["mae"]
            trainable = "" if d["trainable_params_m"] is None else f"{d['trainable_params_m']:.3f}"
            values = " | ".join(_md(_level(r.factors.get(k, ""))) for k in keys)
            tuning = tuning_text(r.tuning) or ""
            lines.append(f"| {_md(r.model)} | {values} | {tuning} | {trainable} | {_md(mae)} | {r.rank or ''} |")
        lines.append("")
        mine = sorted((e for e in all_effects if (e.dataset, e.study) == (dataset, study)), key=lambda e: -e.spread)
        for e in mine:
            means = ", ".join(f"{lv}: {m:.2f}" for lv, m in e.level_mae.items())
            tests = "; ".join(
                f"{p['a']} - {p['b']} = {p['delta_mae']:+.2f} (Holm p {format_p(p['p_holm'])}, {p['verdict']})"
                for p in e.pairs
            )
            lines.append(
                f"- {_md(e.factor)}: mean MAE {means}; spread {e.spread:.2f}" + (f". {_md(tests)}" if tests else "")
            )
        if mine:
            lines.append(f"- moved MAE most: **{_md(mine[0].factor)}** (spread {mine[0].spread:.2f} years)")
        lines.append("")
    return lines
