"""One command that proves the course's GPU path and writes docs/benchmarks/gpu.md.

    make gpu-check                  # on a CUDA machine: at most about 8 minutes
    make gpu-check DRY_RUN=1        # anywhere: tiny sizes on the CPU; writes nothing in docs/
    .venv/bin/python scripts/gpu_check.py --help

Parts, each with its own time limit (seconds; ``--time-scale`` multiplies them all; in the dry run each has
300):

* ``preflight`` (30): torch, CUDA and the GPUs; without CUDA the GPU run stops here and writes nothing.
* ``trainer`` (50): ``training.train`` on the ``mnist-cond`` UNet in fp32 and in bf16 autocast +
  channels-last; steps/s, images/s, finite losses, and proof that bf16 and channels-last were really on.
* ``ddp`` (60): ``python -m diffusion_course train`` under torchrun on every visible GPU (NCCL when there are
  two or more), then an NCCL all-reduce under torchrun (the trainer starts no process group for one process).
* ``sampler`` (120): DDIM, 50 steps, on the shipped ``mnist-cond`` model for batches 1…1024: eager,
  ``torch.compile`` and ``torch.compile(mode="reduce-overhead")`` (CUDA graphs); samples/s, the ratio to
  eager and the largest difference from the eager samples.
* ``notebooks`` (200): nbval (``--nbval-lax``) over every notebooks/*.ipynb in the ``full`` profile, each
  notebook in its own pytest process (a few at once, ``--notebook-jobs``), with its wall time and peak GPU
  memory. The memory is measured in the kernel process, where the notebook's tensors live: a start-up file
  (run by IPython through PYTHONSTARTUP) records ``torch.cuda.max_memory_allocated()`` and
  ``max_memory_reserved()`` after every cell, and nvidia-smi is polled for the kernel's pid (its CUDA
  context included).

On the GPU the parts run one after another. The dry run runs them all at once, with tiny sizes on the CPU:
the trainer, DDP (gloo, two processes) and the sampler (``torch.compile`` with dynamo's eager backend) for
real; for the CUDA-only steps (the notebooks on the GPU, CUDA graphs, NCCL) it prints the exact commands and
validates them: every notebook is collected by the same nbval command line, and the memory start-up file
runs in a real kernel on a one-cell notebook.

Exit status 0 only when every part passed. ``--inject-failure PART`` makes that part fail (to test the
check itself).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import importlib.util
import json
import math
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "benchmarks" / "gpu.md"
PARTS = ("preflight", "trainer", "ddp", "sampler", "notebooks")
LIMITS_S = {"preflight": 30, "trainer": 50, "ddp": 60, "sampler": 120, "notebooks": 200}
# The dry run's parts are tiny but share a (possibly busy) CPU: one generous limit, which times nothing.
DRY_RUN_LIMIT_S = 300
WORKER_PARTS = ("preflight", "trainer", "sampler", "nccl")
MEMORY_FILE_VAR = "GPU_CHECK_MEMORY_FILE"
MISSING_NOTEBOOK = "notebooks/__injected_missing__.ipynb"

# Run by IPython at kernel start (PYTHONSTARTUP): after every cell, write the kernel's pid and torch's peak
# CUDA memory to $GPU_CHECK_MEMORY_FILE (atomically, so a reader never sees half a file).
KERNEL_HOOK = """\
# Kernel start-up file of scripts/gpu_check.py: records the kernel's peak CUDA memory after every cell.


def _gpu_check_install():
    import json
    import os
    import sys

    path = os.environ["GPU_CHECK_MEMORY_FILE"]
    cells = [0]

    def record(*_args):
        out = {"pid": os.getpid(), "cells": cells[0], "torch_imported": "torch" in sys.modules,
               "cuda_initialized": False}
        cells[0] += 1
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            device = torch.cuda.current_device()
            out.update(cuda_initialized=True, max_allocated=torch.cuda.max_memory_allocated(device),
                       max_reserved=torch.cuda.max_memory_reserved(device))
        with open(path + ".tmp", "w") as f:
            json.dump(out, f)
        os.replace(path + ".tmp", path)

    record()  # at start-up: proves the file ran even if the first cell never finishes
    get_ipython().events.register("post_run_cell", record)


_gpu_check_install()
del _gpu_check_install
"""


@dataclass
class PartResult:
    """What one part found: ``status`` is "pass" or "fail"; ``details`` feeds the report's tables."""

    name: str
    status: str = "pass"
    seconds: float = 0.0
    limit_s: float = 0.0
    summary: str = ""
    details: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.status = "fail"
        self.errors.append(message)


@dataclass
class Context:
    """The run's settings, shared by the parts."""

    dry_run: bool
    work: Path
    time_scale: float
    notebook_jobs: int
    inject: str | None
    device_count: int = 0

    def limit(self, part: str) -> float:
        return (DRY_RUN_LIMIT_S if self.dry_run else LIMITS_S[part]) * self.time_scale


# ------------------------------------------------------------------------------------------- subprocesses


def run_limited(
    cmd: list[str], limit_s: float, log: Path, env: dict | None = None
) -> tuple[int | None, float]:
    """Run ``cmd`` in its own process group with output to ``log``; (exit code or None on timeout, seconds).

    On timeout the whole group is killed, so a notebook kernel or a torchrun rank does not outlive it.
    """
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=max(1.0, limit_s))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    return rc, time.perf_counter() - start


