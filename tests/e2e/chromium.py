"""A real headless Chromium (Debian package ``chromium``) driven over the DevTools protocol with aiohttp's
WebSocket client: navigate, evaluate, click, screenshot. No WebDriver layer and no extra dependency.

Chromium may reach loopback only: every host name but localhost fails to resolve, any other address goes
to a proxy on a closed loopback port, and the background services that phone home are turned off.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    "--window-size=1400,1000",
]


class Chromium:
    """One headless Chromium process with one page, controlled through the DevTools protocol."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: list[tuple[str, dict[str, Any]]] = []
        self._event_added = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 30.0) -> None:
        assert CHROMIUM is not None
        self.profile.mkdir(parents=True, exist_ok=True)
        log = (self.profile / "chromium.log").open("ab")
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", "about:blank"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        port_file = self.profile / "DevToolsActivePort"
        async with asyncio.timeout(timeout):
            while not port_file.exists() or not port_file.read_text().strip():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"chromium exited with {self.proc.returncode}: {self.log_tail()}")
                await asyncio.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            self._session = aiohttp.ClientSession()
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with self._session.get(f"http://127.0.0.1:{port}/json/list") as r:
                        pages = [t for t in await r.json() if t.get("type") == "page"]
                        if pages:
                            break
                await asyncio.sleep(0.1)
            self._ws = await self._session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join((self.profile / "chromium.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
            else:
                self._events.append((data.get("method", ""), data.get("params", {})))
                self._event_added.set()

    async def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its ``result``; raises on a protocol error."""
        assert self._ws is not None
        ident = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = fut
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        async with asyncio.timeout(timeout):
            data = await fut
        if "error" in data:
            raise RuntimeError(f"{method} failed: {data['error']}")
        result: dict[str, Any] = data.get("result", {})
        return result

    async def _wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for i, (name, params) in enumerate(self._events):
                    if name == method:
                        del self._events[: i + 1]
                        return params
                self._event_added.clear()
                await self._event_added.wait()

    async def javascript(self, enabled: bool) -> None:
        """Turn the page's own scripts on or off (DevTools evaluation keeps working)."""
        await self.send("Emulation.setScriptExecutionDisabled", value=not enabled)

    async def goto(self, url: str) -> None:
        """Load ``url`` and wait for its load event."""
        self._events.clear()
        result = await self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise RuntimeError(f"navigation to {url} failed: {result['errorText']}")
        await self._wait_event("Page.loadEventFired")

    async def click(self, selector: str, *, navigates: bool = False) -> None:
        """Click an element as a user would; with ``navigates`` wait for the page it loads."""
        self._events.clear()
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")
        if navigates:
            await self._wait_event("Page.loadEventFired")

    async def type(self, selector: str, text: str) -> None:
        """Replace an input's value and fire the ``input`` event, as typing does."""
        await self.evaluate(
            f"(function () {{ var e = document.querySelector({json.dumps(selector)}); e.value = "
            f"{json.dumps(text)}; e.dispatchEvent(new Event('input', {{bubbles: true}})); }})()"
        )

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def text(self, selector: str = "body") -> str:
        """What a reader sees of an element: ``innerText`` leaves out hidden elements."""
        value = await self.evaluate(f"document.querySelector({json.dumps(selector)}).innerText")
        return str(value)

    async def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page."""
        data = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Chromium]:
    """A running headless Chromium for the duration of the block."""
    browser = Chromium(profile)
    try:
        await browser.start()
        yield browser
    finally:
        await browser.stop()
