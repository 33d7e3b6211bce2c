r"""Fast ODE solvers for the probability-flow ODE: Euler, Heun and midpoint in σ, and DPM-Solver++(2M).

Deterministic DDIM follows an ODE. With x̃ = x/√ᾱ and σ = √((1−ᾱ)/ᾱ) (the variance-exploding frame, as in
k-diffusion), x̃ = x_0 + σ ε on the forward process and

    dx̃/dσ = ε(x, t(σ)),     x = √ᾱ x̃                                                      (PF-ODE)

from σ_max (the first listed t) to σ = 0 (ᾱ = 1, after the last listed t). Euler on it is DDIM with η = 0;
Heun adds the trapezoid corrector. DPM-Solver++ (Lu et al. 2022) works with α = √ᾱ, s = √(1−ᾱ),
λ = log(α/s) (half the log-SNR, = −log σ) and h = λ_prev − λ_t: the exponential integrator solves the part
linear in x exactly, and the 2M method extrapolates the model's x̂₀ linearly in λ. Each function's docstring
gives its update; docs/SAMPLING.md says what the tests pin.

All four are deterministic (``generator`` is accepted and unused). A grid that visits ᾱ = 0 (zero terminal
SNR, σ = ∞) is refused: there an ε-model says nothing about x_0.
"""

from __future__ import annotations

import math

import torch

from .._checks import fail
from .common import Loop, _predict_x0
from .registry import sampler

# --------------------------------------------------------------------------------------- noise levels


def vp_sigma(alpha_bar: float) -> float:
    """σ = √((1−ᾱ)/ᾱ), the noise level of x̃ = x/√ᾱ (0 at ᾱ = 1; ᾱ must be > 0)."""
    alpha_bar = _check_alpha_bar("alpha_bar", alpha_bar)
    return math.sqrt((1.0 - alpha_bar) / alpha_bar)


def half_log_snr(alpha_bar: float) -> float:
    """λ = log(√ᾱ/√(1−ᾱ)) = ½ log SNR = −log σ; +inf at ᾱ = 1 (the clean data)."""
    alpha_bar = _check_alpha_bar("alpha_bar", alpha_bar)
    return _half_log_snr(alpha_bar)


def _half_log_snr(ab: float) -> float:
    return math.inf if ab == 1.0 else 0.5 * (math.log(ab) - math.log1p(-ab))


# ---------------------------------------------------------------------------------------------- steps


