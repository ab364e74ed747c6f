"""Age assurance end to end on result files: demographic columns in predictions.csv, `agebench assurance`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agebench.data.manifest import load_manifest, write_manifest
from agebench.evaluate import attach_records, write_predictions
from agebench.report.results import load_predictions


def test_demographic_columns_travel_from_the_manifest_into_predictions_csv(tmp_path: Path) -> None:
    rows = [
        {"path": f"i{k}.jpg", "age": 10 + k, "subject_id": f"s{k // 2}", "split": "test", "gender": "MF"[k % 2],
         "skin_tone": ("dark", "", "light")[k % 3], "mask": f"m{k}.png"}
        for k in range(6)
    ]  # fmt: skip
    manifest = load_manifest(write_manifest(rows, tmp_path / "m.csv"), check_files=False, required_splits=("test",))
    assert manifest.demographic_columns == ("gender", "skin_tone")  # mask is not a demographic column
    records = manifest.split("test")
    pred = {"index": np.array([3, 0]), "path": ["i3.jpg", "i0.jpg"], "age": np.array([13.0, 10.0])}
    pred["pred"] = np.array([14.0, 9.5])
    write_predictions(tmp_path / "predictions.csv", attach_records(pred, manifest, records))
    back = load_predictions(tmp_path / "predictions.csv")
    assert back.subjects == ("s1", "s0")
    assert back.columns == {"gender": ("F", "M"), "skin_tone": ("dark", "dark")}
