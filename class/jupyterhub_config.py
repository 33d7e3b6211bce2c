"""JupyterHub for diffusion-course on one server: ``jupyterhub -f class/jupyterhub_config.py``.

DIFFUSION_COURSE_HUB picks the set-up:

* ``demo``: every learner's server is a local process of the hub's own user (SimpleLocalProcessSpawner),
  one shared password, 127.0.0.1 only, homes under <data>/users/<name>. For trying the class out
  (``make hub``) and for the tests; it gives no isolation between learners.
* ``production``: Unix accounts with their passwords (PAM) and one systemd unit per learner
  (SystemdSpawner, as The Littlest JupyterHub runs it) with memory and CPU limits; the hub runs as root.

Both: learner copies into the user's folder at each spawn (missing files only), a GPU per learner
(round-robin, quick profile when a GPU is shared by many), idle servers and kernels culled. Every knob is
a DIFFUSION_COURSE_HUB_* variable, read and checked in course_hub.py.
"""

import math
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from course_hub import (  # noqa: E402
    FOLDER_IN_HOME,
    USERNAME_PATTERN,
    demo_password,
    gpu_assigner,
    make_pre_spawn_hook,
    settings_from_env,
)

c = get_config()  # noqa: F821 (defined by JupyterHub's config loader)
settings = settings_from_env()
settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
BIN = Path(sys.executable).parent  # the course's .venv: jupyterhub-singleuser, the kernel's python

# --- the hub and its proxy ---------------------------------------------------------------------------
c.JupyterHub.ip = settings.ip
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.db_url = f"sqlite:///{settings.data_dir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(settings.data_dir / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(settings.data_dir / "jupyterhub-proxy.pid")
c.Authenticator.username_pattern = USERNAME_PATTERN
if settings.users:
    c.Authenticator.allowed_users = set(settings.users)

# --- every learner's server ----------------------------------------------------------------------------
c.Spawner.cmd = [str(BIN / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 180  # a whole class logging in at once on a busy machine
c.Spawner.http_timeout = 120
c.Spawner.args = [
    # kernels idle this long are stopped, even with a browser tab open: it frees their (GPU) memory
    f"--MappingKernelManager.cull_idle_timeout={settings.cull_kernel_s}",
    f"--MappingKernelManager.cull_interval={min(300, settings.cull_kernel_s // 2)}",
    "--MappingKernelManager.cull_connected=True",
    "--LabApp.news_url=None",  # no news polling from every learner's browser
]
c.Spawner.mem_limit = settings.mem_limit
c.Spawner.cpu_limit = settings.cpu_limit
c.Spawner.environment = {
    # torch starts one thread per core it sees, not per core it may use
    "OMP_NUM_THREADS": str(max(1, math.floor(settings.cpu_limit))),
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
}
c.Spawner.pre_spawn_hook = make_pre_spawn_hook(settings, gpu_assigner(settings))

# --- culling idle servers: jupyterhub-idle-culler as a hub service with just the scopes it needs --------
c.JupyterHub.services = [
    {
        "name": "idle-culler",
        "command": [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={settings.cull_server_s}",
            f"--cull-every={min(300, settings.cull_server_s // 2)}",
        ],
    }
]
c.JupyterHub.load_roles = [
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }
]

if settings.mode == "demo":
    password, password_file = demo_password(settings)
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = password
    if not settings.users:
        c.Authenticator.allow_all = True  # anyone with the password picks a name
    c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
    c.SimpleLocalProcessSpawner.home_dir_template = str(settings.data_dir / "users" / "{username}")
    if os.geteuid() == 0:
        c.Spawner.args.append("--allow-root")
    where = f"in {password_file}" if password_file else "from DIFFUSION_COURSE_HUB_PASSWORD"
    who = ", ".join(settings.users) if settings.users else "any name"
    print(f"diffusion-course demo hub: log in as {who} with the password {where}", file=sys.stderr)
else:
    c.JupyterHub.authenticator_class = "pam"
    c.Authenticator.admin_users = set(settings.admins)
    if settings.group:
        c.PAMAuthenticator.allowed_groups = {settings.group}
    c.JupyterHub.spawner_class = "systemdspawner.SystemdSpawner"
    c.SystemdSpawner.dynamic_users = False  # the learners' own accounts, so PAM passwords and homes work
    c.SystemdSpawner.username_template = "{USERNAME}"
    c.SystemdSpawner.unit_name_template = "jupyter-{USERNAME}"
    c.SystemdSpawner.default_shell = "/bin/bash"
    c.SystemdSpawner.extra_paths = [str(BIN)]
    c.SystemdSpawner.isolate_tmp = True
    c.SystemdSpawner.isolate_devices = False  # a private /dev would hide the GPUs
    c.SystemdSpawner.disable_user_sudo = True
    c.Spawner.notebook_dir = f"~/{FOLDER_IN_HOME}"  # the pre-spawn hook sets the full path
    c.JupyterHub.cleanup_servers = False  # a hub restart leaves the learners' servers running
    if settings.ssl_cert:
        c.JupyterHub.ssl_cert = settings.ssl_cert
        c.JupyterHub.ssl_key = settings.ssl_key
    elif settings.ip not in ("127.0.0.1", "localhost", "::1"):
        print(
            "warning: the hub listens on a public address without TLS; passwords cross the network in "
            "clear. Set DIFFUSION_COURSE_HUB_SSL_CERT and _SSL_KEY, or keep 127.0.0.1 behind a TLS proxy.",
            file=sys.stderr,
        )
