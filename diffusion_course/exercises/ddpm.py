r"""Checkers for notebook 03 (DDPM sampling).

Each ``check_*`` takes the learner's function and returns a :class:`.core.Feedback`; t is one int for the
whole batch, as in a sampler, and ᾱ_{−1} = 1 (the clean data, reached after the step at t = 0):

* ``check_posterior_mean(fn)``: ``fn(x_t, x0, t, schedule) -> μ̃_t``, the mean of q(x_{t−1} | x_t, x_0),
  μ̃_t = √ᾱ_{t−1} β_t/(1−ᾱ_t) · x_0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) · x_t;
* ``check_x0_from_eps(fn)``: ``fn(x_t, eps, t, schedule) -> x̂_0`` = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t;
* ``check_ddpm_step(fn)``: ``fn(x_t, eps, t, noise, schedule) -> x_{t−1}``, the reverse step
  x_{t−1} = (x_t − β_t/√(1−ᾱ_t) · ε)/√α_t + σ_t z with σ_t² = β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) · β_t
  (so no noise at t = 0, where β̃_0 = 0).

The references are the package's :func:`~diffusion_course.sampling.ddpm_posterior`,
:func:`~diffusion_course.sampling.predict_x0` and :func:`~diffusion_course.sampling.ddpm_step`.
"""

from __future__ import annotations

import math

import torch

from ..sampling import ddpm_posterior, ddpm_step, predict_x0
from ..schedules import NoiseSchedule, cosine_schedule, linear_schedule
from .core import Case, Diagnosis, Feedback, check_function

SHAPE = (3, 1, 5, 7)  # B differs from H and W, so a broadcasting slip raises instead of passing by luck

WRAP_HINT = (
    "If you took ᾱ_{t−1} as `schedule.alpha_bar[t - 1]`, at t = 0 Python's index −1 picks ᾱ_{T−1}, the "
    "noisiest step; use `schedule.alpha_bar_prev[t]` (it holds ᾱ_{−1} = 1, the clean data) or treat t = 0 "
    "separately."
)


def _coefs(s: NoiseSchedule, t: int) -> dict[str, float]:
    """ᾱ_t, ᾱ_{t−1} (1 at t = 0), α_t, β_t, β̃_t, and ᾱ_{t−1} as a wrapping ``alpha_bar[t − 1]`` gives it."""
    ab, a, b = float(s.alpha_bar[t]), float(s.alphas[t]), float(s.betas[t])
    ab_prev = float(s.alpha_bar_prev[t])
    return {
        "ab": ab,
        "ab_prev": ab_prev,
        "ab_wrap": float(s.alpha_bar[t - 1]),
        "a": a,
        "b": b,
        "b_tilde": (1 - ab_prev) / (1 - ab) * b,
    }


def _cases(names: tuple[str, ...], ts: list[tuple[str, int]]) -> list[Case]:
    g = torch.Generator().manual_seed(0)
    schedules = {"linear": linear_schedule(1000), "cosine": cosine_schedule(1000)}
    cases = []
    for schedule_name, t in ts:
        s = schedules[schedule_name]
        tensors = {name: torch.randn(SHAPE, generator=g) for name in names}
        if "x0" in tensors:
            tensors["x0"] = (torch.rand(SHAPE, generator=g) * 2 - 1).clamp(-1, 1)
        inputs = {}
        for name in names:
            inputs[name] = t if name == "t" else s if name == "schedule" else tensors[name]
        tensor_names = ", ".join(n for n in names if n not in ("t", "schedule"))
        label = f"{tensor_names} of shape {SHAPE}, t = {t}, {s.name} schedule (T={s.T})"
        cases.append(Case(inputs, label=label))
    return cases


def _is_fresh_noise(implied: torch.Tensor, given: torch.Tensor, *others: torch.Tensor) -> bool:
    """``implied`` has about unit spread and is unrelated to the given noise and to ``others`` (the other
    inputs): a new torch.randn draw."""
    implied = implied.reshape(-1).double()
    if not torch.isfinite(implied).all() or not 0.7 < float(implied.std()) < 1.3:
        return False
    for other in (given, *others):
        correlation = float(torch.corrcoef(torch.stack([implied, other.reshape(-1).double()]))[0, 1])
        if abs(correlation) > 0.5:
            return False
    return True


