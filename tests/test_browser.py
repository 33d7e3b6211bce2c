"""JupyterLab in a real browser: open notebook 05, run all cells, move the η slider, see the figure change.

Drives Debian's Chromium (/usr/bin/chromium) with Playwright's Python package. `make test` installs
Chromium when it can; the test skips, saying why, only when there is no Chromium on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOK = "05_eta.ipynb"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer at {url} within {timeout:.0f} s")


@pytest.fixture
def lab_server(tmp_path):
    """JupyterLab on 127.0.0.1, no token, serving a copy of the notebook (autosave never touches ours)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Chromium not found at /usr/bin/chromium (install Debian's 'chromium'; make test does)")
    pytest.importorskip("playwright.sync_api", reason="playwright's Python package is not installed")
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOK_DIR / NOTEBOOK, root / NOTEBOOK)
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port = _free_port()
    env = dict(
        os.environ,
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        DIFFUSION_COURSE_PROFILE="quick",
    )
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--ServerApp.root_dir={root}",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            "--ServerApp.disable_check_xsrf=True",
            "--LabApp.news_url=None",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/api/status", timeout=90)
        yield url
    finally:
        # A clean stop: ask the server to shut down (it stops its kernels), then make sure the group is gone.
        try:
            urllib.request.urlopen(urllib.request.Request(f"{url}/api/shutdown", method="POST"), timeout=10)
            proc.wait(timeout=30)
        except Exception:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        assert proc.poll() is not None, "the JupyterLab server did not stop"


def _figure_src(page) -> str:
    """The image the η app shows (its Output's PNG), as a data URL."""
    img = page.locator(".jp-OutputArea-output .widget-output img, .jupyter-widgets-output-area img").last
    img.wait_for(state="visible", timeout=60_000)
    return img.get_attribute("src")


def _settle(page, seconds: float = 60) -> None:
    """Wait for the kernel to be idle, accepting start-up dialogs (kernel choice) and the news toast."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        dialog = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
        if dialog.count():
            dialog.first.click()
        news = page.locator(".jp-toast-button", has_text="No")
        if news.count():
            news.first.click()
        idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
        if idle.count() and not page.locator(".jp-Dialog").count():
            return
        page.wait_for_timeout(500)
    raise TimeoutError("the notebook's kernel did not become idle")


def test_run_notebook_and_move_eta_slider(lab_server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{lab_server}/lab/tree/{NOTEBOOK}", timeout=120_000)
            page.locator(".jp-Notebook").wait_for(timeout=120_000)
            _settle(page)
            page.screenshot(path=str(tmp_path / "opened.png"))
            # Run → Run All Cells
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            # every cell has run once its prompt shows a number instead of "*"
            page.wait_for_function(
                """() => {
                    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                    return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
                }""",
                timeout=240_000,
            )
            tracebacks = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
            assert tracebacks.count() == 0, f"a cell raised: {tracebacks.first.inner_text()[:2000]}"
            slider = page.locator(".widget-slider:has(.widget-label:text-is('eta'))").first
            slider.scroll_into_view_if_needed()
            before = _figure_src(page)
            page.screenshot(path=str(tmp_path / "before.png"), full_page=False)
            handle = slider.locator(".noUi-handle")
            handle.focus()
            for _ in range(5):
                page.keyboard.press("ArrowRight")
            page.wait_for_function(
                "(old) => { const imgs = document.querySelectorAll("
                "'.jp-OutputArea-output .widget-output img, .jupyter-widgets-output-area img');"
                " return imgs.length && imgs[imgs.length - 1].src !== old; }",
                arg=before,
                timeout=60_000,
            )
            after = _figure_src(page)
            page.screenshot(path=str(tmp_path / "after.png"), full_page=False)
            assert after != before, "moving the η slider did not change the figure"
            assert (tmp_path / "after.png").stat().st_size > 10_000
        finally:
            browser.close()
