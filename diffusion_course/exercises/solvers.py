r"""Checkers for notebook 08 (fast ODE solvers).

Each ``check_*`` takes the learner's function and returns a :class:`.core.Feedback`:

* ``check_euler_step(fn)``: ``fn(x_t, eps, alpha_bar_t, alpha_bar_prev) -> x_prev``, one Euler step of
  dx̃/dσ = ε in the σ frame: x̃ = x/√ᾱ, σ = √((1−ᾱ)/ᾱ), x_prev = √ᾱ_prev (x̃_t + (σ_prev − σ_t) ε);
* ``check_dpmpp_first_order_step(fn)``: ``fn(x_t, x0_pred, alpha_bar_t, alpha_bar_prev) -> x_prev``,
  x_prev = (s_prev/s_t) x_t + α_prev (1 − e^{−h}) x̂₀ with α = √ᾱ, s = √(1−ᾱ), h = λ_prev − λ_t, λ = log(α/s);
* ``check_dpmpp_2m_combination(fn)``: ``fn(x0_pred, x0_pred_before, alpha_bar_before, alpha_bar_t,
  alpha_bar_prev) -> D`` = (1 + 1/(2r)) x̂₀_t − 1/(2r) x̂₀_before, r = (λ_t − λ_before)/(λ_prev − λ_t);
* ``check_unipc_trapezoid(fn)``: ``fn(x_t, x0_pred, x0_pred_new, alpha_bar_t, alpha_bar_n) -> x_n``, UniPC's
  corrector after a first-order step, x_n = (s_n/s_t) x_t + α_n (1 − e^{−h}) (x̂₀_t + x̂₀_n)/2.

The ᾱ's are Python floats; the last step's ᾱ_prev = 1 (σ = 0, λ = +∞) is among the cases of the first two.
"""

from __future__ import annotations

import math

import torch

from ..sampling.solvers import dpmpp_2m_coefficients, dpmpp_first_order_step, euler_step, half_log_snr
from ..sampling.unipc import unipc_correct
from .core import Case, Diagnosis, Feedback, check_function

# (ᾱ_t, ᾱ_prev): the first step of the linear schedule, a middle step, a short step and the last step
STEP_PAIRS = [(4.04e-5, 0.0219), (0.12, 0.55), (0.9, 0.93), (0.97, 1.0)]

INFINITE_LAMBDA_HINT = (
    "Hint: on the last step ᾱ_prev = 1, so 1 − ᾱ_prev = 0, σ_prev = 0 and λ_prev = +∞. Write the formula "
    "with quantities that stay finite there: e.g. e^(−h) = (s_prev·α_t)/(α_prev·s_t) with s = √(1−ᾱ), "
    "which is 0 on the last step, instead of computing λ_prev itself."
)


def _cases(second: str) -> list[Case]:
    g = torch.Generator().manual_seed(0)
    cases = []
    for ab_t, ab_prev in STEP_PAIRS:
        x_t = torch.randn(5, 3, generator=g, dtype=torch.float64)
        other = torch.randn(5, 3, generator=g, dtype=torch.float64)
        inputs = {"x_t": x_t, second: other, "alpha_bar_t": ab_t, "alpha_bar_prev": ab_prev}
        label = f"x_t and {second} of shape (5, 3), alpha_bar_t = {ab_t}, alpha_bar_prev = {ab_prev}"
        if ab_prev == 1.0:
            label += " (the last step, to σ = 0)"
        cases.append(Case(inputs, label=label))
    return cases


def _nonfinite_on_last_step(out, expected, case) -> bool:
    return case.inputs["alpha_bar_prev"] == 1.0 and not bool(torch.isfinite(out).all())


# ---------------------------------------------------------------- Euler in σ


def _euler_variant(scale_in: bool = True, scale_out: bool = True, sigma=None, sign: float = 1.0):
    sigma = sigma or (lambda ab: math.sqrt((1 - ab) / ab))

    def variant(x_t, eps, ab_t, ab_prev):
        x = x_t / math.sqrt(ab_t) if scale_in else x_t
        x = x + sign * (sigma(ab_prev) - sigma(ab_t)) * eps
        return math.sqrt(ab_prev) * x if scale_out else x

    return variant


