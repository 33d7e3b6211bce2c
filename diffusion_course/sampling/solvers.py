r"""Fast ODE solvers for the probability-flow ODE: Euler and Heun in σ, and DPM-Solver++(2M).

Deterministic DDIM follows an ODE. Write x̃ = x/√ᾱ and σ = √((1−ᾱ)/ᾱ) (the variance-exploding frame, as in
k-diffusion; σ = e^{−λ} with λ = log(√ᾱ/√(1−ᾱ)), half the log-SNR). Then x̃ = x_0 + σ ε on the forward
process, and the probability-flow ODE is

    dx̃/dσ = ε(x, t(σ)),     x = √ᾱ x̃                                                      (PF-ODE)

integrated from σ_max (the first listed t) down to σ = 0 (ᾱ = 1, after the last listed t).

* **Euler** (``euler_step``): x̃_prev = x̃_t + (σ_prev − σ_t) ε. This is exactly DDIM with η = 0:
  √ᾱ_prev x̃_prev = √ᾱ_prev x̂₀ + √(1−ᾱ_prev) ε.
* **Heun** (``heun_step``): an Euler predictor, ε evaluated again at the predicted point and t_prev, and the
  average slope ½(ε_t + ε_prev) for the step. The last step, to σ = 0, has no t to evaluate at (and the data
  end of the ODE is where ε changes fastest), so it is a plain Euler step: 2N − 1 evaluations for N steps.
* **DPM-Solver++(2M)** (Lu et al. 2022, Algorithm 2), written with α = √ᾱ, s = √(1−ᾱ) (the DPM-Solver
  papers' σ), λ = log(α/s) and h = λ_prev − λ_t > 0. The ODE is linear in x apart from the model's x̂₀, and
  the exponential integrator solves the linear part exactly; with x̂₀ held constant over the step
  (first order, ``dpmpp_first_order_step``):

      x_prev = (s_prev/s_t) x_t − α_prev (e^{−h} − 1) x̂₀,

  which is again the DDIM η = 0 step. The 2M method replaces x̂₀ by a linear extrapolation in λ from this
  step's and the previous step's predictions (``dpmpp_2m_step``), with r = h_before / h:

      D = (1 + 1/(2r)) x̂₀_t − 1/(2r) x̂₀_before,      x_prev = (s_prev/s_t) x_t − α_prev (e^{−h} − 1) D.

  The first step has no previous prediction and is first order. The last step goes to λ = +∞ (s = 0), where
  h = ∞ and r = 0: it is first order too ("lower order final"), i.e. x_0 = x̂₀ at the last listed t, and
  e^{−h} = s_prev α_t/(α_prev s_t) = 0 is computed from the ratio, so nothing is inf or NaN.

All three are deterministic: ``generator`` is accepted for a uniform signature and unused. Zero-terminal-SNR
schedules (ᾱ_{T−1} = 0, i.e. σ = ∞, λ = −∞) are refused when the grid visits T−1, with the shared check's
ValueError: at ᾱ = 0 an ε-model says nothing about x_0 (x̂₀ = (x − ε)/0), so no step can leave σ = ∞.
Use a grid that skips T−1 or a schedule with ᾱ_{T−1} > 0.
"""

from __future__ import annotations

import math

import torch

from .._checks import fail
from ..schedules import NoiseSchedule
from .common import (
    alpha_bar_at,
    call_eps_model,
    check_labels,
    check_sampler_inputs,
    predict_x0,
    sample_loop,
)
from .registry import SAMPLERS, nfe, register_sampler

__all__ = [
    "dpmpp_2m_coefficients",
    "dpmpp_2m_sample",
    "dpmpp_2m_step",
    "dpmpp_first_order_step",
    "euler_sample",
    "euler_step",
    "half_log_snr",
    "heun_sample",
    "heun_step",
    "solver_nfe",
    "vp_sigma",
]


# --------------------------------------------------------------------------------------- noise levels


