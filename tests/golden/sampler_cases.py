"""The cases pinned by ``samplers.json``: every sampler with every option, on fixed seeds.

The ε-model is elementwise (no reductions), so its output, and the samplers' arithmetic on it, is bitwise the
same for any number of threads. ``python -m tests.golden.sampler_cases`` rewrites ``samplers.json``; do that
only when a sampler's output is meant to change, and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import torch

from diffusion_course.sampling import CFG, ddim_invert
from diffusion_course.sampling.registry import run_sampler
from diffusion_course.sampling.timesteps import timestep_grid
from diffusion_course.schedules import make_schedule

GOLDEN = Path(__file__).with_name("samplers.json")
SHAPE = (4, 1, 6, 6)


class ElementwiseEps(torch.nn.Module):
    """ε(x, t, c) = tanh(a(t) x + b_c): smooth, conditional (null class K = 3) and free of reductions."""

    num_classes = 3

    def forward(self, x, t, labels=None):
        a = 0.5 + (t.to(x.dtype) / 1000.0).view(-1, 1, 1, 1)
        b = 0.0 if labels is None else (labels.to(x.dtype) * 0.1 - 0.15).view(-1, 1, 1, 1)
        return torch.tanh(a * x + b)


# (sampler, options) for every option the samplers take today
SAMPLER_OPTIONS = [
    ("ddpm", {}),
    ("ddpm", {"variance": "beta"}),
    ("ddpm", {"clip_x0": True}),
    ("ddpm", {"variance": "beta", "clip_x0": True}),
    ("ddim", {}),
    ("ddim", {"eta": 0.5}),
    ("ddim", {"eta": 1.0}),
    ("ddim", {"eta": 1.0, "clip_x0": True}),
    ("ddim", {"clip_x0": True}),
    ("euler", {}),
    ("heun", {}),
    ("midpoint", {}),
    ("dpmpp2m", {}),
    ("unipc", {}),
    ("unipc", {"order": 1}),
    ("unipc", {"order": 3}),
    ("unipc", {"corrector": False}),
    ("unipc", {"order": 3, "corrector": False}),
    ("sde", {}),
    ("pc", {}),
    ("pc", {"snr": 0.05}),
]
GRIDS = [
    ("linear", 1, "trailing"),
    ("linear", 10, "trailing"),
    ("cosine", 7, "quadratic"),
    ("linear", 50, "log"),
    ("cosine", 1000, "trailing"),
]


def cases():
    """Yield (name, thunk); each thunk returns a dict of tensors to pin."""
    model = ElementwiseEps()
    for sampler, options in SAMPLER_OPTIONS:
        for schedule_name, steps, strategy in GRIDS:
            for conditioning in ("none", "labels", "cfg"):
                opts = ",".join(f"{k}={v}" for k, v in options.items())
                name = f"{sampler}[{opts}]/{schedule_name}-{strategy}-{steps}/{conditioning}"
                yield (
                    name,
                    _sampler_thunk(model, sampler, options, schedule_name, steps, strategy, conditioning),
                )
    for steps in (5, 20):
        yield f"ddim_invert/linear-trailing-{steps}", _invert_thunk(model, steps)


def _sampler_thunk(model, sampler, options, schedule_name, steps, strategy, conditioning):
    def run():
        schedule = make_schedule(schedule_name, T=1000)
        gen = torch.Generator().manual_seed(1234)
        x_T = torch.randn(SHAPE, generator=gen)
        labels = None if conditioning == "none" else torch.tensor([0, 1, 2, 1])
        eps_model = CFG(model, 3.0) if conditioning == "cfg" else model
        x, traj = run_sampler(
            sampler, eps_model, x_T, schedule, steps, strategy=strategy, generator=gen, labels=labels,
            return_trajectory=True, **options,
        )  # fmt: skip
        return {"x0": x, "xs": torch.stack(traj.xs), "x0_preds": torch.stack(traj.x0_preds)}

    return run


def _invert_thunk(model, steps):
    def run():
        schedule = make_schedule("linear", T=1000)
        x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7)).clamp(-1, 1)
        x_T, traj = ddim_invert(model, x0, schedule, timestep_grid(1000, steps), return_trajectory=True)
        return {"x_T": x_T, "xs": torch.stack(traj.xs), "x0_preds": torch.stack(traj.x0_preds)}

    return run


def digest(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """SHA-256 of each tensor's dtype, shape and bytes."""
    out = {}
    for key, value in sorted(tensors.items()):
        h = hashlib.sha256(f"{value.dtype}{tuple(value.shape)}".encode())
        h.update(value.contiguous().numpy().tobytes())
        out[key] = h.hexdigest()
    return out


def record() -> dict:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "what": "SHA-256 of every sampler output and trajectory on fixed seeds",
        "command": "python -m tests.golden.sampler_cases",
        "recorded_at_commit": commit,
        "torch": torch.__version__,
        "cases": {name: digest(thunk()) for name, thunk in cases()},
    }


if __name__ == "__main__":
    result = record()
    GOLDEN.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"{len(result['cases'])} cases written to {GOLDEN}", file=sys.stderr)
