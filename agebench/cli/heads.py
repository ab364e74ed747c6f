"""List the registered prediction heads with their parameters and defaults.

Built-ins and packages' `agebench.heads` entry points are listed. Choose one with `model.head: NAME` or
`model.head: {name: NAME, PARAM: VALUE, ...}`; parameters marked "from ..." are filled from that config key
unless `model.head` sets them. Integer-age heads also need `model.age_range` (default: the training split's).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def _parameter_text(param: dict) -> str:
    text = f"{param['name']}={param['default']!r}"
    return text if param["from"] is None else f"{text} ({param['from']})"


def run(args: argparse.Namespace) -> int:
    import json

    from agebench.models.heads import describe_heads

    rows = describe_heads()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0

    from rich.console import Console
    from rich.table import Table

    table = Table(title="agebench heads (model.head)")
    for column in ("name", "source", "age range", "parameters", "description"):
        table.add_column(column)
    for row in rows:
        uses = row["uses_age_range"]
        params = ", ".join(_parameter_text(p) for p in row["parameters"]) or "-"
        description = row["description"] if row["error"] is None else f"[red]{row['error']}[/red]"
        table.add_row(
            row["name"], row["source"], "-" if uses is None else ("yes" if uses else "no"), params, description
        )
    Console().print(table)
    return 0
