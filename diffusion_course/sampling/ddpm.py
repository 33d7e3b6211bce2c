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
from .common import alpha_bar_at, draw_noise, predict_x0, sample_loop

VARIANCES = ("beta_tilde", "beta")


def ddpm_posterior(
    x_t: torch.Tensor, x0_pred: torch.Tensor, t: int, t_prev: int, schedule: NoiseSchedule
) -> tuple[torch.Tensor, float]:
    """Mean and variance of q(x_{t_prev} | x_t, x_0 = x̂₀) for t > t_prev ≥ −1 (see the module docstring).

    With x̂₀ from ε this mean equals the ε form μ = (x_t − β^(s)/√(1−ᾱ_t) · ε) / √α^(s).
    """
    t = check_int("t", t, low=0, high=schedule.T - 1)
    t_prev = check_int("t_prev", t_prev, low=-1, high=t - 1)
    ab_t, ab_prev = alpha_bar_at(schedule, t), alpha_bar_at(schedule, t_prev)
    alpha = ab_t / ab_prev
    beta = 1.0 - alpha
    mean = (math.sqrt(ab_prev) * beta / (1.0 - ab_t)) * x0_pred + (
        math.sqrt(alpha) * (1.0 - ab_prev) / (1.0 - ab_t)
    ) * x_t
    return mean, (1.0 - ab_prev) / (1.0 - ab_t) * beta


def ddpm_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t: int,
    t_prev: int,
    schedule: NoiseSchedule,
    *,
    variance: str = "beta_tilde",
    clip_x0: bool = False,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ancestral step x_t → x_{t_prev}; returns (x_prev, x̂₀).

    ``noise`` (z) is drawn with ``generator`` when not given, and only when t_prev ≥ 0.
    """
    check_choice("variance", variance, VARIANCES)
    if eps.shape != x_t.shape:
        fail("eps", eps, f"expected the shape of x_t, {tuple(x_t.shape)}")
    x0_pred = predict_x0(x_t, eps, alpha_bar_at(schedule, check_int("t", t, low=0, high=schedule.T - 1)))
    if clip_x0:
        x0_pred = x0_pred.clamp(-1.0, 1.0)
    mean, var = ddpm_posterior(x_t, x0_pred, t, t_prev, schedule)
    if t_prev < 0:
        return mean, x0_pred
    if variance == "beta":
        var = 1.0 - alpha_bar_at(schedule, t) / alpha_bar_at(schedule, t_prev)
    if noise is None:
        noise = draw_noise(x_t, generator)
    elif noise.shape != x_t.shape:
        fail("noise", noise, f"expected the shape of x_t, {tuple(x_t.shape)}")
    return mean + math.sqrt(var) * noise, x0_pred


def ddpm_sample(
    eps_model,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    timesteps=None,
    *,
    variance: str = "beta_tilde",
    clip_x0: bool = False,
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
):
    """Ancestral sampling from x_T over ``timesteps`` (default: all T, from T−1 down to 0).

    Draws one z per non-final step, in order, from ``generator``. Returns x_0 or (x_0, Trajectory).
    """
    check_choice("variance", variance, VARIANCES)
    if not isinstance(schedule, NoiseSchedule):
        fail("schedule", type(schedule).__name__, "expected a NoiseSchedule (see diffusion_course.schedules)")
    if timesteps is None:
        timesteps = torch.arange(schedule.T - 1, -1, -1)

    def step(x, eps, t, t_prev):
        return ddpm_step(x, eps, t, t_prev, schedule, variance=variance, clip_x0=clip_x0, generator=generator)

    return sample_loop(
        step,
        eps_model,
        x_T,
        schedule,
        timesteps,
        labels=labels,
        return_trajectory=return_trajectory,
        progress=progress,
        desc="DDPM",
    )
