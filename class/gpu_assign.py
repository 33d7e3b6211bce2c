"""Which GPU each learner's server sees, and when a shared GPU should run the course's small profile.

The hub's pre-spawn hook calls ``GpuAssigner.environment(username)``. The k-th learner to spawn gets the
k-th visible GPU modulo their number (round-robin) and keeps it on every later spawn, also across hub
restarts (the assignments live in a small JSON file). Their server sees only that GPU, through
``CUDA_VISIBLE_DEVICES``. When more learners share one GPU than ``full_max_per_gpu``, every server also gets
``DIFFUSION_COURSE_PROFILE=quick``, so the notebooks pick their small sizes (diffusion_course/profiles.py).
Without a GPU nothing GPU-related is set: the notebooks then pick the CPU quick profile by themselves.

Plain Python with no imports from the course, so the hub loads it without torch.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROFILE_VAR = "DIFFUSION_COURSE_PROFILE"
# a GPU index as nvidia-smi numbers it, or a GPU / MIG UUID
_DEVICE = re.compile(r"^(\d+|GPU-[0-9A-Fa-f-]+|MIG-[0-9A-Za-z/-]+)$")
_GPU_LINE = re.compile(r"^GPU (\d+): .*\(UUID: (GPU-[0-9A-Fa-f-]+)\)")
_MIG_LINE = re.compile(r"^\s+MIG .*\(UUID: (MIG-[0-9A-Za-z/-]+)\)")


def _fail(name: str, value, allowed: str):
    raise ValueError(f"{name}={value!r} is not allowed: {allowed}")


def parse_cuda_visible_devices(value: str) -> list[str]:
    """The devices a ``CUDA_VISIBLE_DEVICES`` value lists, in order.

    As in CUDA, an empty value and a negative index (``-1``) hide every device after them; ``none`` and
    ``NoDevFiles`` hide all.
    """
    if not isinstance(value, str):
        _fail("CUDA_VISIBLE_DEVICES", value, "expected a string such as '0,1'")
    if value.strip() in ("", "none", "NoDevFiles"):
        return []
    devices: list[str] = []
    for entry in (part.strip() for part in value.split(",")):
        if re.fullmatch(r"-\d+", entry):
            break
        if not _DEVICE.match(entry) or entry in devices:
            _fail(
                "CUDA_VISIBLE_DEVICES",
                value,
                "list distinct GPU indices or GPU-/MIG- UUIDs separated by commas, e.g. '0,1'",
            )
        devices.append(entry)
    return devices


def parse_nvidia_smi(output: str) -> list[str]:
    """The devices in ``nvidia-smi -L`` output: each GPU's index, or the UUIDs of its MIG slices."""
    devices: list[str] = []
    gpu: str | None = None
    migs: list[str] = []
    for line in output.splitlines():
        if m := _GPU_LINE.match(line):
            if gpu is not None:
                devices += migs or [gpu]
            gpu, migs = m.group(1), []
        elif (m := _MIG_LINE.match(line)) and gpu is not None:
            migs.append(m.group(1))
    if gpu is not None:
        devices += migs or [gpu]
    return devices


def _run_nvidia_smi() -> str | None:
    """``nvidia-smi -L``'s output, or None where there is no NVIDIA driver."""
    try:
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def visible_gpus(
    environ: Mapping[str, str] | None = None, nvidia_smi: Callable[[], str | None] = _run_nvidia_smi
) -> list[str]:
    """The GPUs the hub may hand out: its own ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``'s."""
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        return parse_cuda_visible_devices(environ["CUDA_VISIBLE_DEVICES"])
    output = nvidia_smi()
    return parse_nvidia_smi(output) if output else []


@dataclass
class GpuAssigner:
    """Round-robin GPU per learner, sticky per user name.

    ``class_size`` is the number of learners expected (0: unknown, then the learners seen so far count);
    above ``full_max_per_gpu`` learners per GPU (0: always) servers get the quick profile.
    """

    gpus: list[str]
    class_size: int = 0
    full_max_per_gpu: int = 8
    state_file: Path | None = None
    assignments: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.gpus, str) or not all(isinstance(g, str) and _DEVICE.match(g) for g in self.gpus):
            _fail("gpus", self.gpus, "expected a list of GPU indices or GPU-/MIG- UUIDs, e.g. ['0', '1']")
        if len(set(self.gpus)) != len(self.gpus):
            _fail("gpus", self.gpus, "each GPU may be listed once")
        self.gpus = list(self.gpus)
        for name in ("class_size", "full_max_per_gpu"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                _fail(name, value, "expected an integer ≥ 0")
        if self.state_file is not None:
            self.state_file = Path(self.state_file)
            if self.state_file.exists():
                self.assignments.update(self._read_state())
        # a GPU that is no longer visible is handed out afresh
        self.assignments = {user: gpu for user, gpu in self.assignments.items() if gpu in self.gpus}

    def _read_state(self) -> dict[str, str]:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError) as error:
            _fail("state_file", str(self.state_file), f"expected a readable JSON object ({error})")
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            _fail("state_file", str(self.state_file), "expected a JSON object of user name → GPU")
        return data

    def _write_state(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps(self.assignments, indent=1, sort_keys=True))
        os.replace(tmp, self.state_file)  # atomic: a crash never leaves half a file

    def gpu_for(self, username: str) -> str | None:
        """The user's GPU: the one they had, else the next in round-robin order; None without GPUs."""
        if not isinstance(username, str) or not username:
            _fail("username", username, "expected a non-empty user name")
        if not self.gpus:
            return None
        if username not in self.assignments:
            self.assignments[username] = self.gpus[len(self.assignments) % len(self.gpus)]
            self._write_state()
        return self.assignments[username]

    def learners_per_gpu(self) -> int:
        """Learners per GPU for the profile decision: the class size (or learners seen so far) / GPUs."""
        if not self.gpus:
            return 0
        return math.ceil(max(self.class_size, len(self.assignments)) / len(self.gpus))

    def environment(self, username: str) -> dict[str, str]:
        """The variables to add to the user's server environment (empty without GPUs)."""
        gpu = self.gpu_for(username)
        if gpu is None:
            return {}
        env = {
            "CUDA_VISIBLE_DEVICES": gpu,
            # many kernels share a GPU: growable segments fragment its memory less
            "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
        }
        if self.learners_per_gpu() > self.full_max_per_gpu:
            env[PROFILE_VAR] = "quick"
        return env
