r"""A timestep grid fitted to a model: S timesteps on which an S-step solver lands where an accurate run does.

With x_T fixed and x_ref the same solver's output over all T steps,

    minimise   L(t_1, …, t_{S−1}) = mean_i ‖ solver(x_T^i; T−1, t_1, …, t_{S−1}) − x_ref^i ‖
    over integers T−1 > t_1 > … > t_{S−1} ≥ 0,

by coordinate descent (docs/SAMPLING.md, "Fast solvers, UniPC and fitted grids", says how and why).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .._checks import check_int, fail
from .common import check_sampler_inputs, progress_bar
from .timesteps import timestep_grid

__all__ = ["FittedGrid", "fit_timesteps", "grid_loss"]

_OFFSETS = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377)


@dataclass
class FittedGrid:
    """The fitted ``timesteps`` (descending LongTensor), its ``loss`` L, the start grid's loss, and L after
    each sweep (``history``)."""

    timesteps: torch.Tensor
    loss: float
    start_loss: float
    history: list[float] = field(default_factory=list)


def grid_loss(sampler: Callable, eps_model, x_T, schedule, grid, reference, labels=None, **options) -> float:
    """L = mean_i ‖sampler(x_T^i over ``grid``) − reference^i‖ (per-sample Euclidean norm)."""
    x = sampler(eps_model, x_T, schedule, grid, labels=labels, **options)
    return float((x - reference).flatten(1).norm(dim=1).mean())


@torch.no_grad()
def fit_timesteps(sampler, eps_model, x_T, schedule, steps, *, start="quadratic", reference=None, sweeps=10,
                  rtol=1e-3, labels=None, progress=False, **options):  # fmt: skip
    """Fit ``steps`` timesteps for ``sampler`` (any ``f(eps_model, x_T, schedule, timesteps, **options)``).

    ``start`` is a grid beginning at T−1, or a strategy name (its grid with the first entry set to T−1);
    ``reference`` defaults to the sampler's own output over all T steps from the same x_T. Returns a
    :class:`FittedGrid` whose loss is never above the start grid's.
    """
    if not callable(sampler):
        fail("sampler", sampler, "expected a sampler function such as unipc_sample or dpmpp_2m_sample")
    x_T, _ = check_sampler_inputs(x_T, schedule, [schedule.T - 1])
    T = schedule.T
    steps = check_int("steps", steps, low=2, high=T)
    sweeps = check_int("sweeps", sweeps, low=0)
    if not (isinstance(rtol, (int, float)) and rtol >= 0):
        fail("rtol", rtol, "expected a number ≥ 0")
    if isinstance(start, str):  # a strategy's grid, moved to begin at T−1
        grid = timestep_grid(T, steps, start)
        grid[0] = T - 1
    else:
        grid = start
    _, grid = check_sampler_inputs(x_T, schedule, grid, name="start")
    if len(grid) != steps or int(grid[0]) != T - 1:
        fail("start", grid.tolist(), f"expected {steps} timesteps beginning at T−1 = {T - 1}")
    if reference is None:
        reference = sampler(eps_model, x_T, schedule, timestep_grid(T, T), labels=labels, **options)
    elif not isinstance(reference, torch.Tensor) or reference.shape != x_T.shape:
        fail("reference", reference, f"expected a tensor shaped like x_T, {tuple(x_T.shape)}")

    def loss_of(ts: list[int]) -> float:
        return grid_loss(sampler, eps_model, x_T, schedule, ts, reference, labels=labels, **options)

    ts = grid.tolist()
    best = start_loss = loss_of(ts)
    history = []
    for _ in progress_bar(range(sweeps), progress, "fitting the grid"):
        before = best
        for k in range(1, steps):
            lo, hi = (ts[k + 1] + 1 if k + 1 < steps else 0), ts[k - 1] - 1
            if hi - lo <= 2 * len(_OFFSETS):
                candidates = range(lo, hi + 1)
            else:
                candidates = {ts[k] + sign * d for d in _OFFSETS for sign in (1, -1)}
            for c in sorted(candidates):
                if lo <= c <= hi and c != ts[k]:
                    trial = ts[:k] + [c] + ts[k + 1 :]
                    value = loss_of(trial)
                    if value < best:
                        best, ts = value, trial
        history.append(best)
        if before - best <= rtol * before:
            break
    return FittedGrid(torch.tensor(ts, dtype=torch.long), best, start_loss, history)
