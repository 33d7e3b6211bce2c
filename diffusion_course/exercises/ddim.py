r"""Checkers for notebook 04 (the DDIM derivation).

* ``check_ddim_sigma(fn)``: ``fn(alpha_bar_t, alpha_bar_prev, eta) -> σ`` (tensors of ᾱ pairs), DDIM Eq. 16:
  σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev);
* ``check_ddim_step(fn)``: ``fn(x_t, eps, t, t_prev, schedule, eta, noise) -> x_prev``, DDIM Eq. 12 on any
  pair t > t_prev ≥ −1 (t_prev = −1 is the clean data, ᾱ = 1):
  x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε + σ z, with x̂_0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t.

The references are the package's :func:`~diffusion_course.sampling.ddim_sigma` and
:func:`~diffusion_course.sampling.ddim_step`.
"""

from __future__ import annotations

import math

import torch

from ..sampling import ddim_sigma, ddim_step
from ..schedules import NoiseSchedule, cosine_schedule, linear_schedule
from .core import Case, Diagnosis, Feedback, check_function

SHAPE = (3, 1, 5, 7)  # B differs from H and W

PREV_HINT = (
    "Hint: t_prev = −1 means the clean data, where ᾱ = 1; `schedule.alpha_bar[-1]` is ᾱ_{T−1}, the noisiest "
    "step. Write e.g. `alpha_bar_prev = schedule.alpha_bar[t_prev] if t_prev >= 0 else 1.0`."
)

# ---------------------------------------------------------------- σ from η (Eq. 16)


def _sigma_cases() -> list[Case]:
    s = linear_schedule(1000)
    strided = torch.tensor([999, 899, 699, 499, 299, 99])
    ab_t = s.alpha_bar[strided]
    ab_prev = torch.cat([s.alpha_bar[strided[1:]], torch.ones(1, dtype=torch.float64)])
    consecutive = torch.tensor([999, 500, 20, 1, 0])
    return [
        Case(
            {"alpha_bar_t": ab_t, "alpha_bar_prev": ab_prev, "eta": 0.5},
            label=f"ᾱ pairs of the grid {strided.tolist()} → clean (linear, T=1000, float64), eta = 0.5",
        ),
        Case(
            {
                "alpha_bar_t": s.alpha_bar[consecutive],
                "alpha_bar_prev": s.alpha_bar_prev[consecutive],
                "eta": 1.0,
            },
            label=f"consecutive steps t → t−1 for t = {consecutive.tolist()} (linear, T=1000), eta = 1.0",
        ),
    ]


def _sigma_reference(ab_t, ab_prev, eta):
    return torch.zeros_like(ab_t) + ddim_sigma(ab_t, ab_prev, eta)  # a tensor also when eta = 0