def vp_sigma(alpha_bar: float) -> float:
    """σ = √((1−ᾱ)/ᾱ), the noise level of x̃ = x/√ᾱ (0 at ᾱ = 1; ᾱ must be > 0)."""
    alpha_bar = _check_alpha_bar("alpha_bar", alpha_bar)
    return math.sqrt((1.0 - alpha_bar) / alpha_bar)


def half_log_snr(alpha_bar: float) -> float:
    """λ = log(√ᾱ/√(1−ᾱ)) = ½ log SNR = −log σ; +inf at ᾱ = 1 (the clean data)."""
    alpha_bar = _check_alpha_bar("alpha_bar", alpha_bar)
    if alpha_bar == 1.0:
        return math.inf
    return 0.5 * (math.log(alpha_bar) - math.log1p(-alpha_bar))


# ---------------------------------------------------------------------------------------- Euler, Heun


def euler_step(
    x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t: float, alpha_bar_prev: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler step of dx̃/dσ = ε in the σ frame; returns (x_prev, x̂₀).

        x̃_t = x_t/√ᾱ_t,   x̃_prev = x̃_t + (σ_prev − σ_t) ε,   x_prev = √ᾱ_prev x̃_prev.

    Equal to the DDIM η = 0 step; at ᾱ_prev = 1 (σ_prev = 0) it returns x̂₀.
    """
    _check_step(x_t, eps, alpha_bar_t, alpha_bar_prev)
    sigma_t, sigma_prev = vp_sigma(alpha_bar_t), vp_sigma(alpha_bar_prev)
    x_tilde = x_t / math.sqrt(alpha_bar_t)
    x_prev = math.sqrt(alpha_bar_prev) * (x_tilde + (sigma_prev - sigma_t) * eps)
    return x_prev, predict_x0(x_t, eps, alpha_bar_t)


def heun_step(
    x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t: float, alpha_bar_prev: float, eps_at_prev
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Heun step (explicit trapezoid) of dx̃/dσ = ε; returns (x_prev, x̂₀ at t).

        x̃' = x̃_t + (σ_prev − σ_t) ε_t                    (Euler predictor)
        ε' = eps_at_prev(√ᾱ_prev x̃')                      (the slope at the predicted point, t_prev)
        x̃_prev = x̃_t + (σ_prev − σ_t) (ε_t + ε')/2

    ``eps_at_prev(x)`` evaluates the ε-model at t_prev. At ᾱ_prev = 1 (the step to σ = 0) it is not called
    and the Euler step is returned.
    """
    x_euler, x0_pred = euler_step(x_t, eps, alpha_bar_t, alpha_bar_prev)
    if alpha_bar_prev == 1.0:
        return x_euler, x0_pred
    eps_prev = eps_at_prev(x_euler)
    if not isinstance(eps_prev, torch.Tensor) or eps_prev.shape != x_t.shape:
        fail("eps_at_prev output", eps_prev, f"expected a tensor shaped like x_t, {tuple(x_t.shape)}")
    slope = 0.5 * (eps + eps_prev.to(x_t.dtype))
    sigma_t, sigma_prev = vp_sigma(alpha_bar_t), vp_sigma(alpha_bar_prev)
    x_prev = math.sqrt(alpha_bar_prev) * (x_t / math.sqrt(alpha_bar_t) + (sigma_prev - sigma_t) * slope)
    return x_prev, x0_pred


# ------------------------------------------------------------------------------------- DPM-Solver++


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
    s_ratio, one_minus_exp = _first_order_coefficients(alpha_bar_t, alpha_bar_prev)
    return s_ratio * x_t + math.sqrt(alpha_bar_prev) * one_minus_exp * x0_pred


def dpmpp_2m_coefficients(
    alpha_bar_before: float, alpha_bar_t: float, alpha_bar_prev: float
) -> tuple[float, float]:
    """(r, c) of the 2M correction: r = h_before / h and D = x̂₀_t + c (x̂₀_t − x̂₀_before), c = 1/(2r).

    h_before = λ_t − λ_before (the previous step), h = λ_prev − λ_t (this step); all in λ, half the log-SNR.
    Needs ᾱ_before < ᾱ_t < ᾱ_prev < 1 (a finite step; the last step to ᾱ = 1 is first order).
    """
    ab_before = _check_alpha_bar("alpha_bar_before", alpha_bar_before)
    ab_t = _check_alpha_bar("alpha_bar_t", alpha_bar_t)
    ab_prev = _check_alpha_bar("alpha_bar_prev", alpha_bar_prev)
    if not ab_before < ab_t < ab_prev < 1.0:
        fail(
            "alpha_bar_before, alpha_bar_t, alpha_bar_prev",
            (ab_before, ab_t, ab_prev),
            "need ᾱ_before < ᾱ_t < ᾱ_prev < 1 (two steps towards the data; the final step is first order)",
        )
    lam_before, lam_t, lam_prev = half_log_snr(ab_before), half_log_snr(ab_t), half_log_snr(ab_prev)
    r = (lam_t - lam_before) / (lam_prev - lam_t)
    return r, 1.0 / (2.0 * r)


def dpmpp_2m_step(
    x_t: torch.Tensor,
    x0_pred: torch.Tensor,
    x0_pred_before: torch.Tensor | None,
    alpha_bar_before: float | None,
    alpha_bar_t: float,
    alpha_bar_prev: float,
) -> torch.Tensor:
    """One DPM-Solver++(2M) step t → t_prev with the x̂₀ of this step and of the step before.

        D = (1 + 1/(2r)) x̂₀_t − 1/(2r) x̂₀_before,   x_prev = (s_prev/s_t) x_t − α_prev (e^{−h} − 1) D.

    First order (D = x̂₀_t) when there is no previous prediction (``x0_pred_before`` None, the first step) or
    the step goes to ᾱ_prev = 1 (the last step, "lower order final").
    """
    if x0_pred_before is None or alpha_bar_prev >= 1.0:
        return dpmpp_first_order_step(x_t, x0_pred, alpha_bar_t, alpha_bar_prev)
    if x0_pred_before.shape != x_t.shape:
        fail("x0_pred_before", x0_pred_before, f"expected the shape of x_t, {tuple(x_t.shape)}")
    _, c = dpmpp_2m_coefficients(alpha_bar_before, alpha_bar_t, alpha_bar_prev)
    d = x0_pred + c * (x0_pred - x0_pred_before)
    return dpmpp_first_order_step(x_t, d, alpha_bar_t, alpha_bar_prev)


# ------------------------------------------------------------------------------------------- samplers


def dpmpp_2m_sample(
    eps_model,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    timesteps,
    *,
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
):
    """DPM-Solver++(2M) from x_T over the descending ``timesteps`` (one ε-evaluation per step).

    The first and the last step (to ᾱ = 1) are first order. Deterministic (``generator`` is unused).
    Returns x_0 or (x_0, Trajectory).
    """
    memory: dict[str, object] = {"x0": None, "alpha_bar": None}

    def step(x, eps, t, t_prev):
        ab_t, ab_prev = alpha_bar_at(schedule, t), alpha_bar_at(schedule, t_prev)
        x0_pred = predict_x0(x, eps, ab_t)
        x_prev = dpmpp_2m_step(x, x0_pred, memory["x0"], memory["alpha_bar"], ab_t, ab_prev)
        memory["x0"], memory["alpha_bar"] = x0_pred, ab_t
        return x_prev, x0_pred

    return sample_loop(
        step,
        eps_model,
        x_T,
        schedule,
        timesteps,
        labels=labels,
        return_trajectory=return_trajectory,
        progress=progress,
        desc="DPM-Solver++(2M)",
    )


def euler_sample(
    eps_model,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    timesteps,
    *,
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
):
    """Euler on dx̃/dσ = ε from x_T over the descending ``timesteps`` (= DDIM η = 0; one evaluation per step).

    Deterministic (``generator`` is unused). Returns x_0 or (x_0, Trajectory).
    """

    def step(x, eps, t, t_prev):
        return euler_step(x, eps, alpha_bar_at(schedule, t), alpha_bar_at(schedule, t_prev))

    return sample_loop(
        step,
        eps_model,
        x_T,
        schedule,
        timesteps,
        labels=labels,
        return_trajectory=return_trajectory,
        progress=progress,
        desc="Euler (σ)",
    )


def heun_sample(
    eps_model,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    timesteps,
    *,
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
):
    """Heun on dx̃/dσ = ε from x_T over the descending ``timesteps``: 2N − 1 evaluations for N steps.

    The corrector evaluates ε at t_prev; the last step (to σ = 0) is an Euler step. Deterministic
    (``generator`` is unused). Returns x_0 or (x_0, Trajectory); ``x0_preds[i]`` is x̂₀ at ``timesteps[i]``.
    """
    x_checked, _ = check_sampler_inputs(x_T, schedule, timesteps)
    checked_labels = check_labels(eps_model, labels, x_checked.shape[0], x_checked.device)
    counter = {"step": 0}

    def step(x, eps, t, t_prev):
        i = counter["step"]
        counter["step"] += 1

        def eps_at_prev(x_pred):
            return call_eps_model(eps_model, x_pred, t_prev, labels=checked_labels, step=i)

        return heun_step(x, eps, alpha_bar_at(schedule, t), alpha_bar_at(schedule, t_prev), eps_at_prev)

    return sample_loop(
        step,
        eps_model,
        x_T,
        schedule,
        timesteps,
        labels=labels,
        return_trajectory=return_trajectory,
        progress=progress,
        desc="Heun (σ)",
    )


def solver_nfe(name: str, steps: int) -> int:
    """ε-model evaluations of ``steps`` steps: N for "euler", "dpmpp2m", "ddim", "ddpm"; 2N − 1 for "heun"
    (its last step, to σ = 0, skips the correction). The count lives in the sampler registry."""
    if name not in SAMPLERS:
        fail("name", name, f"one of {', '.join(map(repr, sorted(SAMPLERS)))}")
    return nfe(name, steps)


# ------------------------------------------------------------------------------------------- helpers


def _first_order_coefficients(alpha_bar_t: float, alpha_bar_prev: float) -> tuple[float, float]:
    """(s_prev/s_t, 1 − e^{−h}) for a step ᾱ_t → ᾱ_prev, exact at ᾱ_prev = 1 (h = ∞)."""
    s_ratio = math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t))
    h = half_log_snr(alpha_bar_prev) - half_log_snr(alpha_bar_t)
    if math.isinf(h):
        return s_ratio, 1.0  # e^{−h} = s_prev α_t / (α_prev s_t) = 0
    return s_ratio, -math.expm1(-h)


def _check_alpha_bar(name: str, value) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        fail(
            name,
            value,
            "expected a number in (0, 1] (ᾱ = 0 is σ = ∞ / λ = −∞, where an ε-model cannot predict x_0)",
        )
    return float(value)


def _check_step(x_t, other, alpha_bar_t, alpha_bar_prev, name: str = "eps") -> None:
    if not isinstance(other, torch.Tensor) or other.shape != x_t.shape:
        fail(name, other, f"expected a tensor shaped like x_t, {tuple(x_t.shape)}")
    ab_t = _check_alpha_bar("alpha_bar_t", alpha_bar_t)
    ab_prev = _check_alpha_bar("alpha_bar_prev", alpha_bar_prev)
    if ab_prev < ab_t:
        fail("alpha_bar_prev", ab_prev, f"must be ≥ alpha_bar_t={ab_t} (a step towards the data)")


register_sampler("dpmpp2m", dpmpp_2m_sample, ())
register_sampler("euler", euler_sample, ())
register_sampler("heun", heun_sample, (), lambda steps: 2 * steps - 1)
