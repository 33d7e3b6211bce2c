"""The course's JupyterHub settings and the learner copies each user gets (used by jupyterhub_config.py).

Everything an instructor may change is an environment variable, read by ``settings_from_env`` and
checked there, so a typo stops the hub at start with a message naming the variable. The pre-spawn hook
(``make_pre_spawn_hook``) puts the learner notebooks into the user's folder, adding the missing ones and
never touching a file that is there, and hands the user a GPU (gpu_assign.py).

Plain Python with no imports from the course, so the hub loads it without torch.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gpu_assign import GpuAssigner, visible_gpus

ROOT = Path(__file__).resolve().parents[1]
MODES = ("demo", "production")
PREFIX = "DIFFUSION_COURSE_HUB"
# Unix-style names: they become folder names, and user accounts and systemd units in production
USERNAME_PATTERN = r"^[a-z_][a-z0-9_-]{0,31}$"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
FOLDER_IN_HOME = "diffusion-course"  # production: the learner copies go to ~user/diffusion-course


def _fail(name: str, value, allowed: str):
    raise ValueError(f"{name}={value!r} is not allowed: {allowed}")


@dataclass(frozen=True)
class HubSettings:
    """What the hub config needs, read from ``DIFFUSION_COURSE_HUB*`` environment variables."""

    mode: str  # "demo" (local processes, shared password, 127.0.0.1) or "production" (PAM + systemd)
    data_dir: Path  # hub state: database, cookie secret, learner template, GPU assignments (demo: homes)
    users: tuple[str, ...] = ()  # allowed user names; empty: demo lets anyone with the password in
    admins: tuple[str, ...] = ()  # production: hub admins (PAM accounts)
    group: str = ""  # production: a Unix group whose members may log in
    password: str = ""  # demo: the shared password
    ip: str = "127.0.0.1"
    mem_limit: str = "4G"
    cpu_limit: float = 2.0
    cull_server_s: int = 3600  # stop a user's server after this long without activity
    cull_kernel_s: int = 1800  # stop a kernel after this long idle, even with a browser tab open
    full_max_per_gpu: int = 8  # more learners per GPU than this: quick profile for all
    ssl_cert: str = ""
    ssl_key: str = ""


def _names(variable: str, value: str) -> tuple[str, ...]:
    names = tuple(n for n in re.split(r"[,\s]+", value.strip()) if n)
    for name in names:
        if not re.match(USERNAME_PATTERN, name):
            _fail(variable, value, "list user names (lower-case letters, digits, '_' or '-') with commas")
    return names


def _whole(env: Mapping[str, str], key: str, default: int, low: int) -> int:
    """The whole number in ${PREFIX}_<key> (``default`` when unset), at least ``low``."""
    value = env.get(f"{PREFIX}_{key}", "").strip() or str(default)
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < low:
        _fail(f"{PREFIX}_{key}", value, f"expected a whole number ≥ {low}")
    return number


def settings_from_env(environ: Mapping[str, str] | None = None) -> HubSettings:
    """Read and check the hub settings; every error names the variable, its value and what is allowed."""
    env = os.environ if environ is None else environ
    get = lambda key, default="": env.get(f"{PREFIX}_{key}", "").strip() or default  # noqa: E731
    mode = env.get(PREFIX, "").strip()
    if mode not in MODES:
        _fail(PREFIX, mode, "choose 'demo' (a local trial) or 'production' (PAM logins, systemd servers)")
    default_data = ROOT / "class" / "run" if mode == "demo" else Path("/srv/diffusion-course-hub")
    data_dir = Path(get("DATA") or default_data).expanduser().resolve()
    ip = get("IP", HubSettings.ip)
    if mode == "demo" and ip not in LOOPBACK:
        _fail(f"{PREFIX}_IP", ip, "the demo hub binds to 127.0.0.1 only (it has no real logins)")
    password = get("PASSWORD")
    if password and len(password) < 8:
        _fail(f"{PREFIX}_PASSWORD", "*" * len(password), "use at least 8 characters")
    mem_limit = get("MEM_LIMIT", HubSettings.mem_limit)
    if not re.fullmatch(r"\d+(\.\d+)?[KMGT]?", mem_limit):
        _fail(f"{PREFIX}_MEM_LIMIT", mem_limit, "expected bytes with an optional K, M, G or T, e.g. '4G'")
    try:
        cpu_limit = float(get("CPU_LIMIT", str(HubSettings.cpu_limit)))
    except ValueError:
        cpu_limit = -1.0
    if not 0 < cpu_limit < 1e4:
        _fail(f"{PREFIX}_CPU_LIMIT", get("CPU_LIMIT"), "expected a positive number of cores, e.g. '2'")
    group = get("GROUP")
    users = _names(f"{PREFIX}_USERS", get("USERS"))
    if mode == "production" and not (users or group):
        _fail(
            f"{PREFIX}_USERS",
            "",
            f"production needs the learners' account names, or {PREFIX}_GROUP naming their Unix group",
        )
    cert, key = get("SSL_CERT"), get("SSL_KEY")
    if bool(cert) != bool(key):
        _fail(f"{PREFIX}_SSL_KEY", key, f"set both {PREFIX}_SSL_CERT and {PREFIX}_SSL_KEY, or neither")
    return HubSettings(
        mode=mode,
        data_dir=data_dir,
        users=users,
        admins=_names(f"{PREFIX}_ADMINS", get("ADMINS")),
        group=group,
        password=password,
        ip=ip,
        mem_limit=mem_limit,
        cpu_limit=cpu_limit,
        cull_server_s=_whole(env, "CULL_S", HubSettings.cull_server_s, 60),
        cull_kernel_s=_whole(env, "KERNEL_CULL_S", HubSettings.cull_kernel_s, 60),
        full_max_per_gpu=_whole(env, "FULL_MAX_PER_GPU", HubSettings.full_max_per_gpu, 0),
        ssl_cert=cert,
        ssl_key=key,
    )


def demo_password(settings: HubSettings) -> tuple[str, Path | None]:
    """The demo's shared password: the setting, else the one kept in <data>/demo-password (made once)."""
    if settings.password:
        return settings.password, None
    path = settings.data_dir / "demo-password"
    if not path.exists():
        import secrets

        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(12) + "\n")
    return path.read_text().strip(), path


