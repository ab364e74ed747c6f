"""Pretrained weights for offline machines: `fetch` them where there is network, `list` what a config needs.

`agebench weights fetch convnext vit hybrid --to weights/` (on a login node) stores the timm weights each model
is built from as `weights/<architecture>.<tag>.safetensors` plus `weights/weights.json`; on an offline node set
`model.weights_dir: weights/` (with `pretrained: true`). `agebench weights list --config X` says, per model, which
weights it needs and where they are: in weights_dir, in the Hugging Face cache, or missing (exit 1).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action", choices=("fetch", "list"), help="fetch: download into --to; list: what is needed and where"
    )
    p.add_argument("models", nargs="*", metavar="MODEL", help="agebench model names (see `agebench models`)")
    p.add_argument("--to", default=None, help="fetch: folder to put the weights in (created)")
    p.add_argument("--config", default=None, help="list: a fit or bench YAML; its models and weights_dir are used")
    p.add_argument("--weights-dir", default=None, help="list: folder to look in (default: the config's weights_dir)")


def _local_files(path: str) -> list[tuple[str, str]]:
    """(model, file) of every model a fit or bench config loads from ``model.pretrained_path``."""
    from agebench.config import load_fit_config, load_yaml

    if "models" in load_yaml(path):
        from agebench.bench.plan import expand, load_bench_config

        models = [c.fit["model"] for c in expand(load_bench_config(path), "results")]
    else:
        m = load_fit_config(path).model
        models = [{"name": m.name, "pretrained_path": m.pretrained_path}]
    return list(dict.fromkeys((m["name"], m["pretrained_path"]) for m in models if m.get("pretrained_path")))


def _from_config(path: str) -> list[tuple[str, dict, str | None]]:
    """(model, backbone kwargs, weights_dir) of every model a fit or bench config trains with pretrained=true."""
    from agebench.config import load_fit_config, load_yaml

    if "models" in load_yaml(path):
        from agebench.bench.plan import expand, load_bench_config

        fits = [c.fit for c in expand(load_bench_config(path), "results")]
        entries = [
            (f["model"]["name"], {"img_size": f["data"]["img_size"], **f["model"]["kwargs"]}, f["model"]) for f in fits
        ]
    else:
        cfg = load_fit_config(path)
        m = cfg.model
        entries = [
            (
                m.name,
                {"img_size": cfg.data.img_size, **m.kwargs},
                {"pretrained": m.pretrained, "weights_dir": m.weights_dir},
            )
        ]
    out, seen = [], set()
    for name, kwargs, model in entries:
        if model.get("pretrained") and name not in seen:
            seen.add(name)
            out.append((name, kwargs, model.get("weights_dir")))
    return out


def run(args: argparse.Namespace) -> int:
    from agebench.atomic import check_writable_dir
    from agebench.errors import UserError
    from agebench.models.fetch import fetch, timm_names
    from agebench.models.weights import weight_spec, where

    if args.action == "fetch":
        if not args.models or not args.to:
            raise UserError(
                "weights fetch: give the model names and --to DIR, e.g. `agebench weights fetch vit --to weights`"
            )
        check_writable_dir(args.to, f"--to {args.to}")  # before any download
        fetch(args.models, args.to)
        print(f"set model.weights_dir: {args.to} (and pretrained: true) in the configs of the offline machines")
        return 0
    if args.models and args.config:
        raise UserError("weights list: give model names or --config, not both")
    missing = 0
    if args.config:
        entries = _from_config(args.config)
        local = _local_files(args.config)
        if not entries and not local:
            print(f"{args.config}: no model has pretrained: true or a pretrained_path; no weights needed")
            return 0
        from pathlib import Path

        from agebench.models.registry import get_backbone_spec

        for name, file in local:  # weights from a local file (foundation / face-pretrained models): not fetchable
            present = Path(file).is_file()
            missing += not present
            source = get_backbone_spec(name).requires_pretrained_path
            where_from = f"; download it from {source}" if source and not present else ""
            print(
                f"{name:16s} {'model.pretrained_path':48s} {'present' if present else 'missing'} ({file}){where_from}"
            )
    elif args.models:
        entries = [(name, {}, None) for name in args.models]
    else:
        raise UserError("weights list: give model names or --config FILE")
    for name, kwargs, weights_dir in entries:
        weights_dir = args.weights_dir or weights_dir
        for timm_name in timm_names(name, **kwargs):
            spec = weight_spec(timm_name)
            state, path = where(spec, weights_dir)
            missing += state == "missing"
            shown = f"{state} ({path})" if path else state
            print(f"{name:16s} {spec.key:48s} {shown}")
    if missing:
        print(
            f"{missing} missing: `agebench weights fetch MODEL... --to DIR` on a machine with network for timm "
            "weights; model.pretrained_path files are downloaded by hand from their source"
        )
    return 1 if missing else 0
