"""The class JupyterHub for real: `make hub` (demo mode) on 127.0.0.1, two learners in Chromium.

Starts the hub exactly as an instructor does, with random free ports and a temporary data folder, then:
a wrong password is refused; alice and bob log in through the login page, each sees their own learner
copies in JupyterLab and runs `import diffusion_course` in a console; alice cannot reach bob's server, by
browser or with her API token; the hub stops on SIGTERM with every process it started gone and its
ports free. Needs Chromium (skipped without, as tests/test_browser.py) and configurable-http-proxy
(`make hub-deps`; skipped without, failed under CI=true).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
PROXY = ROOT / "class" / "node_modules" / ".bin" / "configurable-http-proxy"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic"]
USERS = ("alice", "bob")
PASSWORD = "shared-class-pw"
SEEDED = "01_forward_process.ipynb"  # alice has her own copy of this one before her first spawn
NOTE = "alice-notes.txt"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` again (as servers do, with SO_REUSEADDR: connections
    in TIME_WAIT do not count, a socket still listening does)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
        return True


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[int, tuple[int, str]]:
    """Every living process below ``root``: pid → (start time, command line)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))):
            children.setdefault(stat[0], []).append(int(entry.name))
    found, todo = {}, [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            stat = _stat(pid)
            if stat and stat[1] != "Z":
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                found[pid] = (stat[2], cmd)
                todo.append(pid)
    return found


def _working_in(folder: Path) -> dict[int, tuple[int, str]]:
    """Living processes whose working folder lies in ``folder`` (the learners' servers and kernels)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")).is_relative_to(folder):
                stat = _stat(int(entry.name))
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if stat and stat[1] != "Z":
                    found[int(entry.name)] = (stat[2], cmd)
        except OSError:
            continue
    return found


def _still_running(procs: dict[int, tuple[int, str]]) -> dict[int, str]:
    """Those of ``procs`` alive now (same pid and start time, not a zombie)."""
    alive = {}
    for pid, (start, cmd) in procs.items():
        stat = _stat(pid)
        if stat and stat[2] == start and stat[1] != "Z":
            alive[pid] = cmd
    return alive


@dataclass
class Hub:
    url: str
    proc: subprocess.Popen
    data: Path
    log: Path
    ports: list[int]
    started: dict[int, tuple[int, str]] = field(default_factory=dict)  # every process seen below make

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]


def _needs(reason: str):
    """Skip for a missing tool, but fail under CI, where every tool must be there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the hub test must run)")
    pytest.skip(reason)


@pytest.fixture
def hub(tmp_path):
    """`make hub` on free ports with a temporary data folder; everything it started is stopped after."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Chromium not found at /usr/bin/chromium (install Debian's 'chromium'; make test does)")
    pytest.importorskip("playwright.sync_api", reason="playwright's Python package is not installed")
    if not ((PROXY.exists() and shutil.which("node")) or shutil.which("configurable-http-proxy")):
        _needs(
            "configurable-http-proxy not found: run `make hub-deps` (it needs Node.js 20 or newer with npm, "
            "https://nodejs.org)"
        )
    if subprocess.run(["make", "-q", "-C", str(ROOT), "setup"], capture_output=True).returncode != 0:
        pytest.fail(".venv is older than pyproject.toml: run `make setup` first (make hub would reinstall)")
    data = tmp_path / "hub"
    seeded = data / "users" / "alice"
    seeded.mkdir(parents=True)
    (seeded / NOTE).write_text("alice's own file\n")
    mine = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("alice's work, not the template")])
    nbformat.write(mine, seeded / SEEDED)
    port, hub_port, api_port = ports = _free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFUSION_COURSE")}
    env.update(
        DIFFUSION_COURSE_HUB_DATA=str(data),
        DIFFUSION_COURSE_HUB_USERS=",".join(USERS),
        DIFFUSION_COURSE_HUB_PASSWORD=PASSWORD,
        DIFFUSION_COURSE_HUB_CPU_LIMIT="1",
    )
    args = f"--JupyterHub.hub_port={hub_port} --ConfigurableHTTPProxy.api_url=http://127.0.0.1:{api_port}"
    log_path = tmp_path / "hub.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "-C", str(ROOT), "hub", f"HUB_PORT={port}", f"HUB_ARGS={args}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    hub = Hub(f"http://127.0.0.1:{port}", proc, data, log_path, ports)
    started = hub.started
    try:
        deadline = time.monotonic() + 120
        while True:
            started.update(_descendants(proc.pid))
            try:
                with urllib.request.urlopen(f"{hub.url}/hub/api", timeout=5) as reply:
                    assert "version" in json.load(reply)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the hub did not answer at {hub.url} within 120 s:\n{hub.log_tail()}")
                time.sleep(0.5)
        yield hub
    finally:
        # Whatever the test left running: stop the hub, then anything it started that outlived it.
        started.update(_descendants(proc.pid))
        if proc.poll() is None:
            _stop(hub, timeout=60)
        started.update(_working_in(tmp_path))
        for pid in _still_running(started):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


def _hub_process(hub: Hub) -> int:
    """The jupyterhub process below make."""
    for pid, (_, cmd) in _descendants(hub.proc.pid).items():
        if cmd.split()[1:2] and cmd.split()[1].endswith("bin/jupyterhub"):  # python .venv/bin/jupyterhub
            return pid
    raise AssertionError(f"no jupyterhub process below make:\n{hub.log_tail()}")


def _stop(hub: Hub, timeout: float) -> bool:
    """SIGTERM to JupyterHub (it stops its servers, services and proxy), then wait for make to end.

    Returns whether that sufficed; if not, make's process group is killed."""
    try:
        os.kill(_hub_process(hub), signal.SIGTERM)
        hub.proc.wait(timeout=timeout)
        return True
    except (AssertionError, subprocess.TimeoutExpired):
        os.killpg(hub.proc.pid, signal.SIGKILL)
        hub.proc.wait(timeout=10)
        return False


