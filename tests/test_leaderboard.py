"""The leaderboard on fake result trees: numbers agree with the files, failures stay numberless, output is stable."""

from __future__ import annotations

import base64
import csv
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from agebench.cli import main
from agebench.report import build_leaderboard

REPO = Path(__file__).resolve().parents[1]
PAPER = "paper (Maroun et al. 2025)"
GROUPS = [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50), (50, 60), (60, 70), (70, 121)]


def _metrics(ages: list[float], preds: list[float]) -> dict:
    """The metric part of metrics.json, computed the way evaluate.py documents it (without torch)."""
    err = [abs(p - a) for a, p in zip(ages, preds, strict=True)]
    cs = {str(k): sum(e <= k for e in err) / len(err) for k in range(1, 11)}
    by_group = {}
    for lo, hi in GROUPS:
        inside = [e for a, e in zip(ages, err, strict=True) if lo <= a < hi]
        if inside:
            by_group[f"{lo}-{hi - 1}" if hi <= 120 else f"{lo}+"] = {"mae": sum(inside) / len(inside), "n": len(inside)}
    return {
        "n_test": len(ages),
        "mae": sum(err) / len(err),
        "rmse": math.sqrt(sum(e * e for e in err) / len(err)),
        "cs": cs,
        "cs5": cs["5"],
        "mae_by_age_group": by_group,
    }


def write_cell(
    root: Path,
    dataset: str,
    model: str,
    seed: int,
    noise: float = 3.0,
    status: str = "ok",
    error: str | None = None,
    **extra,
) -> Path:
    """A result cell whose metrics.json is recomputable from its predictions.csv."""
    folder = root / dataset / model / f"seed{seed}"
    folder.mkdir(parents=True)
    base = {"schema_version": 1, "status": status, "error": error, "model": model, "dataset": dataset, "seed": seed}
    if status == "failed":
        (folder / "metrics.json").write_text(json.dumps(base))
        return folder
    n = 60
    ages = [float(1 + (i * 37 + seed * 11) % 89) for i in range(n)]
    preds = [round(a + noise * math.sin(i * 1.7 + seed + len(model)), 6) for i, a in enumerate(ages)]
    with open(folder / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "age", "pred"])
        w.writerows([f"img/{i}.jpg", f"{a:g}", f"{p:.6f}"] for i, (a, p) in enumerate(zip(ages, preds, strict=True)))
    params = {"convnext": 3_700_000, "hybrid": 5_200_000, "vit": 5_700_000}[model.split("-")[0]]
    metrics = {
        **base,
        **_metrics(ages, preds),
        "baseline_mae": 21.5,
        "params": params,
        "trainable_params": params,
        "gflops": 0.5,
        "latency_ms": 4.0 + seed * 0.1 + len(model) / 10,
        "throughput": 900.0 + seed,
        "train_throughput": 300.0,
        "peak_memory_mb": 800.0,
        "wall_seconds": 120.0,
        "train_seconds": 100.0,
        "best_val_mae": 3.0,
        "epochs": 4,
        "leaky_splits": False,
        "subject_exclusive": True,
        "train_age_histogram": {"edges": list(range(0, 130, 10)), "counts": [1] * 12},
        "profile": {"device": "cpu", "batch_size": 64, "img_size": 64, "precision": "32-true", "channels_last": False},
        "provenance": {
            "agebench_version": "0.1.0",
            "agebench_commit": "abc123",
            "torch": "2.14.1",
            "pytorch_lightning": "2.6.4",
            "timm": "1.0.9",
            "python": "3.11.7",
            "device": "cpu (x86_64, 2 threads)",
            "precision": "32-true",
            "config_hash": "c0ffee",
            "manifest_sha256": "feed",
            "seed": seed,
            "timestamp": f"2026-11-28T03:0{seed}:00Z",
        },
    }
    metrics.update(extra)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """2 data sets x 2 models x 2 seeds, plus a failed, a leaky and a not-subject-exclusive cell."""
    root = tmp_path / "RESULTS"
    for dataset in ("morph2", "synth"):
        for model, noise in (("convnext-atto", 3.0), ("hybrid-atto", 2.0)):
            for seed in (0, 1):
                write_cell(root, dataset, model, seed, noise=noise + seed * 0.3)
    write_cell(root, "synth", "vit-tiny", 0, status="failed", error="RuntimeError: out of memory\n(trace)")
    write_cell(root, "synth", "convnext-atto", 2, leaky_splits=True)
    write_cell(root, "utkface", "hybrid-atto", 0, subject_exclusive=False)
    return root


