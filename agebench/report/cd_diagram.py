"""Critical-difference diagram: average ranks of models over data sets, and the groups a Nemenyi test cannot split.

After a Friedman test rejects "all models are equal", the Nemenyi post-hoc test says two models differ when their
average ranks differ by more than the critical difference CD. The diagram (Demšar 2006, "Statistical comparisons of
classifiers over multiple data sets", JMLR 7:1-30, Fig. 1-2) puts every model on a rank axis (1 = best, on the left),
shows a bar of length CD for scale, and joins models that are not significantly different with a thick bar.

Layout is done in inches (one axes filling the figure, data units = inches) so that label widths, measured with the
Agg renderer, decide the margins: long model names are never clipped, whatever k is.
"""

from __future__ import annotations

import math

from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

_LABEL_PT = 10
_TITLE_PT = 12
_LEVEL_IN = 0.26  # vertical step between model labels: a 10 pt line plus air
_CLIQUE_STEP_IN = 0.11  # vertical step between stacked clique bars
_CLIQUE_EXTEND_IN = 0.06  # a bar runs this far past the ranks it joins, so a clique of tied ranks is still visible
_CLIQUE_GAP_IN = 0.06  # bars closer than this in x go on different rows, so they never touch


def _text_width_in(text: str, size: float) -> float:
    """Width of one line of text in inches, as Agg draws it (72 dpi: pixels are points)."""
    renderer = RendererAgg(1, 1, 72)
    width, _, _ = renderer.get_text_width_height_descent(text, FontProperties(size=size), ismath=False)
    return width / 72


def _stack(spans: list[tuple[float, float]]) -> list[int]:
    """Row of each bar, first fit by left end: bars on one row never overlap, and no more rows than needed."""
    rows: list[float] = []  # right end of the last bar on each row
    out = [0] * len(spans)
    for i in sorted(range(len(spans)), key=lambda j: spans[j]):
        left, right = spans[i]
        row = next((r for r, end in enumerate(rows) if end + _CLIQUE_GAP_IN < left), len(rows))
        if row == len(rows):
            rows.append(right)
        rows[row] = right
        out[i] = row
    return out


