"""The embedded synthetic face-age data set: procedural faces whose age cues follow a known *apparent* age.

Why it exists: every pipeline stage (training, benchmark, leaderboard, Grad-CAM) can be run and tested without a
licensed data set, on a problem whose best possible error is known in advance.

Labels and the MAE floor
    Each image has a true age (the manifest ``age``, the label) and an apparent age
    ``apparent_age = clip(age + N(0, sigma^2), 0, 100)`` (default ``sigma`` 2.5 years). Everything age-related that
    is drawn (forehead lines, crow's feet, nasolabial folds, eye bags, lines from the mouth corners, heavier lids,
    thinner lips, age spots, greying and thinning hair, the beard, and child proportions: rounder face, larger
    eyes, features lower on the face, smaller nose, rosy cheeks) is drawn from the apparent age (and the person's
    fixed traits, such as the age greying starts), never from the true age. The noise is therefore invisible and
    sets a floor under the expected MAE of any model: ``E|apparent - age| = sigma * sqrt(2 / pi)`` ~ 0.80 * sigma
    = 1.99 years at sigma 2.5 (:func:`mae_floor`). Clipping at 0 years makes the noise, and the floor, a little
    smaller for babies; a predictor that knows the age prior could shrink the apparent age towards it and gain a
    few hundredths of a year (1.96 instead of 1.98 in a 200k-image simulation), so read the floor as "about".
    The ``apparent_age`` column lets anyone compute the floor of their own test split.

Identities and splits
    Each subject has fixed traits (skin tone, hair colour and style, face width and shape, eye spacing and size,
    nose, mouth, lips, brows, greying onset, balding, beard, freckles, clothes) and appears 2-8 times at ages spread
    around a base age (sd 5 years, less for children). Subject base ages are a mixture: 10% children (0.5-15),
    60% adults N(30, 7) within 16-50, 30% a long tail 42 + Exp(14) truncated at 97. Splits are subject-exclusive and
    age-stratified: subjects sorted by base age are dealt 70/10/20% to train/val/test in seeded blocks of 10.

Groups with a known truth
    Each subject's skin tone is a continuous draw t ~ U(0, 1) along the skin anchors (0 darkest); the
    ``skin_tone`` column cuts it at its tertiles: ``dark`` t < 1/3, ``medium`` 1/3 <= t < 2/3, ``light`` t >= 2/3.
    ``--apparent-bias skin_tone=dark:+8`` (:class:`ApparentBias`, repeatable) draws that group's age cues 8 years
    older than its apparent age would be, by default in the test split only, and records the shifted value in
    ``apparent_age``: a fair model then errs +8 years on that group, a planted disparity whose size is known.

Nuisance, independent of age
    Background gradient and clutter, rotation (sd 5 degrees), scale (0.88-1.1) and translation (5%) jitter, a
    directional light ramp, colour cast, blur, sensor noise, and JPEG quality 70-95. Final brightness and contrast
    are drawn at random and imposed on the whole image, so mean brightness says nothing of age.

Files
    ``DIR/images/<subject>/<index>.jpg``, ``DIR/manifest.csv`` (``path, age, subject_id, split, apparent_age,
    gender`` (M/F, the importers' vocabulary), ``skin_tone`` and, with masks, ``mask``), ``DIR/synth.json`` (the
    parameters; marks the folder as synth output so a rerun may overwrite it). With masks,
    ``DIR/masks/<subject>/<index>.png`` is a single-channel uint8 image of
    the image's size whose bits flag where the age cues live (bits may overlap):

    ====  ============================================
    bit   region
    ====  ============================================
    1     forehead (between brows and hairline)
    2     eye corners (crow's feet)
    4     nasolabial region (nose wings to mouth corners)
    8     hair (scalp hair and beard)
    16    eyes (upper lids and eye bags)
    32    mouth (lips, mouth corners, marionette lines)
    ====  ============================================

    Bits 16 and 32 are new in agebench 0.7: with them every age cue drawn in one place is masked. Age spots
    (anywhere on the face) and a child's proportions (the whole face) have no region.

Determinism
    Identical arguments give byte-identical files whatever the worker count (given the same OpenCV and NumPy
    versions): subject traits come from
    ``SeedSequence(seed, spawn_key=(1, subject))``, each image from ``SeedSequence(seed, spawn_key=(2, index))``,
    ages and splits from ``spawn_key=(0,)``; JPEGs are encoded by OpenCV with an explicit quality.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from agebench.data.cache import build_cache, cache_files
from agebench.data.manifest import format_age, write_manifest
from agebench.data.synth_styles import DEFAULT_STYLE, Style, get_style
from agebench.data.synthetic_faces import (
    SKIN_TONES,
    Face,
    Traits,
    ellipse,
    fill_poly,
    polyline,
    sample_traits,
    skin_tone_group,
)
from agebench.errors import UserError

GENERATOR_VERSION = 2  # 2: age-stratified subject split
MARKER = "synth.json"
MANIFEST = "manifest.csv"
MIN_N, MIN_SIZE, MAX_SIZE = 10, 32, 1024
MAX_AGE = 100.0
SPLIT_SHARES = {"train": 0.7, "val": 0.1, "test": 0.2}
DEFAULT_SPLITS = (7, 1, 2)  # subjects per block of 10: train, val, test


def parse_splits(text: str) -> tuple[int, int, int]:
    """``"5/1/4"`` -> (5, 1, 4): subjects per block of 10 dealt to train/val/test (each >= 1, summing to 10)."""
    try:
        parts = tuple(int(p) for p in text.split("/"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or sum(parts) != 10 or min(parts) < 1:
        raise UserError(
            f"--splits {text!r}: expected TRAIN/VAL/TEST subjects per block of 10, each >= 1, summing to 10 "
            "(e.g. 7/1/2, the default, or 5/1/4 for a larger test split)"
        )
    return parts  # type: ignore[return-value]


# The demographic columns a synthetic row carries, with their values (one vocabulary with the importers: M/F).
GROUP_COLUMNS: dict[str, tuple[str, ...]] = {"gender": ("F", "M"), "skin_tone": SKIN_TONES}
MAX_BIAS_YEARS = 50.0


@dataclass(frozen=True)
class ApparentBias:
    """``--apparent-bias COLUMN=VALUE:YEARS[@SPLITS]``: that group's age cues are drawn YEARS older (negative:
    younger) in the given splits (default test only: planted in training too, a model could learn the offset
    back from the group's visible traits)."""

    column: str
    value: str
    years: float
    splits: tuple[str, ...] = ("test",)

    def applies(self, row: dict[str, object]) -> bool:
        return row.get(self.column) == self.value and row.get("split") in self.splits

    def to_dict(self) -> dict[str, object]:
        return {"column": self.column, "value": self.value, "years": self.years, "splits": list(self.splits)}


def parse_apparent_bias(text: str) -> ApparentBias:
    """``skin_tone=dark:+8`` or ``gender=F:-3@train,test`` -> ApparentBias; one-line UserError otherwise."""
    flag = f"--apparent-bias {text!r}"
    head, _, splits_text = text.partition("@")
    group, sep, years_text = head.rpartition(":")
    column, eq, value = group.partition("=")
    if not (sep and eq and column and value and years_text):
        raise UserError(f"{flag}: expected COLUMN=VALUE:YEARS[@SPLITS], e.g. skin_tone=dark:+8")
    if column not in GROUP_COLUMNS:
        raise UserError(f"{flag}: unknown column {column!r}; expected one of {', '.join(GROUP_COLUMNS)}")
    if value not in GROUP_COLUMNS[column]:
        raise UserError(f"{flag}: unknown {column} {value!r}; expected one of {', '.join(GROUP_COLUMNS[column])}")
    try:
        years = float(years_text)
    except ValueError:
        raise UserError(f"{flag}: YEARS {years_text!r} is not a number") from None
    if not (math.isfinite(years) and abs(years) <= MAX_BIAS_YEARS):
        raise UserError(f"{flag}: YEARS must be within -{MAX_BIAS_YEARS:g}..{MAX_BIAS_YEARS:g}")
    splits = tuple(s.strip() for s in splits_text.split(",")) if splits_text else ("test",)
    bad = [s for s in splits if s not in SPLIT_SHARES]
    if bad or not splits:
        raise UserError(f"{flag}: unknown split(s) {', '.join(bad) or '(none)'}; expected train, val, test")
    return ApparentBias(column, value, years, splits)


_PLAN, _SUBJECT, _IMAGE = 0, 1, 2  # independent random streams per seed


def mae_floor(noise_sigma: float) -> float:
    """Expected |apparent - true| for Gaussian noise (ignoring clipping at 0): the MAE no model beats."""
    return noise_sigma * math.sqrt(2 / math.pi)


@dataclass(frozen=True)
class ImageJob:
    """Everything a worker needs to draw and write one image, and nothing it could take from elsewhere."""

    index: int
    path: str
    mask_path: str | None
    traits: Traits
    apparent_age: float
    size: int
    seed: int
    style: Style = get_style(DEFAULT_STYLE)


def _base_age(rng: np.random.Generator, style: Style) -> float:
    """A subject's central age (default style: adults 18-45 dominate, a long tail reaches the 80s and 90s,
    some children)."""
    u = rng.random()
    if u < style.child_share:
        return float(rng.uniform(0.5, 15))
    if u < style.child_share + style.adult_share:
        return float(np.clip(rng.normal(style.adult_mean, style.adult_sd), *style.adult_range))
    while (age := style.tail_start + rng.exponential(style.tail_scale)) > 97:  # truncate, do not pile up at 97
        pass
    return float(age)


def _split_of_subjects(
    base_ages: list[float], rng: np.random.Generator, splits_per_10: tuple[int, int, int] = DEFAULT_SPLITS
) -> list[str]:
    """Age-stratified subject split, as `agebench prepare`'s folds: subjects sorted by central age are dealt in
    blocks of 10 (default 7 train, 1 val, 2 test) with a seeded permutation per block, so every split spans the
    same ages. (A plain shuffle of 1000 subjects once gave the test split 7% over-70s against 2.5% in train.)"""
    pattern = [s for s, k in zip(SPLIT_SHARES, splits_per_10, strict=True) for _ in range(k)]
    order = sorted(range(len(base_ages)), key=lambda i: (base_ages[i], i))
    splits = [""] * len(order)
    for start in range(0, len(order), len(pattern)):
        labels = [pattern[j] for j in rng.permutation(len(pattern))]
        for subject, label in zip(order[start : start + len(pattern)], labels, strict=False):
            splits[subject] = label
    for need in ("test", "val", "train"):  # a tiny set: every split still gets a subject, from the largest
        if need not in splits:
            donor = max(SPLIT_SHARES, key=splits.count)
            splits[max(i for i, s in enumerate(splits) if s == donor)] = need
    return splits


def plan(
    n: int,
    seed: int,
    size: int,
    noise_sigma: float,
    masks: bool,
    style: Style | None = None,
    splits: tuple[int, int, int] = DEFAULT_SPLITS,
    biases: tuple[ApparentBias, ...] = (),
) -> tuple[list[dict[str, object]], list[ImageJob]]:
    """Manifest rows and render jobs, in index order. Cheap: no pixels are drawn here.

    ``biases`` shift the apparent age of matching rows after the noise is drawn (clipped to 0..100 as ever): the
    random streams are unchanged, so every other image is byte-identical to the unbiased set's."""
    style = style or get_style(DEFAULT_STYLE)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_PLAN,)))
    per_subject: list[int] = []
    while sum(per_subject) < n:
        left = n - sum(per_subject)
        k = min(int(rng.integers(2, 9)), max(1, n // 3), left)
        if left - k == 1:  # no one-image subject at the end
            k += 1
        per_subject.append(k)
    bases = [_base_age(rng, style) for _ in per_subject]
    subject_splits = _split_of_subjects(bases, rng, splits)
    rows: list[dict[str, object]] = []
    jobs: list[ImageJob] = []
    for subject, (k, split, base) in enumerate(zip(per_subject, subject_splits, bases, strict=True)):
        traits = sample_traits(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_SUBJECT, subject))))
        spread = min(5.0, 1.0 + 0.25 * base)
        sid = f"syn{subject:05d}"
        for _ in range(k):
            age = round(float(np.clip(base + rng.normal(0, spread), style.min_age, MAX_AGE)), 1)
            noisy = age + rng.normal(0, noise_sigma)
            index = len(rows)
            path = f"images/{sid}/{index:06d}.jpg"
            mask_path = f"masks/{sid}/{index:06d}.png" if masks else None
            row: dict[str, object] = {
                "path": path,
                "age": age,
                "subject_id": sid,
                "split": split,
                "apparent_age": "",
                "gender": traits.gender.upper(),
                "skin_tone": skin_tone_group(traits.tone),
            }
            if masks:
                row["mask"] = mask_path
            noisy += sum(b.years for b in biases if b.applies(row))
            apparent = round(float(np.clip(noisy, 0, MAX_AGE)), 4)
            row["apparent_age"] = format_age(apparent)
            rows.append(row)
            jobs.append(ImageJob(index, path, mask_path, traits, apparent, size, seed, style))
    return rows, jobs