_SAY = threading.Lock()


def say(line: str) -> None:
    """Print one whole line (the dry run's parts print from several threads)."""
    with _SAY:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def child_env(**extra: str) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_worker(ctx: Context, part: str, result: PartResult, *args: str) -> dict:
    """Run ``--worker part`` in a subprocess under the part's limit; returns its JSON (may be partial)."""
    out = ctx.work / f"{part}.json"
    log = ctx.work / f"{part}.log"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        part,
        "--result",
        str(out),
        "--limit-s",
        f"{ctx.limit(part):.0f}",
        *args,
    ]
    if ctx.dry_run:
        cmd.append("--dry-run")
    if ctx.inject == part:
        cmd += ["--inject-failure", part]
    rc, _ = run_limited(cmd, ctx.limit(part), log, child_env())
    data = json.loads(out.read_text()) if out.is_file() else {}
    if rc is None:
        result.fail(f"timed out after {ctx.limit(part):.0f} s; last output:\n{tail(log)}")
    elif rc != 0:
        result.fail(f"exit status {rc}; last output:\n{tail(log)}")
    return data


# ------------------------------------------------------------------------------------------- the parts


def part_preflight(ctx: Context, result: PartResult) -> None:
    data = run_worker(ctx, "preflight", result)
    result.details.update(data)
    result.details["nvidia_smi"] = nvidia_smi_summary()
    ctx.device_count = int(data.get("device_count", 0))
    if data:
        gpus = ", ".join(d["name"] for d in data.get("devices", [])) or "no GPU (dry run on the CPU)"
        result.summary = f"torch {data.get('torch')}, CUDA {data.get('cuda_build')}: {gpus}"


def part_trainer(ctx: Context, result: PartResult) -> None:
    data = run_worker(ctx, "trainer", result)
    result.details.update(data)
    rows = data.get("rows", [])
    if rows:
        result.summary = "; ".join(f"{r['mode']}: {r['images_per_s']:.0f} images/s" for r in rows)


def ddp_commands(ctx: Context, out_dir: Path) -> tuple[list[str], list[str], int]:
    """(train command, NCCL all-reduce command, processes) for this machine, or tiny ones on the CPU."""
    nproc = 2 if ctx.dry_run else max(1, ctx.device_count)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    steps = "0" if ctx.inject == "ddp" else ("2" if ctx.dry_run else "200")
    if ctx.dry_run:
        config = ["--config", "test-tiny", "--steps", steps, "--device", "cpu", "--threads", "1"]
    else:
        config = ["--config", "mnist-cond", "--steps", steps, "--device", "cuda"]
    train = [*launcher, "-m", "diffusion_course", "train", *config, "--out", str(out_dir), "--quiet"]
    nccl = [
        *launcher,
        str(Path(__file__).resolve()),
        "--worker",
        "nccl",
        "--result",
        str(ctx.work / "nccl.json"),
    ]
    return train, nccl, nproc


def part_ddp(ctx: Context, result: PartResult) -> None:
    """The trainer's CLI under torchrun on every visible GPU (two gloo processes in the dry run)."""
    out_dir = ctx.work / "ddp"
    train_cmd, nccl_cmd, nproc = ddp_commands(ctx, out_dir)
    steps = int(train_cmd[train_cmd.index("--steps") + 1])
    result.details.update(command=shlex.join(train_cmd), nproc=nproc, steps=steps)
    deadline = time.monotonic() + ctx.limit("ddp")
    say(f"  $ {shlex.join(train_cmd)}")
    rc, wall = run_limited(train_cmd, ctx.limit("ddp"), ctx.work / "ddp.log", child_env())
    result.details["wall_s"] = wall
    if rc != 0:
        what = "timed out" if rc is None else f"exit status {rc}"
        result.fail(f"torchrun train: {what}; last output:\n{tail(ctx.work / 'ddp.log')}")
        return
    name = train_cmd[train_cmd.index("--config") + 1]
    info = json.loads((out_dir / f"{name}.json").read_text())
    batch = int(info["train_config"]["batch_size"])
    loss = info["metrics"]["final_loss"]
    result.details.update(
        world_size=info["world_size"],
        device=info["device"],
        train_s=info["seconds"],
        batch=batch,
        final_loss=loss,
        backend=("nccl" if "cuda" in info["device"] else "gloo") if nproc > 1 else "none",
    )
    if info["world_size"] != nproc or info["step"] != steps:
        result.fail(f"the checkpoint says world_size={info['world_size']}, step={info['step']}")
    if loss is None or not math.isfinite(loss):
        result.fail(f"final loss {loss} is not finite")
    expected = "cpu" if ctx.dry_run else "cuda"
    if not str(info["device"]).startswith(expected):
        result.fail(f"trained on {info['device']}, expected {expected}")
    rate = steps / max(info["seconds"], 1e-9)
    result.summary = (
        f"world size {nproc}: {rate:.1f} steps/s, {rate * batch * nproc:.0f} images/s (all ranks)"
    )

    if ctx.dry_run:
        result.details["nccl"] = {"skipped": "CUDA only", "command": shlex.join(nccl_cmd)}
        say(f"  would run (CUDA only): {shlex.join(nccl_cmd)}")
        return
    say(f"  $ {shlex.join(nccl_cmd)}")
    rc, wall = run_limited(nccl_cmd, deadline - time.monotonic(), ctx.work / "nccl.log", child_env())
    nccl = json.loads((ctx.work / "nccl.json").read_text()) if (ctx.work / "nccl.json").is_file() else {}
    result.details["nccl"] = {"command": shlex.join(nccl_cmd), "wall_s": wall, **nccl}
    if rc != 0:
        what = "timed out" if rc is None else f"exit status {rc}"
        result.fail(f"NCCL all-reduce under torchrun: {what}; last output:\n{tail(ctx.work / 'nccl.log')}")


