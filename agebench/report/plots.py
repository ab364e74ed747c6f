"""Leaderboard plots as PNG bytes: CS@k curves, MAE by age group, MAE vs latency; one panel per data set;
and, across data sets, the critical-difference diagram of a Friedman + Nemenyi analysis.

Figures are built with ``matplotlib.figure.Figure`` (Agg, no pyplot): no global state, no display needed, safe in
tests and on headless servers. Only measured rows that ran ("ok") are plotted; the paper's hybrid appears as a
marked reference point in the latency plot, where it publishes a latency. Error bars and bands are the rows'
bootstrap intervals (agebench.report.significance), so two models whose bars overlap widely are not ranked.
"""

from __future__ import annotations

import io
import math
import statistics
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from agebench.atomic import atomic_open
from agebench.report.leaderboard import Row
from agebench.report.reference import PAPER

if TYPE_CHECKING:
    from agebench.report.significance import Analysis

PLOT_NAMES = ("cs_curves", "mae_by_age_group", "mae_vs_latency", "cd_diagram")
_PNG_METADATA = {"Software": None}  # no version string in the file: same inputs, same bytes


def _measured(rows: list[Row]) -> dict[str, list[Row]]:
    """Successful measured rows per data set, in leaderboard order."""
    out: dict[str, list[Row]] = {}
    for row in rows:
        if row.status == "ok":
            out.setdefault(row.dataset, []).append(row)
    return out


def _label(row: Row) -> str:
    origin = f" ({row.origin})" if row.origin else ""  # a merged leaderboard: the same model from two sources
    return row.model + origin + (f" [{', '.join(row.flags)}]" if row.flags else "")


def _colors(rows: list[Row]) -> dict[str, tuple]:
    """One colour per measured model across every panel and figure, so a model is recognisable everywhere."""
    from matplotlib import colormaps

    names = sorted({r.model for r in rows if r.status == "ok"})
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _panels(n: int, title: str, height: float = 4.2) -> tuple[Figure, list]:
    cols = min(n, 2)
    nrows = math.ceil(n / cols)
    fig = Figure(figsize=(6.4 * cols, height * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=13)
    return fig, axes[:n]


def _flagged(row: Row) -> bool:
    """Flagged rows (leaky, not subject-exclusive, unverified) are drawn dashed / hatched / hollow."""
    return bool(row.flags)


def _devices(rows: list[Row]) -> str:
    devices = sorted({c.device for r in rows for c in r.cells if c.device})
    return "; ".join(devices) if devices else "device not recorded"


def cs_curves(rows: list[Row]) -> Figure | None:
    """CS@k (share of test images with |error| <= k years) for k = 1..10, mean over seeds."""
    by_dataset = _measured(rows)
    if not by_dataset:
        return None
    colors = _colors(rows)
    title = "Cumulative score CS@k (mean over seeds; higher is better)\nbands: bootstrap confidence interval"
    fig, axes = _panels(len(by_dataset), title)
    for ax, (dataset, members) in zip(axes, by_dataset.items(), strict=True):
        for row in members:
            curves = [c.metrics.get("cs") or {} for c in row.cells]
            ks = sorted({int(k) for cs in curves for k in cs})
            ys = [statistics.fmean(float(cs[str(k)]) for cs in curves if str(k) in cs) for k in ks]
            if row.interval is not None and ks:
                band = [row.interval.cs.get(k, (y, y)) for k, y in zip(ks, ys, strict=True)]
                ax.fill_between(ks, [b[0] for b in band], [b[1] for b in band], color=colors[row.model], alpha=0.15)
            ax.plot(
                ks,
                ys,
                marker="o",
                label=f"{_label(row)} (n={len(row.cells)})",
                color=colors[row.model],
                linestyle="--" if _flagged(row) else "-",
            )
        ax.set_title(f"data set: {dataset}")
        ax.set_xlabel("k (years of absolute error)")
        ax.set_ylabel("CS@k (share of test images)")
        ax.set_xticks(range(1, 11))
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    return fig


def _group_start(name: str) -> int:
    return int(name.split("-")[0].rstrip("+"))


def mae_by_age_group(rows: list[Row]) -> Figure | None:
    """Grouped bars: MAE per decade of true age for each model, mean over seeds; shows where models fail."""
    by_dataset = _measured(rows)
    if not by_dataset:
        return None
    colors = _colors(rows)
    fig, axes = _panels(len(by_dataset), "MAE by true-age group (mean over seeds; lower is better)")
    for ax, (dataset, members) in zip(axes, by_dataset.items(), strict=True):
        tables = [[c.metrics.get("mae_by_age_group") or {} for c in row.cells] for row in members]
        groups = sorted({g for table in tables for per_cell in table for g in per_cell}, key=_group_start)
        width = 0.8 / max(len(members), 1)
        for i, (row, table) in enumerate(zip(members, tables, strict=True)):
            xs, ys = [], []
            for j, group in enumerate(groups):
                values = [float(t[group]["mae"]) for t in table if group in t]
                if values:
                    xs.append(j - 0.4 + width * (i + 0.5))
                    ys.append(statistics.fmean(values))
            ax.bar(
                xs,
                ys,
                width=width,
                label=_label(row),
                color=colors[row.model],
                edgecolor="black",
                linewidth=0.4,
                hatch="//" if _flagged(row) else None,
            )
        counts = {
            g: max((int(t[g].get("n", 0)) for table in tables for t in table if g in t), default=0) for g in groups
        }
        ax.set_xticks(range(len(groups)), [f"{g}\n(n={counts[g]})" for g in groups], fontsize=8)
        ax.set_title(f"data set: {dataset}")
        ax.set_xlabel("true age (years); n = test images in the group")
        ax.set_ylabel("MAE (years)")
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.25)  # headroom so the legend sits above the bars
        ax.legend(fontsize=8, loc="upper center", ncol=min(len(members), 3))
    return fig


