"""ChaLearn LAP 2016 apparent age (CLAP2016): ``{train,valid,test}_gt.csv`` (``image, mean, stdv``) + split folders.

The APPA-REAL family (read by appa_real.scan_family); what differs from APPA-REAL: the CSVs are named
``<split>_gt.csv`` with columns ``image, mean, stdv`` (no ``num_ratings``); there is no real age, so the only
target is the apparent age (``--target real`` is refused); the images are whole pictures with no
``_face.jpg`` crops beside them, so a face detector is needed (Haar by default). The CVPR 2024 benchmark
rounds the mean to whole years (its CLAP2016.json); we keep the mean as given and report the difference when
its JSON is used as the protocol.
"""

from __future__ import annotations

from pathlib import Path

from agebench.data.sources import SourceScan
from agebench.data.sources.appa_real import Family, scan_family

NAME = "clap2016"
DEFAULT_DETECTOR = "haar"  # whole pictures, no face crops in the archive
DEFAULT_PROTOCOL = "official"
TARGETS = {"apparent": "apparent_age"}
CLAP2016 = Family(
    name=NAME,
    csv_name="{split}_gt.csv",
    file_column="image",
    columns={"mean": "apparent_age", "stdv": "apparent_age_std"},
    image_of=lambda name: name,
    targets=TARGETS,
    default_detector=DEFAULT_DETECTOR,
    note="CLAP2016 has no identity labels: the official split cannot be checked for subject leaks",
)


def scan(root: Path, target: str = "apparent") -> SourceScan:
    return scan_family(root, CLAP2016, target)