def part_sampler(ctx: Context, result: PartResult) -> None:
    data = run_worker(ctx, "sampler", result)
    result.details.update(data)
    measured = [r for r in data.get("rows", []) if "eager" in r]
    if measured:
        row = measured[-1]
        ratios = ", ".join(
            f"{v} {row[v] / row['eager']:.2f}×" for v in ("compile", "compile_cudagraphs") if v in row
        )
        result.summary = (
            f"DDIM {data['steps']} steps, batch {row['batch']}: {row['eager']:.0f} samples/s eager"
            + (f" ({ratios})" if ratios else "")
        )


def notebook_command(path: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "--nbval-lax",
        "--nbval-current-env",
        "-p",
        "no:cacheprovider",
        "-q",
        path,
    ]


def notebook_env(ctx: Context, memory_file: Path, hook: Path, profile: str = "full") -> dict:
    threads = str(max(1, (os.cpu_count() or 1) // max(1, ctx.notebook_jobs)))
    return child_env(
        DIFFUSION_COURSE_PROFILE=profile,
        PYTHONSTARTUP=str(hook),
        OMP_NUM_THREADS=threads,
        **{MEMORY_FILE_VAR: str(memory_file)},
    )


def list_notebooks(ctx: Context, result: PartResult) -> list[str]:
    paths = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "notebooks").glob("*.ipynb"))
    if not paths:
        result.fail("no notebooks found in notebooks/*.ipynb")
    for path in paths:
        try:
            nb = json.loads((ROOT / path).read_text())
            if not isinstance(nb.get("cells"), list) or nb.get("nbformat", 0) < 4:
                raise ValueError("not an nbformat 4 notebook")
        except (OSError, ValueError) as err:
            result.fail(f"{path}: {err}")
    if ctx.inject == "notebooks":
        paths.append(MISSING_NOTEBOOK)
    return paths


def part_notebooks(ctx: Context, result: PartResult) -> None:
    missing = [m for m in ("nbval", "ipykernel") if importlib.util.find_spec(m) is None]
    if missing:
        result.fail(f"{', '.join(missing)} not installed: pip install {' '.join(missing)}")
        return
    hook = ctx.work / "kernel_startup.py"
    hook.write_text(KERNEL_HOOK)
    notebooks = list_notebooks(ctx, result)
    result.details["method"] = (
        "each notebook in its own pytest process; a PYTHONSTARTUP file in the kernel records "
        "torch.cuda.max_memory_allocated() / max_memory_reserved() after every cell; nvidia-smi is polled "
        "for the kernel's pid"
    )
    if ctx.dry_run:
        dry_run_notebooks(ctx, result, notebooks, hook)
    else:
        run_notebooks(ctx, result, notebooks, hook)


def dry_run_notebooks(ctx: Context, result: PartResult, notebooks: list[str], hook: Path) -> None:
    for path in notebooks:
        memory = ctx.work / f"memory_{Path(path).stem}.json"
        env = notebook_env(ctx, memory, hook)
        shown = " ".join(
            f"{k}={env[k]}" for k in ("DIFFUSION_COURSE_PROFILE", "PYTHONSTARTUP", MEMORY_FILE_VAR)
        )
        say(f"  would run (on CUDA): {shown} {shlex.join(notebook_command(path))}")
    # The same command line, collecting only: every option parses and nbval turns every notebook into cells.
    collect = [*notebook_command(notebooks[0])[:-1], "--collect-only", *notebooks]
    limit = ctx.limit("notebooks") / 2
    rc, _ = run_limited(
        collect, limit, ctx.work / "collect.log", notebook_env(ctx, ctx.work / "m.json", hook)
    )
    collected = tail(ctx.work / "collect.log", 100000).splitlines()
    counts = {path: sum(1 for line in collected if line.startswith(path + "::")) for path in notebooks}
    result.details["collected"] = counts
    if rc != 0:
        result.fail(f"nbval --collect-only: exit status {rc}:\n{tail(ctx.work / 'collect.log')}")
    for path, count in counts.items():
        if count == 0:
            result.fail(f"{path}: nbval collected no cells")
    # The memory start-up file in a real kernel, through the same command builder.
    smoke = ctx.work / "smoke.ipynb"
    smoke.write_text(json.dumps(one_cell_notebook("print(sum(range(10)))")))
    memory = ctx.work / "memory_smoke.json"
    rc, wall = run_limited(
        notebook_command(str(smoke)),
        limit,
        ctx.work / "smoke.log",
        notebook_env(ctx, memory, hook, profile="quick"),
    )
    record = json.loads(memory.read_text()) if memory.is_file() else {}
    result.details["smoke"] = {"wall_s": wall, "record": record}
    if rc != 0 or record.get("cells") != 1 or not isinstance(record.get("pid"), int):
        result.fail(
            f"the kernel start-up file did not record (exit {rc}, record {record}):\n"
            f"{tail(ctx.work / 'smoke.log')}"
        )
    result.summary = (
        f"{len(notebooks)} notebooks collected ({sum(counts.values())} cells); memory hook ran in a kernel "
        f"({wall:.1f} s)"
    )