def _background(size: int, rng: np.random.Generator, style: Style) -> np.ndarray:
    """A gradient and random shapes: clutter whose colours and brightness ignore age."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    if style.background_mix != 1.0:  # towards the style's plain backdrop
        plain = np.array(style.background)
        c0, c1 = (plain + (c - plain) * style.background_mix for c in (c0, c1))
    ang = rng.uniform(0, 2 * np.pi)
    g = np.linspace(-1, 1, size, dtype=np.float32)
    ramp = (np.cos(ang) * g[None, :] + np.sin(ang) * g[:, None]) * 0.5 + 0.5
    bg = (c0 + (c1 - c0) * ramp[..., None]).astype(np.uint8)
    for _ in range(int(rng.integers(*style.clutter))):
        col = tuple(float(v) for v in rng.uniform(0, 255, 3))
        x, y = rng.uniform(0, size, 2)
        ext = rng.uniform(0.05, 0.35) * size
        kind = rng.integers(4)
        if kind == 0:
            ellipse(bg, (x, y), (ext, ext * rng.uniform(0.3, 1)), col, angle=rng.uniform(0, 180))
        elif kind == 1:
            cv2.rectangle(bg, (int(x), int(y)), (int(x + ext), int(y + ext * rng.uniform(0.3, 2))), col, -1)
        elif kind == 2:
            end = np.array([[x, y], [x + ext * rng.normal(), y + ext * rng.normal()]])
            polyline(bg, end, col, int(rng.integers(1, max(2, size // 24))))
        else:
            fill_poly(bg, np.array([x, y]) + rng.normal(0, ext, (3, 2)), col)
    if rng.random() < 0.5:
        bg = cv2.GaussianBlur(bg, (0, 0), rng.uniform(0.5, 2.0) * size / 64)
    return bg


def render(
    traits: Traits,
    apparent_age: float,
    size: int,
    rng: np.random.Generator,
    want_mask: bool = False,
    style: Style | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One BGR uint8 image (and its region mask) of `traits` looking `apparent_age`, with nuisance from `rng`.

    The final brightness and contrast are drawn at random and imposed on the whole image, so that the mean
    grey level is independent of age (greying hair would otherwise brighten old faces).
    """
    image, mask, _ = render_with_landmarks(traits, apparent_age, size, rng, want_mask, style)
    return image, mask


