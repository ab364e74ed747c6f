"""`agebench audit`: validate a manifest and summarise it, so a leak is seen before anyone trains on it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agebench.data.manifest import Manifest, load_manifest, split_summary

EXIT_OK, EXIT_LEAKY = 0, 1


@dataclass
class AuditReport:
    manifest: Manifest
    summary: list[dict[str, object]]
    leaking_subjects: dict[str, list[str]]

    @property
    def leaky(self) -> bool:
        return bool(self.leaking_subjects)

    @property
    def exit_code(self) -> int:
        return EXIT_LEAKY if self.leaky else EXIT_OK


def audit(file: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> AuditReport:
    """Validate (raises ManifestError when malformed) and collect the facts a user should see."""
    manifest = load_manifest(file, root)
    return AuditReport(manifest, split_summary(manifest), manifest.leaks())


def print_report(report: AuditReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    m = report.manifest
    table = Table(title=f"{Path(m.file)}  (root {m.root})")
    for col in ("split", "images", "subjects", "age range", "mean age"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for row in report.summary:
        subjects = "-" if row["subjects"] is None else str(row["subjects"])
        table.add_row(
            str(row["split"]),
            str(row["images"]),
            subjects,
            f"{row['age_min']:g}-{row['age_max']:g}",
            f"{row['age_mean']:.1f}",
        )
    console.print(table)
    if not m.has_identities:
        console.print("no subject identities: splits cannot be checked for identity leaks (not subject-exclusive)")
    if report.leaky:
        n = len(report.leaking_subjects)
        shown = ", ".join(f"{s} ({'/'.join(sp)})" for s, sp in list(report.leaking_subjects.items())[:20])
        more = f" and {n - 20} more" if n > 20 else ""
        console.print(f"[bold red]LEAK[/]: {n} subject(s) appear in more than one split: {shown}{more}")
    else:
        console.print("[green]valid[/]: splits are subject-exclusive" if m.has_identities else "[green]valid[/]")
