"""How well does a face detector find and align a face it has never seen, in clutter? Measured on real face chips.

Each chip of FOLDER (e.g. UTKFace's aligned 200 x 200 chips) is pasted at a random position, scale (side 0.3-0.6
of the canvas height) and in-plane rotation (+-20 degrees) onto a 640 x 480 canvas of random clutter, so its
placement (a rotated square) is known exactly. Every detector then crops the canvas as `agebench prepare` does
(its main face; MTCNN/YuNet aligned by five landmarks, Haar's box squared) and the script reports, per detector:

* found: share of canvases where the detector saw a face at all;
* IoU: mean intersection-over-union of the crop quad with the known placement (0 where nothing was found),
  after one *framing calibration* per detector: the median scale and shift (in the crop's own frame, as a
  share of its side) from crop to placement over the found faces. So each detector is judged on how
  consistently it finds and aligns the face, not on its framing convention (the ArcFace template centres a
  face lower than UTKFace's chips do, Haar's box is tighter); IoU >= 0.5 counts as correct;
* angle error: mean |crop rotation - placement rotation| in degrees over found faces (Haar's crops are upright).

Nothing is written into the repository: results (JSON, Markdown, a few example canvases) go to --out (default
/tmp/align_eval). Run: `python scripts/align_eval.py /path/to/utkface-sample --detectors mtcnn,haar`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from agebench.data import faces
from agebench.data.images import read_rgb

CANVAS_W, CANVAS_H = 640, 480


def clutter(rng: np.random.Generator) -> np.ndarray:
    """A gradient, 25-45 random shapes and lines, then sensor noise: edges and colours everywhere."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ramp = np.linspace(0, 1, CANVAS_W, dtype=np.float32)[None, :, None]
    canvas = np.ascontiguousarray(np.broadcast_to(c0 + (c1 - c0) * ramp, (CANVAS_H, CANVAS_W, 3)).astype(np.uint8))
    for _ in range(int(rng.integers(25, 46))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, CANVAS_W)), int(rng.integers(0, CANVAS_H))
        ext = int(rng.integers(10, 160))
        kind = int(rng.integers(4))
        if kind == 0:
            cv2.rectangle(canvas, (x, y), (x + ext, y + int(ext * rng.uniform(0.2, 2))), colour, -1)
        elif kind == 1:
            axes = (ext // 2 + 1, int(ext * rng.uniform(0.2, 1)) // 2 + 1)
            cv2.ellipse(canvas, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        elif kind == 2:
            end = (x + int(rng.normal(0, ext)), y + int(rng.normal(0, ext)))
            cv2.line(canvas, (x, y), end, colour, int(rng.integers(1, 8)))
        else:
            cv2.putText(canvas, "ABC123"[: int(rng.integers(1, 7))], (x, y), 0, rng.uniform(0.5, 2.5), colour, 2)
    noise = rng.normal(0, 6, canvas.shape)
    return np.clip(canvas + noise, 0, 255).astype(np.uint8)


def place(chip: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """The chip pasted on clutter; its placement quad [4, 2] (TL, TR, BR, BL, continuous coordinates); the angle."""
    h, w = chip.shape[:2]
    side = rng.uniform(0.3, 0.6) * CANVAS_H
    angle = float(rng.uniform(-20, 20))
    half = 0.5 * side * (abs(np.cos(np.deg2rad(angle))) + abs(np.sin(np.deg2rad(angle))))  # half the rotated extent
    cx, cy = rng.uniform(half, CANVAS_W - half), rng.uniform(half, CANVAS_H - half)
    scale = side / w
    rot = cv2.getRotationMatrix2D((0.0, 0.0), -angle, scale)  # continuous chip coords about its centre
    rot[:, 2] = [cx, cy] - rot[:, :2] @ [w / 2, h / 2]
    quad = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64) @ rot[:, :2].T + rot[:, 2]
    pixel = rot.copy()  # the same map between pixel centres (what warpAffine uses)
    pixel[:, 2] += rot[:, :2] @ [0.5, 0.5] - 0.5
    canvas = clutter(rng)
    size = (CANVAS_W, CANVAS_H)
    warped = cv2.warpAffine(chip, pixel, size, flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(np.full((h, w), 255, np.uint8), pixel, size, flags=cv2.INTER_LINEAR)[..., None] / 255.0
    canvas = (canvas * (1 - alpha) + warped * alpha).astype(np.uint8)
    return canvas, quad, angle


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a32, b32 = a.astype(np.float32).reshape(-1, 1, 2), b.astype(np.float32).reshape(-1, 1, 2)
    inter, _ = cv2.intersectConvexConvex(a32, b32)
    union = cv2.contourArea(a32) + cv2.contourArea(b32) - inter
    return float(inter / union) if union > 0 else 0.0


def frame(quad: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Centre, unit x and y axes and side of a square quad (TL, TR, BR, BL)."""
    s = side(quad)
    return quad.mean(axis=0), (quad[1] - quad[0]) / s, (quad[3] - quad[0]) / s, s


def offset(quad: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(scale, shift x, shift y) that carry the crop onto the placement, in the crop's frame and side."""
    centre, ux, uy, s = frame(quad)
    d = truth.mean(axis=0) - centre
    return np.array([side(truth) / s, d @ ux / s, d @ uy / s])


def calibrated(quad: np.ndarray, framing: np.ndarray) -> np.ndarray:
    centre, ux, uy, s = frame(quad)
    new_centre = centre + s * (framing[1] * ux + framing[2] * uy)
    return new_centre + (quad - centre) * framing[0]


def side(quad: np.ndarray) -> float:
    return float(np.linalg.norm(quad[1] - quad[0]))


def rotation(quad: np.ndarray) -> float:
    """The angle of the quad's top edge in degrees, counter-clockwise as seen on screen (y points down)."""
    dx, dy = quad[1] - quad[0]
    return float(np.degrees(np.arctan2(-dy, dx)))


def evaluate(folder: Path, names: list[str], n: int | None, seed: int, out: Path) -> dict:
    from rich.progress import Progress

    chips = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    if not chips:
        raise SystemExit(f"{folder}: no images")
    detectors = {name: faces.FaceDetector(faces.DetectorSpec.parse(name)) for name in names}
    rows: dict[str, list[dict]] = {name: [] for name in names}
    seconds = dict.fromkeys(names, 0.0)
    out.mkdir(parents=True, exist_ok=True)
    with Progress() as bar:
        job = bar.add_task("canvases", total=len(chips))
        for i, chip_file in enumerate(chips):
            rng = np.random.default_rng([seed, i])
            canvas, truth, angle = place(read_rgb(chip_file), rng)
            for name, det in detectors.items():
                start = time.perf_counter()
                found = det.crop_quad(canvas, margin=0.0)
                seconds[name] += time.perf_counter() - start
                quad = np.asarray(found.quad, np.float64).reshape(4, 2)
                rows[name].append(
                    {
                        "image": chip_file.name,
                        "found": found.found,
                        "n_faces": found.n_faces,
                        "quad": quad.tolist(),
                        "truth": truth.tolist(),
                        "angle": angle,
                        "angle_error": abs(rotation(quad) - rotation(truth)) if found.found else None,
                        "framing": offset(quad, truth).tolist() if found.found else None,
                    }
                )
                if i < 6:
                    shown = canvas.copy()
                    cv2.polylines(shown, [truth.astype(np.int32)], True, (0, 255, 0), 2)
                    cv2.polylines(shown, [quad.astype(np.int32)], True, (255, 0, 0), 2)
                    cv2.imwrite(str(out / f"example_{i}_{name}.jpg"), shown[..., ::-1])
            bar.advance(job)
    summary = {}
    for name, items in rows.items():
        offsets = [r["framing"] for r in items if r["found"]]
        framing = np.median(np.array(offsets), axis=0) if offsets else np.array([1.0, 0.0, 0.0])
        ious = [
            iou(calibrated(np.array(r["quad"]), framing), np.array(r["truth"])) if r["found"] else 0.0 for r in items
        ]
        raw = [iou(np.array(r["quad"]), np.array(r["truth"])) if r["found"] else 0.0 for r in items]
        found = [r for r in items if r["found"]]
        summary[name] = {
            "canvases": len(items),
            "found_share": len(found) / len(items),
            "correct_share": float(np.mean([v >= 0.5 for v in ious])),
            "mean_iou": float(np.mean(ious)),
            "mean_iou_found": float(np.mean([v for v, r in zip(ious, items, strict=True) if r["found"]] or [0.0])),
            "several_faces_share": float(np.mean([r["n_faces"] > 1 for r in items])),
            "mean_iou_uncalibrated": float(np.mean(raw)),
            "framing": {"scale": float(framing[0]), "shift_x": float(framing[1]), "shift_y": float(framing[2])},
            "mean_angle_error_deg": float(np.mean([r["angle_error"] for r in found])) if found else None,
            "seconds_per_canvas": seconds[name] / len(items),
        }
    (out / "align_eval.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1), encoding="utf-8")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of face chips (read only)")
    parser.add_argument("--detectors", default="mtcnn,haar", help="comma-separated --face-detector names")
    parser.add_argument("--n", type=int, default=None, help="first N chips only (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/align_eval"), help="results folder (not the repo)")
    args = parser.parse_args()
    summary = evaluate(args.folder, args.detectors.split(","), args.n, args.seed, args.out)
    lines = [
        "| detector | canvases | found | IoU >= 0.5 | mean IoU (all / found) | IoU uncalibrated | several faces "
        "| framing (scale, shift x, y) | angle error | s per canvas |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        f = s["framing"]
        angle = "-" if s["mean_angle_error_deg"] is None else f"{s['mean_angle_error_deg']:.1f} deg"
        lines.append(
            f"| {name} | {s['canvases']} | {s['found_share']:.1%} | {s['correct_share']:.1%} | {s['mean_iou']:.3f} / "
            f"{s['mean_iou_found']:.3f} | {s['mean_iou_uncalibrated']:.3f} | {s['several_faces_share']:.1%} "
            f"| {f['scale']:.2f}, {f['shift_x']:+.2f}, {f['shift_y']:+.2f} | {angle} | {s['seconds_per_canvas']:.3f} |"
        )
    text = "\n".join(lines) + "\n"
    (args.out / "align_eval.md").write_text(text, encoding="utf-8")
    print(text + f"wrote {args.out / 'align_eval.json'}")


if __name__ == "__main__":
    main()