def render_with_landmarks(
    traits: Traits,
    apparent_age: float,
    size: int,
    rng: np.random.Generator,
    want_mask: bool = False,
    style: Style | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """:func:`render` plus the face's five landmarks [5, 2] in the image's continuous coordinates (pixel i spans
    [i, i + 1)), after the pose warp: what an alignment test needs as ground truth. Draws nothing extra from
    `rng`, so the image is the one :func:`render` makes."""
    st = style or get_style(DEFAULT_STYLE)
    r = 2 * size if size <= 256 else size  # supersample thin folds, then average down
    face = Face(traits, apparent_age, r, rng)
    face.draw()
    rot = float(np.clip(rng.normal(0, st.rotation_sd), -3 * st.rotation_sd, 3 * st.rotation_sd))
    m = cv2.getRotationMatrix2D((face.cx, face.cy), rot, float(rng.uniform(*st.scale)))
    m[:, 2] += rng.uniform(-st.shift, st.shift, 2) * r
    person = cv2.warpAffine(face.img, m, (r, r), flags=cv2.INTER_LINEAR, borderValue=0)
    alpha = cv2.warpAffine(face.alpha, m, (r, r), flags=cv2.INTER_LINEAR, borderValue=0)
    if r != size:
        person = cv2.resize(person, (size, size), interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(alpha, (size, size), interpolation=cv2.INTER_AREA)
    a = alpha.astype(np.float32)[..., None] / 255
    # The person canvas is black outside the drawing, i.e. premultiplied by alpha.
    img = _background(size, rng, st).astype(np.float32) * (1 - a) + person.astype(np.float32)
    # Lighting: a directional ramp, a colour cast, optional blur and sensor noise.
    g = np.linspace(-1, 1, size, dtype=np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    ramp = 1 + rng.uniform(0, st.light) * (np.cos(ang) * g[None, :] + np.sin(ang) * g[:, None])
    img *= ramp[..., None] * rng.uniform(1 - st.cast, 1 + st.cast, 3).astype(np.float32)
    if st.tint != (1.0, 1.0, 1.0):
        img *= np.array(st.tint, dtype=np.float32)
    if rng.random() < st.blur_p:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.8) * size / 64)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(0, st.noise))
    img = (img - img.mean()) * rng.uniform(*st.contrast) + rng.uniform(*st.brightness)
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    # Pixel centres of the r canvas through the pose warp, then to continuous coordinates of the size image.
    landmarks = (face.landmarks() @ m[:, :2].T + m[:, 2] + 0.5) * (size / r)
    if not want_mask:
        return out, None, landmarks
    mask = cv2.warpAffine(face.regions(), m, (r, r), flags=cv2.INTER_NEAREST, borderValue=0)
    if r != size:
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return out, mask, landmarks


