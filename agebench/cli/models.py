"""List the registered backbones with their parameter counts (backbone + default head).

Built-ins and packages' `agebench.backbones` entry points are listed; any timm model is also available
as `timm:<model_name>`. Counts are exact and cheap: models are built on the meta device.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--img-size", type=int, default=224, help="input size the models are built for")
    parser.add_argument("--head-hidden", type=int, default=256, help="hidden width of the age head")


def _millions(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M"


def run(args: argparse.Namespace) -> int:
    import json

    from agebench.models import describe_backbones

    rows = describe_backbones(img_size=args.img_size, head_hidden=args.head_hidden)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"agebench backbones at {args.img_size} px (also: timm:<model_name>)")
    for column in ("name", "source", "features", "backbone", "with head", "description"):
        table.add_column(column, justify="right" if column in ("features", "backbone", "with head") else "left")
    for row in rows:
        description = row["description"] if row["error"] is None else f"[red]{row['error']}[/red]"
        table.add_row(
            row["name"],
            row["source"],
            "-" if row["num_features"] is None else str(row["num_features"]),
            _millions(row["backbone_params"]),
            _millions(row["params"]),
            description,
        )
    Console().print(table)
    return 0
