"""JupyterLab in a real browser: open notebook 05, run all cells, move the η slider, see the figure change;
and press notebook 02's Start training on a tiny budget and see the model saved.

Drives Debian's Chromium (/usr/bin/chromium) with Playwright's Python package. `make test` installs
Chromium when it can; the test skips, saying why, only when there is no Chromium on the machine.
"""

from __future__ import annotations

import contextlib
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
            f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",  # no notebook reopened from an earlier run
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
        rendered = page.locator(".jp-Notebook .jp-CodeCell").count() > 0  # not the loading spinner
        if idle.count() and rendered and not page.locator(".jp-Dialog").count():
            return
        page.wait_for_timeout(500)
    raise TimeoutError("the notebook's kernel did not become idle")


_CELL_STATES = """() => {
    const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
    const state = c => {
        const prompt = c.querySelector('.jp-InputPrompt');
        const text = prompt ? prompt.textContent : '';
        return /\\[\\d+\\]/.test(text) ? 'done' : (/\\*/.test(text) ? 'running' : 'pending');
    };
    // JupyterLab renders a traceback as stderr text; warnings are stderr too, so look for the header.
    const errors = [...document.querySelectorAll(".jp-OutputArea-output[data-mime-type*='stderr']")]
        .map(e => e.innerText).filter(t => t.includes('Traceback')).map(t => t.slice(0, 2000));
    const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
    return {
        states: cells.map(state),
        first_lines: cells.map(c => c.querySelector('.cm-line')?.textContent || ''),
        errors: errors,
        kernel: indicator ? indicator.getAttribute('data-status') : null,
    };
}"""


def _run_all(page, attempts: int = 3, start_s: float = 30) -> None:
    """Run → Run All Cells, and check that it took: on a slow machine a click that lands while
    JupyterLab is still wiring the kernel is dropped, so try again while no cell has started."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(attempts):
        # a dialog that opened after _settle (the kernel choice, when the notebook was still loading) blocks
        # the menu: accept it, let the kernel come up, then click
        if page.locator(".jp-Dialog").count():
            _settle(page)
        try:
            page.get_by_role("menuitem", name="Run", exact=True).click(timeout=10_000)
            page.get_by_text("Run All Cells", exact=True).click(timeout=10_000)
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
            continue
        deadline = time.monotonic() + start_s
        while time.monotonic() < deadline:
            if any(state != "pending" for state in page.evaluate(_CELL_STATES)["states"]):
                return
            page.wait_for_timeout(500)
        page.keyboard.press("Escape")  # close the menu if it is still open
    pytest.fail(f"Run All Cells started no cell in {attempts} tries of {start_s:.0f} s")


def _wait_for_run_all(page, tmp_path, stall_s: float = 240, cap_s: float = 900) -> None:
    """Wait until every code cell has an execution count, failing early and saying why.

    Fails at once when a cell shows a traceback (Run All stops there), and after `stall_s` seconds
    without a cell finishing, naming the cell that is still running or waiting and the kernel's status.
    """
    start = last_progress = time.monotonic()
    done_before = -1
    while True:
        info = page.evaluate(_CELL_STATES)
        states = info["states"]
        done = states.count("done")
        if info["errors"]:
            page.screenshot(path=str(tmp_path / "error.png"))
            pytest.fail(f"a cell raised during Run All:\n{info['errors'][0]}")
        if states and done == len(states):
            return
        now = time.monotonic()
        if done != done_before:
            done_before, last_progress = done, now
        # Run All stops at a failing cell: the kernel goes idle with cells still waiting.
        idle_with_waiting = info["kernel"] == "idle" and "pending" in states and "running" not in states
        limit = 30 if idle_with_waiting else stall_s
        if now - last_progress > limit or now - start > cap_s:
            page.screenshot(path=str(tmp_path / "stalled.png"))
            stuck = [
                f"cell {i + 1} ({state}): {line[:80]!r}"
                for i, (state, line) in enumerate(zip(states, info["first_lines"]))
                if state != "done"
            ]
            log = (tmp_path / "lab.log").read_text(errors="replace")[-3000:]
            pytest.fail(
                f"Run All stalled after {now - start:.0f} s: {done} of {len(states)} code cells ran, "
                f"kernel {info['kernel']!r}; not run: {stuck[:5]}\n--- JupyterLab log (end) ---\n{log}"
            )
        page.wait_for_timeout(1000)


@contextlib.contextmanager
def _ran_notebook(lab_url: str, name: str, tmp_path):
    """A Chromium page on notebook ``name`` after Run All Cells has finished; the browser closes after."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{lab_url}/lab/tree/{name}", timeout=120_000)
            page.locator(".jp-Notebook").wait_for(timeout=120_000)
            _settle(page)
            page.screenshot(path=str(tmp_path / "opened.png"))
            _run_all(page)
            _wait_for_run_all(page, tmp_path)
            yield page
        finally:
            browser.close()


def test_run_notebook_and_move_eta_slider(lab_server, tmp_path):
    with _ran_notebook(lab_server, NOTEBOOK, tmp_path) as page:
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


APP_NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "metadata": {},
            "outputs": [],
            "source": (
                "from diffusion_course import widgets\n"
                'app, run = widgets.train_your_own_app("mnist-cond-fast", budget=10, refresh_every=10)\n'
                "app"
            ),
        }
    ],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def test_train_your_own_button_trains_and_saves_mine(lab_server, tmp_path):
    """Notebook 02's app in the browser: Start on a 10-second budget writes my_checkpoints/mine.json."""
    (tmp_path / "lab" / "train_your_own.ipynb").write_text(json.dumps(APP_NOTEBOOK))
    with _ran_notebook(lab_server, "train_your_own.ipynb", tmp_path) as page:
        page.get_by_role("button", name="Start training").click(timeout=60_000)
        status = page.locator(".widget-html", has_text="step ")
        page.wait_for_function(
            "() => [...document.querySelectorAll('.widget-html')].some(e => e.innerText.includes('saved'))",
            timeout=180_000,
        )
        page.screenshot(path=str(tmp_path / "trained.png"), full_page=False)
        text = status.first.inner_text()
        assert "time budget" in text, text
        assert (tmp_path / "lab" / "my_checkpoints" / "mine.json").is_file()
        images = page.locator(".widget-image")
        assert images.count() == 2 and all(images.nth(i).get_attribute("src") for i in range(2))
