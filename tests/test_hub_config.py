"""The class hub's configuration without running a hub: class/jupyterhub_config.py in both modes, the
settings it reads, GPU assignment (class/gpu_assign.py) and the learner copies (class/course_hub.py).

The real hub, with a browser, is tests/test_hub.py.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from traitlets.config.loader import PyFileConfigLoader

ROOT = Path(__file__).resolve().parents[1]
CLASS = ROOT / "class"
sys.path.insert(0, str(CLASS))  # class/ is not a package (its name is a keyword): the hub imports by path
course_hub = importlib.import_module("course_hub")
gpu_assign = importlib.import_module("gpu_assign")

H200 = "GPU {i}: NVIDIA H200 (UUID: GPU-{i}a1b2c3d-0000-1111-2222-33334444555{i})"
# the classes that own each config section the hub config sets, to catch a misspelt setting
SECTIONS = {
    "JupyterHub": "jupyterhub.app.JupyterHub",
    "Spawner": "jupyterhub.spawner.Spawner",
    "SimpleLocalProcessSpawner": "jupyterhub.spawner.SimpleLocalProcessSpawner",
    "SystemdSpawner": "systemdspawner.SystemdSpawner",
    "Authenticator": "jupyterhub.auth.Authenticator",
    "PAMAuthenticator": "jupyterhub.auth.PAMAuthenticator",
    "SharedPasswordAuthenticator": "jupyterhub.authenticators.shared.SharedPasswordAuthenticator",
    "ConfigurableHTTPProxy": "jupyterhub.proxy.ConfigurableHTTPProxy",
}


def _import(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _env(monkeypatch, **values):
    """Only the given DIFFUSION_COURSE_HUB* settings (and no CUDA_VISIBLE_DEVICES unless given)."""
    for key in list(os.environ):
        if key.startswith("DIFFUSION_COURSE_HUB") or key == "CUDA_VISIBLE_DEVICES":
            monkeypatch.delenv(key)
    for key, value in values.items():
        monkeypatch.setenv(key, value)


def _load(monkeypatch, **values):
    _env(monkeypatch, **values)
    return PyFileConfigLoader("jupyterhub_config.py", path=str(CLASS)).load_config()


def _check_sections(c) -> None:
    for section in c:
        assert section in SECTIONS, f"the config sets {section}, which this test does not know"
        allowed = _import(SECTIONS[section]).class_trait_names(config=True)
        unknown = set(c[section]) - set(allowed)
        assert not unknown, f"{section} has no setting {sorted(unknown)}"


def test_production_config_loads_without_systemd(monkeypatch, tmp_path):
    c = _load(
        monkeypatch,
        DIFFUSION_COURSE_HUB="production",
        DIFFUSION_COURSE_HUB_DATA=str(tmp_path),
        DIFFUSION_COURSE_HUB_USERS="alice, bob",
        DIFFUSION_COURSE_HUB_ADMINS="teacher",
        DIFFUSION_COURSE_HUB_MEM_LIMIT="6G",
        DIFFUSION_COURSE_HUB_CPU_LIMIT="3",
        DIFFUSION_COURSE_HUB_CULL_S="7200",
    )
    _check_sections(c)
    assert c.JupyterHub.spawner_class == "systemdspawner.SystemdSpawner"
    from jupyterhub.spawner import Spawner

    assert issubclass(_import(c.JupyterHub.spawner_class), Spawner)
    assert c.JupyterHub.authenticator_class == "pam"
    assert c.Authenticator.allowed_users == {"alice", "bob"} and c.Authenticator.admin_users == {"teacher"}
    assert (c.Spawner.mem_limit, c.Spawner.cpu_limit) == ("6G", 3.0)
    assert c.Spawner.environment["OMP_NUM_THREADS"] == "3"
    assert c.SystemdSpawner.dynamic_users is False and c.SystemdSpawner.isolate_devices is False
    assert c.SystemdSpawner.disable_user_sudo is True and c.SystemdSpawner.isolate_tmp is True
    assert c.JupyterHub.cleanup_servers is False
    assert c.JupyterHub.ip == "127.0.0.1"
    assert c.JupyterHub.db_url == f"sqlite:///{tmp_path / 'jupyterhub.sqlite'}"
    (culler,) = c.JupyterHub.services
    assert culler["command"][1:3] == ["-m", "jupyterhub_idle_culler"]
    assert "--timeout=7200" in culler["command"]
    assert importlib.util.find_spec("jupyterhub_idle_culler") is not None
    (role,) = c.JupyterHub.load_roles
    assert role["services"] == [culler["name"]]
    assert {"list:users", "read:users:activity", "read:servers", "delete:servers"} <= set(role["scopes"])
    assert "--MappingKernelManager.cull_idle_timeout=1800" in c.Spawner.args
    assert "--allow-root" not in c.Spawner.args  # production servers run as the learners
    assert Path(c.Spawner.cmd[0]).name == "jupyterhub-singleuser" and Path(c.Spawner.cmd[0]).exists()
    assert callable(c.Spawner.pre_spawn_hook)


def test_production_with_a_group_and_tls(monkeypatch, tmp_path, capsys):
    public = dict(
        DIFFUSION_COURSE_HUB="production",
        DIFFUSION_COURSE_HUB_DATA=str(tmp_path),
        DIFFUSION_COURSE_HUB_GROUP="learners",
        DIFFUSION_COURSE_HUB_IP="0.0.0.0",
    )
    c = _load(monkeypatch, **public)
    assert "ssl_cert" not in c.JupyterHub
    assert "passwords cross the network in clear" in capsys.readouterr().err
    tls = dict(DIFFUSION_COURSE_HUB_SSL_CERT="/etc/ssl/hub.crt", DIFFUSION_COURSE_HUB_SSL_KEY="/etc/hub.key")
    c = _load(monkeypatch, **public, **tls)
    assert "passwords cross the network" not in capsys.readouterr().err
    assert c.PAMAuthenticator.allowed_groups == {"learners"}
    assert "allowed_users" not in c.Authenticator
    assert (c.JupyterHub.ip, c.JupyterHub.ssl_cert, c.JupyterHub.ssl_key) == (
        "0.0.0.0",
        "/etc/ssl/hub.crt",
        "/etc/hub.key",
    )


def test_the_systemd_unit_runs_this_config_in_production(monkeypatch, tmp_path):
    lines = (CLASS / "diffusion-course-hub.service").read_text().splitlines()
    field = lambda key: [line.split("=", 1)[1] for line in lines if line.startswith(key + "=")]  # noqa: E731
    env = dict(value.split("=", 1) for value in field("Environment"))
    (checkout,) = map(Path, field("WorkingDirectory"))
    (exec_start,) = field("ExecStart")
    hub, flag, config = exec_start.split()[:3]
    assert hub == f"{checkout}/.venv/bin/jupyterhub"
    assert (flag, config) == ("-f", f"{checkout}/class/jupyterhub_config.py")
    assert str(checkout / "class/node_modules/.bin") in env["PATH"].split(":")
    assert field("User") == ["root"]  # SystemdSpawner starts units as other users
    settings = {k: v for k, v in env.items() if k.startswith("DIFFUSION_COURSE_HUB")}
    c = _load(monkeypatch, **{**settings, "DIFFUSION_COURSE_HUB_DATA": str(tmp_path)})
    assert c.JupyterHub.spawner_class == "systemdspawner.SystemdSpawner"
    assert c.PAMAuthenticator.allowed_groups == {env["DIFFUSION_COURSE_HUB_GROUP"]}


def test_demo_config(monkeypatch, tmp_path):
    c = _load(
        monkeypatch,
        DIFFUSION_COURSE_HUB="demo",
        DIFFUSION_COURSE_HUB_DATA=str(tmp_path),
        DIFFUSION_COURSE_HUB_USERS="alice,bob",
        DIFFUSION_COURSE_HUB_PASSWORD="class-password",
    )
    _check_sections(c)
    assert c.JupyterHub.spawner_class == "jupyterhub.spawner.SimpleLocalProcessSpawner"
    assert c.JupyterHub.ip == "127.0.0.1" and c.JupyterHub.hub_ip == "127.0.0.1"
    assert c.SimpleLocalProcessSpawner.home_dir_template == str(tmp_path / "users" / "{username}")
    assert ("--allow-root" in c.Spawner.args) == (os.geteuid() == 0)
    from jupyterhub.authenticators.shared import SharedPasswordAuthenticator

    assert _import(SECTIONS["SharedPasswordAuthenticator"]) is SharedPasswordAuthenticator
    assert c.JupyterHub.authenticator_class == "shared-password"
    auth = SharedPasswordAuthenticator(config=c)
    assert auth.user_password == "class-password" and auth.allowed_users == {"alice", "bob"}
    assert not auth.allow_all
    assert len(c.JupyterHub.services) == 1 and c.JupyterHub.load_roles[0]["services"] == ["idle-culler"]


def test_demo_without_password_keeps_one_in_the_data_folder(monkeypatch, tmp_path):
    first = _load(monkeypatch, DIFFUSION_COURSE_HUB="demo", DIFFUSION_COURSE_HUB_DATA=str(tmp_path))
    again = _load(monkeypatch, DIFFUSION_COURSE_HUB="demo", DIFFUSION_COURSE_HUB_DATA=str(tmp_path))
    password = first.SharedPasswordAuthenticator.user_password
    assert len(password) >= 8 and again.SharedPasswordAuthenticator.user_password == password
    assert (tmp_path / "demo-password").read_text().strip() == password
    assert stat.S_IMODE((tmp_path / "demo-password").stat().st_mode) == 0o600
    assert first.Authenticator.allow_all is True  # no user list: any name with the password


@pytest.mark.parametrize(
    "values, variable",
    [
        ({}, "DIFFUSION_COURSE_HUB="),
        ({"DIFFUSION_COURSE_HUB": "prod"}, "DIFFUSION_COURSE_HUB="),
        ({"DIFFUSION_COURSE_HUB_IP": "0.0.0.0"}, "DIFFUSION_COURSE_HUB_IP="),
        ({"DIFFUSION_COURSE_HUB_PASSWORD": "short"}, "DIFFUSION_COURSE_HUB_PASSWORD="),
        ({"DIFFUSION_COURSE_HUB_USERS": "alice,Bob!"}, "DIFFUSION_COURSE_HUB_USERS="),
        ({"DIFFUSION_COURSE_HUB_MEM_LIMIT": "lots"}, "DIFFUSION_COURSE_HUB_MEM_LIMIT="),
        ({"DIFFUSION_COURSE_HUB_CPU_LIMIT": "0"}, "DIFFUSION_COURSE_HUB_CPU_LIMIT="),
        ({"DIFFUSION_COURSE_HUB_CULL_S": "10"}, "DIFFUSION_COURSE_HUB_CULL_S="),
        ({"DIFFUSION_COURSE_HUB_KERNEL_CULL_S": "soon"}, "DIFFUSION_COURSE_HUB_KERNEL_CULL_S="),
        ({"DIFFUSION_COURSE_HUB_FULL_MAX_PER_GPU": "-1"}, "DIFFUSION_COURSE_HUB_FULL_MAX_PER_GPU="),
        ({"DIFFUSION_COURSE_HUB_SSL_CERT": "/etc/ssl/hub.crt"}, "DIFFUSION_COURSE_HUB_SSL_KEY="),
        ({"DIFFUSION_COURSE_HUB": "production"}, "DIFFUSION_COURSE_HUB_USERS="),
    ],
)
def test_bad_settings_name_the_variable(values, variable, tmp_path):
    base = {"DIFFUSION_COURSE_HUB": "demo", "DIFFUSION_COURSE_HUB_DATA": str(tmp_path)}
    env = {**base, **values} if values else {}
    with pytest.raises(ValueError, match=variable) as error:
        course_hub.settings_from_env(env)
    assert "is not allowed" in str(error.value)


def test_the_hub_config_stops_on_a_bad_setting(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="DIFFUSION_COURSE_HUB_CPU_LIMIT='many'"):
        _load(
            monkeypatch,
            DIFFUSION_COURSE_HUB="demo",
            DIFFUSION_COURSE_HUB_DATA=str(tmp_path),
            DIFFUSION_COURSE_HUB_CPU_LIMIT="many",
        )


# --- GPU assignment ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 4])
def test_gpus_from_nvidia_smi(n):
    output = "\n".join(H200.format(i=i) for i in range(n))
    assert gpu_assign.visible_gpus({}, nvidia_smi=lambda: output) == [str(i) for i in range(n)]


def test_gpus_without_a_driver_and_mig_slices():
    assert gpu_assign.visible_gpus({}, nvidia_smi=lambda: None) == []
    mig = "\n".join(
        [
            H200.format(i=0),
            "  MIG 3g.71gb     Device  0: (UUID: MIG-aaaa-1)",
            "  MIG 3g.71gb     Device  1: (UUID: MIG-aaaa-2)",
            H200.format(i=1),
        ]
    )
    assert gpu_assign.parse_nvidia_smi(mig) == ["MIG-aaaa-1", "MIG-aaaa-2", "1"]


@pytest.mark.parametrize(
    "value, gpus",
    [("", []), ("none", []), ("0,1", ["0", "1"]), (" 3 , 1 ", ["3", "1"]), ("2,-1,3", ["2"]), ("-1", [])],
)
def test_gpus_from_cuda_visible_devices(value, gpus):
    smi = lambda: pytest.fail("nvidia-smi is not asked when CUDA_VISIBLE_DEVICES is set")  # noqa: E731
    assert gpu_assign.visible_gpus({"CUDA_VISIBLE_DEVICES": value}, nvidia_smi=smi) == gpus


@pytest.mark.parametrize("value", ["0,,1", "gpu0", "0,0", "1;2"])
def test_bad_cuda_visible_devices_is_named(value):
    with pytest.raises(ValueError, match=r"CUDA_VISIBLE_DEVICES=.*is not allowed"):
        gpu_assign.parse_cuda_visible_devices(value)


def test_no_gpu_sets_nothing():
    assigner = gpu_assign.GpuAssigner(gpus=[], class_size=30)
    assert assigner.environment("alice") == {} and assigner.environment("bob") == {}


@pytest.mark.parametrize("n_gpus", [1, 2, 4])
def test_round_robin_with_more_users_than_gpus(n_gpus):
    gpus = [str(i) for i in range(n_gpus)]
    assigner = gpu_assign.GpuAssigner(gpus=gpus, full_max_per_gpu=100)
    users = [f"user{i}" for i in range(2 * n_gpus + 1)]
    got = [assigner.environment(u)["CUDA_VISIBLE_DEVICES"] for u in users]
    assert got == [gpus[i % n_gpus] for i in range(len(users))]
    counts = [got.count(g) for g in gpus]
    assert max(counts) - min(counts) <= 1
    # spawning again, in any order, keeps each user's GPU
    for user, gpu in reversed(list(zip(users, got))):
        assert assigner.environment(user)["CUDA_VISIBLE_DEVICES"] == gpu


def test_assignments_survive_a_hub_restart(tmp_path):
    state = tmp_path / "gpu-assignments.json"
    first = gpu_assign.GpuAssigner(gpus=["0", "1"], state_file=state)
    assert [first.gpu_for(u) for u in ("alice", "bob", "carol")] == ["0", "1", "0"]
    again = gpu_assign.GpuAssigner(gpus=["0", "1"], state_file=state)
    assert [again.gpu_for(u) for u in ("carol", "bob", "alice", "dave")] == ["0", "1", "0", "1"]
    assert json.loads(state.read_text())["dave"] == "1"
    # GPU 1 gone after a reboot: its users get one of the GPUs there are
    fewer = gpu_assign.GpuAssigner(gpus=["0"], state_file=state)
    assert fewer.gpu_for("bob") == "0" and fewer.gpu_for("alice") == "0"


def test_quick_profile_when_a_gpu_is_shared_by_many():
    def profile(**kw):
        env = gpu_assign.GpuAssigner(**kw).environment("alice")
        assert env["CUDA_VISIBLE_DEVICES"] == "0"
        assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
        return env.get("DIFFUSION_COURSE_PROFILE")

    assert profile(gpus=["0", "1"], class_size=16, full_max_per_gpu=8) is None  # 8 per GPU: full
    assert profile(gpus=["0", "1"], class_size=17, full_max_per_gpu=8) == "quick"  # 9 on one GPU
    assert profile(gpus=["0", "1", "2", "3"], class_size=30, full_max_per_gpu=8) is None
    assert profile(gpus=["0"], class_size=2, full_max_per_gpu=0) == "quick"  # 0: always quick
    # class size unknown: the learners seen so far count
    assigner = gpu_assign.GpuAssigner(gpus=["0"], full_max_per_gpu=2)
    assert [assigner.environment(f"u{i}").get("DIFFUSION_COURSE_PROFILE") for i in range(3)] == [
        None,
        None,
        "quick",
    ]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"gpus": "0,1"}, "gpus"),
        ({"gpus": ["0", "0"]}, "gpus"),
        ({"gpus": ["cuda:0"]}, "gpus"),
        ({"gpus": ["0"], "class_size": -1}, "class_size"),
        ({"gpus": ["0"], "full_max_per_gpu": 1.5}, "full_max_per_gpu"),
        ({"gpus": ["0"], "full_max_per_gpu": True}, "full_max_per_gpu"),
    ],
)
def test_bad_assigner_input_is_named(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}="):
        gpu_assign.GpuAssigner(**kwargs)


def test_bad_user_and_state_file_are_named(tmp_path):
    with pytest.raises(ValueError, match="^username="):
        gpu_assign.GpuAssigner(gpus=["0"]).gpu_for("")
    broken = tmp_path / "state.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="^state_file="):
        gpu_assign.GpuAssigner(gpus=["0"], state_file=broken)


# --- learner copies --------------------------------------------------------------------------------------


def _template(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("01_a.ipynb", "02_b.ipynb"):
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"# {name}")])
        nbformat.write(notebook, folder / name)
    (folder / "jupytext.toml").write_text('formats = "ipynb"\n')
    return folder


def test_first_copy_then_never_overwrite(tmp_path):
    template = _template(tmp_path / "template")
    home = tmp_path / "users" / "alice"
    home.mkdir(parents=True)
    (home / "02_b.ipynb").write_text("alice's own work")
    assert course_hub.copy_learner_files(template, home) == ["01_a.ipynb", "jupytext.toml"]
    assert (home / "01_a.ipynb").read_bytes() == (template / "01_a.ipynb").read_bytes()
    assert (home / "02_b.ipynb").read_text() == "alice's own work"
    # she edits one and deletes another: the next spawn restores only the deleted one
    (home / "01_a.ipynb").write_text("edited")
    (home / "jupytext.toml").unlink()
    assert course_hub.copy_learner_files(template, home) == ["jupytext.toml"]
    assert (home / "01_a.ipynb").read_text() == "edited"
    assert course_hub.copy_learner_files(template, home) == []


def test_copy_never_follows_a_planted_link(tmp_path):
    template = _template(tmp_path / "template")
    outside = tmp_path / "outside"
    outside.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    (home / "01_a.ipynb").symlink_to(outside / "written-through-link")  # dangling
    assert course_hub.copy_learner_files(template, home, owner=(os.getuid(), os.getgid())) == [
        "02_b.ipynb",
        "jupytext.toml",
    ]
    assert not (outside / "written-through-link").exists() and (home / "01_a.ipynb").is_symlink()
    # the learners' folder itself a link elsewhere: refused, nothing written there
    linked = tmp_path / "home2"
    linked.mkdir()
    (linked / course_hub.FOLDER_IN_HOME).symlink_to(outside)
    with pytest.raises(OSError):
        course_hub.copy_learner_files(template, linked / course_hub.FOLDER_IN_HOME)
    assert list(outside.iterdir()) == []


def test_production_folder_is_in_the_users_home(tmp_path):
    settings = course_hub.HubSettings(mode="production", data_dir=tmp_path / "hub", users=("alice",))
    home = tmp_path / "home" / "alice"
    home.mkdir(parents=True)
    accounts = {"alice": SimpleNamespace(pw_dir=str(home), pw_uid=os.getuid(), pw_gid=os.getgid())}
    folder, owner = course_hub.learner_folder(settings, "alice", accounts.__getitem__)
    assert folder == home / "diffusion-course" and owner == (os.getuid(), os.getgid())
    with pytest.raises(ValueError, match="^username='bob'.*adduser"):
        course_hub.learner_folder(settings, "bob", accounts.__getitem__)
    accounts["carol"] = SimpleNamespace(pw_dir=str(tmp_path / "no-home"), pw_uid=1, pw_gid=1)
    with pytest.raises(ValueError, match="^username='carol'.*does not exist"):
        course_hub.learner_folder(settings, "carol", accounts.__getitem__)
    with pytest.raises(ValueError, match="^username='../x'"):
        course_hub.learner_folder(settings, "../x", accounts.__getitem__)


def _spawner(name: str) -> SimpleNamespace:
    return SimpleNamespace(
        user=SimpleNamespace(name=name),
        environment={"OMP_NUM_THREADS": "2"},
        notebook_dir="",
        log=logging.getLogger("test"),
    )


@pytest.mark.slow  # makes the learner notebooks: about 2 s of CPU
def test_the_configs_pre_spawn_hook(monkeypatch, tmp_path):
    """The hook the demo config installs: the real learner notebooks, copied once; a GPU per learner."""
    data = tmp_path / "hub"
    c = _load(
        monkeypatch,
        DIFFUSION_COURSE_HUB="demo",
        DIFFUSION_COURSE_HUB_DATA=str(data),
        DIFFUSION_COURSE_HUB_USERS="alice,bob",
        DIFFUSION_COURSE_HUB_PASSWORD="class-password",
        CUDA_VISIBLE_DEVICES="0,1",
    )
    hook = c.Spawner.pre_spawn_hook
    alice_dir = data / "users" / "alice"
    alice_dir.mkdir(parents=True)
    (alice_dir / "02_training.ipynb").write_text("alice's work")
    alice, bob = _spawner("alice"), _spawner("bob")
    asyncio.run(hook(alice))
    asyncio.run(hook(bob))
    wanted = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert sorted(p.name for p in (data / "learner").glob("*.ipynb")) == wanted
    assert sorted(p.name for p in alice_dir.glob("*.ipynb")) == wanted
    assert (alice_dir / "02_training.ipynb").read_text() == "alice's work"
    first = data / "learner" / wanted[0]
    assert (alice_dir / wanted[0]).read_bytes() == first.read_bytes()
    assert "BEGIN SOLUTION" not in first.read_text()  # learner copies, not the solutions
    assert alice.notebook_dir == str(alice_dir) and bob.notebook_dir == str(data / "users" / "bob")
    assert alice.environment["CUDA_VISIBLE_DEVICES"] == "0" and bob.environment["CUDA_VISIBLE_DEVICES"] == "1"
    assert alice.environment["OMP_NUM_THREADS"] == "2"  # the config's environment is kept
    assert "DIFFUSION_COURSE_PROFILE" not in alice.environment  # 2 learners on 2 GPUs: full profile
    again = _spawner("alice")
    asyncio.run(hook(again))
    assert again.environment["CUDA_VISIBLE_DEVICES"] == "0"


def test_a_broken_notebook_keeps_the_last_good_learner_set(monkeypatch, tmp_path, caplog):
    data = tmp_path / "hub"
    template = _template(data / "learner")
    before = sorted(p.name for p in template.iterdir())
    src = tmp_path / "notebooks"
    src.mkdir()
    cell = nbformat.v4.new_code_cell("def f():\n    # BEGIN SOLUTION\n    return 1")
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), src / "01_a.ipynb")
    with pytest.raises(RuntimeError, match="has no '# END SOLUTION'"):
        asyncio.run(course_hub.ensure_template(data, src=src))
    assert sorted(p.name for p in template.iterdir()) == before
    assert not (data / ".learner-new").exists()

    async def broken(data_dir):
        raise RuntimeError("making the learner notebooks failed")

    monkeypatch.setattr(course_hub, "ensure_template", broken)
    hook = course_hub.make_pre_spawn_hook(
        course_hub.HubSettings(mode="demo", data_dir=data), gpu_assign.GpuAssigner(gpus=[])
    )
    alice = _spawner("alice")
    with caplog.at_level(logging.ERROR):
        asyncio.run(hook(alice))
    assert sorted(p.name for p in (data / "users" / "alice").iterdir()) == before
    assert "handing out the learner notebooks made before" in caplog.text
    assert alice.environment == {"OMP_NUM_THREADS": "2"}  # no GPU: nothing GPU-related added