def euler_step(
    x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t: float, alpha_bar_prev: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler step of dx̃/dσ = ε in the σ frame; returns (x_prev, x̂₀).

        x̃_t = x_t/√ᾱ_t,   x̃_prev = x̃_t + (σ_prev − σ_t) ε,   x_prev = √ᾱ_prev x̃_prev.

    Equal to the DDIM η = 0 step; at ᾱ_prev = 1 (σ_prev = 0) it returns x̂₀.
    """
    _check_step(x_t, eps, alpha_bar_t, alpha_bar_prev)
    return _euler_step(x_t, eps, alpha_bar_t, alpha_bar_prev), _predict_x0(x_t, eps, alpha_bar_t)


def _euler_step(x_t, slope, ab_t, ab_prev):
    d_sigma = math.sqrt((1.0 - ab_prev) / ab_prev) - math.sqrt((1.0 - ab_t) / ab_t)
    return math.sqrt(ab_prev) * (x_t / math.sqrt(ab_t) + d_sigma * slope)


def dpmpp_first_order_step(
    x_t: torch.Tensor, x0_pred: torch.Tensor, alpha_bar_t: float, alpha_bar_prev: float
) -> torch.Tensor:
    """DPM-Solver++, first order (x̂₀ held constant over the step):

        x_prev = (s_prev/s_t) x_t − α_prev (e^{−h} − 1) x̂₀,

    with α = √ᾱ, s = √(1−ᾱ), h = λ_prev − λ_t. Identical to DDIM η = 0. e^{−h} = s_prev α_t / (α_prev s_t) is
    formed from the ratio, so the step to ᾱ_prev = 1 (h = ∞) gives x̂₀ exactly; 1 − e^{−h} uses ``expm1``
    so that tiny steps (h ≈ 1e-4 on 1000 steps) keep their precision.
    """
    _check_step(x_t, x0_pred, alpha_bar_t, alpha_bar_prev, name="x0_pred")
    if alpha_bar_t >= 1.0:
        fail("alpha_bar_t", alpha_bar_t, "must be < 1: the step starts from a noisy state")
    return _dpmpp_first_order_step(x_t, x0_pred, alpha_bar_t, alpha_bar_prev)


def _dpmpp_first_order_step(x_t, x0_pred, ab_t, ab_prev):
    s_ratio = math.sqrt((1.0 - ab_prev) / (1.0 - ab_t))
    h = _half_log_snr(ab_prev) - _half_log_snr(ab_t)
    one_minus_exp = 1.0 if math.isinf(h) else -math.expm1(-h)  # e^{−h} = s_prev α_t / (α_prev s_t) = 0
    return s_ratio * x_t + math.sqrt(ab_prev) * one_minus_exp * x0_pred


def dpmpp_2m_coefficients(
    alpha_bar_before: float, alpha_bar_t: float, alpha_bar_prev: float
) -> tuple[float, float]:
    """(r, c) of the 2M correction: r = h_before / h and D = x̂₀_t + c (x̂₀_t − x̂₀_before), c = 1/(2r).

    h_before = λ_t − λ_before (the previous step), h = λ_prev − λ_t (this step); all in λ, half the log-SNR.
    Needs ᾱ_before < ᾱ_t < ᾱ_prev < 1 (a finite step; the last step to ᾱ = 1 is first order).
    """
    names = ("alpha_bar_before", "alpha_bar_t", "alpha_bar_prev")
    abs_ = [_check_alpha_bar(n, v) for n, v in zip(names, (alpha_bar_before, alpha_bar_t, alpha_bar_prev))]
    if not abs_[0] < abs_[1] < abs_[2] < 1.0:
        allowed = (
            "need ᾱ_before < ᾱ_t < ᾱ_prev < 1 (two steps towards the data; the final step is first order)"
        )
        fail("alpha_bar_before, alpha_bar_t, alpha_bar_prev", tuple(abs_), allowed)
    return _dpmpp_2m_coefficients(*abs_)


def _dpmpp_2m_coefficients(ab_before, ab_t, ab_prev):
    lam_before, lam_t, lam_prev = _half_log_snr(ab_before), _half_log_snr(ab_t), _half_log_snr(ab_prev)
    r = (lam_t - lam_before) / (lam_prev - lam_t)
    return r, 1.0 / (2.0 * r)


# ------------------------------------------------------------------------------------------- samplers


@sampler("euler", diffusers="EulerDiscreteScheduler")
@torch.no_grad()
def euler_sample(eps_model, x_T, schedule, timesteps, *, generator=None, labels=None,
                 return_trajectory=False, progress=False):  # fmt: skip
    """Euler on dx̃/dσ = ε from x_T over the descending ``timesteps`` (= DDIM η = 0; one evaluation per step).

    x̃_prev = x̃_t + (σ_prev − σ_t) ε,   x̃ = x/√ᾱ.   Returns x_0 or (x_0, Trajectory).
    """
    loop = Loop(eps_model, x_T, schedule, timesteps, labels, return_trajectory, progress, "Euler (σ)")
    x = loop.x_T
    for i, t, _, ab_t, ab_prev in loop:
        eps = loop.eps(x, t, i)
        x, x0_pred = _euler_step(x, eps, ab_t, ab_prev), _predict_x0(x, eps, ab_t)
        loop.record(x, x0_pred)
    return loop.result(x)


@sampler("heun", nfe=lambda steps: 2 * steps - 1)
@torch.no_grad()
def heun_sample(eps_model, x_T, schedule, timesteps, *, generator=None, labels=None,
                return_trajectory=False, progress=False):  # fmt: skip
    """Heun on dx̃/dσ = ε from x_T over the descending ``timesteps``: 2N − 1 evaluations for N steps.

        x̃' = x̃_t + (σ_prev − σ_t) ε_t,   ε' = ε(√ᾱ_prev x̃', t_prev),
        x̃_prev = x̃_t + (σ_prev − σ_t) (ε_t + ε')/2

    The last step (to σ = 0, where there is no t to evaluate at) is the Euler step. Deterministic
    (``generator`` is unused). Returns x_0 or (x_0, Trajectory); ``x0_preds[i]`` is x̂₀ at ``timesteps[i]``.
    """
    loop = Loop(eps_model, x_T, schedule, timesteps, labels, return_trajectory, progress, "Heun (σ)")
    x = loop.x_T
    for i, t, t_prev, ab_t, ab_prev in loop:
        eps = loop.eps(x, t, i)
        x0_pred, x_euler = _predict_x0(x, eps, ab_t), _euler_step(x, eps, ab_t, ab_prev)
        if ab_prev == 1.0:
            x = x_euler
        else:
            x = _euler_step(x, 0.5 * (eps + loop.eps(x_euler, t_prev, i)), ab_t, ab_prev)
        loop.record(x, x0_pred)
    return loop.result(x)


@sampler("midpoint", nfe=lambda steps: 2 * steps)
@torch.no_grad()
def midpoint_sample(eps_model, x_T, schedule, timesteps, *, generator=None, labels=None,
                    return_trajectory=False, progress=False):  # fmt: skip
    """Explicit midpoint on dx̃/dσ = ε from x_T over the descending ``timesteps``: 2N evaluations for N steps.

        x̃' = x̃_t + (σ_m − σ_t) ε_t,   x̃_prev = x̃_t + (σ_prev − σ_t) ε(√ᾱ_m x̃', m)

    where m is the timestep strictly between t and t_prev whose σ is nearest to (σ_t + σ_prev)/2 (an
    ε-model knows only the schedule's timesteps; with T = 1000 the chosen σ_m is within a fraction of a
    per cent of the midpoint), or t itself when none lies between (the step is then Euler's, at the same
    cost). Deterministic. Returns x_0 or (x_0, Trajectory).
    """
    loop = Loop(eps_model, x_T, schedule, timesteps, labels, return_trajectory, progress, "midpoint (σ)")
    ab = schedule.alpha_bar.double()
    sigma = ((1.0 - ab) / ab).sqrt()
    x = loop.x_T
    for i, t, t_prev, ab_t, ab_prev in loop:
        m = _midpoint_timestep(sigma, t, t_prev)
        eps = loop.eps(x, t, i)
        x0_pred = _predict_x0(x, eps, ab_t)
        ab_m = float(ab[m])
        eps_m = loop.eps(_euler_step(x, eps, ab_t, ab_m), m, i)
        x = _euler_step(x, eps_m, ab_t, ab_prev)
        loop.record(x, x0_pred)
    return loop.result(x)


def _midpoint_timestep(sigma: torch.Tensor, t: int, t_prev: int) -> int:
    """The timestep strictly between t_prev and t with σ nearest to (σ_t + σ_prev)/2, else t."""
    if t - t_prev < 2:
        return t
    between = torch.arange(t_prev + 1, t)
    sigma_prev = 0.0 if t_prev < 0 else float(sigma[t_prev])
    target = 0.5 * (float(sigma[t]) + sigma_prev)
    return int(between[(sigma[between] - target).abs().argmin()])


@sampler("dpmpp2m", diffusers="DPMSolverMultistepScheduler")
@torch.no_grad()
def dpmpp_2m_sample(eps_model, x_T, schedule, timesteps, *, generator=None, labels=None,
                    return_trajectory=False, progress=False):  # fmt: skip
    """DPM-Solver++(2M) from x_T over the descending ``timesteps`` (one ε-evaluation per step).

        D = x̂₀_t + (x̂₀_t − x̂₀_before)/(2r),   x_prev = (s_prev/s_t) x_t − α_prev (e^{−h} − 1) D,

    r = h_before/h (steps in λ). The first step (no x̂₀_before) and the last (to ᾱ = 1) take D = x̂₀_t.
    Returns x_0 or (x_0, Trajectory).
    """
    loop = Loop(eps_model, x_T, schedule, timesteps, labels, return_trajectory, progress, "DPM-Solver++(2M)")
    x, x0_before, ab_before = loop.x_T, None, None
    for i, t, _, ab_t, ab_prev in loop:
        x0_pred = _predict_x0(x, loop.eps(x, t, i), ab_t)
        d = x0_pred
        if x0_before is not None and ab_prev < 1.0:
            d = x0_pred + _dpmpp_2m_coefficients(ab_before, ab_t, ab_prev)[1] * (x0_pred - x0_before)
        x = _dpmpp_first_order_step(x, d, ab_t, ab_prev)
        x0_before, ab_before = x0_pred, ab_t
        loop.record(x, x0_pred)
    return loop.result(x)


# ------------------------------------------------------------------------------------------- checks


def _check_alpha_bar(name: str, value) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        allowed = "expected a number in (0, 1] (ᾱ = 0 is σ = ∞ / λ = −∞, where an ε-model cannot predict x_0)"
        fail(name, value, allowed)
    return float(value)


def _check_step(x_t, other, alpha_bar_t, alpha_bar_prev, name: str = "eps") -> None:
    if not isinstance(other, torch.Tensor) or other.shape != x_t.shape:
        fail(name, other, f"expected a tensor shaped like x_t, {tuple(x_t.shape)}")
    ab_t = _check_alpha_bar("alpha_bar_t", alpha_bar_t)
    ab_prev = _check_alpha_bar("alpha_bar_prev", alpha_bar_prev)
    if ab_prev < ab_t:
        fail("alpha_bar_prev", ab_prev, f"must be ≥ alpha_bar_t={ab_t} (a step towards the data)")
