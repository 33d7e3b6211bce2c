"""Samplers by name: each sampler states its facts once, where it is defined, with ``@sampler(name, options=…,
diffusers=…)``, and everything that needs them reads :data:`SAMPLERS` (docs/SAMPLING.md, "Public API").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .._checks import check_int, fail
from .timesteps import timestep_grid


@dataclass(frozen=True)
class Sampler:
    """A registered sampler: ``fn(eps_model, x_T, schedule, timesteps, **options)`` and its facts.

    ``nfe_of_steps(N)`` is the number of ε-model evaluations of N steps (per guidance branch);
    ``diffusers`` names the diffusers scheduler class that implements the same method (None if none does);
    ``summary`` is the first line of the function's docstring. The registry it stands in says what it drives:
    :data:`SAMPLERS` an ε-model on a discrete schedule, :data:`FLOW_SAMPLERS` a velocity model on the linear
    path, called as ``fn(velocity_model, x_1, times, **options)``.
    """

    name: str
    fn: Callable
    options: tuple[str, ...]
    nfe_of_steps: Callable[[int], int]
    diffusers: str | None = None

    @property
    def summary(self) -> str:
        return (self.fn.__doc__ or self.name).strip().splitlines()[0]

    def nfe(self, steps: int) -> int:
        return self.nfe_of_steps(check_int("steps", steps, low=1))

    def steps_within(self, budget: int) -> int:
        """The most steps whose ε-evaluations fit in ``budget`` (at least 1)."""
        steps = 1
        while self.nfe_of_steps(steps + 1) <= budget:
            steps += 1
        return steps

    def check_options(self, options: dict) -> dict:
        """The options that are set (not None), each one this sampler takes; others raise naming it."""
        for key, value in options.items():
            if key not in self.options and value is not None:
                allowed = ", ".join(self.options) or "none"
                takers = [name for name, spec in SAMPLERS.items() if key in spec.options]
                where = f" ({key} is an option of {', '.join(takers)})" if takers else ""
                fail(key, value, f"sampler {self.name!r} takes the options {allowed}{where}")
        return {k: v for k, v in options.items() if v is not None}


SAMPLERS: dict[str, Sampler] = {}
FLOW_SAMPLERS: dict[str, Sampler] = {}
PATHS = {"vp": SAMPLERS, "flow": FLOW_SAMPLERS}


def sampler(name: str, *, options=(), nfe: Callable[[int], int] = lambda steps: steps, diffusers=None,
            path: str = "vp"):  # fmt: skip
    """Register the decorated function as sampler ``name`` of ``path`` (:class:`Sampler` has the facts)."""

    def register(fn: Callable) -> Callable:
        PATHS[path][name] = Sampler(name, fn, tuple(options), nfe, diffusers)
        return fn

    return register


def get_sampler(name: str, path: str = "vp") -> Sampler:
    """The registered sampler ``name`` of ``path``; an unknown name raises ValueError listing the known."""
    registry = PATHS[path]
    if name not in registry:
        kind = "samplers" if path == "vp" else "flow samplers (for a flow model)"
        fail("sampler", name, f"known {kind} are {', '.join(sorted(registry))}")
    return registry[name]


def nfe(name: str, steps: int) -> int:
    """Number of ε-model evaluations of ``steps`` steps of sampler ``name`` (per guidance branch)."""
    return get_sampler(name).nfe(steps)


def run_sampler(name, eps_model, x_T, schedule, steps=None, *, strategy="trailing", generator=None,
                labels=None, progress=False, return_trajectory=False, **options):  # fmt: skip
    """Run sampler ``name`` for ``steps`` steps (default: all T) on the grid given by ``strategy``."""
    spec = get_sampler(name)
    options = spec.check_options(options)
    steps = schedule.T if steps is None else check_int("steps", steps, low=1, high=schedule.T)
    ts = timestep_grid(schedule.T, steps, strategy)
    return spec.fn(
        eps_model, x_T, schedule, ts, generator=generator, labels=labels, progress=progress,
        return_trajectory=return_trajectory, **options,
    )  # fmt: skip