# ---------------------------------------------------------------- the posterior mean μ̃_t(x_t, x_0)


def _posterior_mean_variant(x0_coef, xt_coef):
    def variant(x_t, x0, t, s):
        c = _coefs(s, t)
        return x0_coef(c) * x0 + xt_coef(c) * x_t

    return variant


def check_posterior_mean(fn) -> Feedback:
    """Check ``fn(x_t, x0, t, schedule) -> μ̃_t`` = √ᾱ_{t−1} β_t/(1−ᾱ_t) x_0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) x_t."""
    right_x0 = lambda c: math.sqrt(c["ab_prev"]) * c["b"] / (1 - c["ab"])
    right_xt = lambda c: math.sqrt(c["a"]) * (1 - c["ab_prev"]) / (1 - c["ab"])
    return check_function(
        fn,
        name="posterior_mean",
        cases=lambda: _cases(
            ("x_t", "x0", "t", "schedule"), [("linear", 500), ("linear", 0), ("cosine", 20)]
        ),
        reference=lambda x_t, x0, t, s: ddpm_posterior(x_t, x0, t, t - 1, s)[0],
        diagnoses=[
            (
                _posterior_mean_variant(right_xt, right_x0),
                "The two coefficients are swapped: x_0 is weighted by √ᾱ_{t−1} β_t/(1−ᾱ_t) and x_t by "
                "√α_t (1−ᾱ_{t−1})/(1−ᾱ_t).",
            ),
            (
                _posterior_mean_variant(
                    right_x0, lambda c: math.sqrt(c["ab"]) * (1 - c["ab_prev"]) / (1 - c["ab"])
                ),
                "The weight of x_t uses √ᾱ_t; it is √α_t (one step, `schedule.alphas[t]`): x_t came from "
                "x_{t−1} by a single step of the chain.",
            ),
            (
                _posterior_mean_variant(
                    lambda c: math.sqrt(c["ab"]) * c["b"] / (1 - c["ab"]), lambda c: math.sqrt(c["a"])
                ),
                "Off by one: you used ᾱ_t where ᾱ_{t−1} belongs (√ᾱ_{t−1} on x_0, 1 − ᾱ_{t−1} on x_t). The "
                "mean of x_{t−1} given x_0 is √ᾱ_{t−1} x_0: `schedule.alpha_bar_prev[t]`.",
            ),
            (
                _posterior_mean_variant(
                    lambda c: c["ab_prev"] * c["b"] / (1 - c["ab"]),
                    lambda c: c["a"] * (1 - c["ab_prev"]) / (1 - c["ab"]),
                ),
                "Missing square roots: the coefficients are √ᾱ_{t−1} and √α_t (standard-deviation scale), "
                "not ᾱ_{t−1} and α_t.",
            ),
            (
                _posterior_mean_variant(
                    lambda c: math.sqrt(c["ab_prev"]) * c["b"] / (1 - c["a"]),
                    lambda c: math.sqrt(c["a"]) * (1 - c["ab_prev"]) / (1 - c["a"]),
                ),
                "Your denominators are 1 − α_t = β_t; both coefficients divide by 1 − ᾱ_t (`alpha_bar`), the "
                "noise variance of x_t given x_0.",
            ),
            (
                _posterior_mean_variant(
                    lambda c: math.sqrt(c["ab_wrap"]) * c["b"] / (1 - c["ab"]),
                    lambda c: math.sqrt(c["a"]) * (1 - c["ab_wrap"]) / (1 - c["ab"]),
                ),
                "Wrong at t = 0 only: there ᾱ_{t−1} = ᾱ_{−1} = 1, so μ̃_0 = x_0 exactly. " + WRAP_HINT,
            ),
        ],
    )


# ---------------------------------------------------------------- x̂_0 from ε


def _x0_variant(signal, noise_coef, order="divide_all"):
    """(x_t − noise_coef·ε) / signal, or x_t / signal − noise_coef·ε with ``order="divide_x_only"``."""

    def variant(x_t, eps, t, s):
        c = _coefs(s, t)
        if order == "divide_x_only":
            return x_t / signal(c) - noise_coef(c) * eps
        return (x_t - noise_coef(c) * eps) / signal(c)

    return variant