def one_cell_notebook(source: str) -> dict:
    return {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": "gpu-check",
                "metadata": {},
                "outputs": [],
                "source": source,
            }
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def run_notebooks(ctx: Context, result: PartResult, notebooks: list[str], hook: Path) -> None:
    deadline = time.monotonic() + ctx.limit("notebooks")
    sampler = GpuMemorySampler()
    sampler.start()

    def one(path: str) -> dict:
        stem = Path(path).stem
        memory = ctx.work / f"memory_{stem}.json"
        left = deadline - time.monotonic()
        if left < 5:
            return {"notebook": path, "status": "not run: the part's time budget was spent"}
        rc, wall = run_limited(
            notebook_command(path), left, ctx.work / f"nb_{stem}.log", notebook_env(ctx, memory, hook)
        )
        record = json.loads(memory.read_text()) if memory.is_file() else {}
        row = {"notebook": path, "wall_s": wall, **record}
        row["smi_mib"] = sampler.per_pid.get(record.get("pid"))
        if rc == 0:
            row["status"] = "pass"
        else:
            what = f"timed out after {wall:.0f} s" if rc is None else f"exit status {rc}"
            row["status"] = f"fail ({what})"
            row["log"] = tail(ctx.work / f"nb_{stem}.log", 12)
        say(f"  {path}: {row['status']} in {wall:.0f} s")
        return row

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=ctx.notebook_jobs) as pool:
            rows = list(pool.map(one, notebooks))
    finally:
        sampler.stop()
    result.details.update(
        rows=rows,
        jobs=ctx.notebook_jobs,
        device_peak_mib=sampler.device_peak,
        device_baseline_mib=sampler.baseline,
        nvidia_smi=sampler.available,
    )
    for row in rows:
        if row["status"] != "pass":
            result.fail(f"{row['notebook']}: {row['status']}\n{row.get('log', '')}".rstrip())
    passed = sum(row["status"] == "pass" for row in rows)
    result.summary = f"{passed}/{len(rows)} notebooks passed ({ctx.notebook_jobs} at a time)"


