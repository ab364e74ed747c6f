"""What a cross-dataset target's predictions depend on: shared by the cell (is a target's result still valid?) and
the cross evaluation (which records it), so neither imports the other for it.
"""

from __future__ import annotations

import json
from typing import Any

TARGET_SETTINGS = ("manifest", "root", "img_size", "crop_pct", "use_cache")  # what a target's predictions depend on


def target_settings_hash(data: dict[str, Any]) -> str:
    """sha256 of the target settings that change its predictions (not batch sizes or workers)."""
    import hashlib

    text = json.dumps({k: data.get(k) for k in TARGET_SETTINGS}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
