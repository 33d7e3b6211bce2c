"""scripts/gpu_check.py (``make gpu-check``): the dry run passes on the CPU and covers every part, failures
exit non-zero, and the CUDA-only pieces (commands, the kernel's memory hook, the report) are checked here."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
_spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gc = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = gc  # dataclasses look their module up there
_spec.loader.exec_module(gc)

NOTEBOOKS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "notebooks").glob("*.ipynb"))


def run_check(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One full dry run: (process, report text); the committed page must come out of it untouched."""
    tmp = tmp_path_factory.mktemp("gpu_check")
    committed = gc.REPORT.read_bytes()
    proc = run_check("--dry-run", "--out", str(tmp / "gpu.md"), "--work-dir", str(tmp / "work"))
    assert gc.REPORT.read_bytes() == committed, "the dry run overwrote docs/benchmarks/gpu.md"
    report = (tmp / "gpu.md").read_text() if (tmp / "gpu.md").is_file() else ""
    return proc, report


@pytest.mark.slow
def test_dry_run_passes_every_part(dry_run):
    proc, report = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for part in gc.PARTS:
        assert f"[{part}] pass" in proc.stdout, part
        assert f"| {part} | pass |" in report, part
    assert "**Result: all parts passed**" in report and "dry run" in report.splitlines()[0]


@pytest.mark.slow
def test_dry_run_exercises_or_prints_each_step(dry_run):
    proc, report = dry_run
    # trainer: both modes ran, and bf16 / channels-last were really on in the second
    assert "| fp32 | 4 | 2 |" in report and "| float32 | False |" in report
    assert "| bf16 autocast + channels-last | 4 | 2 |" in report and "| bfloat16 | True |" in report
    # DDP: two gloo ranks through torchrun; the NCCL step is printed, not run
    assert "| 2 | gloo | cpu | 2 |" in report
    assert "--worker nccl" in report and "not run (CUDA only)" in report
    # sampler: eager and the dynamo-compiled model gave the same samples; CUDA graphs are GPU-only
    assert "| 2 | " in report.split("## Sampler throughput")[1] and "0.0e+00" in report
    assert "mode='reduce-overhead'" in report
    # notebooks: the exact GPU command for every notebook, every one collected by nbval
    printed = [line for line in proc.stdout.splitlines() if "would run (on CUDA)" in line]
    assert len(printed) == len(NOTEBOOKS) > 0
    for path, line in zip(NOTEBOOKS, printed):
        assert "DIFFUSION_COURSE_PROFILE=full" in line and "PYTHONSTARTUP=" in line
        assert line.endswith(f"-m pytest --nbval-lax --nbval-current-env -p no:cacheprovider -q {path}")
    assert "memory hook ran in a kernel" in report
    for path in NOTEBOOKS:
        assert Path(path).stem in report.split("Dry run: collected")[1]


def test_a_failing_part_fails_the_run_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    """The trainer worker (a real subprocess) fails by injection; the other parts are stand-ins that pass."""
    ran = []

    def stand_in(ctx, result):
        ran.append(result.name)
        result.summary = "stand-in"

    for name in ("preflight", "ddp", "sampler", "notebooks"):
        monkeypatch.setitem(gc.PART_FUNCTIONS, name, stand_in)
    out = tmp_path / "gpu.md"
    code = gc.main(
        ["--dry-run", "--inject-failure", "trainer", "--out", str(out), "--work-dir", str(tmp_path)]
    )
    assert code == 1 and sorted(ran) == ["ddp", "notebooks", "preflight", "sampler"]
    assert "[trainer] fail" in capsys.readouterr().out
    report = out.read_text()
    assert "**Result: FAILED**" in report and "| trainer | fail |" in report and "| ddp | pass |" in report
    assert "failure injected into the trainer part" in report.split("## Failures")[1]