def check_euler_step(fn) -> Feedback:
    """Check ``fn(x_t, eps, alpha_bar_t, alpha_bar_prev)`` = √ᾱ_prev (x_t/√ᾱ_t + (σ_prev − σ_t) ε)."""
    return check_function(
        fn,
        name="euler_step",
        cases=lambda: _cases("eps"),
        reference=lambda x, e, a, b: euler_step(x, e, a, b)[0],
        diagnoses=[
            (
                _euler_variant(scale_in=False, scale_out=False),
                "You added (σ_prev − σ_t)·ε to x_t itself. The ODE dx̃/dσ = ε holds for the rescaled "
                "x̃ = x/√ᾱ: divide x_t by √ᾱ_t first, step, then multiply by √ᾱ_prev to get back to x.",
            ),
            (
                _euler_variant(scale_in=False),
                "Missing /√ᾱ_t: the step is taken on x̃_t = x_t/√ᾱ_t, not on x_t.",
            ),
            (
                _euler_variant(scale_out=False),
                "You returned x̃_prev = x_prev/√ᾱ_prev, the state in the σ frame: multiply by √ᾱ_prev to come "
                "back to x (the samplers' variable).",
            ),
            (
                _euler_variant(sigma=lambda ab: math.sqrt(1 - ab)),
                "Your σ is √(1 − ᾱ), the noise standard deviation of x. In the x̃ = x/√ᾱ frame the noise "
                "level is σ = √((1 − ᾱ)/ᾱ) (`schedule.sigmas`): it runs from about 157 at t = 999 down to 0.",
            ),
            (
                _euler_variant(sigma=lambda ab: (1 - ab) / ab),
                "You used σ² = (1 − ᾱ)/ᾱ, a variance, as the step variable: the ODE is in σ = √((1 − ᾱ)/ᾱ).",
            ),
            (
                _euler_variant(sign=-1.0),
                "The step has the wrong sign: σ decreases (σ_prev < σ_t), so x̃_prev = x̃_t + (σ_prev − σ_t)·ε "
                "removes noise. You added it.",
            ),
            (
                lambda x, e, a, b: euler_step(x, e, a, b)[1],
                "You returned x̂₀ = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t, the prediction; the step goes only to σ_prev "
                "(they agree only on the last step, to σ = 0).",
            ),
            Diagnosis(
                "Your step gives NaN or inf on the last step (ᾱ_prev = 1). There σ_prev = √((1 − 1)/1) = 0: "
                "compute σ as √((1 − ᾱ)/ᾱ), which is finite at ᾱ = 1.",
                when=_nonfinite_on_last_step,
            ),
        ],
    )


# ---------------------------------------------------------------- DPM-Solver++, first order


def _dpm_variant(h_fn=None, x0_coef=None, ratio=None):
    """x_prev = ratio·x_t + x0_coef·x̂₀ with a possibly wrong h."""

    def h_lambda(a, b):
        return half_log_snr(b) - half_log_snr(a)

    h_fn = h_fn or h_lambda

    def variant(x_t, x0, a, b):
        h = h_fn(a, b)
        coef = x0_coef(a, b, h) if x0_coef else math.sqrt(b) * -math.expm1(-h)
        r = ratio(a, b) if ratio else math.sqrt((1 - b) / (1 - a))
        return r * x_t + coef * x0

    return variant


def _sigma_vp(ab):
    return math.sqrt((1 - ab) / ab)


