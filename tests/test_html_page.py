"""The HTML leaderboard as people use it: sortable, filterable, interval bars, config links; still whole without
JavaScript. The browser test loads the page in headless Chromium and clicks a header through the DevTools protocol
(tests/browser.py; `make browser` installs Chromium where it is missing, as CI does)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import Browser, find_chromium
from test_bundles import lab, split

from agebench.cli import main
from agebench.report import StatsConfig, build_leaderboard

FAST = StatsConfig(n_resamples=200, level=0.95, seed=0, n_permutations=199)


class Rows(HTMLParser):
    """The leaderboard table's rows as the HTML has them (no script run): attributes and cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.headers: list[str] = []
        self.filters_hidden: bool | None = None
        self._in, self._cell, self._th = False, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and a.get("id") == "filters":
            self.filters_hidden = "hidden" in a
        if tag == "table":
            self._in = a.get("id") == "leaderboard"
        elif self._in and tag == "tr" and "data-model" in a:
            self.rows.append({"attrs": a, "cells": []})
        elif self._in and tag == "td" and self.rows:
            self._cell = {"sort": a.get("data-sort"), "text": "", "html": ""}
            self.rows[-1]["cells"].append(self._cell)
        elif self._in and tag == "th":
            self._th = ""
        if self._cell is not None:
            self._cell["html"] += self.get_starttag_text() or ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._in = False
        elif tag == "td":
            self._cell = None
        elif tag == "th" and self._th is not None:
            self.headers.append(self._th.strip())
            self._th = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._th is not None:
            self._th += data


@pytest.fixture
def page(tmp_path: Path) -> Path:
    """A merged page: two labs on one split (alphabetical model order is not the MAE order), a bundle, a third
    lab on another split, and a failed cell."""
    a = lab(tmp_path / "labA", split(), {"vit-tiny": 1.0, "convnext-atto": 4.0})
    b = lab(tmp_path / "labB", split(), {"hybrid-atto": 2.0, "convnext-atto": 3.0})
    c = lab(tmp_path / "labC", split(n=120), {"convnext-atto": 0.5}, seeds=(0,))
    failed = a / "synth" / "hybrid-atto" / "seed0"
    failed.mkdir(parents=True)
    (failed / "metrics.json").write_text('{"schema_version": 1, "status": "failed", "error": "RuntimeError: oom"}')
    bundle = tmp_path / "labB.zip"
    assert main(["bundle", str(b), "--out", str(bundle)]) == 0
    out = tmp_path / "site" / "leaderboard.html"
    build_leaderboard([a, bundle, c], out=out, stats=FAST)
    return out


def test_without_javascript_the_page_has_every_row_bars_and_config_links(page: Path) -> None:
    html = page.read_text()
    parsed = Rows()
    parsed.feed(html)
    assert parsed.filters_hidden is True  # the filter bar needs the script; hidden without it
    measured = [r for r in parsed.rows if r["attrs"]["data-source"] in ("labA", "labB", "labC")]
    assert sorted((r["attrs"]["data-source"], r["attrs"]["data-model"]) for r in measured) == [
        ("labA", "convnext-atto"), ("labA", "hybrid-atto"), ("labA", "vit-tiny"),
        ("labB", "convnext-atto"), ("labB", "hybrid-atto"), ("labC", "convnext-atto"),
    ]  # fmt: skip
    mae_col = parsed.headers.index("MAE (years)")
    ci_col = parsed.headers.index("MAE CI")
    ok = [r for r in measured if r["attrs"]["class"] == "ok"]
    for row in ok:
        mae = float(row["cells"][mae_col]["sort"])
        assert row["cells"][mae_col]["text"].startswith(f"{mae:.2f}")
        assert 'class="ci-bar"' in row["cells"][ci_col]["html"]
    (bad,) = [r for r in measured if r["attrs"]["class"] == "failed"]
    assert bad["cells"][mae_col]["sort"] == ""  # sorts last either way
    assert "other test split" in next(r for r in ok if r["attrs"]["data-source"] == "labC")["attrs"]["data-flag"]
    config_col = len(parsed.headers) - 1
    assert parsed.headers[config_col] == "config"
    links = " ".join(r["cells"][config_col]["html"] for r in ok)
    assert 'href="../labA/synth/vit-tiny/seed0/config.yaml"' in links
    assert 'href="../labB.zip" title="synth/hybrid-atto/seed1/config.yaml"' in links
    assert "Not pooled: other test splits" in html and "120 images here, 200 there" in html


ROWS_JS = (
    "Array.from(document.querySelectorAll('#leaderboard tbody tr'))"
    ".map(r => [r.dataset.model, r.dataset.source, r.hidden])"
)
HEADER_JS = """(() => {{
  const th = Array.from(document.querySelectorAll('#leaderboard thead th'))
    .find(t => t.textContent.trim() === {name!r});
  th.scrollIntoView({{block: 'center'}});
  const r = th.getBoundingClientRect();
  return [r.x + r.width / 2, r.y + r.height / 2];
}})()"""


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium binary (make browser installs it; CI runs it)")
def test_a_click_on_a_header_reorders_the_rows_in_chromium(page: Path) -> None:
    with Browser(find_chromium()) as browser:  # type: ignore[arg-type]
        browser.open(page.as_uri())
        before = browser.evaluate(ROWS_JS)
        mae_order = [m for m, _, _ in before]
        assert browser.evaluate("document.getElementById('filters').hidden") is False  # the script ran

        browser.click(*browser.evaluate(HEADER_JS.format(name="model")))
        after = browser.evaluate(ROWS_JS)
        assert [m for m, _, _ in after] == sorted(mae_order) != mae_order  # stable sort by the model column
        assert browser.evaluate("document.querySelector('#leaderboard th[aria-sort]').textContent") == "model"

        browser.click(*browser.evaluate(HEADER_JS.format(name="model")))
        assert [m for m, _, _ in browser.evaluate(ROWS_JS)] == sorted(mae_order, reverse=True)

        # MAE, descending: numbers compared as numbers, the failed row (no number) still last.
        for _ in range(2):
            browser.click(*browser.evaluate(HEADER_JS.format(name="MAE (years)")))
        maes = browser.evaluate(
            "Array.from(document.querySelectorAll('#leaderboard tbody tr')).map("
            "r => r.cells[" + str(_column(page, "MAE (years)")) + "].dataset.sort)"
        )
        numbers = [float(v) for v in maes if v]
        assert numbers == sorted(numbers, reverse=True) and maes[-1] == "" and len(numbers) >= 5

        # Filter by model: only its rows stay visible.
        browser.evaluate(
            "(() => { const s = document.querySelector('#filters select[name=model]'); s.value = 'convnext-atto';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        visible = [(m, src) for m, src, hidden in browser.evaluate(ROWS_JS) if not hidden]
        assert {m for m, _ in visible} == {"convnext-atto"} and {s for _, s in visible} == {"labA", "labB", "labC"}
        assert re.fullmatch(r"showing 3 of \d+ rows", browser.evaluate("document.getElementById('shown').textContent"))


def _column(page: Path, header: str) -> int:
    parsed = Rows()
    parsed.feed(page.read_text())
    return parsed.headers.index(header)