@pytest.mark.slow
def test_without_cuda_the_gpu_run_stops_at_the_preflight(tmp_path):
    """Here (no CUDA) the real command fails at once, runs nothing else and writes no report."""
    proc = run_check("--parts", "trainer", "--out", str(tmp_path / "gpu.md"), "--work-dir", str(tmp_path))
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "[preflight] fail" in proc.stdout and "CUDA is not available" in proc.stdout
    assert "preflight failed" in proc.stderr and "[trainer]" not in proc.stdout
    assert not (tmp_path / "gpu.md").exists()


def test_a_part_over_its_time_limit_is_killed_with_its_children(tmp_path):
    child = (
        "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; "
        "time.sleep(60)']); print(p.pid, flush=True); time.sleep(60)"
    )
    rc, seconds = gc.run_limited([sys.executable, "-c", child], 2.0, tmp_path / "log")
    assert rc is None and seconds < 30
    grandchild = int((tmp_path / "log").read_text().split()[0])
    deadline = time.monotonic() + 10  # SIGKILL is delivered at once, but a loaded machine may take a moment
    while True:
        try:
            state = Path(f"/proc/{grandchild}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            state = "gone"
        if state in ("gone", "Z", "X") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert state in ("gone", "Z", "X"), f"the grandchild {grandchild} is still running ({state})"


def test_bad_options_are_refused():
    proc = run_check("--dry-run", "--out", str(gc.REPORT))
    assert proc.returncode == 2 and "--out" in proc.stderr and "never writes" in proc.stderr
    proc = run_check("--dry-run", "--time-scale", "0")
    assert proc.returncode == 2 and "--time-scale=0.0" in proc.stderr


def test_make_target_passes_dry_run_through():
    # outside any calling make (make test sets MAKEFLAGS/MAKELEVEL, which add "Entering directory" lines)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    make = ["make", "--no-print-directory", "-n", "gpu-check"]
    dry = subprocess.run([*make, "DRY_RUN=1"], cwd=ROOT, capture_output=True, text=True, env=env)
    real = subprocess.run(make, cwd=ROOT, capture_output=True, text=True, env=env)
    assert dry.returncode == 0 and real.returncode == 0, dry.stderr + real.stderr
    assert "scripts/gpu_check.py --dry-run" in dry.stdout.splitlines()[-1]
    assert "scripts/gpu_check.py" in real.stdout.splitlines()[-1] and "--dry-run" not in real.stdout


def test_gpu_commands_are_well_formed(tmp_path):
    """The commands the GPU run would start on a 4-GPU machine parse with the parsers that will read them."""
    from diffusion_course.cli import build_parser

    ctx = gc.Context(
        dry_run=False, work=tmp_path, time_scale=1.0, notebook_jobs=4, inject=None, device_count=4
    )
    train, nccl, nproc = gc.ddp_commands(ctx, tmp_path / "ddp")
    assert nproc == 4 and "--nproc_per_node=4" in train and "--standalone" in train
    module_args = train[train.index("diffusion_course") + 1 :]
    args = build_parser().parse_args(module_args)
    assert (args.config, args.device, args.steps, args.quiet) == ("mnist-cond", "cuda", 200, True)
    worker = gc.parse_args(nccl[nccl.index(str(SCRIPT)) + 1 :])
    assert worker.worker == "nccl" and worker.result.endswith("nccl.json")
    env = gc.notebook_env(ctx, tmp_path / "m.json", tmp_path / "hook.py")
    assert env["DIFFUSION_COURSE_PROFILE"] == "full" and env["PYTHONSTARTUP"] == str(tmp_path / "hook.py")
    assert env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 4))
    assert sum(gc.LIMITS_S.values()) <= 8 * 60, "the parts' limits must add up to at most 8 minutes"


def fake_torch(initialized: bool) -> types.ModuleType:
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(
        is_initialized=lambda: initialized,
        current_device=lambda: 0,
        max_memory_allocated=lambda device: 3 * 2**30 if device == 0 else -1,
        max_memory_reserved=lambda device: 4 * 2**30 if device == 0 else -1,
    )
    return torch


