"""Critical-difference diagram: renders, labels every model and the CD, draws one bar per clique, never clips."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from agebench.report.cd_diagram import cd_diagram

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES_3 = ["convnext-atto", "vit-tiny", "hybrid (paper recipe)"]
RANKS_3 = [1.25, 2.0, 2.75]
# 30-character names: the longest the diagram promises to show unclipped.
NAMES_12 = [f"model-{i:02d}-" + "x" * 21 for i in range(12)]
RANKS_12 = [1.2, 2.0, 2.1, 3.5, 4.4, 5.0, 6.8, 7.7, 8.0, 9.9, 10.5, 11.9]
CLIQUES_12 = [(0, 1, 2, 3, 4), (2, 3, 4, 5, 6), (5, 6, 7, 8), (7, 8, 9, 10, 11), (10, 11), (0, 1)]


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text)]


def _lines(fig: Figure, gid: str) -> list:
    return [line for ax in fig.axes for line in ax.get_lines() if line.get_gid() == gid]


def _model_x(fig: Figure, i: int) -> float:
    """x of model i on the rank axis: where its elbow line leaves the axis."""
    (line,) = _lines(fig, f"model-{i}")
    return float(line.get_xdata()[0])


@pytest.mark.parametrize(
    ("names", "ranks", "cliques"),
    [(NAMES_3, RANKS_3, [(0, 1), (1, 2)]), (NAMES_12, RANKS_12, CLIQUES_12)],
    ids=["k3", "k12-long-names"],
)
def test_renders_png_with_every_label_the_cd_and_one_bar_per_clique(names, ranks, cliques) -> None:
    fig = cd_diagram(names, ranks, 2.345, cliques, "Nemenyi, alpha = 0.05\nMAE over 6 data sets")
    assert isinstance(fig, Figure)
    png = _png(fig)
    assert png[:8] == PNG_MAGIC and len(png) > 5_000
    texts = _texts(fig)
    for name, rank in zip(names, ranks, strict=True):
        assert f"{name} ({rank:.2f})" in texts
    assert "CD = 2.35" in texts
    assert "Nemenyi, alpha = 0.05\nMAE over 6 data sets" in texts
    assert [str(i) for i in range(1, len(names) + 1)] == [t for t in texts if t.isdigit()]
    assert len(_lines(fig, "clique")) == len(cliques)


def test_rank_one_is_left_and_each_clique_bar_spans_exactly_its_models() -> None:
    fig = cd_diagram(NAMES_12, RANKS_12, 4.8, CLIQUES_12, "k = 12")
    xs = [_model_x(fig, i) for i in range(12)]
    assert xs == sorted(xs) and xs[0] < xs[-1]  # ranks increase to the right
    bars = sorted(((min(b.get_xdata()), max(b.get_xdata())) for b in _lines(fig, "clique")), key=lambda s: s[1] - s[0])
    spans = sorted(((xs[min(c)], xs[max(c)]) for c in CLIQUES_12), key=lambda s: s[1] - s[0])
    for (left, right), (lo, hi) in zip(bars, spans, strict=True):
        assert left < lo and right > hi  # extends slightly past the joined ranks ...
        assert hi - lo < right - left < hi - lo + 0.5  # ... but only slightly (data units are inches)
        assert not any(left < x < right for x in xs if not lo <= x <= hi)  # and joins no other model


def test_overlapping_clique_bars_are_stacked_on_different_rows() -> None:
    fig = cd_diagram(NAMES_12, RANKS_12, 4.8, CLIQUES_12, "k = 12")
    bars = [(min(b.get_xdata()), max(b.get_xdata()), b.get_ydata()[0]) for b in _lines(fig, "clique")]
    for i, (l1, r1, y1) in enumerate(bars):
        for l2, r2, y2 in bars[i + 1 :]:
            if l1 <= r2 and l2 <= r1:
                assert y1 != y2
    assert len({y for _, _, y in bars}) >= 3  # (0..4), (2..6) and (0, 1) all overlap one another


@pytest.mark.parametrize("k", [2, 3, 12, 15])
def test_labels_stay_inside_the_figure_on_their_side(k: int) -> None:
    names = [f"{i:02d}-very-long-model-name-" + "y" * 6 for i in range(k)]  # 30 characters
    ranks = [1.0 + i for i in range(k)]
    fig = cd_diagram(names, ranks, 1.5, [tuple(range(k))], "a title\nwith two lines")
    renderer = FigureCanvasAgg(fig).get_renderer()
    box = fig.bbox
    axis_left, axis_right = _model_x(fig, 0), _model_x(fig, k - 1)
    for text in fig.findobj(Text):
        if not text.get_text():
            continue
        ext = text.get_window_extent(renderer)
        assert box.x0 <= ext.x0 and ext.x1 <= box.x1 and box.y0 <= ext.y0 and ext.y1 <= box.y1, text.get_text()
    to_px = fig.axes[0].transData.transform
    labels = {t.get_text(): t.get_window_extent(renderer) for t in fig.findobj(Text)}
    for i, (name, rank) in enumerate(zip(names, ranks, strict=True)):
        ext = labels[f"{name} ({rank:.2f})"]
        if i < (k + 1) // 2:
            assert ext.x1 < to_px((axis_left, 0))[0]  # better half: left margin
        else:
            assert ext.x0 > to_px((axis_right, 0))[0]  # worse half: right margin
    boxes = list(labels.values())
    for i, a in enumerate(boxes):
        assert not any(a.overlaps(b) for b in boxes[i + 1 :])  # no label, tick number, CD text or title collide


def test_builds_without_pyplot() -> None:
    code = (
        "import sys\nfrom agebench.report.cd_diagram import cd_diagram\n"
        "cd_diagram(['a', 'b', 'c'], [1.0, 2.0, 3.0], 1.0, [(0, 1)], 't')\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("names", "ranks", "cliques", "match"),
    [
        (["a", "b", "c"], [1.0, 2.0], [], "differ in length"),
        (["a"], [1.0], [], "at least 2"),
        ([], [], [], "at least 2"),
        (["a", "b", "c"], [1.0, 2.0, 3.0], [(0, 3)], "out of range"),
        (["a", "b", "c"], [1.0, 2.0, 3.0], [(1, 2), (-1, 0)], "out of range"),
    ],
)
def test_rejects_bad_input(names, ranks, cliques, match) -> None:
    with pytest.raises(ValueError, match=match):
        cd_diagram(names, ranks, 1.0, cliques, "t")