def expected_groups(root: Path) -> dict[tuple, list[dict]]:
    """ok metrics.json grouped the way the leaderboard must pool them: (data set, model, leaky, exclusive)."""
    groups: dict[tuple, list[dict]] = {}
    for path in sorted(root.glob("*/*/seed*/metrics.json")):
        m = json.loads(path.read_text())
        if m["status"] == "ok":
            groups.setdefault((m["dataset"], m["model"], m["leaky_splits"], m["subject_exclusive"]), []).append(m)
    return groups


def _flags_key(flags: list[str]) -> tuple[bool, bool]:
    return "leaky" in flags, "not subject-exclusive" not in flags


def test_csv_and_json_rows_agree_with_metrics_files(results: Path, tmp_path: Path) -> None:
    build_leaderboard(results, tmp_path / "out", "all")
    csv_rows = list(csv.DictReader(open(tmp_path / "out" / "leaderboard.csv")))
    doc = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    measured_csv = [r for r in csv_rows if r["status"] == "ok"]
    measured_json = [r for r in doc["rows"] if r["status"] == "ok"]
    groups = expected_groups(results)
    assert len(measured_csv) == len(measured_json) == len(groups) == 6
    for c, j in zip(measured_csv, measured_json, strict=True):
        ms = groups[(c["dataset"], c["model"], *_flags_key(c["flags"].split(";")))]
        maes = [m["mae"] for m in ms]
        std = statistics.stdev(maes) if len(maes) > 1 else None
        assert int(c["n_seeds"]) == j["n_seeds"] == len(ms)
        for row in (c, j):
            assert float(row["mae_mean"]) == pytest.approx(statistics.mean(maes), abs=1e-6)
            assert float(row["cs5_mean"]) == pytest.approx(statistics.mean(m["cs5"] for m in ms), abs=1e-6)
            assert float(row["params_m"]) == pytest.approx(ms[0]["params"] / 1e6, abs=1e-6)
            assert float(row["latency_ms"]) == pytest.approx(statistics.mean(m["latency_ms"] for m in ms), abs=1e-6)
            if std is None:
                assert row["mae_std"] in ("", None)
            else:
                assert float(row["mae_std"]) == pytest.approx(std, abs=1e-6)
    cells = {c["path"]: c for c in doc["cells"]}
    assert len(cells) == 11
    for path in results.glob("*/*/seed*/metrics.json"):
        m = json.loads(path.read_text())
        record = cells[path.parent.relative_to(results).as_posix()]
        assert record["status"] == m["status"]
        if m["status"] == "ok":
            assert record["metrics"]["mae"] == m["mae"] and "timestamp" not in record["metrics"]["provenance"]


def _md_table(text: str, first_cell: str = "data set") -> list[dict[str, str]]:
    """The Markdown table whose header starts with ``first_cell`` ("a": the first pairwise table)."""
    all_lines = text.splitlines()
    start = next(i for i, ln in enumerate(all_lines) if ln.startswith(f"| {first_cell} |"))
    lines = []
    for ln in all_lines[start:]:
        if not ln.startswith("|"):
            break
        lines.append(ln)
    split = [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines]
    return [dict(zip(split[0], r, strict=True)) for r in split[2:]]


def test_markdown_agrees_with_metrics_files(results: Path) -> None:
    md = build_leaderboard(results, None, "md").text
    rows = _md_table(md)
    groups = expected_groups(results)
    measured = [r for r in rows if r["source"] == "measured" and not r["MAE (years)"].startswith("failed")]
    assert len(measured) == len(groups)
    for r in measured:
        ms = groups[(r["data set"], r["model"], *_flags_key(r["flags"].split(", ")))]
        maes = [m["mae"] for m in ms]
        assert r["seeds"] == f"n={len(ms)}"
        mean, _, std = r["MAE (years)"].partition(" ± ")
        assert float(mean) == pytest.approx(statistics.mean(maes), abs=0.005)
        if len(ms) > 1:
            assert float(std) == pytest.approx(statistics.stdev(maes), abs=0.005)
        else:
            assert std == ""
        assert float(r["CS@5"].rstrip("%")) == pytest.approx(100 * statistics.mean(m["cs5"] for m in ms), abs=0.05)