class GpuMemorySampler:
    """Polls nvidia-smi twice a second: peak used memory per compute process (pid) and of all GPUs."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.available = shutil.which("nvidia-smi") is not None
        self.per_pid: dict[int, int] = {}
        self.device_peak: int | None = None
        self.baseline: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        if self.available:
            self.baseline = self._device_used()
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for line in _smi(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]):
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                    pid, mib = int(parts[0]), int(parts[1])
                    self.per_pid[pid] = max(self.per_pid.get(pid, 0), mib)
            used = self._device_used()
            if used is not None:
                self.device_peak = max(self.device_peak or 0, used)

    @staticmethod
    def _device_used() -> int | None:
        values = [
            int(v) for v in _smi(["--query-gpu=memory.used", "--format=csv,noheader,nounits"]) if v.isdigit()
        ]
        return sum(values) if values else None


def _smi(args: list[str]) -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def nvidia_smi_summary() -> str:
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not found"
    lines = _smi(["--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    return "; ".join(lines) or "nvidia-smi gave no answer"


PART_FUNCTIONS = {
    "preflight": part_preflight,
    "trainer": part_trainer,
    "ddp": part_ddp,
    "sampler": part_sampler,
    "notebooks": part_notebooks,
}


# ------------------------------------------------------------------------------------------- workers
# Each runs in its own process (its own CUDA context and peak-memory counters) and calls ``save(result)``
# whenever it has something to report, so a part that runs out of time still leaves its numbers behind.


def worker_preflight(dry_run: bool, limit_s: float, save) -> None:
    import torch

    out = {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "python": platform.python_version(),
        "cuda_available": torch.cuda.is_available(),
        "device_count": 0,
        "devices": [],
    }
    if torch.cuda.is_available():
        out["device_count"] = torch.cuda.device_count()
        for i in range(out["device_count"]):
            props = torch.cuda.get_device_properties(i)
            memory = props.total_memory / 2**30
            out["devices"].append({"name": props.name, "capability": f"{props.major}.{props.minor}",
                                   "memory_gib": memory})  # fmt: skip
        out["cudnn"] = torch.backends.cudnn.version()
        out["bf16_supported"] = torch.cuda.is_bf16_supported()
    save(out)
    if not dry_run and not torch.cuda.is_available():
        raise RuntimeError(
            f"CUDA is not available (torch {torch.__version__}, built for CUDA {torch.version.cuda}): "
            "run `make gpu-check DRY_RUN=1` on a machine without a GPU, or install a CUDA build of torch"
        )


def worker_trainer(dry_run: bool, limit_s: float, save) -> None:
    """fp32 vs bf16 autocast + channels-last through ``training.train`` on one device, as the CLI runs it."""
    import torch

    from diffusion_course.configs import get_config
    from diffusion_course.training import train

    if dry_run:
        run, device, batch, warmup, steps = get_config("test-tiny-cond"), "cpu", 4, 1, 2
        torch.set_num_threads(1)
    else:
        run, device, batch, warmup, steps = get_config("mnist-cond"), "cuda", 128, 20, 200
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    images, labels = run.load_data()
    schedule = run.make_schedule()
    out = {"model": run.name, "parameters": None, "rows": []}
    for mode, fast in (("fp32", False), ("bf16 autocast + channels-last", True)):
        torch.manual_seed(0)
        model = run.build_model()
        out["parameters"] = sum(p.numel() for p in model.parameters())
        conv = probe_conv(model)
        dtypes: set[str] = set()
        conv.register_forward_hook(record_dtype(dtypes))
        config = run.train.replace(batch_size=batch, device=device, bf16=fast, channels_last=fast,
                                   checkpoint_every=0, log_every=min(run.train.log_every, steps))  # fmt: skip
        train(model, images, labels, schedule, config.replace(steps=warmup), progress=False)  # warm-up
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync()
        start = time.perf_counter()
        result = train(model, images, labels, schedule, config.replace(steps=steps), progress=False)
        sync()
        seconds = time.perf_counter() - start
        row = {
            "mode": mode,
            "batch": batch,
            "steps": steps,
            "seconds": seconds,
            "steps_per_s": steps / seconds,
            "images_per_s": steps * batch / seconds,
            "final_loss": statistics.fmean(result.losses[-10:]),
            "all_finite": all(math.isfinite(v) for v in result.losses),
            "conv_output_dtypes": sorted(dtypes),
            "channels_last": conv.weight.is_contiguous(memory_format=torch.channels_last),
            "device": result.device,
            "peak_allocated": torch.cuda.max_memory_allocated() if cuda else None,
        }
        out["rows"].append(row)
        save(out)
        print(json.dumps(row), flush=True)
        want = "bfloat16" if fast else "float32"
        if not row["all_finite"]:
            raise RuntimeError(f"{mode}: non-finite loss in {result.losses}")
        if dtypes != {want}:
            raise RuntimeError(f"{mode}: the probed convolution produced {sorted(dtypes)}, expected {want}")
        if row["channels_last"] != fast:
            raise RuntimeError(f"{mode}: channels-last weights {row['channels_last']}, expected {fast}")
        if not result.device.startswith(device):
            raise RuntimeError(f"{mode}: trained on {result.device}, expected {device}")


def probe_conv(model):
    """A convolution with several input channels and a kernel wider than 1×1: only for such a weight do
    contiguous and channels-last differ, so ``is_contiguous(memory_format=channels_last)`` means something."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and module.in_channels > 1 and module.kernel_size != (1, 1):
            return module
    raise RuntimeError(f"{type(model).__name__} has no convolution to check bf16 and channels-last on")


def record_dtype(seen: set[str]):
    """A forward hook that adds the output's dtype name to ``seen``."""

    def hook(module, args, output):
        seen.add(str(output.dtype).replace("torch.", ""))

    return hook


CUDAGRAPHS_DRY_RUN_NOTE = (
    "compile + CUDA graphs: CUDA only; the GPU run uses torch.compile(model, mode='reduce-overhead') "
    "with torch.compiler.cudagraph_mark_step_begin() before each call"
)


class StepMarked:
    """An ε-model around a ``reduce-overhead`` compiled module: marks each call as a new CUDA-graph step and
    returns a copy of the output, which the next replay would overwrite."""

    def __init__(self, compiled, num_classes):
        self.model = compiled
        self.num_classes = num_classes

    def __call__(self, x, t, labels=None):
        import torch

        torch.compiler.cudagraph_mark_step_begin()
        return self.model(x, t, labels=labels).clone()


