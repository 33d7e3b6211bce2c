r"""Checkers for notebook 01 (the forward process).

Each ``check_*`` takes the learner's function and returns a :class:`.core.Feedback`:

* ``check_alpha_bar(fn)``: ``fn(betas) -> alpha_bar`` with ᾱ_t = ∏_{s=0}^{t} (1 − β_s);
* ``check_q_sample(fn)``: ``fn(x0, t, noise, schedule) -> x_t`` with x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε;
* ``check_snr(fn)``: ``fn(alpha_bar) -> snr`` with SNR(t) = ᾱ_t / (1 − ᾱ_t).
"""

from __future__ import annotations

import torch

from ..schedules import cosine_schedule, linear_schedule
from .core import Case, Diagnosis, Feedback, check_function

BROADCAST_HINT = (
    "Hint: `schedule.alpha_bar[t]` has shape (B,); reshape it to (B, 1, 1, 1), e.g. with "
    "`.view(-1, 1, 1, 1)`, so that each image is scaled by its own coefficient."
)
INDEX_HINT = "Hint: t runs over 0..T−1 and `schedule.alpha_bar` has T entries: index it with t itself."


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# ---------------------------------------------------------------- ᾱ_t from β_t


def _alpha_bar_cases() -> list[Case]:
    return [
        Case(
            {"betas": linear_schedule(1000).betas},
            label="betas = linear_schedule(1000).betas (float64, T=1000)",
        ),
        Case(
            {"betas": torch.tensor([0.1, 0.2, 0.5, 0.9])},
            label="betas = tensor([0.1, 0.2, 0.5, 0.9]) (float32)",
        ),
    ]


def _alpha_bar(betas: torch.Tensor) -> torch.Tensor:
    return torch.cumprod(1 - betas, dim=0)


def check_alpha_bar(fn) -> Feedback:
    """Check ``fn(betas) -> alpha_bar``: ᾱ_t = ∏_{s=0}^{t} α_s, α_s = 1 − β_s (betas' shape and dtype)."""
    one = lambda b: torch.ones(1, dtype=b.dtype)
    return check_function(
        fn,
        name="alpha_bar",
        cases=_alpha_bar_cases,
        reference=_alpha_bar,
        diagnoses=[
            (
                lambda b: 1 - b,
                "You returned α_t = 1 − β_t. ᾱ_t is their running product, ᾱ_t = α_0·α_1·…·α_t: "
                "use `torch.cumprod(..., dim=0)`.",
            ),
            (
                lambda b: torch.cumsum(1 - b, dim=0),
                "You added up the α's (cumsum), so your ᾱ_t grows past 1; ᾱ_t is their product and falls "
                "from ≈1 towards 0: use `torch.cumprod`.",
            ),
            (
                lambda b: torch.cumprod(b, dim=0),
                "You multiplied the β's: ᾱ_t is the product of the α_s = 1 − β_s.",
            ),
            (lambda b: b, "You returned the betas unchanged: compute α = 1 − β, then its running product."),
            (
                lambda b: 1 - torch.cumsum(b, dim=0),
                "You used 1 − Σ_s β_s: that is only the first-order approximation of ∏_s (1 − β_s), close "
                "while the β's are tiny and wrong later. Use the product.",
            ),
            (
                lambda b: torch.cat([one(b), _alpha_bar(b)]),
                "Your result has T+1 entries starting with 1: that is ᾱ_{t−1} with ᾱ_{−1} = 1 put in front. "
                "Here t runs over 0..T−1 and ᾱ_0 = 1 − β_0 already includes the first step: return T values.",
            ),
            (
                lambda b: torch.cat([one(b), _alpha_bar(b)[:-1]]),
                "Your values are shifted by one: you returned ᾱ_{t−1} (starting at 1). ᾱ_0 = α_0 = 1 − β_0: "
                "the product includes step t itself.",
            ),
            (
                lambda b: _alpha_bar(b).sqrt(),
                "You returned √ᾱ_t, the signal coefficient; the exercise asks for ᾱ_t itself.",
            ),
        ],
    )


# ---------------------------------------------------------------- q(x_t | x_0)


def _q_sample_cases() -> list[Case]:
    g = _generator()
    cases = []
    for schedule, t, shape in [
        (linear_schedule(1000), [0, 250, 500, 999], (4, 1, 8, 8)),
        (cosine_schedule(1000), [999, 1, 600], (3, 2, 6, 6)),
    ]:
        x0 = torch.rand(shape, generator=g) * 2 - 1
        noise = torch.randn(shape, generator=g)
        inputs = {"x0": x0, "t": torch.tensor(t), "noise": noise, "schedule": schedule}
        label = f"x0 and noise of shape {shape}, t = {t}, {schedule.name} schedule (T={schedule.T})"
        cases.append(Case(inputs, label=label))
    return cases


def _mix(signal_coef, noise_coef):
    """A q_sample variant x_t = signal_coef(s, t, x0)·x0 + noise_coef(s, t, x0)·ε (None: no noise term)."""

    def variant(x0, t, noise, s):
        out = signal_coef(s, t, x0) * x0
        return out if noise_coef is None else out + noise_coef(s, t, x0) * noise

    return variant


def _alpha_bar_at(s, t, x0):
    return s.gather(s.alpha_bar, t, x0)


def _fresh_noise(out: torch.Tensor, expected: torch.Tensor, case: Case) -> bool:
    """The learner's noise part has unit variance but is not the ε that was passed in."""
    x0, t, noise, s = (case.inputs[k] for k in ("x0", "t", "noise", "schedule"))
    ab = _alpha_bar_at(s, t, x0).double()
    keep = (1 - ab).expand_as(x0) > 0.01
    implied = ((out - ab.sqrt() * x0.double()) / (1 - ab).sqrt())[keep]
    given = noise.double()[keep]
    unit_std = 0.7 < float(implied.std()) < 1.3
    correlation = float(torch.corrcoef(torch.stack([implied, given]))[0, 1])
    return unit_std and abs(correlation) < 0.5