def _render_job(job: ImageJob, root: str) -> int:
    """Draw, encode and write one image (and mask); runs in a worker process."""
    rng = np.random.default_rng(np.random.SeedSequence(job.seed, spawn_key=(_IMAGE, job.index)))
    img, mask = render(job.traits, job.apparent_age, job.size, rng, job.mask_path is not None, job.style)
    quality = int(rng.integers(*job.style.jpeg))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV failure is a bug, not a user error
        raise RuntimeError(f"JPEG encoding failed for {job.path}")
    _write(Path(root) / job.path, buf.tobytes())
    if mask is not None and job.mask_path is not None:
        ok, buf = cv2.imencode(".png", mask)
        _write(Path(root) / job.mask_path, buf.tobytes())
    return job.index


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # the pool supplies the parallelism; nested threads only contend


def _prepare_out(out: Path) -> None:
    """Refuse a non-empty folder unless a previous synth run made it; then clear what that run wrote."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        return
    marker = out / MARKER
    try:
        ours = json.loads(marker.read_text(encoding="utf-8")).get("generator") == "agebench synth"
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise UserError(
            f"{out}: folder is not empty and holds no previous synth output ({MARKER}); choose a new or empty folder"
        )
    for sub in ("images", "masks"):
        shutil.rmtree(out / sub, ignore_errors=True)
    # The cache is keyed by paths, which a new seed reuses: an old one would serve the previous run's pixels.
    for path in (out / MANIFEST, out / MARKER, *cache_files(out / MANIFEST)):
        path.unlink(missing_ok=True)


def _check(n: int, seed: int, size: int, noise_sigma: float, workers: int | None, cache_size: int | None) -> None:
    if cache_size is not None and cache_size < 8:  # checked here too so that nothing is written first
        raise UserError(f"--cache-size {cache_size}: expected at least 8 pixels")
    if n < MIN_N:
        raise UserError(f"--n {n}: need at least {MIN_N} images (three subject-exclusive splits)")
    if seed < 0:
        raise UserError(f"--seed {seed}: must be >= 0")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(f"--size {size}: must be within {MIN_SIZE}..{MAX_SIZE} pixels")
    if not (math.isfinite(noise_sigma) and 0 <= noise_sigma <= 20):
        raise UserError(f"--noise-sigma {noise_sigma}: must be within 0..20 years")
    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers}: must be >= 1")


def resolve_workers(workers: int | None, n: int) -> int:
    """Processes to draw with: the given count, else the usable cores (max 16); tiny jobs stay in-process."""
    if workers is None:
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            workers = os.cpu_count() or 1
        workers = min(16, workers)
    return 1 if n < 50 else max(1, min(workers, n))


def generate(
    out: Path,
    n: int = 5000,
    seed: int = 0,
    size: int = 128,
    noise_sigma: float = 2.5,
    masks: bool = False,
    workers: int | None = None,
    progress: bool = True,
    cache_size: int | None = None,
    style: str = DEFAULT_STYLE,
    splits: tuple[int, int, int] = DEFAULT_SPLITS,
    apparent_bias: tuple[ApparentBias, ...] = (),
) -> Path:
    """Write the data set under `out` and return its manifest path; see the module docstring for the contract.

    ``splits``: subjects per age-sorted block of 10 dealt to train/val/test (default 7/1/2). A larger test split
    narrows every interval of the leaderboard without costing training time (``make bench`` uses 5/1/4).

    ``cache_size`` also writes the uint8 crop cache (agebench.data.cache) that training then reads instead of
    decoding JPEGs: on a CPU-only machine decoding is a tenth of a small model's training step.
    """
    out = Path(out)
    chosen = get_style(style)
    _check(n, seed, size, noise_sigma, workers, cache_size)
    _prepare_out(out)
    params = {
        "generator": "agebench synth",
        "version": GENERATOR_VERSION,
        "n": n,
        "seed": seed,
        "size": size,
        "noise_sigma": noise_sigma,
        "masks": masks,
        "style": chosen.name,
        "mae_floor": round(mae_floor(noise_sigma), 4),
    }
    if tuple(splits) != DEFAULT_SPLITS:  # recorded only when set, so the default folder is unchanged
        params["splits"] = list(splits)
    if apparent_bias:  # likewise only when set
        params["apparent_bias"] = [b.to_dict() for b in apparent_bias]
    (out / MARKER).write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
    rows, jobs = plan(n, seed, size, noise_sigma, masks, chosen, tuple(splits), tuple(apparent_bias))
    _run(jobs, out, resolve_workers(workers, n), progress)
    manifest = write_manifest(rows, out / MANIFEST)
    if cache_size:
        build_cache(manifest, size=cache_size, workers=resolve_workers(workers, n), progress=progress)
    return manifest


def _run(jobs: list[ImageJob], out: Path, workers: int, progress: bool) -> None:
    """Render all jobs, in a process pool when workers > 1; results are files, so order does not matter."""
    import multiprocessing

    from rich.console import Console
    from rich.progress import MofNCompleteColumn, Progress, TimeElapsedColumn

    work = partial(_render_job, root=str(out))
    bar = Progress(
        *Progress.get_default_columns(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not progress,
    )
    with bar:
        task = bar.add_task("synth", total=len(jobs))
        if workers == 1:
            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)
            try:
                for job in jobs:
                    work(job)
                    bar.advance(task)
            finally:
                cv2.setNumThreads(threads)
            return
        chunk = max(1, min(32, len(jobs) // (workers * 8)))
        from agebench.data.images import fork_safe_opencv

        with fork_safe_opencv(), multiprocessing.get_context().Pool(workers, initializer=_init_worker) as pool:
            for _ in pool.imap_unordered(work, jobs, chunksize=chunk):
                bar.advance(task)