def mae_vs_latency(rows: list[Row]) -> Figure | None:
    """Accuracy against batch-1 latency; marker area follows the parameter count."""
    by_dataset = _measured(rows)
    if not by_dataset:
        return None
    colors = _colors(rows)
    measured = [r for members in by_dataset.values() for r in members]
    devices = textwrap.fill(f"timed on: {_devices(measured)}", width=70 * min(len(by_dataset), 2))
    title = f"MAE vs inference latency (batch 1, median after warmup; bars: MAE CI)\n{devices}"
    fig, axes = _panels(len(by_dataset), title)
    for ax, (dataset, members) in zip(axes, by_dataset.items(), strict=True):
        xs = []
        for row in members:
            if row.latency_ms is None:
                continue
            size = min(30 + 5 * (row.params_m or 0.0), 900)
            face = "none" if _flagged(row) else colors[row.model]
            if row.interval is not None:
                low, high = row.interval.mae
                ax.errorbar(
                    [row.latency_ms],
                    [row.mae_mean],
                    yerr=[[max(row.mae_mean - low, 0.0)], [max(high - row.mae_mean, 0.0)]],
                    color=colors[row.model],
                    capsize=4,
                    linewidth=1.2,
                    zorder=1,
                )
            ax.scatter(
                [row.latency_ms],
                [row.mae_mean],
                s=size,
                facecolors=face,
                edgecolors=colors[row.model],
                linewidths=1.5,
                alpha=0.85,
                label=f"{_label(row)}, {row.params_m or 0:.2f} M params",
            )
            ax.annotate(
                row.model + (f" ({row.origin})" if row.origin else ""),
                (row.latency_ms, row.mae_mean),
                textcoords="offset points",
                xytext=(6, 6),
                fontsize=8,
            )
            xs.append(row.latency_ms)
        for ref in (r for r in rows if r.dataset == dataset and r.status == "reference" and r.latency_ms):
            ax.scatter(
                [ref.latency_ms],
                [ref.mae_mean],
                marker="*",
                s=220,
                color="black",
                label=f"paper {ref.model} ({PAPER}), {ref.params_m:.2f} M params, authors' hardware",
            )
            ax.annotate(
                f"paper {ref.model}",
                (ref.latency_ms, ref.mae_mean),
                textcoords="offset points",
                xytext=(6, -12),
                fontsize=8,
            )
            xs.append(ref.latency_ms)
        if xs and max(xs) / max(min(xs), 1e-9) > 20:
            ax.set_xscale("log")
        if not xs:
            ax.text(0.5, 0.5, "no latency recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"data set: {dataset} (marker area ~ parameters)")
        ax.set_xlabel("latency per image at batch 1 (ms)")
        ax.set_ylabel("MAE (years, mean over seeds)")
        ax.grid(alpha=0.3)
        if xs:
            ax.margins(x=0.15, y=0.15)
            legend = ax.legend(fontsize=7, loc="best")
            for handle in legend.legend_handles:  # same marker size in the legend whatever the parameter count
                if hasattr(handle, "set_sizes"):
                    handle.set_sizes([50])
    return fig


def critical_difference(analysis: Analysis | None) -> Figure | None:
    """The Nemenyi critical-difference diagram of the Friedman analysis, when there is one."""
    f = analysis.friedman if analysis is not None else None
    if f is None:
        return None
    from agebench.report.cd_diagram import cd_diagram

    verdict = "differ" if f.result.pvalue < f.alpha else "do not differ significantly"
    title = (
        f"Average rank of MAE over {len(f.datasets)} data sets (1 = best); bars join models closer than the CD\n"
        f"Friedman p = {f.result.pvalue:.3g}: the models {verdict} (alpha {f.alpha:g}); Nemenyi CD = {f.cd:.2f}"
    )
    return cd_diagram(f.models, [float(r) for r in f.result.avg_ranks], f.cd, f.cliques, title)


def cross_matrix(rows: list[Row]) -> Figure | None:
    """The cross-dataset heat maps (agebench.report.matrix), when any cell predicted another data set."""
    from agebench.report.matrix import build_matrices, matrix_figure

    matrices = build_matrices(rows, with_ci=False)
    return matrix_figure(matrices) if matrices else None


PLOTTERS: dict[str, Callable[[list[Row]], Figure | None]] = {
    "cs_curves": cs_curves,
    "mae_by_age_group": mae_by_age_group,
    "mae_vs_latency": mae_vs_latency,
    "cross_matrix": cross_matrix,
}


def render_plots(rows: list[Row], analysis: Analysis | None = None, dpi: int = 100) -> dict[str, bytes]:
    """Every plot that has data, as PNG bytes keyed by name (nothing to plot when no cell succeeded)."""
    out = {}
    figures = {name: plot(rows) for name, plot in PLOTTERS.items()}
    figures["cd_diagram"] = critical_difference(analysis)
    for name, fig in figures.items():
        if fig is None:
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, metadata=_PNG_METADATA)
        out[name] = buf.getvalue()
    return out


def write_plots(pngs: dict[str, bytes], folder: str | Path) -> list[Path]:
    """``<folder>/<name>.png`` for each rendered plot, written atomically."""
    paths = []
    for name, data in pngs.items():
        path = Path(folder) / f"{name}.png"
        with atomic_open(path, "wb") as fh:
            fh.write(data)
        paths.append(path)
    return paths