def cd_diagram(
    names: list[str], avg_ranks: list[float], cd: float, cliques: list[tuple[int, ...]], title: str
) -> Figure:
    """Demšar's critical-difference diagram; the caller saves it (``fig.savefig``), nothing global is touched.

    ``cliques`` are tuples of indices into ``names`` of models not significantly different from each other; each is
    drawn as one thick bar below the axis (Line2D gid ``"clique"``). The better half of the models (by rank) is
    labelled on the left margin, the worse half on the right, each with ``"name (average rank)"``; model i's elbow
    line has gid ``"model-i"``, which also names it in SVG output.
    """
    k = len(names)
    if len(avg_ranks) != k:
        raise ValueError(f"names and avg_ranks differ in length: {k} names, {len(avg_ranks)} ranks")
    if k < 2:
        raise ValueError(f"a critical-difference diagram needs at least 2 models, got {k}")
    for clique in cliques:
        bad = [i for i in clique if not 0 <= i < k]
        if bad:
            raise ValueError(f"clique {tuple(clique)} has indices out of range for {k} models: {bad}")

    labels = [f"{name} ({rank:.2f})" for name, rank in zip(names, avg_ranks, strict=True)]
    order = sorted(range(k), key=lambda i: (avg_ranks[i], i))
    n_left = math.ceil(k / 2)
    left, right = order[:n_left], order[n_left:][::-1]  # outermost rank gets the top level on each side

    # Horizontal: label margins sized to the longest label, axis at least 0.35 in per rank step, width ~8 in.
    margin = max(_text_width_in(s, _LABEL_PT) for s in labels) + 0.45
    title_lines = title.split("\n")
    title_w = max(_text_width_in(line, _TITLE_PT) for line in title_lines) + 0.4
    width = max(8.0, 2 * margin + max(3.5, 0.35 * (k - 1)), title_w)
    x0, x1 = margin, width - margin

    def x(rank: float) -> float:
        return x0 + (rank - 1) / (k - 1) * (x1 - x0)

    # Vertical, top down: title, CD bar, tick labels, axis, clique bars, model levels.
    y_title = 0.15
    y_cd = y_title + 0.22 * len(title_lines) + 0.4
    y_axis = y_cd + 0.45

    def span(clique: tuple[int, ...]) -> tuple[float, float]:
        """Bar ends: past the outer members, but at most halfway to a non-member, so a near-tie is not joined."""
        lo, hi = x(min(avg_ranks[i] for i in clique)), x(max(avg_ranks[i] for i in clique))
        others = [x(avg_ranks[i]) for i in range(k) if i not in clique]
        room_left = min((lo - o for o in others if o < lo), default=math.inf)
        room_right = min((o - hi for o in others if o > hi), default=math.inf)
        return lo - min(_CLIQUE_EXTEND_IN, room_left / 2), hi + min(_CLIQUE_EXTEND_IN, room_right / 2)

    spans = [span(c) for c in cliques]
    rows = _stack(spans)
    n_rows = max(rows, default=-1) + 1
    y_first_level = y_axis + 0.2 + n_rows * _CLIQUE_STEP_IN + 0.1
    height = y_first_level + (n_left - 1) * _LEVEL_IN + 0.25

    fig = Figure(figsize=(width, height), layout=None)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # y grows downward, in inches from the top
    ax.set_axis_off()
    line = {"color": "black", "linewidth": 1.0, "solid_capstyle": "butt"}

    ax.text(width / 2, y_title, title, ha="center", va="top", fontsize=_TITLE_PT, parse_math=False)

    # Axis with integer ticks (labelled, above the axis as in Demšar) and shorter half-rank ticks.
    ax.plot([x0, x1], [y_axis, y_axis], **line)
    for step in range(2 * (k - 1) + 1):
        rank = 1 + step / 2
        tick = 0.1 if step % 2 == 0 else 0.05
        ax.plot([x(rank), x(rank)], [y_axis, y_axis - tick], **line)
        if step % 2 == 0:
            ax.text(x(rank), y_axis - 0.13, str(int(rank)), ha="center", va="bottom", fontsize=_LABEL_PT)

    # CD bar, starting at rank 1, with end ticks; its length is in rank units like everything on the axis.
    cd_end = x0 + cd / (k - 1) * (x1 - x0)
    ax.plot([x0, cd_end], [y_cd, y_cd], **line)
    for end in (x0, cd_end):
        ax.plot([end, end], [y_cd - 0.05, y_cd + 0.05], **line)
    ax.text((x0 + cd_end) / 2, y_cd - 0.07, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=_LABEL_PT)

    # Each model: down from its rank to its level, then out to its label on the margin.
    for side, members in (("left", left), ("right", right)):
        for level, i in enumerate(members):
            y = y_first_level + level * _LEVEL_IN
            end = x0 - 0.15 if side == "left" else x1 + 0.15
            ax.plot([x(avg_ranks[i]), x(avg_ranks[i]), end], [y_axis, y, y], gid=f"model-{i}", **line)
            text_x = end - 0.05 if side == "left" else end + 0.05
            ha = "right" if side == "left" else "left"
            ax.text(text_x, y, labels[i], ha=ha, va="center", fontsize=_LABEL_PT, parse_math=False)

    # Cliques: thick bars under the axis, crossing the vertical lines of the models they join.
    for (start, stop), row in zip(spans, rows, strict=True):
        y = y_axis + 0.2 + row * _CLIQUE_STEP_IN
        ax.plot([start, stop], [y, y], color="black", linewidth=3.5, solid_capstyle="butt", gid="clique")
    return fig