def test_kernel_hook_records_peak_cuda_memory_after_each_cell(tmp_path, monkeypatch):
    """The start-up file as IPython runs it: a record at start-up and one after every cell."""
    callbacks = {}
    shell = types.SimpleNamespace(events=types.SimpleNamespace(register=callbacks.__setitem__))
    memory = tmp_path / "memory.json"
    monkeypatch.setenv(gc.MEMORY_FILE_VAR, str(memory))
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    namespace = {"get_ipython": lambda: shell}
    exec(compile(gc.KERNEL_HOOK, "kernel_startup.py", "exec"), namespace)
    assert set(namespace) - {"__builtins__"} == {"get_ipython"}  # leaves nothing in the user's namespace
    first = json.loads(memory.read_text())
    assert first == {"pid": os.getpid(), "cells": 0, "torch_imported": False, "cuda_initialized": False}

    monkeypatch.setitem(sys.modules, "torch", fake_torch(initialized=False))
    callbacks["post_run_cell"](None)
    assert json.loads(memory.read_text())["torch_imported"] is True
    assert "max_allocated" not in json.loads(memory.read_text())  # torch imported, CUDA never touched

    monkeypatch.setitem(sys.modules, "torch", fake_torch(initialized=True))
    callbacks["post_run_cell"](None)
    record = json.loads(memory.read_text())
    assert record["cells"] == 2 and record["cuda_initialized"] is True
    assert (record["max_allocated"], record["max_reserved"]) == (3 * 2**30, 4 * 2**30)


def gpu_like_results() -> dict:
    """Part results shaped as the GPU run's workers write them (the numbers are made up)."""
    device = {"name": "NVIDIA H200", "memory_gib": 139.8, "capability": "9.0"}
    preflight = {
        "torch": "2.14.1",
        "cuda_build": "13.0",
        "cudnn": 91000,
        "python": "3.11",
        "devices": [device],
    }
    row = {"batch": 128, "steps": 200, "steps_per_s": 50.0, "final_loss": 0.05, "peak_allocated": 2**30}
    trainer = {
        "model": "mnist-cond",
        "parameters": 687473,
        "rows": [
            {
                **row,
                "mode": "fp32",
                "images_per_s": 6400.0,
                "channels_last": False,
                "conv_output_dtypes": ["float32"],
            },
            {
                **row,
                "mode": "bf16 autocast + channels-last",
                "images_per_s": 9600.0,
                "channels_last": True,
                "conv_output_dtypes": ["bfloat16"],
            },
        ],
    }
    nccl = {"command": "torchrun ... nccl", "wall_s": 9.0, "world_size": 1, "all_reduce_ok": True}
    ddp = {
        "command": "torchrun ... train",
        "nproc": 1,
        "steps": 200,
        "world_size": 1,
        "backend": "none",
        "device": "cuda",
        "train_s": 10.0,
        "batch": 64,
        "final_loss": 0.04,
        "wall_s": 25.0,
        "nccl": nccl,
    }
    small = {
        "batch": 1,
        "eager": 10.0,
        "compile": 20.0,
        "compile_maxdiff": 1e-4,
        "compile_cudagraphs": 40.0,
        "compile_cudagraphs_maxdiff": 2e-4,
        "peak_allocated": 2**28,
    }
    sampler = {
        "steps": 50,
        "device": "cuda",
        "variants": ["eager", "compile", "compile_cudagraphs"],
        "skipped": [],
        "first_call_s": {"compile/1": 31.0},
        "rows": [small, {"batch": 1024, "eager": 1000.0}],
    }
    timed_out = "fail (timed out after 199 s)"
    notebooks = {
        "jobs": 4,
        "device_peak_mib": 8192,
        "device_baseline_mib": 0,
        "nvidia_smi": True,
        "method": "m",
        "rows": [
            {
                "notebook": "notebooks/01_forward_process.ipynb",
                "status": "pass",
                "wall_s": 30.0,
                "max_allocated": 2**30,
                "max_reserved": 2 * 2**30,
                "smi_mib": 2560,
            },
            {"notebook": "notebooks/02_training.ipynb", "status": timed_out, "wall_s": 199.0},
        ],
    }
    return {
        "preflight": gc.PartResult("preflight", details=preflight),
        "trainer": gc.PartResult("trainer", details=trainer),
        "ddp": gc.PartResult("ddp", details=ddp),
        "sampler": gc.PartResult("sampler", details=sampler),
        "notebooks": gc.PartResult("notebooks", status="fail", details=notebooks, errors=[timed_out]),
    }


