"""Headless Chromium, as a person's browser sees a page: a screenshot and the DOM it built."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

SHOTS_FOR_THE_LEAD = Path("/tmp/hub-shots")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not installed (apt-get install chromium)"
    return found


def _run(profile: Path, *args: str) -> subprocess.CompletedProcess:
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [chromium_binary(), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def dump_dom(url: str, workdir: Path) -> str:
    """The DOM after the page loaded (``--dump-dom``)."""
    result = _run(workdir / "chromium-profile", "--dump-dom", url)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def screenshot(url: str, path: Path, workdir: Path, size: str = "1280,900") -> Path:
    """A PNG of the page at ``path``, copied to /tmp/hub-shots/ for people to look at."""
    path.parent.mkdir(parents=True, exist_ok=True)
    result = _run(
        workdir / "chromium-profile", f"--screenshot={path}", f"--window-size={size}",
        "--hide-scrollbars", url,
    )  # fmt: skip
    assert result.returncode == 0 and path.is_file(), result.stderr[-2000:]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    SHOTS_FOR_THE_LEAD.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, SHOTS_FOR_THE_LEAD / path.name)
    return path


# The DevTools pipe is the browser's fds 3 (what it reads) and 4 (what it writes).
_ON_FDS_3_AND_4 = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


class Browser:
    """One headless Chromium driven over the DevTools protocol on a pipe
    (``--remote-debugging-pipe``: no port, no websocket library), so one tab can visit
    several pages in one browser session: what a person signed in on one site then
    visiting another does."""

    def __init__(self, workdir: Path, *flags: str) -> None:
        self._to_browser_r, self._to_browser = os.pipe()
        self._from_browser, self._from_browser_w = os.pipe()
        profile = workdir / "chromium-devtools-profile"
        profile.mkdir(parents=True, exist_ok=True)
        command = [chromium_binary(), *FLAGS, "--remote-debugging-pipe",
                   f"--user-data-dir={profile}", *flags, "about:blank"]  # fmt: skip
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ON_FDS_3_AND_4, str(self._to_browser_r),
             str(self._from_browser_w), *command],
            pass_fds=(self._to_browser_r, self._from_browser_w),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(self._to_browser_r)
        os.close(self._from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Page.enable", session=self.session)

    def _send(self, message: dict) -> None:
        import json

        os.write(self._to_browser, json.dumps(message).encode() + b"\0")

    def _receive(self, timeout: float) -> dict:
        while b"\0" not in self._buffer:
            readable, _, _ = select.select([self._from_browser], [], [], timeout)
            assert readable, "chromium did not answer"
            chunk = os.read(self._from_browser, 1 << 20)
            assert chunk, "chromium went away"
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, session: str | None = None, timeout: float = 60, **params):  # noqa: ANN201
        self._next_id += 1
        message: dict = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._send(message)
        while True:
            answer = self._receive(timeout)
            if answer.get("id") == self._next_id:
                assert "error" not in answer, answer["error"]
                return answer.get("result", {})
            self.events.append(answer)

    def visit(self, url: str, timeout: float = 60) -> None:
        """Navigate the tab to ``url`` and wait for its load event."""
        self.events.clear()
        self.call("Page.navigate", session=self.session, url=url)
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._receive(timeout))

    def evaluate(self, expression: str):  # noqa: ANN201
        """What ``expression`` (JavaScript, in the tab's page) gives, as JSON gives it back."""
        answer = self.call("Runtime.evaluate", session=self.session, expression=expression,
                           returnByValue=True, awaitPromise=True)  # fmt: skip
        assert "exceptionDetails" not in answer, answer["exceptionDetails"]
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60):  # noqa: ANN201
        """``expression``'s value once it is truthy (a page that builds itself with
        JavaScript after its load event); fails with the page's address and text if it never
        is within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            assert time.monotonic() < deadline, (
                expression, self.evaluate("location.href"), self.evaluate("document.body.innerText")
            )  # fmt: skip
            time.sleep(0.2)

    def type_into(self, selector: str, text: str) -> None:
        """Focus the element ``selector`` and type ``text`` in it, as a keyboard does (the
        page sees the input events a person's typing makes)."""
        assert self.evaluate(
            f"(e => e && (e.focus(), true))(document.querySelector({json.dumps(selector)}))"
        ), selector
        self.call("Input.insertText", session=self.session, text=text)

    def screenshot(self, path: Path) -> Path:
        """A PNG of the tab as it is now at ``path``, copied to /tmp/hub-shots/."""
        data = self.call("Page.captureScreenshot", session=self.session, format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        SHOTS_FOR_THE_LEAD.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SHOTS_FOR_THE_LEAD / path.name)
        return path

    def close(self) -> None:
        with contextlib.suppress(AssertionError, OSError):
            self._send({"id": 0, "method": "Browser.close"})
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
