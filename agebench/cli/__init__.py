"""The `agebench` command: argument parsing only; each subcommand module calls one function elsewhere.

Every subcommand lives in `agebench/cli/<name>.py` with `add_arguments(parser)` and `run(args) -> int`.
Those modules import heavy libraries (torch, cv2) inside `run`, so `agebench --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from agebench.errors import UserError

# name -> one-line help; the module agebench.cli.<name> implements it.
COMMANDS: dict[str, str] = {
    "synth": "generate the embedded synthetic face-age data set",
    "audit": "validate a manifest and summarise its splits (exit 0 ok, 1 leaky, 2 malformed)",
    "prepare": "turn a raw data set download into a manifest (+ crop cache)",
    "models": "list registered backbones with parameter counts",
    "weights": "fetch pretrained weights ahead for offline machines, or list what a config needs",
    "heads": "list registered prediction heads with their parameters",
    "fit": "train one model on one data set from a YAML config",
    "bench": "train every model on every data set, one process per cell",
    "profile": "parameter count, GFLOPs, latency and throughput of a model",
    "leaderboard": "build the leaderboard (md/csv/json/html + plots) from result files",
    "bundle": "pack result cells (metrics, predictions, configs; no weights) with sha256 digests into a zip",
    "verify": "check a result bundle: digests, recomputed metrics, coverage of your test split (exit 1: mismatch)",
    "compare": "paired significance test of two models on one data set",
    "assurance": "age assurance: error by group and year of age, age-gate and child-band rates, from result files",
    "explain": "Grad-CAM maps and a failure report for finished runs",
    "predict": "predict ages of new images (files or folders) with a trained run",
    "export": "export a trained run to TorchScript or ONNX and check it against the checkpoint",
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """All subcommands are listed; only ``selected`` (or all, when None) gets its arguments imported."""
    from agebench import __version__

    parser = argparse.ArgumentParser(prog="agebench", description="Reproducible facial age estimation benchmarks.")
    parser.add_argument("--version", action="version", version=f"agebench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        if selected is not None and name != selected:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(f"agebench.cli.{name}")
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected if selected in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except UserError as err:
        print(f"agebench {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"agebench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