def check_x0_from_eps(fn) -> Feedback:
    """Check ``fn(x_t, eps, t, schedule) -> x̂_0`` = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t."""
    sqrt_ab = lambda c: math.sqrt(c["ab"])
    sqrt_1m_ab = lambda c: math.sqrt(1 - c["ab"])
    return check_function(
        fn,
        name="x0_from_eps",
        cases=lambda: _cases(
            ("x_t", "eps", "t", "schedule"), [("linear", 500), ("linear", 999), ("cosine", 0)]
        ),
        reference=lambda x_t, eps, t, s: predict_x0(x_t, eps, float(s.alpha_bar[t])),
        diagnoses=[
            (
                _x0_variant(lambda c: math.sqrt(c["a"]), lambda c: math.sqrt(1 - c["a"])),
                "You used α_t (`schedule.alphas`) where ᾱ_t (`schedule.alpha_bar`) belongs: x_t holds "
                "√ᾱ_t of the clean image after all t+1 steps, not √α_t of one step.",
            ),
            (
                _x0_variant(sqrt_ab, lambda c: 1 - c["ab"]),
                "The noise in x_t is √(1−ᾱ_t)·ε: subtract √(1−ᾱ_t)·ε, not (1−ᾱ_t)·ε (that is its variance).",
            ),
            (
                _x0_variant(lambda c: c["ab"], sqrt_1m_ab),
                "Divide by √ᾱ_t, not by ᾱ_t: x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε.",
            ),
            (
                _x0_variant(lambda c: 1.0, sqrt_1m_ab),
                "You removed the noise but did not undo the shrinking: divide (x_t − √(1−ᾱ_t) ε) by √ᾱ_t.",
            ),
            (
                _x0_variant(sqrt_ab, sqrt_1m_ab, order="divide_x_only"),
                "Brackets: only x_t is divided by √ᾱ_t in your code; the whole of (x_t − √(1−ᾱ_t) ε) must "
                "be divided.",
            ),
            (
                _x0_variant(sqrt_ab, lambda c: -math.sqrt(1 - c["ab"])),
                "Sign: the noise was added to make x_t, so subtract it: x̂_0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t.",
            ),
            (
                _x0_variant(sqrt_1m_ab, sqrt_ab),
                "√ᾱ_t and √(1−ᾱ_t) are swapped: x̂_0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t (what you wrote is the "
                "formula for ε given x_0, with the roles exchanged).",
            ),
            (
                _x0_variant(lambda c: math.sqrt(c["ab_prev"]), lambda c: math.sqrt(1 - c["ab_prev"])),
                "Off by one: you used ᾱ_{t−1}; x_t was made with ᾱ_t = `schedule.alpha_bar[t]`.",
            ),
        ],
    )


# ---------------------------------------------------------------- the reverse step x_t → x_{t−1}


def _step_variant(mean_fn, sigma_fn):
    """x_{t−1} = mean_fn(x_t, ε, c) + sigma_fn(c) z."""

    def variant(x_t, eps, t, noise, s):
        c = _coefs(s, t)
        return mean_fn(x_t, eps, c) + sigma_fn(c) * noise

    return variant


def _eps_mean(signal="a", noise_coef=None, sign=1.0, divide_x_only=False):
    """μ = (x_t − sign·noise_coef(c)·ε)/√c[signal]; by default noise_coef = β_t/√(1−ᾱ_t)."""
    noise_coef = noise_coef or (lambda c: c["b"] / math.sqrt(1 - c["ab"]))

    def mean(x_t, eps, c):
        if divide_x_only:
            return x_t / math.sqrt(c[signal]) - sign * noise_coef(c) * eps
        return (x_t - sign * noise_coef(c) * eps) / math.sqrt(c[signal])

    return mean


def _noise_at_last_step(out: torch.Tensor, ref: torch.Tensor, case: Case) -> bool:
    if case.inputs["t"] != 0:
        return False
    extra, noise = (out - ref).reshape(-1), case.inputs["noise"].double().reshape(-1)
    if not torch.isfinite(extra).all() or float(extra.abs().max()) == 0.0:
        return False
    return float(torch.corrcoef(torch.stack([extra, noise]))[0, 1]) > 0.9


