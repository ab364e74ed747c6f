"""The embedded synthetic set: deterministic, subject-exclusive, learnable from its cues, not from brightness."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from agebench.cli import main
from agebench.data import synthetic
from agebench.data.manifest import Manifest, load_manifest
from agebench.data.synthetic import MARKER, generate, mae_floor, plan
from agebench.data.synthetic_faces import EYE_CORNERS, EYES, FOREHEAD, HAIR, MOUTH, NASOLABIAL
from agebench.errors import UserError

BITS = (FOREHEAD, EYE_CORNERS, NASOLABIAL, HAIR, EYES, MOUTH)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def learn_set(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    """1500 images at 64 px with masks: enough for a linear baseline to find the cues (a few seconds)."""
    out = tmp_path_factory.mktemp("synth") / "set"
    return load_manifest(generate(out, n=1500, seed=0, size=64, masks=True, workers=2, progress=False))


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path: Path) -> None:
    one = generate(tmp_path / "w1", n=60, seed=0, size=48, masks=True, workers=1, progress=False).parent
    two = generate(tmp_path / "w2", n=60, seed=0, size=48, masks=True, workers=2, progress=False).parent
    a, b = _tree(one), _tree(two)
    assert len([k for k in a if k.endswith(".jpg")]) == 60
    assert a == b


def test_other_seed_gives_other_images(tmp_path: Path) -> None:
    a = _tree(generate(tmp_path / "s0", n=20, seed=0, size=48, progress=False).parent)
    b = _tree(generate(tmp_path / "s1", n=20, seed=1, size=48, progress=False).parent)
    assert a["manifest.csv"] != b["manifest.csv"]
    shared = set(a) & set(b) - {"manifest.csv", MARKER}
    assert shared and all(a[k] != b[k] for k in shared)


def test_rerun_into_earlier_output_overwrites_it_exactly(tmp_path: Path) -> None:
    generate(tmp_path / "out", n=40, seed=3, size=32, progress=False)
    generate(tmp_path / "out", n=12, seed=5, size=32, progress=False)
    fresh = generate(tmp_path / "fresh", n=12, seed=5, size=32, progress=False).parent
    assert _tree(tmp_path / "out") == _tree(fresh)  # no stale images from the bigger first run


def test_cache_size_writes_a_cache_of_the_images_that_a_rerun_replaces(tmp_path: Path) -> None:
    from agebench.data.cache import cache_files, open_cache
    from agebench.data.faces import crop
    from agebench.data.images import read_rgb

    manifest = load_manifest(generate(tmp_path / "c", n=12, seed=0, size=48, cache_size=32, progress=False))
    cache = open_cache(manifest.file)
    assert cache is not None and cache.size == 32
    for r in manifest.records:  # the cache holds the written JPEGs' crops, not the undecoded renders
        assert np.array_equal(cache.get(r.path), crop(read_rgb(manifest.image_path(r)), None, 32))
    generate(tmp_path / "c", n=12, seed=1, size=48, progress=False)  # same paths, other pixels
    assert not any(f.exists() for f in cache_files(manifest.file))
    assert open_cache(manifest.file) is None


def test_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        generate(tmp_path, n=12, size=32, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"n": 9}, "--n"), ({"size": 16}, "--size"), ({"noise_sigma": -1.0}, "--noise-sigma"), ({"seed": -2}, "--seed")],
)
def test_bad_parameters_are_user_errors(tmp_path: Path, kwargs: dict[str, float], word: str) -> None:
    with pytest.raises(UserError, match=word):
        generate(tmp_path / "x", progress=False, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_splits_are_age_stratified_so_test_ages_look_like_train_ages(seed: int) -> None:
    rows, _ = plan(5000, seed, 64, 2.5, masks=False)
    ages = {s: np.array([r["age"] for r in rows if r["split"] == s]) for s in ("train", "val", "test")}
    shares = {s: len(a) / len(rows) for s, a in ages.items()}
    assert shares == pytest.approx(synthetic.SPLIT_SHARES, abs=0.02)
    for split in ("val", "test"):
        assert abs(ages[split].mean() - ages["train"].mean()) < 2.0
        for lo, hi in ((0, 10), (60, 70), (70, 101)):  # the thin ends, where a shuffled split drifts most
            here, train = (np.mean((a >= lo) & (a < hi)) for a in (ages[split], ages["train"]))
            tolerance = 0.02 if split == "test" else 0.035  # val is 100 subjects of 2-8 images each
            assert abs(here - train) < tolerance, (split, lo, here, train)


def test_a_larger_test_split_keeps_the_subjects_and_their_ages() -> None:
    default, _ = plan(3000, 0, 64, 2.5, masks=False)
    wide, _ = plan(3000, 0, 64, 2.5, masks=False, splits=(5, 1, 4))
    assert [(r["path"], r["age"], r["subject_id"]) for r in default] == [
        (r["path"], r["age"], r["subject_id"]) for r in wide
    ]  # the same people at the same ages, only dealt differently
    subjects = {s: {r["subject_id"] for r in wide if r["split"] == s} for s in ("train", "val", "test")}
    n = sum(len(v) for v in subjects.values())
    assert {s: len(v) / n for s, v in subjects.items()} == pytest.approx(
        {"train": 0.5, "val": 0.1, "test": 0.4}, abs=0.01
    )
    assert synthetic.parse_splits("5/1/4") == (5, 1, 4)


@pytest.mark.parametrize("text", ["5/1/3", "7/0/3", "a/b/c", "7/3"])
def test_bad_splits_are_one_line_exit_2(text: str, tmp_path: Path, capsys) -> None:
    assert main(["synth", "--out", str(tmp_path / "x"), "--n", "20", "--splits", text, "--quiet"]) == 2
    assert "--splits" in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.mark.parametrize("n", [10, 11, 17, 25])
def test_tiny_sets_still_get_every_split(n: int) -> None:
    rows, _ = plan(n, 0, 32, 2.5, masks=False)
    assert {r["split"] for r in rows} == {"train", "val", "test"}


def test_manifest_is_valid_subject_exclusive_with_a_long_upper_tail(learn_set: Manifest) -> None:
    assert learn_set.leaks() == {}
    assert all(learn_set.split(s) for s in ("train", "val", "test"))
    assert {"apparent_age", "gender", "mask"} <= set(learn_set.extra_columns)
    ages = np.array([r.age for r in learn_set.records])
    assert ages.min() >= 0 and ages.max() <= 100
    skew = ((ages - ages.mean()) ** 3).mean() / ages.std() ** 3
    assert skew > 0.2 and np.percentile(ages, 90) > np.median(ages) + 20
    assert 0.03 < (ages < 16).mean() < 0.25  # some children, adults dominate
    per_subject: dict[str, list[float]] = {}
    for r in learn_set.records:
        per_subject.setdefault(r.subject_id, []).append(r.age)
    assert all(2 <= len(v) <= 9 for v in per_subject.values())
    assert np.mean([np.ptp(v) for v in per_subject.values()]) > 3  # each subject seen at several ages


def test_cues_are_drawn_at_the_apparent_age_and_the_floor_is_documented(learn_set: Manifest) -> None:
    rows, jobs = plan(200, seed=0, size=64, noise_sigma=2.5, masks=False)
    assert [j.apparent_age for j in jobs] == [float(r["apparent_age"]) for r in rows]
    assert any(j.apparent_age != r["age"] for j, r in zip(jobs, rows, strict=True))
    noise = np.array([float(r.extra["apparent_age"]) - r.age for r in learn_set.records])
    assert abs(np.abs(noise).mean() - mae_floor(2.5)) < 0.15
    assert mae_floor(2.5) == pytest.approx(1.995, abs=1e-3)
    doc = synthetic.__doc__ or ""
    assert "sqrt(2 / pi)" in doc and "1.99 years" in doc
    assert all(f"    {bit:<2d}    " in doc for bit in BITS)


def _grey(manifest: Manifest, split: str) -> list[np.ndarray]:
    return [
        cv2.imread(str(manifest.image_path(r)), cv2.IMREAD_GRAYSCALE).astype(np.float32) for r in manifest.split(split)
    ]


def _edge_features(g: np.ndarray) -> np.ndarray:
    """sqrt gradient energy in 4 orientations pooled on 4x4 and 6x6 grids, after per-image standardising."""
    g = (g - g.mean()) / (g.std() + 1e-6)
    gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)
    mag, orient = np.sqrt(np.sqrt(gx**2 + gy**2)), np.mod(np.arctan2(gy, gx), np.pi)
    bins = np.minimum((orient / np.pi * 4).astype(int), 3)
    area = cv2.INTER_AREA
    return np.concatenate(
        [cv2.resize(mag * (bins == k), (c, c), interpolation=area).ravel() for k in range(4) for c in (4, 6)]
    )


def _ridge_test_mae(features: dict[str, np.ndarray], ages: dict[str, np.ndarray]) -> float:
    """Closed-form ridge, lambda picked on val, MAE on test."""
    mu, sd = features["train"].mean(0), features["train"].std(0) + 1e-6

    def design(x: np.ndarray) -> np.ndarray:
        return np.c_[(x - mu) / sd, np.ones(len(x))]

    a = design(features["train"])
    fits = []
    for lam in 10.0 ** np.arange(-1, 4.5, 0.5):
        w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ ages["train"])
        fits.append((np.abs(design(features["val"]) @ w - ages["val"]).mean(), w))
    w = min(fits, key=lambda f: f[0])[1]
    return float(np.abs(design(features["test"]) @ w - ages["test"]).mean())


def test_linear_baseline_learns_age_but_brightness_alone_does_not(learn_set: Manifest) -> None:
    splits = ("train", "val", "test")
    grey = {s: _grey(learn_set, s) for s in splits}
    ages = {s: np.array([r.age for r in learn_set.split(s)]) for s in splits}
    mean_mae = np.abs(ages["test"] - ages["train"].mean()).mean()
    edges = {s: np.array([_edge_features(g) for g in grey[s]]) for s in splits}
    ridge_mae = _ridge_test_mae(edges, ages)
    brightness = {s: np.array([[g.mean(), g.mean() ** 2 / 255] for g in grey[s]]) for s in splits}
    bright_mae = _ridge_test_mae(brightness, ages)
    print(
        f"test MAE: mean {mean_mae:.2f}, ridge {ridge_mae:.2f}, brightness {bright_mae:.2f}, floor {mae_floor(2.5):.2f}"
    )
    assert ridge_mae < 0.7 * mean_mae
    assert bright_mae > 0.9 * mean_mae
    all_grey = np.array([g.mean() for s in splits for g in grey[s]])
    assert abs(np.corrcoef(all_grey, np.concatenate([ages[s] for s in splits]))[0, 1]) < 0.1


def test_masks_match_images_and_flag_every_region_in_place(learn_set: Manifest) -> None:
    rows = {bit: [] for bit in BITS}
    for r in learn_set.records[:60]:
        mask = cv2.imread(str(learn_set.root / r.extra["mask"]), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(learn_set.image_path(r)))
        assert mask.dtype == np.uint8 and mask.ndim == 2 and mask.shape == image.shape[:2]
        assert not (mask & ~np.uint8(sum(BITS))).any()
        for bit in rows:
            ys = np.nonzero(mask & bit)[0]
            assert ys.size, f"{r.path}: no pixel with bit {bit}"
            rows[bit].append(ys.min() if bit == HAIR else ys.mean())  # long hair reaches the shoulders
    hair_top, forehead, corners, eyes, folds, mouth = (
        np.mean(rows[b]) for b in (HAIR, FOREHEAD, EYE_CORNERS, EYES, NASOLABIAL, MOUTH)
    )
    assert hair_top < forehead < corners < folds < mouth  # top to bottom, as on a face
    assert forehead < eyes < folds
    assert abs(eyes - corners) < 3  # lids and bags sit beside the crow's feet, on the eye line


def test_cli_writes_a_data_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--n", "20", "--size", "32", "--masks", "--quiet"]) == 0
    manifest = load_manifest(out / "manifest.csv")
    assert len(manifest.records) == 20 and "mask" in manifest.extra_columns
    assert "MAE floor" in capsys.readouterr().out


def test_cli_bad_argument_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--out", str(tmp_path / "x"), "--n", "5", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--n 5" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_default_set_takes_under_a_minute_on_two_cores(tmp_path: Path) -> None:
    start = time.perf_counter()
    generate(tmp_path / "s", n=5000, seed=0, workers=2, progress=False)
    assert time.perf_counter() - start < 60


def test_styles_change_scene_camera_and_ages_not_the_cues(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agebench.data.synth_styles import STYLES

    sets = {}
    for style in ("studio", "snapshot"):
        out = tmp_path / style
        assert main(["synth", "--out", str(out), "--n", "60", "--size", "48", "--style", style, "--quiet"]) == 0
        sets[style] = load_manifest(out / "manifest.csv")
    ages = {s: np.array([r.age for r in m.records]) for s, m in sets.items()}
    assert ages["studio"].min() >= STYLES["studio"].min_age == 16  # adults only
    assert (ages["snapshot"] < 16).mean() > 0.1 and (ages["snapshot"] > 60).mean() > 0.05

    def corner_spread(m: Manifest) -> float:  # a plain backdrop has little texture in the corners
        return float(np.mean([cv2.imread(str(m.image_path(r)))[:6, :6].std() for r in m.records]))

    def jpeg_bytes(m: Manifest) -> float:  # heavy compression gives small files
        return float(np.mean([m.image_path(r).stat().st_size for r in m.records]))

    assert corner_spread(sets["studio"]) < 0.5 * corner_spread(sets["snapshot"])
    assert jpeg_bytes(sets["studio"]) > 1.3 * jpeg_bytes(sets["snapshot"])
    # The same person at the same apparent age, drawn in two styles: the age-cue regions stay where they were.
    traits = plan(10, 0, 48, 2.5, False)[1][0].traits
    masks = []
    for style in ("studio", "default"):
        rng = np.random.default_rng(5)
        masks.append(synthetic.render(traits, 60.0, 48, rng, want_mask=True, style=STYLES[style])[1])
    overlap = ((masks[0] > 0) & (masks[1] > 0)).sum() / max(1, ((masks[0] > 0) | (masks[1] > 0)).sum())
    assert overlap > 0.6
    # chip frames the same drawing tighter: the face and its cue regions get more of the image, ages unchanged.
    chip = []
    for style in ("default", "chip"):
        rng = np.random.default_rng(5)
        chip.append((synthetic.render(traits, 60.0, 48, rng, want_mask=True, style=STYLES[style])[1] > 0).mean())
    assert chip[1] > 1.25 * chip[0]
    assert plan(50, 0, 48, 2.5, False, style=STYLES["chip"])[0] == plan(50, 0, 48, 2.5, False)[0]

    capsys.readouterr()
    assert main(["synth", "--list-styles"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in STYLES)
    assert main(["synth", "--out", str(tmp_path / "x"), "--style", "noir", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "noir" in err and "studio" in err and len(err.splitlines()) == 1


def test_skin_tone_groups_cut_the_tone_at_its_tertiles_and_gender_is_m_or_f(learn_set: Manifest) -> None:
    from agebench.data.synthetic_faces import skin_tone_group

    assert [skin_tone_group(t) for t in (0.0, 0.333, 1 / 3 + 1e-9, 0.6666, 0.6667, 1.0)] == [
        "dark", "dark", "medium", "medium", "light", "light",
    ]  # fmt: skip
    assert {r.extra["gender"] for r in learn_set.records} == {"M", "F"}
    assert {r.extra["skin_tone"] for r in learn_set.records} <= {"dark", "medium", "light"}


def test_apparent_bias_shifts_only_that_groups_cues_in_the_chosen_splits() -> None:
    from agebench.data.synthetic import parse_apparent_bias

    bias = parse_apparent_bias("skin_tone=dark:+8")
    assert (bias.column, bias.value, bias.years, bias.splits) == ("skin_tone", "dark", 8.0, ("test",))
    assert parse_apparent_bias("gender=F:-3@train,test").splits == ("train", "test")
    rows, jobs = plan(300, 4, 32, 2.5, False)
    biased_rows, biased_jobs = plan(300, 4, 32, 2.5, False, biases=(bias,))
    hit = [r["split"] == "test" and r["skin_tone"] == "dark" for r in rows]
    assert any(hit) and not all(hit)
    for a, b, h, row in zip(jobs, biased_jobs, hit, biased_rows, strict=True):
        expected = min(100.0, a.apparent_age + 8.0) if h else a.apparent_age  # same traits elsewhere: same pixels
        assert b.apparent_age == pytest.approx(expected, abs=2e-4) and b.traits == a.traits
        assert float(row["apparent_age"]) == pytest.approx(b.apparent_age, abs=1e-4)