def _submit_login(page, url: str, user: str, password: str) -> None:
    page.goto(f"{url}/hub/login", timeout=90_000)
    page.fill("#username_input", user)
    page.fill("#password_input", password)
    page.click("#login_submit")


def _listing(page, expect: str, timeout_s: float = 120) -> set[str]:
    """The names in JupyterLab's file browser, once ``expect`` is among them."""
    page.locator(".jp-DirListing-itemText", has_text=expect).first.wait_for(timeout=timeout_s * 1000)
    return set(page.locator(".jp-DirListing-itemText").all_inner_texts())


def _start_console(page, code: str, attempts: int = 3) -> None:
    """Open a Python console from the launcher and run ``code`` in it.

    Types only once the kernel's banner shows (before that the prompt is replaced as the kernel
    connects), and checks the text landed before running it: on a slow machine input can be dropped.
    """
    page.locator(".jp-LauncherCard[data-category='Console']").first.click(timeout=120_000)
    page.locator(".jp-CodeConsole-banner", has_text="Python").first.wait_for(timeout=180_000)
    prompt = page.locator(".jp-CodeConsole-promptCell .cm-content")
    for _ in range(attempts):
        prompt.click(timeout=30_000)
        page.keyboard.insert_text(code)
        if "course-ok" in prompt.inner_text():
            page.keyboard.press("Shift+Enter")
            return
        page.wait_for_timeout(1000)
    pytest.fail(f"the console's prompt did not take the code in {attempts} tries")


def _console_output(page, marker: str, shot: Path, timeout_s: float = 180) -> str:
    """The console output that holds ``marker``; fails at once on a traceback (screenshot in ``shot``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        texts = page.locator(".jp-CodeConsole .jp-OutputArea-output").all_inner_texts()
        for text in texts:
            if marker in text:
                return text
            if "Traceback" in text:
                page.screenshot(path=str(shot))
                pytest.fail(f"the console raised:\n{text[:2000]}")
        page.wait_for_timeout(500)
    page.screenshot(path=str(shot))
    pytest.fail(f"no console output with {marker!r} within {timeout_s:.0f} s")


def _api_token(page, url: str) -> str:
    """A new API token, requested on the hub's token page as a learner would."""
    page.goto(f"{url}/hub/token", timeout=90_000)
    page.fill("#token-note", "test")
    page.locator("#request-token-form [type=submit]").click()
    result = page.locator("#token-result")
    script = "() => document.querySelector('#token-result').textContent.length > 10"
    page.wait_for_function(script, timeout=60_000)
    return result.inner_text().strip()


