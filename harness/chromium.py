"""Headless Chromium driven over the DevTools protocol on a pipe (no extra packages, no port).

Used by the browser tests and to take the page's screenshot for the docs:

    python -m harness.chromium http://127.0.0.1:8080/ docs/broadcast.png [--click "#start"] [--wait 8]

Chromium is started with `--remote-debugging-pipe`: it reads JSON commands, each ended by a NUL
byte, on file descriptor 3 and writes answers and events the same way on descriptor 4. A reader
thread sorts answers by id and keeps each page's console errors and exceptions. Every browser
gets a new empty profile folder that is deleted on close.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
         "--disable-quic", "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--mute-audio",
         "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
         "--autoplay-policy=no-user-gesture-required", "--remote-debugging-pipe")


def find_chromium() -> str:
    """Path of Chromium, or FileNotFoundError saying which package to install."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    raise FileNotFoundError("Chromium not found: install the Debian package `chromium` "
                            "(bash scripts/setup-system.sh with CIEL_WITH_BROWSER=1)")


class CDPError(RuntimeError):
    """A DevTools command failed or timed out."""


class Chromium:
    """One headless browser. Use as a context manager; `page(url)` opens a tab in a new context."""

    def __init__(self, width: int = 1280, height: int = 720, binary: str | None = None) -> None:
        self.width, self.height = width, height
        self._profile = tempfile.TemporaryDirectory(prefix="ciel-chromium-")
        cmd_r, cmd_w = os.pipe()  # we write commands, Chromium reads them on fd 3
        evt_r, evt_w = os.pipe()  # Chromium writes on fd 4, we read
        # Move the child's ends above 4 so that placing them on 3 and 4 cannot clobber each other.
        child_r, child_w = os.dup(cmd_r), os.dup(evt_w)
        while child_r <= 4 or child_w <= 4:
            child_r, child_w = os.dup(child_r), os.dup(child_w)

        def place_fds() -> None:
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        args = [binary or find_chromium(), *FLAGS, f"--window-size={width},{height}",
                f"--user-data-dir={self._profile.name}", "about:blank"]
        self.log = open(Path(self._profile.name) / "chromium.log", "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     pass_fds=(3, 4), preexec_fn=place_fds, start_new_session=True)
        for fd in (cmd_r, evt_w, child_r, child_w):
            os.close(fd)
        self._out, self._in = cmd_w, evt_r
        self._next_id = 0
        self._lock = threading.Lock()
        self._answers: dict[int, dict] = {}
        self._arrived = threading.Condition()
        self.console: dict[str, list[str]] = {}  # sessionId -> console errors and exceptions
        self._reader = threading.Thread(target=self._read, name="chromium-cdp", daemon=True)
        self._reader.start()
        self.call("Browser.getVersion", timeout=60)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._in, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._arrived:
                    self._answers[-1] = {"error": {"message": "Chromium exited"}}
                    self._arrived.notify_all()
                return
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                msg = json.loads(raw)
                if "id" in msg:
                    with self._arrived:
                        self._answers[msg["id"]] = msg
                        self._arrived.notify_all()
                else:
                    self._event(msg)

    def _event(self, msg: dict) -> None:
        method, params, session = msg.get("method"), msg.get("params", {}), msg.get("sessionId", "")
        text = None
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = "console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
        elif method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            text = "exception: " + str(d.get("exception", {}).get("description") or d.get("text"))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            e = params["entry"]
            text = f"log: {e.get('text')} {e.get('url', '')}".strip()
        if text is not None:
            self.console.setdefault(session, []).append(text)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30.0) -> dict:
        """Send one command and wait for its answer's `result`; CDPError on an error or timeout."""
        with self._lock:
            self._next_id += 1
            mid = self._next_id
            msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
            if session:
                msg["sessionId"] = session
            os.write(self._out, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._arrived:
            while mid not in self._answers and -1 not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CDPError(f"{method}: no answer within {timeout:g} s")
                self._arrived.wait(left)
            answer = self._answers.pop(mid, None) or self._answers[-1]
        if "error" in answer:
            raise CDPError(f"{method}: {answer['error'].get('message')}")
        return answer.get("result", {})

    def page(self, url: str, new_context: bool = True) -> Page:
        """Open `url` in a new tab (in a new browser context: no shared cookies or cache)."""
        params: dict[str, Any] = {"url": "about:blank"}
        if new_context:
            params["browserContextId"] = self.call("Target.createBrowserContext")["browserContextId"]
        target = self.call("Target.createTarget", params)["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, target, session, params.get("browserContextId"))
        for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
            self.call(domain, session=session)
        self.call("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                          "deviceScaleFactor": 1, "mobile": False}, session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        return page

    def close(self) -> None:
        """Close the browser (politely, then by force) and delete its profile."""
        if self.proc.poll() is None:
            try:
                self.call("Browser.close", timeout=5)
            except CDPError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log.close()
        self._profile.cleanup()


class Page:
    """One tab: evaluate JavaScript, wait for a condition, click, take a screenshot."""

    def __init__(self, browser: Chromium, target: str, session: str, context: str | None = None) -> None:
        self.browser, self.target, self.session, self.context = browser, target, session, context

    def __enter__(self) -> Page:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the tab (and its browser context): it stops drawing and its connections end."""
        self.browser.call("Target.closeTarget", {"targetId": self.target})
        if self.context:
            self.browser.call("Target.disposeBrowserContext", {"browserContextId": self.context})

    @property
    def console_errors(self) -> list[str]:
        return list(self.browser.console.get(self.session, []))

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        """The value of a JavaScript expression (promises awaited), or CDPError if it throws."""
        res = self.browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                     "awaitPromise": True}, self.session, timeout)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise CDPError(f"{expression!r} threw {d.get('exception', {}).get('description') or d.get('text')}")
        return res.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, interval: float = 0.1) -> Any:
        """Poll until the expression is truthy; return its value, or CDPError after `timeout` s."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.evaluate(expression)
            except CDPError as exc:  # the page may still be loading
                last = str(exc)
            else:
                if last:
                    return last
            time.sleep(interval)
        raise CDPError(f"waited {timeout:g} s for {expression!r}; last value {last!r}; "
                       f"console: {self.console_errors}")

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the centre of the element: a user gesture."""
        box = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                            " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.browser.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                            "clickCount": 1}, self.session)

    def box(self, selector: str) -> list[float]:
        """[x, y, width, height] of the element in CSS pixels (CDPError if there is none)."""
        return self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                             " return [r.x, r.y, r.width, r.height]; })()")

    def press(self, x: float, y: float, to_x: float | None = None, steps: int = 4) -> None:
        """A real mouse press at (x, y), moved to (to_x, y) in `steps`, then released: a drag."""
        def mouse(kind: str, at_x: float) -> None:
            self.browser.call("Input.dispatchMouseEvent", {"type": kind, "x": at_x, "y": y, "button": "left",
                                                            "buttons": 1, "clickCount": 1}, self.session)
        mouse("mousePressed", x)
        if to_x is not None:
            for i in range(1, steps + 1):
                mouse("mouseMoved", x + (to_x - x) * i / steps)
        mouse("mouseReleased", x if to_x is None else to_x)

    def key(self, key: str, code: str, keycode: int, text: str = "") -> None:
        """Press and release one key in the focused element, e.g. ("Enter", "Enter", 13, "\r")."""
        for kind in ("keyDown", "keyUp"):
            event = {"type": kind, "key": key, "code": code, "windowsVirtualKeyCode": keycode}
            if text and kind == "keyDown":
                event["text"] = text
            self.browser.call("Input.dispatchKeyEvent", event, self.session)

    def screenshot(self) -> bytes:
        """PNG bytes of the viewport as composited (what a visitor sees)."""
        data = self.browser.call("Page.captureScreenshot", {"format": "png"}, self.session, timeout=60)["data"]
        return base64.b64decode(data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.chromium", description="Screenshot a page in headless Chromium.")
    ap.add_argument("url")
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", default="1280x720", help="viewport WxH")
    ap.add_argument("--click", default=None, help="CSS selector to click first (e.g. #start)")
    ap.add_argument("--wait", type=float, default=5.0, help="seconds to wait before the screenshot")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    with Chromium(w, h) as browser:
        page = browser.page(args.url)
        page.wait_for("window.ciel && window.ciel.skyReady", timeout=60)
        if args.click:
            page.click(args.click)
        time.sleep(args.wait)
        args.out.write_bytes(page.screenshot())
        for line in page.console_errors:
            print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
