r"""Samplers of a flow model: the ODE dx/dt = u(x, t) of the linear path x_t = (1 − t) x₀ + t ε, integrated
from t = 1 (x_1 ~ N(0, I)) to t = 0 on a descending grid 1 = t_0 > t_1 > … > t_N = 0, with h = t_{i+1} − t_i
(negative):

    euler      x ← x + h u(x, t)                                                  N evaluations
    heun       x' = x + h u(x, t),  x ← x + h (u(x, t) + u(x', t + h)) / 2        2N − 1 (the last step,
               to t = 0, is the Euler step: a velocity at t = 0 is an extrapolation of the training times)
    midpoint   x' = x + (h/2) u(x, t),  x ← x + h u(x', t + h/2)                  2N

The grid is uniform in t, optionally shifted towards the noise end by t ↦ s t / (1 + (s − 1) t)
(``shift`` s, as Stable Diffusion 3 does for large images; s = 1 keeps it uniform). A velocity model is
called as ``model(x, t (B,) float, labels=…)``; classifier-free guidance is ``CFG(model, s)`` around it,
u = u_∅ + s (u_c − u_∅), exactly as for ε. x̂₀ = x − t u is recorded at each step.

The first-order step does not depend on how the path is parametrised: an Euler step of this ODE from a VP
state mapped by ``parameterizations.vp_to_flow`` is the DDIM (η = 0) step (notebook 11 shows it
numerically); higher-order steps do depend on it.
"""

from __future__ import annotations

import torch

from .._checks import check_float, check_image_batch, check_int, fail
from .common import NonFiniteError, Recorder, Trajectory, model_labels, progress_bar
from .registry import get_sampler, sampler


def flow_time_grid(steps: int, shift: float = 1.0) -> torch.Tensor:
    """The N + 1 times 1 = t_0 > … > t_N = 0 (float64): uniform, then t ↦ s t / (1 + (s − 1) t)."""
    steps = check_int("steps", steps, low=1)
    shift = check_float("shift", shift, low=0.0, low_open=True)
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return shift * t / (1.0 + (shift - 1.0) * t)


def check_flow_times(times) -> torch.Tensor:
    """``times`` as a float64 tensor, strictly descending from t_0 ∈ (0, 1] to 0 (at least two values).

    A grid may start below 1, at a state that is not pure noise (e.g. a VP state mapped by ``vp_to_flow``)."""
    if not isinstance(times, torch.Tensor):
        times = torch.as_tensor(times, dtype=torch.float64)
    times = times.to("cpu", torch.float64)
    if times.ndim != 1 or times.numel() < 2:
        fail("times", times, "expected a 1-D grid of at least two times, from 1 down to 0")
    if float(times[0]) > 1.0 or float(times[-1]) != 0.0 or not (times[1:] < times[:-1]).all():
        fail("times", times, "the grid must descend strictly from t_0 ≤ 1 (1 = noise) to t = 0 (data)")
    return times


class FlowLoop(Recorder):
    """What a flow sampler shares with the others: inputs checked, the walk over (i, t, t_next) and the
    guarded velocity call, the trajectory."""

    def __init__(self, model, x_1, times, labels=None, return_trajectory=False, progress=False, desc="flow"):
        self.x_1 = check_image_batch("x_1", x_1)
        if not torch.isfinite(self.x_1).all():
            fail("x_1", x_1, "contains NaN or inf")
        self.times = check_flow_times(times)
        self.model, self.progress, self.desc = model, progress, desc
        self.labels = model_labels(model, labels, self.x_1.shape[0], self.x_1.device)
        self.trajectory = Trajectory(self.times[:-1].clone(), [self.x_1]) if return_trajectory else None
        ts = self.times.tolist()
        self.steps = list(enumerate(zip(ts[:-1], ts[1:])))

    def __iter__(self):
        return iter((i, t, t_next) for i, (t, t_next) in progress_bar(self.steps, self.progress, self.desc))

    def velocity(self, x: torch.Tensor, t: float, i: int) -> torch.Tensor:
        """u = model(x, t·1_B[, labels]) in x's dtype, checked for shape and finiteness."""
        t_batch = torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)
        u = self.model(x, t_batch) if self.labels is None else self.model(x, t_batch, labels=self.labels)
        if not isinstance(u, torch.Tensor) or u.shape != x.shape:
            shape = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
            fail("velocity model output", shape, f"expected the shape of x, {tuple(x.shape)}, at step {i}")
        if not torch.isfinite(u).all():
            raise NonFiniteError(f"the velocity model returned non-finite values at step {i} (t={t:.4g})")
        return u.to(x.dtype)


