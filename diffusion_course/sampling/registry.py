"""Samplers by name, for the CLI and for notebooks that compare them.

``run_sampler("ddim", eps_model, x_T, schedule, steps=50, eta=0.5)`` builds the timestep grid with
:func:`~diffusion_course.sampling.timesteps.timesteps` and calls the sampler. Every sampler in
:data:`SAMPLERS` is a plain function ``f(eps_model, x_T, schedule, timesteps, **options)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._checks import check_int, fail
from ..schedules import NoiseSchedule
from .ddim import ddim_sample
from .ddpm import ddpm_sample
from .timesteps import timestep_grid

SAMPLERS: dict[str, Callable] = {"ddpm": ddpm_sample, "ddim": ddim_sample}
# Options each sampler understands beyond the shared ones (labels, generator, progress, …).
SAMPLER_OPTIONS: dict[str, tuple[str, ...]] = {"ddpm": ("variance", "clip_x0"), "ddim": ("eta", "clip_x0")}
# ε-model evaluations of a run of ``steps`` steps (one per step unless the sampler says otherwise).
NFE_OF_STEPS: dict[str, Callable[[int], int]] = {"ddpm": lambda steps: steps, "ddim": lambda steps: steps}


def register_sampler(
    name: str, fn: Callable, options: tuple[str, ...] = (), nfe_of_steps: Callable[[int], int] | None = None
) -> None:
    """Add a sampler under ``name`` (used by the solvers module); ``nfe_of_steps(steps)`` counts its calls."""
    SAMPLERS[name] = fn
    SAMPLER_OPTIONS[name] = tuple(options)
    NFE_OF_STEPS[name] = nfe_of_steps or (lambda steps: steps)


def nfe(name: str, steps: int) -> int:
    """Number of ε-model evaluations of ``steps`` steps of sampler ``name`` (per guidance branch)."""
    if name not in SAMPLERS:
        fail("sampler", name, f"known samplers are {', '.join(sorted(SAMPLERS))}")
    return NFE_OF_STEPS[name](check_int("steps", steps, low=1))


def run_sampler(
    name: str,
    eps_model,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    steps: int | None = None,
    *,
    strategy="trailing",
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
    progress: bool = False,
    return_trajectory: bool = False,
    **options,
):
    """Run sampler ``name`` for ``steps`` steps (default: all T) on the grid given by ``strategy``."""
    if name not in SAMPLERS:
        fail("sampler", name, f"known samplers are {', '.join(sorted(SAMPLERS))}")
    allowed = SAMPLER_OPTIONS[name]
    for key, value in options.items():
        if key not in allowed and value is not None:
            fail(key, value, f"sampler {name!r} takes the options {', '.join(allowed) or 'none'}")
    options = {k: v for k, v in options.items() if v is not None}
    steps = schedule.T if steps is None else check_int("steps", steps, low=1, high=schedule.T)
    ts = timestep_grid(schedule.T, steps, strategy)
    return SAMPLERS[name](
        eps_model, x_T, schedule, ts, generator=generator, labels=labels, progress=progress,
        return_trajectory=return_trajectory, **options,
    )  # fmt: skip
