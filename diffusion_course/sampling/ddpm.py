r"""DDPM ancestral sampling (Ho et al., 2020), on all T steps or any strictly descending subset.

For a step t → t_prev (t_prev = −1 means ᾱ = 1) the strided process has
α^(s) = ᾱ_t / ᾱ_prev and β^(s) = 1 − α^(s) (on consecutive steps these are α_t and β_t), and

    x̂₀ = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t                      (optionally clipped to [−1, 1])
    μ   = √ᾱ_prev β^(s) / (1−ᾱ_t) · x̂₀ + √α^(s) (1−ᾱ_prev) / (1−ᾱ_t) · x_t
    x_prev = μ + σ z,   σ² = β̃ = (1−ᾱ_prev)/(1−ᾱ_t) · β^(s)   or   σ² = β^(s),   z ~ N(0, I)

with no noise on the final step (t_prev = −1, where β̃ = 0 and μ = x̂₀).
"""

from __future__ import annotations

import math

import torch

from .._checks import check_choice, check_int, fail
from ..schedules import NoiseSchedule
from .common import Loop, _predict_x0, alpha_bar_at, draw_noise, predict_x0
from .registry import sampler

VARIANCES = ("beta_tilde", "beta")


def ddpm_posterior(
    x_t: torch.Tensor, x0_pred: torch.Tensor, t: int, t_prev: int, schedule: NoiseSchedule
) -> tuple[torch.Tensor, float]:
    """Mean and variance of q(x_{t_prev} | x_t, x_0 = x̂₀) for t > t_prev ≥ −1 (see the module docstring).

    With x̂₀ from ε this mean equals the ε form μ = (x_t − β^(s)/√(1−ᾱ_t) · ε) / √α^(s).
    """
    t = check_int("t", t, low=0, high=schedule.T - 1)
    t_prev = check_int("t_prev", t_prev, low=-1, high=t - 1)
    return _posterior(x_t, x0_pred, alpha_bar_at(schedule, t), alpha_bar_at(schedule, t_prev))


def _posterior(x_t, x0_pred, ab_t, ab_prev):
    alpha = ab_t / ab_prev
    beta = 1.0 - alpha
    mean = (math.sqrt(ab_prev) * beta / (1.0 - ab_t)) * x0_pred + (
        math.sqrt(alpha) * (1.0 - ab_prev) / (1.0 - ab_t)
    ) * x_t
    return mean, (1.0 - ab_prev) / (1.0 - ab_t) * beta


def ddpm_step(x_t, eps, t, t_prev, schedule, *, variance="beta_tilde", clip_x0=False, noise=None,
              generator=None):  # fmt: skip
    """One ancestral step x_t → x_{t_prev}; returns (x_prev, x̂₀).

    ``noise`` (z) is drawn with ``generator`` when not given, and only when t_prev ≥ 0.
    """
    check_choice("variance", variance, VARIANCES)
    for name, value in (("eps", eps), ("noise", noise)):
        if value is not None and value.shape != x_t.shape:
            fail(name, value, f"expected the shape of x_t, {tuple(x_t.shape)}")
    t = check_int("t", t, low=0, high=schedule.T - 1)
    t_prev = check_int("t_prev", t_prev, low=-1, high=t - 1)
    ab_t, ab_prev = alpha_bar_at(schedule, t), alpha_bar_at(schedule, t_prev)
    if ab_t <= 0.0:
        predict_x0(x_t, eps, ab_t)  # raises, naming ᾱ_t
    return _ddpm_step(x_t, eps, ab_t, ab_prev, t_prev < 0, variance, clip_x0, noise, generator)


def _ddpm_step(x_t, eps, ab_t, ab_prev, final, variance, clip_x0=False, noise=None, generator=None):
    x0_pred = _predict_x0(x_t, eps, ab_t)
    if clip_x0:
        x0_pred = x0_pred.clamp(-1.0, 1.0)
    mean, var = _posterior(x_t, x0_pred, ab_t, ab_prev)
    if final:
        return mean, x0_pred
    if variance == "beta":
        var = 1.0 - ab_t / ab_prev
    return mean + math.sqrt(var) * (draw_noise(x_t, generator) if noise is None else noise), x0_pred


@sampler("ddpm", options=("variance", "clip_x0"), diffusers="DDPMScheduler")
@torch.no_grad()
def ddpm_sample(eps_model, x_T, schedule, timesteps=None, *, variance="beta_tilde", clip_x0=False,
                generator=None, labels=None, return_trajectory=False, progress=False):  # fmt: skip
    """DDPM ancestral sampling from x_T over ``timesteps`` (default: all T, from T−1 down to 0).

    Draws one z per non-final step, in order, from ``generator``. Returns x_0 or (x_0, Trajectory).
    """
    check_choice("variance", variance, VARIANCES)
    if timesteps is None and isinstance(schedule, NoiseSchedule):
        timesteps = torch.arange(schedule.T - 1, -1, -1)
    loop = Loop(eps_model, x_T, schedule, timesteps, labels, return_trajectory, progress, "DDPM")
    x = loop.x_T
    for i, t, t_prev, ab_t, ab_prev in loop:
        eps = loop.eps(x, t, i)
        x, x0_pred = _ddpm_step(x, eps, ab_t, ab_prev, t_prev < 0, variance, clip_x0, generator=generator)
        loop.record(x, x0_pred)
    return loop.result(x)