def worker_sampler(dry_run: bool, limit_s: float, save) -> None:
    """Samples/s of DDIM on the shipped model per batch: eager, torch.compile, compile with CUDA graphs."""
    import torch

    from diffusion_course.checkpoints import load_checkpoint
    from diffusion_course.generation import generate_samples

    soft_deadline = time.monotonic() + limit_s - 15  # leave time to report
    if dry_run:
        device, batches, steps = "cpu", [2], 3
        torch.set_num_threads(1)
    else:
        device, batches, steps = "cuda", [1, 4, 16, 64, 256, 1024], 50
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else None
    checkpoint = load_checkpoint("mnist-cond", device=device)
    model = checkpoint.model

    def build(variant):
        if variant == "eager":
            return model
        if (
            dry_run
        ):  # dynamo traces the model as on the GPU; inductor's code generation is left to the GPU run
            return torch.compile(model, backend="eager")
        if variant == "compile":
            return torch.compile(model)
        return StepMarked(torch.compile(model, mode="reduce-overhead"), model.num_classes)

    def sample(eps_model, batch):
        return generate_samples(
            checkpoint, "ddim", steps, n=batch, seed=0, eps_model=eps_model, device=device
        )[0]

    variants = ["eager", "compile", "compile_cudagraphs"]
    out = {"steps": steps, "batches": batches, "device": device, "variants": variants, "failures": [],
           "skipped": [], "first_call_s": {}, "rows": [{"batch": b} for b in batches]}  # fmt: skip
    eager_samples = {}
    for variant in variants:
        if variant == "compile_cudagraphs" and not cuda:
            out["skipped"].append(CUDAGRAPHS_DRY_RUN_NOTE)
            continue
        # A compiled variant's first call compiles (tens of seconds on a fresh machine): start one only with
        # 30 s to spare, and a new batch only when 1.5× the slowest call so far still fits.
        if variant != "eager" and time.monotonic() > soft_deadline - 30:
            out["skipped"].append(f"{variant}: the part's time budget was spent")
            continue
        try:
            if variant != "eager":
                import torch._dynamo

                torch._dynamo.reset()  # each compiled variant starts from empty caches
            eps_model = build(variant)
            slowest = 0.0
            for row in out["rows"]:
                batch = row["batch"]
                if time.monotonic() + 1.5 * slowest > soft_deadline:
                    out["skipped"].append(f"{variant} at batch {batch}: the part's time budget was spent")
                    continue
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                first = time.perf_counter()
                samples = sample(eps_model, batch)  # untimed: warm-up, and compilation for a new shape
                out["first_call_s"][f"{variant}/{batch}"] = time.perf_counter() - first
                seconds = timed(sample, (eps_model, batch), sync)
                slowest = max(slowest, out["first_call_s"][f"{variant}/{batch}"], 3 * seconds)
                if not torch.isfinite(samples).all():
                    raise RuntimeError(f"non-finite samples at batch {batch}")
                row[variant] = batch / seconds
                if variant == "eager":
                    eager_samples[batch] = samples
                    row["peak_allocated"] = torch.cuda.max_memory_allocated() if cuda else None
                elif batch in eager_samples:
                    row[f"{variant}_maxdiff"] = diff = float((samples - eager_samples[batch]).abs().max())
                    if diff > 0.05:
                        raise RuntimeError(f"samples differ from eager by {diff:.3g} at batch {batch}")
                save(out)
                print(json.dumps({"variant": variant, **row}), flush=True)
        except Exception as err:  # noqa: BLE001 - one variant failing must not hide the others' numbers
            traceback.print_exc()
            out["failures"].append(f"{variant}: {type(err).__name__}: {err}")
    save(out)
    if out["failures"]:
        raise RuntimeError("; ".join(out["failures"]))


def timed(fn, fn_args: tuple, sync, min_total_s: float = 0.5, max_runs: int = 5) -> float:
    """Median seconds of ``fn(*fn_args)`` over ≥ 2 runs (more while the total is under ``min_total_s``)."""
    times: list[float] = []
    while len(times) < 2 or (sum(times) < min_total_s and len(times) < max_runs):
        if sync:
            sync()
        start = time.perf_counter()
        fn(*fn_args)
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker_nccl(dry_run: bool, limit_s: float, save) -> None:
    """Under torchrun: an NCCL process group over every rank's GPU, one all-reduce, checked on each rank."""
    import torch
    import torch.distributed as dist

    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    x = torch.full((1024,), float(rank + 1), device="cuda")
    dist.all_reduce(x)
    expected = world * (world + 1) / 2
    ok = bool((x == expected).all())
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        save({"world_size": world, "backend": "nccl", "all_reduce_ok": ok})
    if not ok:
        raise RuntimeError(f"rank {rank}: all_reduce gave {x[0].item()}, expected {expected}")


WORKERS = {
    "preflight": worker_preflight,
    "trainer": worker_trainer,
    "sampler": worker_sampler,
    "nccl": worker_nccl,
}


def worker_main(args) -> int:
    path = Path(args.result)

    def save(result: dict) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, path)

    if args.inject_failure:
        raise RuntimeError(f"failure injected into the {args.worker} part by --inject-failure")
    WORKERS[args.worker](args.dry_run, args.limit_s, save)
    return 0


# ------------------------------------------------------------------------------------------- the report


def fmt(value, spec: str = ".1f", missing: str = "–") -> str:
    return missing if value is None else format(value, spec)


def gib(n_bytes) -> str:
    return "–" if n_bytes is None else f"{n_bytes / 2**30:.2f}"


def machine_lines(
    results: dict[str, PartResult], load_before: str, load_after: str, argv: list[str]
) -> list[str]:
    pre = results["preflight"].details
    devices = pre.get("devices") or []
    names = ", ".join(f"{d['name']} ({d['memory_gib']:.0f} GiB, sm {d['capability']})" for d in devices)
    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- device: {names or 'no CUDA device'}; nvidia-smi: {pre.get('nvidia_smi', 'n/a')}",
        f"- torch {pre.get('torch', '?')} (CUDA {pre.get('cuda_build')}, cuDNN {pre.get('cudnn', '–')}), "
        f"Python {pre.get('python', '?')}, {os.cpu_count()} CPUs ({platform.machine()})",
        f"- commit: {git_commit()}",
        f"- load average (1, 5, 15 min) before: {load_before}; after: {load_after}",
        f"- command: `{shlex.join(argv)}`",
    ]


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (head or "unknown") + (" with uncommitted changes" if dirty else "")


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except (OSError, AttributeError):
        return "n/a"


