"""Headless Chromium driven through the DevTools protocol over a pipe: Python's standard library only.

``--remote-debugging-pipe`` makes Chromium read protocol messages from fd 3 and write them to fd 4, each a JSON
object ended by a NUL byte; no websocket, no port, no network. Used by the HTML leaderboard's test (a real click
on a header) and by anyone who wants a screenshot of the page (``python tests/browser.py PAGE.html OUT.png``).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """$AGEBENCH_CHROMIUM, else the first Chromium-like binary on PATH."""
    explicit = os.environ.get("AGEBENCH_CHROMIUM")
    if explicit:
        return explicit if shutil.which(explicit) else None
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


def _high_fd(fd: int) -> int:
    """A copy of ``fd`` numbered 10 or above, so moving the child's ends to 3 and 4 clobbers nothing; like every
    descriptor Python makes, it closes at exec (the child keeps only the 3 and 4 that dup2 makes)."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.set_inheritable(new, False)
    os.close(fd)
    return new


class Browser:
    """One headless Chromium; :meth:`open` a page, then :meth:`send` commands to it (``with`` closes it)."""

    def __init__(self, binary: str, width: int = 1400, height: int = 1000, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="agebench-chromium-")
        to_child_r, to_child_w = (_high_fd(fd) for fd in os.pipe())
        from_child_r, from_child_w = (_high_fd(fd) for fd in os.pipe())

        def child_fds() -> None:
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        args = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile.name}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # dup2 in the child makes its fds 3 and 4 (inheritable); close_fds would close them again, and every
            # other descriptor of this process is close-on-exec already (PEP 446).
            preexec_fn=child_fds,
            close_fds=False,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._w, self._r = to_child_w, from_child_r
        self._buf = b""
        self._next = 0
        self.session: str | None = None

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium closed its pipe (exit code {self.proc.poll()})")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict[str, Any] | None = None, session: bool = True) -> dict[str, Any]:
        """Run one protocol command (in the open page's session unless ``session`` is False); its result."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """A JavaScript expression's value in the page (JSON-serialisable values only)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        """A new tab at ``url``, waited for until the document (and its inline script) has loaded."""
        target = self.send("Target.createTarget", {"url": url}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)[
            "sessionId"
        ]
        deadline = time.monotonic() + self.timeout
        loaded = f"document.URL === {json.dumps(url)} && document.readyState === 'complete'"
        while not self.evaluate(loaded):  # a new tab is about:blank, "complete", for a moment
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not finish loading")
            time.sleep(0.05)

    def click(self, x: float, y: float) -> None:
        """A real left click (press and release) at page coordinates, as a user's mouse makes it."""
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def screenshot(self, path: str | Path, full_page: bool = True) -> None:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        Path(path).write_bytes(base64.b64decode(self.send("Page.captureScreenshot", params)["data"]))

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._w, self._r):
            os.close(fd)
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    page, out = Path(sys.argv[1]).resolve(), sys.argv[2]
    binary = find_chromium()
    if binary is None:
        sys.exit("no Chromium binary found (apt-get install chromium, or set AGEBENCH_CHROMIUM)")
    with Browser(binary) as browser:
        browser.open(page.as_uri())
        browser.screenshot(out)
    print(f"wrote {out}")