def test_failed_cell_shows_its_error_and_no_number(results: Path, tmp_path: Path) -> None:
    build_leaderboard(results, tmp_path / "out", "all")
    md_rows = [r for r in _md_table((tmp_path / "out" / "leaderboard.md").read_text()) if r["model"] == "vit-tiny"]
    assert len(md_rows) == 1
    assert md_rows[0]["MAE (years)"] == "failed: RuntimeError: out of memory (trace)"
    numeric = ["CS@5", "mean-predictor MAE", "params (M)", "latency (ms, batch 1)", "throughput (img/s)"]
    assert all(md_rows[0][k] == "" for k in numeric)
    (row,) = [r for r in csv.DictReader(open(tmp_path / "out" / "leaderboard.csv")) if r["model"] == "vit-tiny"]
    assert row["status"] == "failed" and row["error"].startswith("RuntimeError")
    assert all(row[k] == "" for k in ("mae_mean", "mae_std", "cs5_mean", "params_m", "latency_ms", "throughput"))
    html = (tmp_path / "out" / "leaderboard.html").read_text()
    assert "failed: RuntimeError: out of memory" in html


def test_leaky_and_identity_less_cells_are_labelled_and_pooled_apart(results: Path) -> None:
    rows = build_leaderboard(results, None, "json").rows
    convnext_synth = [r for r in rows if r.dataset == "synth" and r.model == "convnext-atto"]
    assert sorted((r.seeds, r.flags) for r in convnext_synth) == [([0, 1], ()), ([2], ("leaky",))]
    (utk,) = [r for r in rows if r.dataset == "utkface" and r.source == "measured"]
    assert utk.flags == ("not subject-exclusive",)
    md = build_leaderboard(results, None, "md").text
    assert "| leaky |" in md and "| not subject-exclusive |" in md
    assert "**leaky**:" in md and "**not subject-exclusive**:" in md  # explained under Flags


def test_reference_rows_sit_with_their_data_set_and_are_marked(results: Path) -> None:
    rows = build_leaderboard(results, None, "json").rows
    refs = [r for r in rows if r.status == "reference"]
    assert {r.dataset for r in refs} == {"morph2", "utkface"}  # no published figure for synth
    assert all(r.source == PAPER and not r.cells for r in refs)
    by_key = {(r.dataset, r.model): r for r in refs}
    assert by_key[("morph2", "hybrid")].mae_mean == 2.26 and by_key[("utkface", "vit")].mae_mean == 4.96
    assert by_key[("morph2", "hybrid")].params_m == 33.42 and by_key[("morph2", "hybrid")].latency_ms == 3.22
    assert by_key[("morph2", "convnext")].params_m is None and by_key[("morph2", "vit")].latency_ms is None
    assert by_key[("morph2", "convnext")].cs5_mean is None
    md = build_leaderboard(results, None, "md").text
    assert f"| morph2 |  |  | hybrid | {PAPER} |  | 2.26 |  |" in md  # no rank, group or CI: not measured here
    none = build_leaderboard(results, None, "csv", reference="none").text
    assert "Maroun" not in none


def test_rows_are_sorted_by_data_set_then_mae_with_failures_last(results: Path) -> None:
    rows = build_leaderboard(results, None, "json").rows
    datasets = [r.dataset for r in rows]
    assert datasets == sorted(datasets)
    for dataset in set(datasets):
        mine = [r for r in rows if r.dataset == dataset]
        maes = [r.mae_mean for r in mine if r.status != "failed"]
        assert maes == sorted(maes)
        assert [r.status == "failed" for r in mine] == sorted(r.status == "failed" for r in mine)