def render(results: dict[str, PartResult], ctx: Context, header: list[str], total_s: float) -> str:
    ok = all(r.status == "pass" for r in results.values())
    title = "GPU check (dry run on the CPU: tiny sizes, not GPU numbers)" if ctx.dry_run else "GPU check"
    lines = [
        f"# {title}",
        "",
        "Written by `make gpu-check` (scripts/gpu_check.py); re-run it to refresh this page.",
        "",
        f"**Result: {'all parts passed' if ok else 'FAILED'}** in {total_s:.0f} s.",
        "",
        *header,
        "",
        "| part | result | seconds | limit (s) | summary |",
        "|---|---|---|---|---|",
    ]
    for r in results.values():
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.0f} | {r.limit_s:.0f} | {r.summary or '–'} |")
    lines += trainer_section(results.get("trainer"))
    lines += ddp_section(results.get("ddp"))
    lines += sampler_section(results.get("sampler"))
    lines += notebooks_section(results.get("notebooks"), ctx)
    failed = [r for r in results.values() if r.errors]
    if failed:
        lines += ["", "## Failures", ""]
        for r in failed:
            for error in r.errors:
                lines += [f"**{r.name}**:", "", "```", error, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def trainer_section(r: PartResult | None) -> list[str]:
    if r is None or not r.details.get("rows"):
        return []
    rows = r.details["rows"]
    base = rows[0]["images_per_s"]
    lines = [
        "",
        f"## Trainer (`training.train`, {r.details.get('model')} UNet, "
        f"{r.details.get('parameters', 0):,} parameters)",
        "",
        "| mode | batch | steps | steps/s | images/s | vs fp32 | final loss | first conv output | "
        "channels-last | peak allocated (GiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['mode']} | {row['batch']} | {row['steps']} | {row['steps_per_s']:.1f} | "
            f"{row['images_per_s']:.0f} | {row['images_per_s'] / base:.2f}× | {row['final_loss']:.4f} | "
            f"{', '.join(row['conv_output_dtypes'])} | {row['channels_last']} | "
            f"{gib(row['peak_allocated'])} |"
        )
    lines += [
        "",
        "Timed after a warm-up call of `train` (cuDNN autotuning, allocator); the time includes the "
        "trainer's own loss checks and EMA updates.",
    ]
    return lines


def ddp_section(r: PartResult | None) -> list[str]:
    if r is None or "command" not in r.details:
        return []
    d = r.details
    lines = ["", "## DDP under torchrun", "", f"`{d['command']}`", ""]
    if "train_s" in d:
        rate = d["steps"] / max(d["train_s"], 1e-9)
        lines += [
            "| processes | backend | device | steps | batch per rank | train s | steps/s "
            "| images/s (all ranks) | final loss | wall s (with start-up) |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {d['world_size']} | {d['backend']} | {d['device']} | {d['steps']} | {d['batch']} | "
            f"{d['train_s']:.1f} | {rate:.1f} | {rate * d['batch'] * d['world_size']:.0f} | "
            f"{fmt(d['final_loss'], '.4f')} | {d['wall_s']:.1f} |",
        ]
        if d["world_size"] == 1:
            lines += [
                "",
                "With one process the trainer starts no process group; the NCCL check below covers it.",
            ]
    nccl = d.get("nccl") or {}
    if nccl.get("skipped"):
        lines += ["", f"NCCL all-reduce: not run ({nccl['skipped']}): `{nccl['command']}`"]
    elif nccl:
        ok = "passed" if nccl.get("all_reduce_ok") else "failed"
        lines += [
            "",
            f"NCCL all-reduce on {nccl.get('world_size', '?')} rank(s): {ok} "
            f"({fmt(nccl.get('wall_s'))} s with start-up): `{nccl['command']}`",
        ]
    return lines


def sampler_section(r: PartResult | None) -> list[str]:
    if r is None or not r.details.get("rows"):
        return []
    d = r.details
    names = {"eager": "eager", "compile": "torch.compile", "compile_cudagraphs": "compile + CUDA graphs"}
    if d["device"] == "cpu":
        names["compile"] = "torch.compile (eager backend)"
    shown = [v for v in d["variants"] if any(v in row for row in d["rows"])]
    others = [v for v in shown if v != "eager"]
    columns = ["batch", *(f"{names[v]} samples/s" for v in shown)]
    for v in others:
        columns += [f"{names[v]} vs eager", f"{names[v]} max abs diff"]
    columns.append("eager peak allocated (GiB)")
    lines = [
        "",
        f"## Sampler throughput (DDIM, {d['steps']} steps, shipped `mnist-cond`, {d['device']})",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in d["rows"]:
        cells = [fmt(row.get(v), ".1f") for v in shown]
        for v in others:
            ratio = row[v] / row["eager"] if v in row and "eager" in row else None
            cells += [fmt(ratio, ".2f") + ("×" if ratio else ""), fmt(row.get(f"{v}_maxdiff"), ".1e")]
        lines.append(f"| {row['batch']} | " + " | ".join(cells) + f" | {gib(row.get('peak_allocated'))} |")
    first = d.get("first_call_s", {})
    compile_s = [f"{k}: {v:.1f} s" for k, v in first.items() if not k.startswith("eager")]
    lines += [
        "",
        "Each cell: median of ≥ 2 timed runs after one untimed run (which compiles for a new shape; "
        f"first-call times: {', '.join(compile_s) or 'none'}).",
    ]
    for note in d.get("skipped", []):
        lines.append(f"- skipped: {note}")
    return lines


def notebooks_section(r: PartResult | None, ctx: Context) -> list[str]:
    if r is None:
        return []
    d = r.details
    lines = [
        "",
        "## Notebooks (nbval, `DIFFUSION_COURSE_PROFILE=full`)",
        "",
        f"Method: {d.get('method', '–')}.",
    ]
    if ctx.dry_run:
        counts = d.get("collected", {})
        lines += [
            "",
            "Dry run: collected with the GPU run's command line (cells per notebook): "
            + ", ".join(f"{Path(k).stem} {v}" for k, v in counts.items()),
        ]
        return lines
    rows = d.get("rows", [])
    lines += [
        "",
        f"{d.get('jobs')} notebooks ran at a time (wall times include that sharing). Peak memory per "
        "kernel: *allocated* is what the notebook's tensors needed at most, *reserved* what torch's "
        "caching allocator held, *nvidia-smi* what the kernel process used (CUDA context included).",
        "",
        "| notebook | result | wall s | peak allocated (GiB) | peak reserved (GiB) | nvidia-smi peak (GiB) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        smi = row.get("smi_mib")
        lines.append(
            f"| {Path(row['notebook']).stem} | {row['status']} | {fmt(row.get('wall_s'), '.0f')} | "
            f"{gib(row.get('max_allocated'))} | {gib(row.get('max_reserved'))} | "
            f"{fmt(smi / 1024 if smi else None, '.2f')} |"
        )
    peak, base = d.get("device_peak_mib"), d.get("device_baseline_mib")
    if peak is not None:
        lines += [
            "",
            f"All GPUs together peaked at {peak / 1024:.2f} GiB used during this part "
            f"({(base or 0) / 1024:.2f} GiB before it started).",
        ]
    elif not d.get("nvidia_smi"):
        lines += ["", "nvidia-smi was not found: only torch's own counters are reported."]
    return lines


# ------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU; never writes docs/")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"report path (default {REPORT.relative_to(ROOT)}; a dry run writes to a temporary folder)",
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS[1:],
        default=list(PARTS[1:]),
        help="parts to run after the preflight (default: all)",
    )
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiply every part's time limit")
    parser.add_argument("--notebook-jobs", type=int, default=4, help="notebooks run at once (default 4)")
    parser.add_argument("--work-dir", type=Path, help="logs and scratch files (default: a temporary folder)")
    parser.add_argument("--inject-failure", choices=PARTS, help="make this part fail (tests the check)")
    parser.add_argument("--worker", choices=WORKER_PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--limit-s", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return args
    if not (args.time_scale > 0 and math.isfinite(args.time_scale)):
        parser.error(f"--time-scale={args.time_scale}: expected a positive number")
    if args.notebook_jobs < 1:
        parser.error(f"--notebook-jobs={args.notebook_jobs}: expected an integer ≥ 1")
    if args.dry_run and args.out is not None and args.out.resolve() == REPORT.resolve():
        parser.error(
            f"--out={args.out}: a dry run never writes {REPORT.relative_to(ROOT)}; pick another path"
        )
    return args


def run_part(ctx: Context, name: str) -> PartResult:
    """One part under its time limit; an exception in the part is a failure of that part only."""
    result = PartResult(name, limit_s=ctx.limit(name))
    say(f"[{name}] limit {result.limit_s:.0f} s")
    start = time.perf_counter()
    try:
        PART_FUNCTIONS[name](ctx, result)
    except Exception as err:  # noqa: BLE001 - a broken part is reported, the others still run
        result.fail(f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-3)}")
    result.seconds = time.perf_counter() - start
    say(f"[{name}] {result.status} in {result.seconds:.0f} s: {result.summary}")
    for error in result.errors:
        say(f"[{name}] error: {error}")
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker is not None:
        return worker_main(args)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        dry_run=args.dry_run,
        work=work,
        time_scale=args.time_scale,
        notebook_jobs=args.notebook_jobs,
        inject=args.inject_failure,
    )
    out = args.out or (work / "gpu.md" if args.dry_run else REPORT)
    load_before = load_average()
    started = time.perf_counter()
    names = ["preflight", *[p for p in PARTS[1:] if p in args.parts]]
    if ctx.dry_run:  # tiny and independent: all parts at once
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(names)) as pool:
            results = dict(zip(names, pool.map(lambda name: run_part(ctx, name), names)))
    else:  # one after another, each with the GPU to itself; nothing runs when the preflight fails
        results = {"preflight": run_part(ctx, "preflight")}
        if results["preflight"].status != "pass":
            print("preflight failed: nothing else was run and no report was written", file=sys.stderr)
            return 1
        for name in names[1:]:
            results[name] = run_part(ctx, name)
    total = time.perf_counter() - started
    header = machine_lines(results, load_before, load_average(), ["scripts/gpu_check.py", *argv])
    text = render(results, ctx, header, total)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if args.dry_run:
        print(text)
    ok = all(r.status == "pass" for r in results.values())
    print(f"{'PASS' if ok else 'FAIL'}: report written to {out}; logs in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