def check_dpmpp_first_order_step(fn) -> Feedback:
    """Check ``fn(x_t, x0_pred, alpha_bar_t, alpha_bar_prev)``: (s_prev/s_t) x_t − α_prev (e^{−h} − 1) x̂₀."""
    return check_function(
        fn,
        name="dpmpp_first_order_step",
        cases=lambda: _cases("x0_pred"),
        reference=dpmpp_first_order_step,
        diagnoses=[
            (
                _dpm_variant(h_fn=lambda a, b: _sigma_vp(a) - _sigma_vp(b)),
                "Your step size h is a difference of σ's. DPM-Solver works in λ = log(√ᾱ/√(1−ᾱ)) (half the "
                "log-SNR, λ = −log σ): h = λ_prev − λ_t.",
            ),
            (
                _dpm_variant(h_fn=lambda a, b: 2 * (half_log_snr(b) - half_log_snr(a))),
                "Your h is twice too large: you used the full log-SNR, log(ᾱ/(1−ᾱ)). λ is half of it, "
                "λ = log(√ᾱ/√(1−ᾱ)).",
            ),
            (
                _dpm_variant(x0_coef=lambda a, b, h: -math.expm1(-h)),
                "Missing α_prev = √ᾱ_prev in front of (1 − e^{−h}) x̂₀: the clean part of x_prev is "
                "√ᾱ_prev·x̂₀ when h is large.",
            ),
            (
                _dpm_variant(x0_coef=lambda a, b, h: math.sqrt(b) * -math.expm1(h)),
                "Sign error in the exponent: the weight of x̂₀ is α_prev (1 − e^{−h}), between 0 and α_prev "
                "for h > 0; you used e^{+h}.",
            ),
            (
                _dpm_variant(ratio=lambda a, b: math.sqrt((1 - a) / (1 - b)) if b < 1 else math.inf),
                "The ratio on x_t is upside down: x_t is multiplied by s_prev/s_t = √(1−ᾱ_prev)/√(1−ᾱ_t), "
                "which is ≤ 1.",
            ),
            (
                _dpm_variant(ratio=lambda a, b: math.sqrt(b / a)),
                "The factor on x_t should be s_prev/s_t = √(1−ᾱ_prev)/√(1−ᾱ_t), the ratio of the noise "
                "standard deviations (s = √(1−ᾱ)); you used the ratio of the signal coefficients √ᾱ.",
            ),
            Diagnosis(
                "Your step gives NaN or inf on the last step (ᾱ_prev = 1, so s_prev = 0 and λ_prev = +∞). "
                "Write e^(−h) = (s_prev·α_t)/(α_prev·s_t) with s = √(1−ᾱ): it is 0 on the last step, where "
                "the step returns x̂₀.",
                when=_nonfinite_on_last_step,
            ),
        ],
        error_hints=[
            ("division by zero", INFINITE_LAMBDA_HINT),
            ("math domain error", INFINITE_LAMBDA_HINT),
        ],
    )


# ---------------------------------------------------------------- the 2M combination

COMBINATION_CASES = [(0.004, 0.05, 0.3), (0.2, 0.5, 0.6), (0.5, 0.9, 0.99)]


def _combination_cases() -> list[Case]:
    g = torch.Generator().manual_seed(1)
    cases = []
    for ab_before, ab_t, ab_prev in COMBINATION_CASES:
        x0, x0_before = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(2))
        inputs = {
            "x0_pred": x0,
            "x0_pred_before": x0_before,
            "alpha_bar_before": ab_before,
            "alpha_bar_t": ab_t,
            "alpha_bar_prev": ab_prev,
        }
        label = f"x̂₀'s of shape (4, 3), ᾱ_before = {ab_before}, ᾱ_t = {ab_t}, ᾱ_prev = {ab_prev}"
        cases.append(Case(inputs, label=label))
    return cases


def _combination(r_fn, form="standard"):
    def variant(x0, x0_before, a0, a1, a2):
        r = r_fn(a0, a1, a2)
        if form == "no_two":
            return (1 + 1 / r) * x0 - (1 / r) * x0_before
        if form == "swapped":
            return (1 + 1 / (2 * r)) * x0_before - 1 / (2 * r) * x0
        if form == "plus":
            return (1 + 1 / (2 * r)) * x0 + 1 / (2 * r) * x0_before
        return (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_before

    return variant


def _r_lambda(a0, a1, a2):
    return dpmpp_2m_coefficients(a0, a1, a2)[0]


def _r_sigma(a0, a1, a2):
    return (_sigma_vp(a0) - _sigma_vp(a1)) / (_sigma_vp(a1) - _sigma_vp(a2))


def check_dpmpp_2m_combination(fn) -> Feedback:
    """Check ``fn(x0_pred, x0_pred_before, ab_before, ab_t, ab_prev)`` = (1 + 1/2r) x̂₀ − 1/(2r) x̂₀_before."""
    return check_function(
        fn,
        name="dpmpp_2m_combination",
        cases=_combination_cases,
        reference=_combination(_r_lambda),
        diagnoses=[
            (
                _combination(lambda a0, a1, a2: 1 / _r_lambda(a0, a1, a2)),
                "Your r is upside down: r = h_before / h, the previous step's length in λ over this step's "
                "(h_before = λ_t − λ_before, h = λ_prev − λ_t).",
            ),
            (
                _combination(_r_sigma),
                "Your r is a ratio of σ differences. DPM-Solver extrapolates x̂₀ linearly in λ (half the "
                "log-SNR): r = (λ_t − λ_before)/(λ_prev − λ_t) with λ = log(√ᾱ/√(1−ᾱ)).",
            ),
            (
                _combination(lambda a0, a1, a2: (a1 - a0) / (a2 - a1)),
                "Your r is a ratio of ᾱ differences: the step sizes are measured in λ = log(√ᾱ/√(1−ᾱ)).",
            ),
            (
                _combination(lambda a0, a1, a2: 1.0),
                "You used r = 1, as if all steps had the same length in λ. They do not: "
                "r = (λ_t − λ_before)/(λ_prev − λ_t).",
            ),
            (
                _combination(_r_lambda, form="no_two"),
                "Missing the factor 2: the weights are 1 + 1/(2r) and −1/(2r) (the midpoint of the step, "
                "h/2 ahead, is where the linear extrapolation is evaluated).",
            ),
            (
                _combination(_r_lambda, form="swapped"),
                "The two predictions are swapped: the newer x̂₀ (at t) gets the weight 1 + 1/(2r), the older "
                "one (x̂₀_before) gets −1/(2r).",
            ),
            (
                _combination(_r_lambda, form="plus"),
                "Sign error: D = x̂₀_t + (x̂₀_t − x̂₀_before)/(2r) extrapolates past x̂₀_t, so x̂₀_before enters "
                "with a minus sign.",
            ),
            (
                lambda x0, x0b, a0, a1, a2: x0,
                "You returned x̂₀_t unchanged: that is the first-order (DDIM) step. The 2M step adds the "
                "correction (x̂₀_t − x̂₀_before)/(2r).",
            ),
        ],
    )


# ---------------------------------------------------------------- UniPC's first corrector

TRAPEZOID_PAIRS = [(4.04e-5, 0.0219), (0.12, 0.55), (0.9, 0.93)]


def _trapezoid_cases() -> list[Case]:
    g = torch.Generator().manual_seed(2)
    cases = []
    for ab_t, ab_n in TRAPEZOID_PAIRS:
        x_t, x0, x0_new = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(3))
        inputs = {"x_t": x_t, "x0_pred": x0, "x0_pred_new": x0_new, "alpha_bar_t": ab_t, "alpha_bar_n": ab_n}
        cases.append(Case(inputs, label=f"tensors of shape (4, 3), ᾱ_t = {ab_t}, ᾱ_n = {ab_n}"))
    return cases


