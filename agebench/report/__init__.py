"""Reporting: read result cells and publish the leaderboard (md / csv / json / html + PNG plots).

The leaderboard modules (results, reference, leaderboard, plots, html) read result files only and never import
training code (torch, Lightning, agebench.models, agebench.train): results copied off a cluster can be reported
anywhere. This package's import stays light for that reason; matplotlib loads only when plots are drawn.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from agebench.atomic import write_text
from agebench.errors import UserError
from agebench.report import assurance
from agebench.report import matrix as cross
from agebench.report.folds import load_cells
from agebench.report.leaderboard import Row, build_rows, to_csv
from agebench.report.results import Cell
from agebench.report.significance import Analysis, StatsConfig, analyse
from agebench.report.sources import load_sources
from agebench.report.tables import pairs_csv, to_json, to_markdown

FORMATS = ("md", "csv", "json", "html", "all")
_SUFFIX = {".md": "md", ".csv": "csv", ".json": "json", ".html": "html", ".htm": "html"}

__all__ = [
    "FORMATS",
    "Analysis",
    "Built",
    "Cell",
    "Row",
    "StatsConfig",
    "build_leaderboard",
    "build_rows",
    "load_cells",
]


@dataclass
class Built:
    """What a leaderboard build produced: the rows, the cells they came from, files written or text to print."""

    rows: list[Row]
    cells: list[Cell]
    analysis: Analysis
    matrices: list[cross.Matrix] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    text: str | None = None
    assurance: list[dict] = field(default_factory=list)  # one age-assurance record per measured row


def _markdown(
    rows: list[Row],
    cells: list[Cell],
    analysis: Analysis,
    matrices: list[cross.Matrix],
    cd_link=None,
    records: list[dict] | None = None,
    plots_dir: str | None = None,
):
    text = to_markdown(rows, cells, analysis, cd_link)
    text += "\n" + cross.to_markdown(matrices) if matrices else ""
    section = assurance.summary_markdown(records or [], plots_dir)
    return text + ("\n" + "\n".join(section) if section else "")


def _render(
    fmt: str,
    rows: list[Row],
    cells: list[Cell],
    analysis: Analysis,
    base: Path,
    matrices: list[cross.Matrix],
    records: list[dict] | None = None,
) -> str:
    if fmt == "md":
        return _markdown(rows, cells, analysis, matrices, records=records)
    if fmt == "csv":
        return to_csv(rows)
    if fmt == "json":
        return to_json(rows, cells, analysis, cross.to_dict(matrices) if matrices else None, records)
    from agebench.report.html import render_html
    from agebench.report.plots import render_plots

    section = assurance.html_section(records or [], assurance.render_plots(records or []))
    return render_html(rows, cells, render_plots(rows, analysis), base, analysis, matrices, section)


def _matrix_files(matrices: list[cross.Matrix]) -> list[tuple[str, str]]:
    return [
        ("matrix.md", cross.to_markdown(matrices, "#")),
        ("matrix.csv", cross.to_csv(matrices)),
        ("matrix.json", cross.to_json(matrices)),
    ]


def _render_matrix(fmt: str, matrices: list[cross.Matrix]) -> str:
    renderers = {"md": cross.to_markdown, "csv": cross.to_csv, "json": cross.to_json}
    if fmt not in renderers:
        raise UserError(f"--matrix writes md, csv or json, not {fmt}")
    return renderers[fmt](matrices)


def resolve_target(results_dir: Path | None, out: str | Path | None, fmt: str | None) -> tuple[str, Path | None]:
    """(format, path). ``out`` is a folder, which gets every format, when it is one, ends with a slash, or has no
    suffix while no format is given; otherwise a file whose suffix picks the format unless ``fmt`` does.
    ``results_dir``: the one results folder (None for several sources or a bundle, which have no default)."""
    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if out is None:
        if fmt == "html":
            raise UserError("--format html needs --out (a .html file or a folder)")
        if fmt == "all" and results_dir is None:
            raise UserError("--format all needs --out (a folder) when the results are several sources or a bundle")
        return (fmt or "md"), (results_dir / "leaderboard" if fmt == "all" and results_dir is not None else None)
    path = Path(out)
    suffix = path.suffix.lower()
    if path.is_dir() or str(out).endswith(("/", os.sep)) or (fmt is None and not suffix):
        return "all", path
    if fmt is None:
        fmt = _SUFFIX.get(suffix)
        if fmt is None:
            raise UserError(f"{path}: unknown output suffix {path.suffix!r}; use .md/.csv/.json/.html or a folder")
    if fmt == "all" and suffix in _SUFFIX:
        raise UserError(f"{path}: --format all writes a folder; give a folder, not a {path.suffix} file")
    return fmt, path


def home_folder(sources: list[str | Path]) -> Path | None:
    """The one results folder the default outputs go into; None for several sources or a bundle."""
    first = Path(sources[0]) if sources else None
    if len(sources) == 1 and first is not None and first.is_dir() and not (first / "bundle.json").is_file():
        return first
    return None


def build_leaderboard(
    results_dir: str | Path | list[str | Path],
    out: str | Path | None = None,
    fmt: str | None = None,
    reference: str = "matching",
    verify: bool = True,
    stats: StatsConfig | None = None,
    matrix: bool = False,
) -> Built:
    """Load ``results_dir``, build the rows and their statistics, and write ``out`` (file or folder) or return
    the text to print. ``results_dir``: a results folder, a bundle, or a list of them (a merged leaderboard:
    agebench.report.sources).

    ``reference``: which published rows to add: ``matching`` (data sets present in the results), ``all``, ``none``.
    ``stats``: resamples, confidence level and seed of the intervals and tests (default: 2000, 95%, 0).
    ``matrix``: write (or return) only the cross-dataset matrix, as md, csv or json.
    """
    sources = list(results_dir) if isinstance(results_dir, (list, tuple)) else [results_dir]
    fmt, target = resolve_target(home_folder(sources), out, fmt)
    with ExitStack() as stack:  # bundles are unpacked into temporary folders until the build is written
        cells = load_sources(sources, verify, stack)
        return _build(cells, fmt, target, reference, stats, matrix)


def _build(
    cells: list[Cell], fmt: str, target: Path | None, reference: str, stats: StatsConfig | None, matrix: bool
) -> Built:
    rows = build_rows(cells, reference=reference)
    analysis = analyse(rows, stats)
    built = Built(rows=rows, cells=cells, analysis=analysis, matrices=cross.build_matrices(rows, stats))
    if not matrix and fmt != "csv":
        cfg = analysis.config
        boot = assurance.A.Boot(cfg.n_resamples, cfg.level, cfg.seed)
        built.assurance = assurance.assess(rows, assurance.Settings(boot=boot))
    records = built.assurance
    if matrix and fmt == "all":
        assert target is not None
        for name, text in _matrix_files(built.matrices):
            write_text(target / name, text)
            built.written.append(target / name)
        return built
    if matrix or fmt != "all":
        if matrix:
            text = _render_matrix(fmt, built.matrices)
        else:
            base = target.parent if target is not None else Path.cwd()
            text = _render(fmt, rows, cells, analysis, base, built.matrices, records)
        if target is None:
            built.text = text
        else:
            write_text(target, text)
            built.written.append(target)
        return built

    from agebench.report.html import render_html
    from agebench.report.plots import render_plots, write_plots

    assert target is not None
    pngs = render_plots(rows, analysis)
    assurance_pngs = assurance.render_plots(records)
    cd_link = "plots/cd_diagram.png" if "cd_diagram" in pngs else None
    matrices = built.matrices
    section = assurance.html_section(records, assurance_pngs)
    files = [
        ("leaderboard.md", _markdown(rows, cells, analysis, matrices, cd_link, records, "plots")),
        ("leaderboard.csv", to_csv(rows)),
        ("pairwise.csv", pairs_csv(analysis)),
        ("leaderboard.json", to_json(rows, cells, analysis, cross.to_dict(matrices) if matrices else None, records)),
        ("leaderboard.html", render_html(rows, cells, pngs, target, analysis, matrices, section)),
    ]
    if matrices:
        files += _matrix_files(matrices)
    for name, text in files:
        path = target / name
        write_text(path, text)
        built.written.append(path)
    built.written += write_plots({**pngs, **assurance_pngs}, target / "plots")
    return built