def test_all_writes_every_format_and_non_empty_plots(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "board"
    out.mkdir()
    assert main(["leaderboard", str(results), "--out", str(out)]) == 0  # an existing folder means every format
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "leaderboard.html"):
        assert (out / name).stat().st_size > 0
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    # the age-assurance plots: by age and the trade-off (no group plot: these cells have no demographic column)
    assert plots == [
        "assurance_by_age.png",
        "assurance_tradeoff.png",
        "cs_curves.png",
        "mae_by_age_group.png",
        "mae_vs_latency.png",
    ]
    for png in (out / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_html_embeds_each_plot_as_png_and_loads_nothing_external(results: Path, tmp_path: Path) -> None:
    build_leaderboard(results, tmp_path / "page.html")
    html = (tmp_path / "page.html").read_text()
    images = re.findall(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 5  # 3 leaderboard plots, 2 age-assurance plots (by age, trade-off)
    for data in images:
        png = base64.b64decode(data, validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < len(png) < 2_000_000
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|ftp:)""", html, re.I)
    assert "<link" not in html.lower() and "@import" not in html
    # One inline script (sorting and filtering, issue 26): no src, and it loads and sends nothing.
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S | re.I)
    assert len(scripts) == 1 and scripts[0][0].strip() == ""
    assert not re.search(r"fetch\(|XMLHttpRequest|import\(|WebSocket|sendBeacon|https?:", scripts[0][1])
    assert "abc123" in html and "cpu (x86_64, 2 threads)" in html  # provenance section


def test_html_links_failure_reports_relatively(results: Path, tmp_path: Path) -> None:
    (results / "synth" / "vit-tiny" / "seed0" / "failure_report.md").write_text("# why\n")
    (results / "morph2" / "hybrid-atto" / "seed1" / "explain").mkdir()
    build_leaderboard(results, tmp_path / "site" / "lb.html")
    html = (tmp_path / "site" / "lb.html").read_text()
    assert 'href="../RESULTS/synth/vit-tiny/seed0/failure_report.md"' in html
    assert 'href="../RESULTS/morph2/hybrid-atto/seed1/explain"' in html


def test_html_shows_attention_shares_next_to_the_uniform_baseline(results: Path, tmp_path: Path) -> None:
    explain = results / "synth" / "hybrid-atto" / "seed0" / "explain"
    explain.mkdir()
    regions = ("forehead", "eye_corners", "nasolabial", "hair", "any")
    entry = {
        "model": "hybrid-atto",
        "dataset": "synth",
        "layer": "encoder.layers.0",
        "label": "encoder",
        "n_images": 16,
        "share": dict(zip(regions, (0.1, 0.2, 0.15, 0.3, 0.65), strict=True)),
        "uniform_baseline": dict(zip(regions, (0.05, 0.04, 0.06, 0.2, 0.35), strict=True)),
    }
    (explain / "attention.json").write_text(json.dumps([entry]))
    build_leaderboard(results, tmp_path / "page.html")
    html = (tmp_path / "page.html").read_text()
    assert "Grad-CAM attention share" in html
    assert "65.0% <small>(35.0%)</small>" in html and "<td>encoder</td>" in html
    assert "side by side" not in html
    (explain / "attention.json").write_text(json.dumps([{**entry, "method": "hirescam"}]))
    build_leaderboard(results, tmp_path / "page.html")
    assert "<td>encoder (hirescam)</td>" in (tmp_path / "page.html").read_text()
    occluded = {**entry, "method": "occlusion", "label": "input (occlusion 8 px, stride 4)"}
    (explain / "attention.json").write_text(json.dumps([occluded]))
    build_leaderboard(results, tmp_path / "page.html")
    assert "<td>input (occlusion 8 px, stride 4)</td>" in (tmp_path / "page.html").read_text()  # named once
    (results / "explain").mkdir()
    for name in ("gradcam.png", "occlusion.png"):
        (results / "explain" / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    build_leaderboard(results, tmp_path / "site" / "page.html")
    html = (tmp_path / "site" / "page.html").read_text()
    assert 'side by side: <a href="../RESULTS/explain/gradcam.png">' in html
    assert (
        '<p>Occlusion of the models on the same test faces, side by side: <a href="../RESULTS/explain/occlusion.png">'
        in html
    )


def test_output_is_byte_identical_across_runs(results: Path, tmp_path: Path) -> None:
    build_leaderboard(results, tmp_path / "a", "all")
    build_leaderboard(results, tmp_path / "b", "all")
    for name in ("leaderboard.csv", "leaderboard.json", "leaderboard.md", "leaderboard.html"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_predictions_that_disagree_with_metrics_mark_the_row_unverified(results: Path) -> None:
    path = results / "morph2" / "hybrid-atto" / "seed0" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["mae"] -= 0.5
    path.write_text(json.dumps(metrics))
    rows = build_leaderboard(results, None, "json").rows
    (bad,) = [r for r in rows if r.dataset == "morph2" and r.model == "hybrid-atto" and r.seeds == [0]]
    assert bad.flags == ("unverified",)
    assert "morph2/hybrid-atto/seed0: MAE from predictions.csv" in bad.warnings[0]


def test_unreadable_metrics_json_is_an_invalid_row(results: Path) -> None:
    (results / "synth" / "hybrid-atto" / "seed1" / "metrics.json").write_text("{not json")
    rows = build_leaderboard(results, None, "json").rows
    (bad,) = [r for r in rows if r.status == "invalid"]
    assert bad.seeds == [1] and bad.mae_mean is None and "metrics.json unreadable" in bad.error


def test_results_with_only_failures_still_give_a_table_and_no_plots(tmp_path: Path) -> None:
    root = tmp_path / "RESULTS"
    write_cell(root, "afad", "vit", 0, status="failed", error="killed")
    built = build_leaderboard(root, tmp_path / "out", "all")
    assert [r.status for r in built.rows] == ["reference", "reference", "reference", "failed"]
    assert not (tmp_path / "out" / "plots").exists()
    assert "nothing to plot" in (tmp_path / "out" / "leaderboard.html").read_text()


def test_cli_stdout_and_single_files(results: Path, tmp_path: Path, capsys) -> None:
    assert main(["leaderboard", str(results), "--format", "csv"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("dataset,model,source,status")
    assert main(["leaderboard", str(results), "--out", str(tmp_path / "x.csv")]) == 0  # format from the suffix
    assert (tmp_path / "x.csv").read_text() == printed
    assert "agebench leaderboard" in capsys.readouterr().out  # the terminal table
    assert main(["leaderboard", str(results), "--out", str(tmp_path / "new") + "/"]) == 0  # a folder: every format
    assert (tmp_path / "new" / "leaderboard.html").is_file() and (tmp_path / "new" / "plots").is_dir()
    assert main(["leaderboard", str(results), "--out", str(tmp_path / "x.txt")]) == 2


@pytest.mark.parametrize("setup", ["missing", "empty"])
def test_cli_without_results_exits_2_with_one_line(tmp_path: Path, capsys, setup: str) -> None:
    target = tmp_path / "RESULTS"
    if setup == "empty":
        (target / "synth" / "hybrid").mkdir(parents=True)
    assert main(["leaderboard", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(target) in err
    assert ("no such results folder" if setup == "missing" else "no result cells found") in err


def test_html_without_out_is_a_user_error(results: Path, capsys) -> None:
    assert main(["leaderboard", str(results), "--format", "html"]) == 2
    assert "--out" in capsys.readouterr().err


def test_report_never_imports_training_code(results: Path, tmp_path: Path) -> None:
    code = (
        "import sys; from agebench.cli import main; "
        f"rc = main(['leaderboard', {str(results)!r}, '--out', {str(tmp_path / 'o')!r}, '--format', 'all']); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'pytorch_lightning', 'lightning', 'timm') "
        "or m.startswith(('agebench.models', 'agebench.train', 'agebench.evaluate'))]; "
        "print(rc, bad)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "0 []"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_screenshot_of_the_html_page_is_not_blank(results: Path, tmp_path: Path) -> None:
    build_leaderboard(results, tmp_path / "lb.html")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "screenshot_html.py"),
            str(tmp_path / "lb.html"),
            str(tmp_path / "shot.png"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert ": ok (" in proc.stdout and (tmp_path / "shot.png").stat().st_size > 20_000


def test_tta_cells_are_flagged_and_pooled_apart(tmp_path: Path) -> None:
    root = tmp_path / "RESULTS"
    write_cell(root, "synth", "convnext-atto", 0)
    write_cell(root, "synth", "convnext-atto", 1, tta="flip")
    write_cell(root, "synth", "convnext-atto", 2, tta="none")  # written by 0.4 at the default: no flag
    rows = [r for r in build_leaderboard(root, None, "json").rows if r.source == "measured"]
    assert sorted((r.seeds, r.flags) for r in rows) == [([0, 2], ()), ([1], ("tta flip",))]
    md = build_leaderboard(root, None, "md").text
    assert "| tta flip |" in md and "**tta flip**:" in md