def test_report_of_a_gpu_run(tmp_path):
    ctx = gc.Context(dry_run=False, work=tmp_path, time_scale=1.0, notebook_jobs=4, inject=None)
    text = gc.render(gpu_like_results(), ctx, ["- device: NVIDIA H200"], total_s=400.0)
    assert text.startswith("# GPU check\n") and "**Result: FAILED** in 400 s." in text
    assert (
        "| bf16 autocast + channels-last | 128 | 200 | 50.0 | 9600 | 1.50× | 0.0500 | bfloat16 | True |"
        in text
    )
    assert "| 1 | 10.0 | 20.0 | 40.0 | 2.00× | 1.0e-04 | 4.00× | 2.0e-04 | 0.25 |" in text
    assert "| 1024 | 1000.0 | – | – | – | – | – | – | – |" in text  # compiled runs skipped at 1024
    assert "| 1 | none | cuda | 200 | 64 | 10.0 | 20.0 | 1280 | 0.0400 | 25.0 |" in text
    assert "NCCL all-reduce on 1 rank(s): passed" in text and "starts no process group" in text
    assert "| 01_forward_process | pass | 30 | 1.00 | 2.00 | 2.50 |" in text
    assert "| 02_training | fail (timed out after 199 s) | 199 | – | – | – |" in text
    assert "peaked at 8.00 GiB" in text and "## Failures" in text
    for line in text.splitlines():  # every table row has as many cells as its header
        if line.startswith("|"):
            assert line.count("|") == header_cells(text, line), line


def header_cells(text: str, row: str) -> int:
    lines = text.splitlines()
    i = lines.index(row)
    while i > 0 and lines[i - 1].startswith("|"):
        i -= 1
    return lines[i].count("|")


def test_step_marked_model_marks_each_step_and_returns_a_copy(monkeypatch):
    """The CUDA-graph wrapper starts a new graph step per call and hands the sampler its own tensor, not the
    buffer that the next replay overwrites."""
    import torch

    steps = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: steps.append(1))
    static = torch.ones(2, 3)
    model = gc.StepMarked(lambda x, t, labels=None: static, num_classes=10)
    eps = model(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), labels=torch.tensor([1, 2]))
    model(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    assert model.num_classes == 10 and len(steps) == 2 and torch.equal(eps, static)
    static.add_(1.0)  # the next replay
    assert torch.equal(eps, torch.ones(2, 3))


def test_nvidia_smi_is_read_per_process(tmp_path, monkeypatch):
    """The memory poller against a stand-in nvidia-smi that answers like the real one."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        '  --query-compute-apps=*) echo "1234, 2048"; echo "99, 512"; echo "No running processes found";;\n'
        '  --query-gpu=memory.used) echo "3000"; echo "100";;\n'
        '  --query-gpu=name,*) echo "Fake GPU, 580.1, 8192 MiB";;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    poller = gc.GpuMemorySampler(interval_s=0.05)
    poller.start()
    deadline = time.monotonic() + 20
    while poller.device_peak is None and time.monotonic() < deadline:
        time.sleep(0.05)
    poller.stop()
    assert poller.available and poller.baseline == 3100 and poller.device_peak == 3100
    assert poller.per_pid == {1234: 2048, 99: 512}
    assert gc.nvidia_smi_summary() == "Fake GPU, 580.1, 8192 MiB"
