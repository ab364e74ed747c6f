"""Export a trained run (TorchScript, ONNX or torch.export), then check the file against the checkpoint on test images.

`agebench export --run RESULTS/<dataset>/<model>/seed<k> --format torchscript|onnx|exported [--out FILE]` writes the
network with its preprocessing constants (it takes RGB pixels 0..255 at the run's image size and returns
years) and prints the largest difference from the checkpoint on --n test images of the run's data set; more
than 1e-4 years is an error (exit 2, the file is kept for inspection). ONNX needs `pip install 'agebench[export]'`.
"""

from __future__ import annotations

import argparse

from agebench.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="DIR", help="result folder RESULTS/<dataset>/<model>/seed<k>")
    p.add_argument(
        "--format",
        required=True,
        dest="fmt",
        help="torchscript (.pt), onnx (.onnx, dynamo exporter) or exported (.pt2, torch.export)",
    )
    p.add_argument("--out", default=None, help="file to write (default <run>/export/model.pt or model.onnx)")
    p.add_argument("--n", type=int, default=16, help="test images for the parity check (default 16)")
    p.add_argument("--manifest", default=None, help="manifest of the test images (default: the run's config.yaml)")
    p.add_argument("--root", default=None, help="data root the manifest paths are relative to")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agebench import export, predict
    from agebench.atomic import check_writable_file
    from agebench.report.explain import load_run, pick_faces

    if args.fmt not in export.FORMATS:
        raise UserError(f"--format {args.fmt!r}: expected one of {', '.join(export.FORMATS)}")
    if args.n < 1:
        raise UserError(f"--n {args.n}: must be at least 1")
    out = Path(args.out) if args.out else Path(args.run) / "export" / f"model{export.FORMATS[args.fmt].suffix}"
    if args.out or Path(args.run).is_dir():  # a missing run is load_run's to name
        check_writable_file(out, f"--out {out}")  # before the model loads
    run_ = load_run(args.run, args.manifest, args.root)  # the model and the test split, as the bench read it
    loaded, test = predict.load(args.run, model=run_.model), run_.data
    images = [test.load_rgb(i) for i in pick_faces(test.records, args.n)]
    result = export.export(loaded, args.fmt, out, images)
    verdict = "ok" if result.ok else f"FAILED (tolerance {export.TOLERANCE:g})"
    print(
        f"{loaded.name} -> {args.fmt}: max |exported - checkpoint| = {result.max_abs_diff:.2e} years on "
        f"{result.n_images} test images: {verdict}"
    )
    print(f"wrote {out} (input: float32 [B, 3, {loaded.img_size}, {loaded.img_size}] RGB 0..255; output: years [B])")
    if not result.ok:
        raise UserError(f"{out}: exported model disagrees with the checkpoint by {result.max_abs_diff:.2e} years")
    return 0