def _get(url: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def test_two_learners_use_the_hub(hub, tmp_path):
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    pages: dict = {}
    stage = "start Chromium"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            stage = "a wrong password is refused and gives no session"
            stranger = browser.new_context()
            page = stranger.new_page()
            _submit_login(page, hub.url, "alice", "not-the-password")
            error = page.locator(".login_error")
            error.wait_for(timeout=60_000)
            assert "Invalid" in error.inner_text()
            page.goto(f"{hub.url}/hub/home", timeout=90_000)
            assert "/hub/login" in page.url, f"a refused login reached {page.url}"
            stranger.close()

            stage = "both learners log in (their servers start side by side)"
            for user in USERS:
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                pages[user] = context.new_page()
                _submit_login(pages[user], hub.url, user, PASSWORD)
            code = (
                "import os, diffusion_course; env = os.environ; "
                "print('course-ok', env['JUPYTERHUB_USER'], os.getcwd(), env['OMP_NUM_THREADS'])"
            )
            for user, page in pages.items():
                stage = f"{user}'s JupyterLab opens on their copies"
                page.wait_for_url(f"**/user/{user}/lab**", timeout=240_000)
                names = _listing(page, SEEDED)
                template = {p.name for p in (hub.data / "learner").glob("*.ipynb")}
                assert len(template) >= 10, f"the hub's learner template holds {sorted(template)}"
                assert template <= names, f"{user} does not see {sorted(template - names)}"
                assert (NOTE in names) == (user == "alice"), f"{user}'s file browser shows {sorted(names)}"
                stage = f"{user} opens a console"
                _start_console(page, code)
            for user, page in pages.items():
                stage = f"{user}'s console imports diffusion_course"
                folder = hub.data / "users" / user
                out = _console_output(page, "course-ok", tmp_path / f"console-{user}.png")
                assert out.split() == ["course-ok", user, str(folder), "1"], out
                for name in template:
                    copy = (folder / name).read_bytes()
                    if user == "alice" and name == SEEDED:
                        assert b"alice's work, not the template" in copy, "the hub overwrote alice's copy"
                    else:
                        assert copy == (hub.data / "learner" / name).read_bytes(), f"{user}/{name}"

            stage = "alice cannot reach bob's files: not through the browser, not with her API token"
            alice = pages["alice"]
            reply = alice.context.request.get(f"{hub.url}/user/bob/api/contents/{SEEDED}", max_redirects=0)
            assert reply.status == 403 and '"cells"' not in reply.text(), f"alice's cookies: {reply.status}"
            reply = alice.goto(f"{hub.url}/user/bob/files/{SEEDED}", timeout=90_000)  # via the hub's OAuth
            assert reply.status == 403, f"alice got {reply.status} from bob's server at {alice.url}"
            assert "/hub/" in alice.url and "nbformat" not in alice.content(), alice.url
            token = _api_token(alice, hub.url)
            status, body = _get(f"{hub.url}/user/alice/api/contents/{SEEDED}", token)
            assert status == 200 and "alice's work" in body, f"alice's token on her server: {status}"
            status, body = _get(f"{hub.url}/user/bob/api/contents/{SEEDED}", token)
            assert status == 403 and '"cells"' not in body, f"alice's token on bob's server: {status}"
        except PlaywrightError as error:
            for user, page in pages.items():
                try:
                    page.screenshot(path=str(tmp_path / f"failed-{user}.png"))
                except PlaywrightError:
                    pass  # the page is gone: the log below says more
            pytest.fail(
                f"timed out or failed at: {stage}\n{error.message[:500]}\n--- hub log ---\n{hub.log_tail()}"
            )
        finally:
            browser.close()

    # the hub stops cleanly: every process it started ends, its ports are free again
    started = hub.started
    started.update(_descendants(hub.proc.pid))
    commands = [cmd for _, cmd in started.values()]
    servers = [cmd for cmd in commands if "jupyterhub-singleuser" in cmd]
    assert len(servers) == 2, f"expected one server per learner, found {commands}"
    assert all("--MappingKernelManager.cull_idle_timeout=" in cmd for cmd in servers), servers
    assert sum("ipykernel_launcher" in cmd for cmd in commands) == 2, commands
    assert any("jupyterhub_idle_culler" in cmd for cmd in commands), f"no idle culler: {commands}"
    assert any("configurable-http-proxy" in cmd for cmd in commands), f"no proxy below the hub: {commands}"
    assert _stop(hub, timeout=60), f"the hub did not stop within 60 s of SIGTERM:\n{hub.log_tail()}"
    left = _still_running(started)
    assert not left, f"still running after the hub stopped: {left}"
    assert all(_port_free(p) for p in hub.ports), f"a port of {hub.ports} is still taken"
    # the culler's role lets it list users (a 403 here would mean it can never cull)
    log = hub.log.read_text(errors="replace")
    assert re.search(r"200 GET /hub/api/users\S* \(idle-culler@", log), "the idle culler could not list users"
