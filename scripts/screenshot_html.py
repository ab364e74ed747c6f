#!/usr/bin/env python3
"""Screenshot an HTML page with headless Chromium and check the picture is not blank.

    python scripts/screenshot_html.py leaderboard.html shot.png

Why: a page can be valid HTML and still render as nothing (broken base64, CSS hiding the plots); only a real
browser shows that. Offline-safe: a fresh profile, no network services, no first-run, no updates.
Exit status: 0 the screenshot shows content, 1 it is blank, 2 Chromium is missing or failed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def find_chromium(explicit: str | None = None) -> str | None:
    for name in (explicit,) if explicit else CANDIDATES:
        found = shutil.which(name) if name else None
        if found:
            return found
    return None


def screenshot(html: Path, png: Path, chromium: str, window: str = "1400,2400", timeout: float = 120) -> None:
    """Render ``html`` into ``png`` in a throwaway profile; raises RuntimeError when Chromium fails."""
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="agebench-chromium-") as profile:
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={png.resolve()}",
            f"--window-size={window}",
            html.resolve().as_uri(),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"chromium did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0 or not png.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"chromium exit {proc.returncode}, no screenshot: {' / '.join(tail)}")


def content_share(png: Path) -> tuple[float, int]:
    """(share of pixels unlike the background colour, number of distinct grey levels)."""
    from PIL import Image

    if png.read_bytes()[:8] != PNG_MAGIC:
        return 0.0, 0
    with Image.open(png) as img:
        grey = img.convert("L")
        hist = grey.histogram()
    total = sum(hist)
    background = max(hist)
    return (total - background) / total, sum(1 for h in hist if h)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("html", type=Path)
    p.add_argument("png", type=Path)
    p.add_argument("--chromium", default=None, help="browser binary (default: /usr/bin/chromium or on PATH)")
    p.add_argument("--window-size", default="1400,2400")
    p.add_argument("--min-content", type=float, default=0.01, help="least share of non-background pixels")
    args = p.parse_args(argv)
    if not args.html.is_file():
        print(f"screenshot_html: error: {args.html}: no such file", file=sys.stderr)
        return 2
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("screenshot_html: error: chromium not found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    try:
        screenshot(args.html, args.png, chromium, args.window_size)
    except RuntimeError as err:
        print(f"screenshot_html: error: {err}", file=sys.stderr)
        return 2
    share, levels = content_share(args.png)
    verdict = "ok" if share >= args.min_content and levels >= 16 else "BLANK"
    print(f"{args.png}: {verdict} ({share:.1%} non-background pixels, {levels} grey levels)")
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