def _fresh_step_noise(out: torch.Tensor, ref: torch.Tensor, case: Case) -> bool:
    x_t, eps, t, noise, s = case.inputs.values()
    if t == 0:
        return False
    c = _coefs(s, t)
    mean = _eps_mean()(x_t.double(), eps.double(), c)
    for var in (c["b_tilde"], c["b"]):
        if _is_fresh_noise((out - mean) / math.sqrt(var), noise, x_t, eps):
            return True
    return False


def check_ddpm_step(fn) -> Feedback:
    """Check ``fn(x_t, eps, t, noise, schedule) -> x_{t−1}`` = (x_t − β_t/√(1−ᾱ_t) ε)/√α_t + √β̃_t z."""
    sqrt_bt = lambda c: math.sqrt(c["b_tilde"])
    return check_function(
        fn,
        name="ddpm_step",
        cases=lambda: _cases(
            ("x_t", "eps", "t", "noise", "schedule"),
            [("linear", 500), ("linear", 1), ("linear", 0), ("cosine", 700)],
        ),
        reference=lambda x_t, eps, t, noise, s: ddpm_step(x_t, eps, t, t - 1, s, noise=noise)[0],
        diagnoses=[
            (
                _step_variant(_eps_mean(noise_coef=lambda c: c["b"] / (1 - c["ab"])), sqrt_bt),
                "The mean divides β_t by (1 − ᾱ_t); it must be √(1 − ᾱ_t): "
                "μ = (x_t − β_t/√(1−ᾱ_t) · ε)/√α_t. (The noise in x_t is √(1−ᾱ_t)·ε, so ε enters with "
                "its standard deviation, not its variance.)",
            ),
            (
                _step_variant(_eps_mean(signal="ab"), sqrt_bt),
                "You divided by √ᾱ_t; the mean divides by √α_t (one step back, `schedule.alphas[t]`): "
                "μ = (x_t − β_t/√(1−ᾱ_t) · ε)/√α_t.",
            ),
            (
                _step_variant(_eps_mean(noise_coef=lambda c: c["b"] / math.sqrt(1 - c["a"])), sqrt_bt),
                "Your ε coefficient is β_t/√(1 − α_t) = √β_t: the denominator uses ᾱ_t (`alpha_bar`), "
                "β_t/√(1−ᾱ_t).",
            ),
            Diagnosis(
                "At t = 0, the last step (to the clean image), your function adds noise. There "
                "ᾱ_{t−1} = ᾱ_{−1} = 1, so β̃_0 = 0 and the step returns its mean. " + WRAP_HINT,
                when=_noise_at_last_step,
            ),
            (
                _step_variant(_eps_mean(), lambda c: math.sqrt(c["b"])),
                "You used σ_t² = β_t. That is the other choice of Ho et al. (the upper bound, exact when "
                "x_0 ~ N(0, I)); this exercise asks for σ_t² = β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) · β_t, the "
                "posterior variance (the lower bound), which is 0 at t = 0.",
            ),
            (
                _step_variant(_eps_mean(), lambda c: c["b_tilde"]),
                "The noise is scaled by β̃_t, its variance: scale z by the standard deviation √β̃_t.",
            ),
            (
                _step_variant(_eps_mean(), lambda c: 0.0),
                "There is no noise in your step: add σ_t·z with σ_t = √β̃_t and z the `noise` argument "
                "(only at t = 0 is σ_0 = 0). Without it DDPM samples come out too smooth.",
            ),
            (
                _step_variant(_eps_mean(sign=-1.0), sqrt_bt),
                "Sign: the mean subtracts the predicted noise, μ = (x_t − β_t/√(1−ᾱ_t) · ε)/√α_t.",
            ),
            (
                _step_variant(_eps_mean(divide_x_only=True), sqrt_bt),
                "Brackets: only x_t is divided by √α_t in your code; the whole of (x_t − β_t/√(1−ᾱ_t) · ε) "
                "must be.",
            ),
            Diagnosis(
                "Your noise is not the `noise` argument: use the z that is passed in (do not draw a new one "
                "with torch.randn), so the step is reproducible and can be checked.",
                when=_fresh_step_noise,
            ),
        ],
    )