def _trapezoid_reference(x_t, x0, x0_new, ab_t, ab_n):
    return unipc_correct(x_t, [half_log_snr(ab_t)], [x0], ab_t, ab_n, x0_new, order=1)


def _trapezoid_variant(weights=(0.5, 0.5), ratio="s", sign=1.0):
    def variant(x_t, x0, x0_new, ab_t, ab_n):
        one_minus = -math.expm1(-(half_log_snr(ab_n) - half_log_snr(ab_t)))
        if ratio == "s":
            scale = math.sqrt((1 - ab_n) / (1 - ab_t))
        else:
            scale = math.sqrt(ab_n / ab_t)
        d = weights[0] * x0 + weights[1] * x0_new
        return scale * x_t + sign * math.sqrt(ab_n) * one_minus * d

    return variant


def check_unipc_trapezoid(fn) -> Feedback:
    """Check ``fn(x_t, x0_pred, x0_pred_new, ab_t, ab_n)``:
    x_n = (s_n/s_t) x_t + α_n (1 − e^{−h}) (x̂₀_t + x̂₀_n)/2."""
    return check_function(
        fn,
        name="unipc_trapezoid",
        cases=_trapezoid_cases,
        reference=_trapezoid_reference,
        diagnoses=[
            (
                _trapezoid_variant(weights=(1.0, 0.0)),
                "You used only x̂₀ at the start of the step: that is the predictor (the DDIM step) again. "
                "The corrector averages it with x̂₀_n, the prediction at the end of the step.",
            ),
            (
                _trapezoid_variant(weights=(0.0, 1.0)),
                "You used only x̂₀_n, the prediction at the end of the step (an implicit-Euler-like step). "
                "The corrector averages the two predictions: (x̂₀_t + x̂₀_n)/2.",
            ),
            (
                _trapezoid_variant(weights=(1.0, 1.0)),
                "The two predictions are added, not averaged: the weights are ½ each.",
            ),
            (
                _trapezoid_variant(ratio="alpha"),
                "The linear part scales x_t by √ᾱ_n/√ᾱ_t; in the data-prediction form it is s_n/s_t with "
                "s = √(1−ᾱ): x_n = (s_n/s_t) x_t + α_n (1 − e^{−h}) (x̂₀_t + x̂₀_n)/2.",
            ),
            (
                _trapezoid_variant(sign=-1.0),
                "Sign error: 1 − e^{−h} is positive for a step towards the data (h > 0), and the x̂₀ term "
                "is added.",
            ),
        ],
    )
