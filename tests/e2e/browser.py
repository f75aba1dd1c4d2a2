"""Real headless Chromium for the SSO end-to-end tests: the Debian `chromium` package driven by npm
`playwright-core` (pinned in tests/e2e/browser/package-lock.json; never `npx playwright install`).

    with Chromium(host_rules={"keycloak.keycloak.svc.cluster.local": 8080}, workdir=tmp) as chrome:
        alice = chrome.context("alice")
        page = alice.goto("http://127.0.0.1:10000/")      # {"status", "url", "title", "text"}

How the browser reaches things: everything listens on 127.0.0.1, and the browser must use the names the
parts use in the cluster (Keycloak's issuer host `keycloak.keycloak.svc.cluster.local`, port 80). Chromium's
own `--host-resolver-rules="MAP <host> 127.0.0.1:<port>"` maps each such name to its loopback port inside
the browser: no proxy process, no request interception, and the requests leave exactly as a browser in
the cluster would send them (Host header, cookies, redirects). The app is opened at http://127.0.0.1:<port>
(Keycloak's loopback redirect rule accepts any port there).

A node process runs tests/e2e/browser/driver.mjs; commands go as JSON lines and every wait is bounded.
Missing pieces (node, the chromium package, `npm ci` not run) FAIL with what to do, never skip.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

E2E_DIR = Path(__file__).resolve().parent
DRIVER_DIR = E2E_DIR / "browser"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
LAUNCH_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                # Chromium would otherwise try https:// first for the plain-http test hosts.
                "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable")


class BrowserError(RuntimeError):
    """The browser could not be started or did not answer; the message says why."""


def find_chromium() -> str:
    env = os.environ.get("MESHGATE_CHROMIUM")
    for c in ([env] if env else []) + list(CHROMIUM_CANDIDATES):
        if c and os.access(c, os.X_OK):
            return c
    raise BrowserError("Chromium not found: install the Debian package (`apt-get install chromium`; `make setup` "
                       "does) or set MESHGATE_CHROMIUM")


def check_driver() -> str:
    node = shutil.which("node")
    if node is None:
        raise BrowserError("node not found: install Node.js 20 (`make setup` expects it)")
    if not (DRIVER_DIR / "node_modules" / "playwright-core" / "package.json").is_file():
        raise BrowserError(f"playwright-core is not installed: run `npm ci` in {DRIVER_DIR} (`make setup` does)")
    return node


class Page:
    """One isolated browser context (own cookies) with one page."""

    def __init__(self, chrome: Chromium, name: str):
        self.chrome = chrome
        self.name = name

    def goto(self, url: str, timeout: float = 30) -> dict:
        return self.chrome.call("goto", ctx=self.name, url=url, timeout=timeout)

    def reload(self, timeout: float = 30) -> dict:
        return self.chrome.call("reload", ctx=self.name, timeout=timeout)

    def fill(self, selector: str, value: str) -> None:
        self.chrome.call("fill", ctx=self.name, selector=selector, value=value)

    def submit(self, selector: str, timeout: float = 30) -> dict:
        """Clicks and waits for the navigation it starts (with its redirects) to load."""
        return self.chrome.call("submit", ctx=self.name, selector=selector, timeout=timeout)

    def exists(self, selector: str) -> bool:
        return self.chrome.call("exists", ctx=self.name, selector=selector)["count"] > 0

    def evaluate(self, expression: str, timeout: float = 30) -> Any:
        return self.chrome.call("evaluate", ctx=self.name, expression=expression, timeout=timeout)["value"]

    def cookies(self) -> list[dict]:
        return self.chrome.call("cookies", ctx=self.name)["cookies"]

    def set_cookies(self, cookies: list[dict], clear: bool = False) -> None:
        self.chrome.call("set_cookies", ctx=self.name, cookies=cookies, clear=clear)

    def screenshot(self, path: Path | str) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self.chrome.call("screenshot", ctx=self.name, path=str(p.resolve()))
        return p

    def close(self) -> None:
        self.chrome.call("close_context", name=self.name)


class Chromium:
    def __init__(self, host_rules: Mapping[str, int] | None = None, workdir: Path | str | None = None,
                 start_timeout: float = 60):
        node = check_driver()
        exe = find_chromium()
        rules = ", ".join(f"MAP {host} 127.0.0.1:{port}" for host, port in (host_rules or {}).items())
        args = list(LAUNCH_FLAGS)
        if rules:
            args.append(f"--host-resolver-rules={rules}")
        self.workdir = Path(workdir) if workdir else Path.cwd()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = self.workdir / "browser-driver.log"
        self._stderr = open(self.stderr_path, "ab")
        # Own session: the driver and the browser it starts form one group this object stops.
        self.proc = subprocess.Popen([node, str(DRIVER_DIR / "driver.mjs")], cwd=str(DRIVER_DIR),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     start_new_session=True)
        self._next = 0
        self._buf = b""
        try:
            self.version = self.call("launch", executable=exe, args=args, timeout=start_timeout)["version"]
        except BrowserError:
            self.stop()
            raise

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def context(self, name: str, timeout: float = 30) -> Page:
        self.call("context", name=name, timeout=timeout)
        return Page(self, name)

    def call(self, op: str, timeout: float = 30, **args: Any) -> dict:
        """Sends one command and waits (at most `timeout` + 10 s) for its answer."""
        if self.proc.poll() is not None:
            raise BrowserError(f"browser driver exited ({self.proc.returncode}); see {self.stderr_path}")
        self._next += 1
        cmd = {"id": self._next, "op": op, "timeout": int(timeout * 1000), **args}
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout + 10
        while True:
            line = self._readline(deadline)
            if line is None:
                raise BrowserError(f"browser driver gave no answer to {op} within {timeout + 10:.0f} s; see "
                                   f"{self.stderr_path}")
            msg = json.loads(line)
            if msg.get("id") == cmd["id"]:
                if not msg.get("ok"):
                    raise BrowserError(f"{op} failed: {msg.get('error')}")
                return msg

    def _readline(self, deadline: float) -> bytes | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                self._buf += chunk
            elif self.proc.poll() is not None:
                return None
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def stop(self) -> None:
        """Closes the browser; then stops the driver by its PID, and what is left of its process group."""
        if self.proc.poll() is None:
            try:
                self.call("close", timeout=15)
            except (BrowserError, OSError, ValueError):
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        try:  # a browser orphaned by a crashed driver is still in the group this object created
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._stderr.close()
