"""The published figures of the paper this suite reproduces, shown as clearly marked reference rows.

Only what the paper publishes is here: MAE for the three families on four data sets, and parameter count and
latency for the hybrid alone. Everything else stays empty; a reference row never borrows a measured number.
The paper's latency was timed on the authors' hardware, so it is a landmark, not a like-for-like comparison.

AgeDB, FG-NET, APPA-REAL, CLAP2016 and IMDB-Clean have no rows: the paper does not report them, and the figures
of Paplham & Franc (CVPR 2024) are for other models (ResNet-50, FaRL) and their aligned crops; none was checked
against the paper's own table, so none is copied here.

The cross-dataset matrix gets one published landmark: Paplham & Franc's ResNet-50 trained on UTKFace and tested
on UTKFace and MORPH, for three initialisations (their cross-dataset table). It is another model under their
protocol and crops, shown beside a matrix that has both data sets, never inside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PAPER = "Maroun et al. 2025"
SOURCE = f"paper ({PAPER})"


@dataclass(frozen=True)
class Reference:
    """A published figure set for one model family on one data set."""

    dataset: str
    model: str
    mae: float
    params_m: float | None = None
    latency_ms: float | None = None


_HYBRID = {"params_m": 33.42, "latency_ms": 3.22}
_MAE = {  # family -> data set -> MAE (years), as published
    "hybrid": {"morph2": 2.26, "cacd": 4.35, "afad": 3.09, "utkface": 4.47},
    "convnext": {"morph2": 2.29, "cacd": 4.40, "afad": 3.12, "utkface": 4.65},
    "vit": {"morph2": 2.47, "cacd": 4.71, "afad": 3.43, "utkface": 4.96},
}
REFERENCES: tuple[Reference, ...] = tuple(
    Reference(dataset, model, mae, **(_HYBRID if model == "hybrid" else {}))
    for model, by_dataset in _MAE.items()
    for dataset, mae in by_dataset.items()
)

CROSS_SOURCE = "Paplham & Franc, CVPR 2024"


@dataclass(frozen=True)
class CrossReference:
    """A published cross-dataset figure: ``model`` trained on ``train`` and tested on ``test``."""

    model: str
    train: str
    test: str
    mae: float


CROSS_REFERENCES: tuple[CrossReference, ...] = tuple(
    CrossReference(f"ResNet-50 ({init} init)", "utkface", test, mae)
    for test, by_init in {
        "utkface": {"random": 5.33, "ImageNet": 4.77, "IMDB": 4.37},
        "morph2": {"random": 7.22, "ImageNet": 6.74, "IMDB": 5.02},
    }.items()
    for init, mae in by_init.items()
)

# Spellings people give their result folders for the paper's data sets.
_ALIASES = {
    "morph": "morph2",
    "morphii": "morph2",
    "morph2": "morph2",
    "cacd": "cacd",
    "cacd2000": "cacd",
    "afad": "afad",
    "afadfull": "afad",
    "utk": "utkface",
    "utkface": "utkface",
}


def canonical_dataset(name: str) -> str | None:
    """The paper data set a results folder name stands for (``MORPH_II`` -> ``morph2``), or None."""
    return _ALIASES.get(re.sub(r"[^a-z0-9]", "", name.lower()))


def references_for(datasets: list[str] | None) -> list[Reference]:
    """Reference figures relabelled with the folder names in use; ``None`` means every published data set."""
    if datasets is None:
        return list(REFERENCES)
    out = []
    for name in datasets:
        key = canonical_dataset(name)
        out.extend(Reference(name, r.model, r.mae, r.params_m, r.latency_ms) for r in REFERENCES if r.dataset == key)
    return out


def cross_references_for(datasets: list[str]) -> list[CrossReference]:
    """Published cross-dataset figures whose train and test sets are both among ``datasets`` (their names)."""
    by_key = {canonical_dataset(name): name for name in datasets}
    return [
        CrossReference(r.model, by_key[r.train], by_key[r.test], r.mae)
        for r in CROSS_REFERENCES
        if r.train in by_key and r.test in by_key
    ]
