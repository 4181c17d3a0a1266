"""Real-browser fixtures: a Pond app server on loopback and headless Chromium.

Chromium comes from Debian (`apt-get install -y chromium`), driven by Playwright
from PyPI; `playwright install` is never used. Without `/usr/bin/chromium` these
tests skip with the reason, except under `POND_REQUIRE_BROWSER=1` (CI), where
they fail instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("POND_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def _require_browser() -> None:
    if os.path.exists(CHROMIUM):
        return
    reason = f"Chromium not found at {CHROMIUM}; install it with `apt-get install -y chromium`"
    if os.environ.get("POND_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + " (POND_REQUIRE_BROWSER=1 forbids skipping)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(home: Path) -> tuple[subprocess.Popen, str]:
    """Run the Streamlit app on a free loopback port, serving workspace `home`."""
    port = free_port()
    env = dict(os.environ, POND_HOME=str(home), PYTHONUNBUFFERED="1")
    log = open(home.parent / f"app-{port}.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.3)
        if proc.poll() is not None:
            break
    proc.terminate()
    raise RuntimeError(f"the app did not start; see {log.name}")


@pytest.fixture(scope="session")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="session")
def _demo_template(tmp_path_factory) -> Path:
    """The demo workspace `make app` makes, seeded once (it trains and serves)."""
    _require_browser()
    from core import demo, store

    home = tmp_path_factory.mktemp("demo") / "pond"
    demo.seed(store.open_workspace(home))
    return home


@pytest.fixture
def demo_home(_demo_template, tmp_path) -> Path:
    """A fresh copy of the seeded demo workspace for one test."""
    home = tmp_path / "pond"
    shutil.copytree(_demo_template, home)
    return home


@pytest.fixture
def app_url(demo_home) -> Iterator[str]:
    _require_browser()
    proc, url = start_app(demo_home)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    p = context.new_page()
    p.set_default_timeout(60_000)
    yield p
    context.close()


def sign_in(page, url: str, name: str, password: str = "pond-demo") -> None:
    """Open the app and sign in through the real form."""
    page.goto(url)
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"Signed in as {name}").wait_for()


def wait_idle(page) -> None:
    """Wait until Streamlit finishes the current run (its status widget goes away)."""
    page.wait_for_timeout(300)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=120_000)