def check_username(username: str) -> str:
    """A user name that is safe as a folder, account and unit name."""
    if not isinstance(username, str) or not re.match(USERNAME_PATTERN, username):
        _fail("username", username, "expected lower-case letters, digits, '_' or '-' (at most 32)")
    return username


_templates: dict[Path, asyncio.Future] = {}


async def ensure_template(data_dir: Path, src: Path = ROOT / "notebooks") -> Path:
    """<data_dir>/learner: the learner notebooks, made from ``src`` once per hub process.

    Made afresh at the first spawn after each hub start, so a restart hands out edited notebooks to whoever
    does not have them yet. Made in a subprocess, so the hub keeps serving meanwhile; spawns that come
    while it runs wait for the same run; a failed run is tried again at the next spawn.
    """
    template = Path(data_dir) / "learner"
    task = _templates.get(template)
    if task is None or (task.done() and (task.cancelled() or task.exception() or not template.is_dir())):
        task = _templates[template] = asyncio.ensure_future(_make_template(template, Path(src)))
    return await asyncio.shield(task)  # a spawn given up on does not stop the run the others wait for


async def _make_template(template: Path, src: Path) -> Path:
    """Write the learner notebooks beside ``template`` and swap them in, so it is never half-written."""
    fresh = template.with_name(".learner-new")
    shutil.rmtree(fresh, ignore_errors=True)
    script = ROOT / "scripts" / "make_learner_notebooks.py"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        "--out",
        str(fresh),
        "--src",
        str(src),
        "--force",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=300)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"making the learner notebooks from {src} took over 300 s") from None
    if proc.returncode != 0:
        shutil.rmtree(fresh, ignore_errors=True)
        raise RuntimeError(f"making the learner notebooks from {src} failed:\n{stderr.decode().strip()}")
    shutil.rmtree(template, ignore_errors=True)
    os.replace(fresh, template)
    return template