def check_ddim_sigma(fn) -> Feedback:
    """Check ``fn(alpha_bar_t, alpha_bar_prev, eta) -> σ`` = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev)."""
    return check_function(
        fn,
        name="ddim_sigma",
        cases=_sigma_cases,
        reference=_sigma_reference,
        diagnoses=[
            (
                lambda ab_t, ab_p, eta: _sigma_reference(ab_t, ab_p, 1.0),
                "Your σ does not depend on η: Eq. 16 multiplies the whole expression by η (η = 0 is the "
                "deterministic DDIM, η = 1 the DDPM-like one).",
            ),
            (
                lambda ab_t, ab_p, eta: eta * _sigma_reference(ab_t, ab_p, 1.0) * eta,
                "You multiplied by η²: σ itself scales with η (σ² with η²).",
            ),
            (
                lambda ab_t, ab_p, eta: _sigma_reference(ab_t, ab_p, eta) ** 2,
                "You returned σ²: take the square root (σ = η √(…) √(…)).",
            ),
            (
                lambda ab_t, ab_p, eta: eta * (1 - ab_p) / (1 - ab_t) * (1 - ab_t / ab_p),
                "Missing square roots: σ = η · √((1−ᾱ_prev)/(1−ᾱ_t)) · √(1 − ᾱ_t/ᾱ_prev).",
            ),
            (
                lambda ab_t, ab_p, eta: eta * (1 - ab_t / ab_p).sqrt(),
                "You have only the factor √(1 − ᾱ_t/ᾱ_prev), i.e. σ² = η²β with β = 1 − ᾱ_t/ᾱ_prev (the "
                "upper-bound choice). Eq. 16 also has √((1−ᾱ_prev)/(1−ᾱ_t)), which makes σ² = β̃ at η = 1.",
            ),
            (
                lambda ab_t, ab_p, eta: eta * ((1 - ab_t) / (1 - ab_p)).sqrt() * (1 - ab_t / ab_p).sqrt(),
                "The first ratio is upside down: it is (1−ᾱ_prev)/(1−ᾱ_t), which is < 1 (x_prev is less "
                "noisy than x_t).",
            ),
            (
                lambda ab_t, ab_p, eta: eta * ((1 - ab_p) / (1 - ab_t)).sqrt() * (1 - ab_p / ab_t).sqrt(),
                "1 − ᾱ_prev/ᾱ_t is negative (ᾱ_prev > ᾱ_t), hence the NaN: the second factor is "
                "√(1 − ᾱ_t/ᾱ_prev), one minus the strided α = ᾱ_t/ᾱ_prev.",
            ),
            (
                lambda ab_t, ab_p, eta: eta * (1 - ab_p).sqrt(),
                "You used 1 − ᾱ_t where 1 − ᾱ_t/ᾱ_prev belongs (the second factor): the β of a step from "
                "t to t_prev is 1 − ᾱ_t/ᾱ_prev.",
            ),
        ],
        error_hints=[
            (
                "only one element tensors",
                "Hint: `math.sqrt` takes one number; on tensors use `torch.sqrt(x)` or `x.sqrt()`.",
            ),
        ],
    )


# ---------------------------------------------------------------- the DDIM step (Eq. 12)


def _step_cases() -> list[Case]:
    g = torch.Generator().manual_seed(1)
    linear, cosine = linear_schedule(1000), cosine_schedule(1000)
    cases = []
    for s, t, t_prev, eta in [(linear, 600, 400, 0.5), (linear, 99, -1, 0.0), (cosine, 500, 499, 1.0)]:
        x_t, eps, noise = (torch.randn(SHAPE, generator=g) for _ in range(3))
        inputs = {"x_t": x_t, "eps": eps, "t": t, "t_prev": t_prev, "schedule": s, "eta": eta, "noise": noise}
        label = (
            f"x_t, eps, noise of shape {SHAPE}, t = {t}, t_prev = {t_prev}, eta = {eta}, {s.name} schedule"
        )
        cases.append(Case(inputs, label=label))
    return cases


def _ab(s: NoiseSchedule, t: int) -> float:
    return 1.0 if t < 0 else float(s.alpha_bar[t])


def _reference_step(x_t, eps, t, t_prev, s, eta, noise):
    return ddim_step(x_t, eps, _ab(s, t), _ab(s, t_prev), eta, noise)[0]