@sampler("euler", path="flow", diffusers="FlowMatchEulerDiscreteScheduler")
@torch.no_grad()
def flow_euler_sample(model, x_1, times, *, labels=None, return_trajectory=False, progress=False,
                      generator=None):  # fmt: skip
    """Euler on dx/dt = u: x ← x + (t_next − t) u(x, t), one evaluation per step."""
    loop = FlowLoop(model, x_1, times, labels, return_trajectory, progress, "flow Euler")
    x = loop.x_1
    for i, t, t_next in loop:
        u = loop.velocity(x, t, i)
        x, x0_pred = x + (t_next - t) * u, x - t * u
        loop.record(x, x0_pred)
    return loop.result(x)


@sampler("heun", path="flow", nfe=lambda steps: 2 * steps - 1)
@torch.no_grad()
def flow_heun_sample(model, x_1, times, *, labels=None, return_trajectory=False, progress=False,
                     generator=None):  # fmt: skip
    """Heun on dx/dt = u (trapezoid corrector; the last step, to t = 0, is Euler): 2N − 1 evaluations."""
    loop = FlowLoop(model, x_1, times, labels, return_trajectory, progress, "flow Heun")
    x = loop.x_1
    for i, t, t_next in loop:
        u = loop.velocity(x, t, i)
        x_euler, x0_pred = x + (t_next - t) * u, x - t * u
        x = x_euler if t_next == 0.0 else x + (t_next - t) * 0.5 * (u + loop.velocity(x_euler, t_next, i))
        loop.record(x, x0_pred)
    return loop.result(x)


@sampler("midpoint", path="flow", nfe=lambda steps: 2 * steps)
@torch.no_grad()
def flow_midpoint_sample(model, x_1, times, *, labels=None, return_trajectory=False, progress=False,
                         generator=None):  # fmt: skip
    """Explicit midpoint on dx/dt = u: x ← x + h u(x + (h/2) u(x, t), t + h/2), 2N evaluations."""
    loop = FlowLoop(model, x_1, times, labels, return_trajectory, progress, "flow midpoint")
    x = loop.x_1
    for i, t, t_next in loop:
        h = t_next - t
        u = loop.velocity(x, t, i)
        x0_pred = x - t * u
        x = x + h * loop.velocity(x + 0.5 * h * u, t + 0.5 * h, i)
        loop.record(x, x0_pred)
    return loop.result(x)


def run_flow_sampler(name, model, x_1, steps=None, *, times=None, shift=1.0, labels=None, generator=None,
                     progress=False, return_trajectory=False):  # fmt: skip
    """Run flow sampler ``name`` (euler, heun, midpoint) for ``steps`` steps of :func:`flow_time_grid`, or
    on the explicit grid ``times`` (then ``steps`` and ``shift`` must be left out)."""
    spec = get_sampler(name, path="flow")
    if times is None:
        if steps is None:
            fail("steps", steps, "give the number of steps (or an explicit grid as times=)")
        times = flow_time_grid(steps, shift)
    elif steps is not None or shift != 1.0:
        fail("times", "given", "an explicit grid replaces steps and shift; pass one or the other")
    return spec.fn(model, x_1, times, labels=labels, generator=generator, progress=progress,
                   return_trajectory=return_trajectory)  # fmt: skip


__all__ = [
    "FlowLoop",
    "check_flow_times",
    "flow_euler_sample",
    "flow_heun_sample",
    "flow_midpoint_sample",
    "flow_time_grid",
    "run_flow_sampler",
]