def check_q_sample(fn) -> Feedback:
    """Check ``fn(x0, t, noise, schedule) -> x_t`` = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, one t per batch element."""
    sqrt_ab = lambda s, t, x0: _alpha_bar_at(s, t, x0).sqrt()
    sqrt_1m_ab = lambda s, t, x0: (1 - _alpha_bar_at(s, t, x0)).sqrt()
    return check_function(
        fn,
        name="q_sample",
        cases=_q_sample_cases,
        reference=lambda x0, t, noise, s: s.q_sample(x0, t, noise),
        diagnoses=[
            (
                _mix(
                    lambda s, t, x0: s.gather(s.alphas, t, x0).sqrt(),
                    lambda s, t, x0: s.gather(s.betas, t, x0).sqrt(),
                ),
                "x_t keeps too much signal at t=999 (√α_t ≈ 0.99 where √ᾱ_t ≈ 0.006): did you use alpha_t "
                "(`schedule.alphas`) instead of alpha_bar_t (`schedule.alpha_bar`)? Jumping straight to "
                "step t needs the product of all the α's up to t.",
            ),
            (
                _mix(lambda s, t, x0: s.gather(s.betas, t, x0).sqrt(), sqrt_1m_ab),
                "Your signal coefficient is √β_t: the signal kept after t steps is √ᾱ_t "
                "(`schedule.alpha_bar`).",
            ),
            (
                _mix(_alpha_bar_at, lambda s, t, x0: 1 - _alpha_bar_at(s, t, x0)),
                "Missing square roots: ᾱ_t and 1 − ᾱ_t are variances. Scale x0 by √ᾱ_t and the noise by "
                "√(1 − ᾱ_t).",
            ),
            (
                _mix(sqrt_ab, lambda s, t, x0: 1 - _alpha_bar_at(s, t, x0)),
                "You scaled the noise by its variance 1 − ᾱ_t; scale it by the standard deviation "
                "√(1 − ᾱ_t).",
            ),
            (
                _mix(_alpha_bar_at, sqrt_1m_ab),
                "You scaled x0 by ᾱ_t; the mean of q(x_t | x_0) is √ᾱ_t x_0 (take the square root).",
            ),
            (
                _mix(sqrt_1m_ab, sqrt_ab),
                "The two coefficients are swapped (√(1 − ᾱ_t) on x0, √ᾱ_t on the noise): at t=999 your "
                "x_t is almost x0 instead of almost pure noise. x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε.",
            ),
            (
                _mix(
                    lambda s, t, x0: s.gather(s.alpha_bar_prev, t, x0).sqrt(),
                    lambda s, t, x0: (1 - s.gather(s.alpha_bar_prev, t, x0)).sqrt(),
                ),
                "Off by one: you used ᾱ_{t−1}, so at t=0 your x_t is exactly x0. In this course t runs over "
                "0..T−1 and t=0 already carries one step of noise (ᾱ_0 = 1 − β_0): use `alpha_bar[t]`.",
            ),
            (
                _mix(sqrt_ab, None),
                "There is no noise in your x_t: add √(1 − ᾱ_t)·noise.",
            ),
            (
                _mix(sqrt_ab, lambda s, t, x0: torch.ones_like(_alpha_bar_at(s, t, x0))),
                "You added the noise unscaled: multiply it by √(1 − ᾱ_t) so that x_t has unit variance.",
            ),
            Diagnosis(
                "Your noise is not the `noise` argument: use the ε that is passed in (do not draw a new one "
                "with torch.randn), so the result is reproducible and can be checked.",
                when=_fresh_noise,
            ),
        ],
        error_hints=[
            ("must match the size of tensor", BROADCAST_HINT),
            ("out of bounds", INDEX_HINT),
        ],
    )


# ---------------------------------------------------------------- SNR(t)


def _snr_cases() -> list[Case]:
    return [
        Case({"alpha_bar": s.alpha_bar}, label=f"alpha_bar of the {s.name} schedule (T=1000, float64)")
        for s in (linear_schedule(1000), cosine_schedule(1000))
    ]


def check_snr(fn) -> Feedback:
    """Check ``fn(alpha_bar) -> snr`` with SNR(t) = ᾱ_t / (1 − ᾱ_t) (signal variance over noise variance)."""
    return check_function(
        fn,
        name="snr",
        cases=_snr_cases,
        reference=lambda ab: ab / (1 - ab),
        diagnoses=[
            (
                lambda ab: (1 - ab) / ab,
                "Upside down: you computed the noise-to-signal ratio (1 − ᾱ_t)/ᾱ_t. SNR = ᾱ_t / (1 − ᾱ_t).",
            ),
            (
                lambda ab: ab.sqrt() / (1 - ab).sqrt(),
                "You divided the standard deviations, √ᾱ_t / √(1 − ᾱ_t); SNR compares variances: "
                "ᾱ_t / (1 − ᾱ_t).",
            ),
            (
                lambda ab: torch.log(ab / (1 - ab)),
                "You returned log SNR; the exercise asks for SNR itself (drop the log).",
            ),
            (lambda ab: ab, "You returned ᾱ_t: divide it by the noise variance 1 − ᾱ_t."),
            (
                lambda ab: ab / (1 + ab),
                "Sign error in the denominator: the noise variance is 1 − ᾱ_t, not 1 + ᾱ_t.",
            ),
        ],
    )