def _variant(ab_fn=None, sigma_fn=None, direction="right", noise_in_direction=False):
    """A DDIM step with one piece wrong.

    ``ab_fn(s, t, t_prev) -> (ᾱ_t, ᾱ_prev)``; ``sigma_fn(ab_t, ab_prev, eta, s, t) -> σ``; ``direction``:
    "right" (√(1−ᾱ_prev−σ²)) or "no_sigma" (√(1−ᾱ_prev)).
    """

    def variant(x_t, eps, t, t_prev, s, eta, noise):
        ab_t, ab_prev = ab_fn(s, t, t_prev) if ab_fn else (_ab(s, t), _ab(s, t_prev))
        if sigma_fn:
            sigma = sigma_fn(ab_t, ab_prev, eta, s, t)
        elif eta == 0:
            sigma = 0.0
        else:
            sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_prev)
        x0 = (x_t - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
        dir_var = 1 - ab_prev - (sigma**2 if direction == "right" else 0.0)
        along = noise if noise_in_direction else eps
        return math.sqrt(ab_prev) * x0 + math.sqrt(dir_var) * along + sigma * noise

    return variant


def _no_noise_term(out: torch.Tensor, ref: torch.Tensor, case: Case) -> bool:
    """The output equals the step's mean: σ z was left out although σ > 0."""
    x_t, eps, t, t_prev, s, eta, noise = case.inputs.values()
    if eta == 0:
        return False
    mean = _reference_step(x_t.double(), eps.double(), t, t_prev, s, eta, torch.zeros_like(noise).double())
    return bool(torch.allclose(out, mean, rtol=1e-4, atol=1e-5))


def check_ddim_step(fn) -> Feedback:
    """Check ``fn(x_t, eps, t, t_prev, schedule, eta, noise) -> x_prev`` (DDIM Eq. 12, t_prev = −1: ᾱ = 1)."""
    return check_function(
        fn,
        name="ddim_step",
        cases=_step_cases,
        reference=_reference_step,
        diagnoses=[
            (
                _variant(
                    ab_fn=lambda s, t, tp: (float(s.alphas[t]), float(s.alphas[tp]) if tp >= 0 else 1.0)
                ),
                "You used α (`schedule.alphas`) where ᾱ (`schedule.alpha_bar`) belongs: DDIM jumps between "
                "marginals q(x_t | x_0), which are set by ᾱ_t and ᾱ_prev.",
            ),
            (
                _variant(ab_fn=lambda s, t, tp: (float(s.alpha_bar[t]), float(s.alpha_bar_prev[t]))),
                "You used ᾱ_{t−1} (`alpha_bar_prev[t]`, the next consecutive step) where the step goes to "
                "t_prev: use ᾱ at t_prev, which may be many steps away (and ᾱ = 1 when t_prev = −1).",
            ),
            (
                _variant(ab_fn=lambda s, t, tp: (float(s.alpha_bar[t]), float(s.alpha_bar[tp]))),
                "The last step (t_prev = −1) is wrong: it must land on the clean image, ᾱ_prev = 1, so that "
                "x_prev = x̂_0. " + PREV_HINT,
            ),
            (
                _variant(direction="no_sigma"),
                "The direction term is √(1 − ᾱ_prev − σ²)·ε: you left out the −σ², so x_prev gets the noise "
                "variance of both terms, 1 − ᾱ_prev + σ², which is too much.",
            ),
            (
                _variant(
                    sigma_fn=lambda ab_t, ab_p, eta, s, t: eta * math.sqrt(float(s.posterior_variance[t]))
                ),
                "Your σ is η√β̃_t of one consecutive step (`posterior_variance[t]`); for a step from t to "
                "t_prev use Eq. 16 with ᾱ_t and ᾱ_prev (or `ddim_sigma(ab_t, ab_prev, eta)`).",
            ),
            (
                _variant(sigma_fn=lambda ab_t, ab_p, eta, s, t: eta * math.sqrt(1 - ab_t / ab_p)),
                "Your σ is η√(1 − ᾱ_t/ᾱ_prev) (σ² = β, the upper-bound choice): Eq. 16 has the extra factor "
                "√((1−ᾱ_prev)/(1−ᾱ_t)).",
            ),
            (
                _variant(
                    sigma_fn=lambda ab_t, ab_p, eta, s, t: (
                        eta**2 * (1 - ab_p) / (1 - ab_t) * (1 - ab_t / ab_p)
                    )
                ),
                "Your σ is σ² of Eq. 16 (no square root): scale the noise by σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) "
                "√(1 − ᾱ_t/ᾱ_prev) and subtract σ² in the direction term.",
            ),
            (
                _variant(noise_in_direction=True),
                "The direction term points along the predicted ε (`eps`), not along the fresh noise z: "
                "x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε + σ z.",
            ),
            Diagnosis(
                "There is no σ·z term in your step although η > 0: add σ·noise (the `noise` argument).",
                when=_no_noise_term,
            ),
        ],
        error_hints=[("alpha_bar_prev", PREV_HINT), ("math domain error", PREV_HINT)],
    )
