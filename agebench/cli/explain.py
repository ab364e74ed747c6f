"""Grad-CAM (or occlusion) maps of the predicted age and a failure report for finished runs.

`agebench explain --run RESULTS/<dataset>/<model>/seed<k>` writes <run>/explain/gradcam.png (the same test faces,
youngest to oldest, under each explained layer), <run>/explain/attention.json when the manifest has region masks
(`agebench synth --masks`), and <run>/failure_report.md (worst cases, MAE by age group beside the training ages).
Several --run options put the same faces side by side in --out. `--checkpoint CKPT --manifest CSV --out DIR`
explains a checkpoint outside a result folder (no failure report: there are no predictions to read).
`--method occlusion` maps every architecture the same way, on the input (occlusion.png; its entries join
attention.json's).
"""

from __future__ import annotations

import argparse
import json

from agebench.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run",
        dest="runs",
        action="append",
        default=[],
        metavar="DIR",
        help="result folder RESULTS/<dataset>/<model>/seed<k> (repeat to compare models)",
    )
    p.add_argument("--checkpoint", default=None, help="an agebench checkpoint to explain instead of a result folder")
    p.add_argument("--manifest", default=None, help="manifest of the test images (default: the run's config.yaml)")
    p.add_argument("--root", default=None, help="data root the manifest paths are relative to")
    p.add_argument("--n", type=int, default=8, help="test faces to explain, spread over the age range (default 8)")
    p.add_argument("--worst", type=int, default=12, help="worst predictions in the failure report (default 12)")
    p.add_argument(
        "--out", default=None, help="output folder (default <run>/explain; required with several runs or --checkpoint)"
    )
    p.add_argument(
        "--method",
        choices=("gradcam", "hirescam", "occlusion"),  # agebench.report.cam_targets.METHODS (kept torch-free here)
        default="gradcam",
        help="gradcam (default); hirescam: gradient x activation per position, equal to Grad-CAM where the head "
        "averages the map, and a check of its maps elsewhere (class-token ViTs, a hybrid's trunk); occlusion: how "
        "much the predicted age drops where a window of the input is blurred, the same for every architecture "
        "and at input resolution (one forward pass per window position: slower)",
    )
    p.add_argument(
        "--window",
        type=int,
        default=None,
        metavar="PX",
        help="occlusion window in input pixels (default an eighth of the image side: 8 at 64 px)",
    )
    p.add_argument(
        "--stride", type=int, default=None, metavar="PX", help="occlusion stride in pixels (default half the window)"
    )
    p.add_argument(
        "--control",
        action="store_true",
        help="also score each model's architecture untrained (fresh initialisation, seed 0): what the method "
        "finds without training (Adebayo et al. 2018's randomisation test); twice the time",
    )
    p.add_argument("--device", default="cpu", help="torch device for Grad-CAM, e.g. cpu or cuda (default cpu)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--failures-only", action="store_true", help="write the failure report only (no torch)")
    group.add_argument("--no-failures", action="store_true", help="skip the failure report")


def _check(args: argparse.Namespace) -> None:
    if bool(args.runs) == bool(args.checkpoint):
        raise UserError("give either --run (one or more) or --checkpoint")
    if args.checkpoint and not args.manifest:
        raise UserError("--checkpoint needs --manifest (the test images to explain)")
    if args.checkpoint and args.failures_only:
        raise UserError("--failures-only needs --run: a checkpoint alone has no predictions.csv")
    if (args.checkpoint or len(args.runs) > 1) and not args.out and not args.failures_only:
        raise UserError("--out is required with several runs or with --checkpoint")
    if args.n < 1 or args.worst < 1:
        raise UserError(f"--n {args.n} / --worst {args.worst}: must be at least 1")
    if args.method != "occlusion" and (args.window is not None or args.stride is not None):
        raise UserError("--window/--stride set the occlusion window: use them with --method occlusion")
    for flag, value in (("--window", args.window), ("--stride", args.stride)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: must be at least 1 pixel")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agebench.atomic import check_writable_dir, check_writable_file

    _check(args)
    for run_dir in args.runs:
        if not Path(run_dir).is_dir():
            raise UserError(f"{run_dir}: result folder not found")
    # Where it writes, checked before any model loads: the maps in --out (or each run's explain/), the failure
    # report in each run (failure_report.md, its plots in explain/).
    if not args.failures_only:
        for out in [args.out] if args.out else [str(Path(r) / "explain") for r in args.runs]:
            check_writable_dir(out, f"--out {out}" if args.out else None)
        from agebench.validate import check_device

        check_device(args.device)
    if not args.no_failures:
        for run_dir in args.runs:
            check_writable_dir(Path(run_dir) / "explain")
            check_writable_file(Path(run_dir) / "failure_report.md")
    runs = None
    if not args.failures_only:  # load (and so validate) every run before writing anything
        from agebench.report.explain import load_run, open_run

        if args.checkpoint:
            runs = [open_run(Path(args.checkpoint), args.manifest, args.root)]
        else:
            runs = [load_run(r, args.manifest, args.root) for r in args.runs]
    written: list[Path] = []
    if args.runs and not args.no_failures:
        from agebench.report.failures import write_failure_report

        root = args.root or (Path(args.manifest).parent if args.manifest else None)
        for run_dir in args.runs:
            rep = write_failure_report(run_dir, n=args.worst, root=root)
            written += [rep.report, rep.worst_png, rep.groups_png]
    if runs is not None:
        from agebench.report.cam_targets import format_attention
        from agebench.report.explain import ATTENTION_JSON, explain

        files = explain(
            runs,
            n=args.n,
            out=args.out,
            device=args.device,
            method=args.method,
            window=args.window,
            stride=args.stride,
            control=args.control,
        )
        written += files
        # With several runs the last attention.json is the comparison's, holding every model's entries.
        for f in [f for f in files if f.name == ATTENTION_JSON][-1:]:
            entries = json.loads(f.read_text(encoding="utf-8"))
            for line in format_attention([e for e in entries if e.get("method", "gradcam") == args.method]):
                print(line)
    for path in written:
        print(f"wrote {path}")
    return 0