def copy_learner_files(template: Path, folder: Path, owner: tuple[int, int] | None = None) -> list[str]:
    """Copy each file of ``template`` into ``folder`` unless a file (or link) of that name is there.

    Returns the names copied. With ``owner`` (uid, gid) the folder, when made here, and the copies are
    given to that user. ``folder`` may lie in a directory the user controls (their home), and the hub runs
    as root: so every step goes through directory file descriptors with O_NOFOLLOW and O_EXCL, and a link
    the user planted is never followed nor replaced.
    """
    folder = Path(folder)
    parent = os.open(folder.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        made = False
        try:
            os.mkdir(folder.name, 0o755, dir_fd=parent)
            made = True
        except FileExistsError:
            pass
        fd = os.open(folder.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    finally:
        os.close(parent)
    copied = []
    try:
        if made and owner is not None:
            os.fchown(fd, *owner)
        for source in sorted(p for p in Path(template).iterdir() if p.is_file()):
            try:
                out = os.open(
                    source.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=fd
                )
            except FileExistsError:
                continue  # the learner's own copy (perhaps with their work): left as it is
            with os.fdopen(out, "wb") as f:
                if owner is not None:
                    os.fchown(f.fileno(), *owner)
                f.write(source.read_bytes())
            copied.append(source.name)
    finally:
        os.close(fd)
    return copied


def learner_folder(
    settings: HubSettings, username: str, getpwnam: Callable = pwd.getpwnam
) -> tuple[Path, tuple[int, int] | None]:
    """Where a user's notebooks live, and who owns them (None: the hub's own user, as in the demo)."""
    check_username(username)
    if settings.mode == "demo":
        return settings.data_dir / "users" / username, None
    try:
        entry = getpwnam(username)
    except KeyError:
        _fail("username", username, "production needs a Unix account of that name (adduser NAME)")
    home = Path(entry.pw_dir)
    if not home.is_dir():
        _fail("username", username, f"its home folder {home} does not exist (create it: mkhomedir_helper)")
    return home / FOLDER_IN_HOME, (entry.pw_uid, entry.pw_gid)


def make_pre_spawn_hook(settings: HubSettings, assigner: GpuAssigner, getpwnam: Callable = pwd.getpwnam):
    """The hub's pre-spawn hook: learner copies into the user's folder, notebook dir, GPU environment."""

    async def pre_spawn_hook(spawner) -> None:
        name = spawner.user.name
        folder, owner = learner_folder(settings, name, getpwnam)
        if owner is None:
            folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            template = await ensure_template(settings.data_dir)
        except RuntimeError as error:
            template = settings.data_dir / "learner"
            if not template.is_dir():
                raise
            # a notebook edited into a broken state must not lock the class out: hand out the last good set
            spawner.log.error("%s; handing out the learner notebooks made before", error)
        copied = copy_learner_files(template, folder, owner)
        if copied:
            spawner.log.info("%s: copied %s into %s", name, ", ".join(copied), folder)
        spawner.notebook_dir = str(folder)
        spawner.environment = {**spawner.environment, **assigner.environment(name)}

    return pre_spawn_hook


def gpu_assigner(settings: HubSettings, environ: Mapping[str, str] | None = None) -> GpuAssigner:
    """The hub's GPU assigner: the GPUs it sees, the class size when known, state kept in the data folder."""
    return GpuAssigner(
        gpus=visible_gpus(environ),
        class_size=len(settings.users),
        full_max_per_gpu=settings.full_max_per_gpu,
        state_file=settings.data_dir / "gpu-assignments.json",
    )
