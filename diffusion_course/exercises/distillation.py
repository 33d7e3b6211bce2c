r"""Checker for notebook 12 (progressive distillation): the target a student learns.

* ``check_distillation_target(fn)``: ``fn(eps_model, x_t, t, t_mid, t_end, alpha_bar) -> x̃``. Take two
  deterministic DDIM steps of the teacher ``eps_model(x, t)``, x_t → x_{t_mid} → x_{t_end}, then return the
  x̂₀ with which one DDIM step from x_t lands on x_{t_end}:

      x̃ = (x_{t_end} − (σ_end/σ_t) x_t) / (α_end − (σ_end/σ_t) α_t),   α = √ᾱ, σ = √(1 − ᾱ),

  where ``alpha_bar(s)`` gives ᾱ_s as a float (ᾱ_{−1} = 1, the clean data).

The reference is the package's: :func:`~diffusion_course.distillation.teacher_two_steps` and
:func:`~diffusion_course.distillation.distillation_target`.
"""

from __future__ import annotations

import math

import torch

from ..distillation import distillation_target
from ..sampling.ddim import ddim_step
from ..schedules import linear_schedule
from .core import Case, Feedback, check_function

SCHEDULE = linear_schedule(1000)


def alpha_bar(t: int) -> float:
    """ᾱ_t of the course's linear schedule, with ᾱ_{−1} = 1."""
    return 1.0 if t < 0 else float(SCHEDULE.alpha_bar[t])


def teacher(x: torch.Tensor, t: int) -> torch.Tensor:
    """A stand-in ε-model whose answer depends on t (so the order of the two steps matters)."""
    return torch.tanh(x) * (0.5 + t / 1000.0) + 0.1 * x


def _cases() -> list[Case]:
    cases = []
    for seed, (t, t_mid, t_end) in enumerate([(999, 749, 499), (499, 374, 249), (124, 61, -1)]):
        x_t = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        label = f"x_t of shape (3, 1, 4, 4), t = {t}, t_mid = {t_mid}, t_end = {t_end}"
        inputs = {
            "eps_model": teacher,
            "x_t": x_t,
            "t": t,
            "t_mid": t_mid,
            "t_end": t_end,
            "alpha_bar": alpha_bar,
        }
        cases.append(Case(inputs, label=label))
    return cases


def _two_steps(eps_model, x_t, t, t_mid, t_end, ab, order=("t", "t_mid")):
    first, second = (t if o == "t" else t_mid for o in order)
    x_mid, _ = ddim_step(x_t, eps_model(x_t, first), ab(t), ab(t_mid))
    x_end, _ = ddim_step(x_mid, eps_model(x_mid, second), ab(t_mid), ab(t_end))
    return x_end


def _reference(eps_model, x_t, t, t_mid, t_end, ab):
    return distillation_target(x_t, _two_steps(eps_model, x_t, t, t_mid, t_end, ab), ab(t), ab(t_end))


def _eps_target(eps_model, x_t, t, t_mid, t_end, ab):
    x_tilde = _reference(eps_model, x_t, t, t_mid, t_end, ab)
    return (x_t - math.sqrt(ab(t)) * x_tilde) / math.sqrt(1 - ab(t))


def _one_step(eps_model, x_t, t, t_mid, t_end, ab):
    x_end, _ = ddim_step(x_t, eps_model(x_t, t), ab(t), ab(t_end))
    return distillation_target(x_t, x_end, ab(t), ab(t_end))


def _inverted_ratio(eps_model, x_t, t, t_mid, t_end, ab):
    x_end = _two_steps(eps_model, x_t, t, t_mid, t_end, ab)
    a, a_end = ab(t), ab(t_end)
    ratio = math.sqrt(1 - a) / math.sqrt(1 - a_end) if a_end < 1 else float("inf")
    return (x_end - ratio * x_t) / (math.sqrt(a_end) - ratio * math.sqrt(a))


def check_distillation_target(fn) -> Feedback:
    """Check ``fn(eps_model, x_t, t, t_mid, t_end, alpha_bar) -> x̃`` (module docstring)."""
    return check_function(
        fn,
        name="distillation_target",
        cases=_cases,
        reference=_reference,
        diagnoses=[
            (
                lambda m, x, t, tm, te, ab: distillation_target(
                    x, _two_steps(m, x, t, tm, te, ab, order=("t_mid", "t")), ab(t), ab(te)
                ),
                "Your teacher steps are in the wrong order: the first step, from x_t, must ask the "
                "teacher at t (`eps_model(x_t, t)`), the second, from x_mid, at t_mid "
                "(`eps_model(x_mid, t_mid)`).",
            ),
            (
                lambda m, x, t, tm, te, ab: distillation_target(
                    x, _two_steps(m, x, t, tm, te, ab), ab(t), ab(tm)
                ),
                "You used ᾱ of the wrong endpoint in the target: the student's one step goes from t to "
                "t_end (where the teacher's second step lands), so the formula takes ᾱ_{t_end}, not "
                "ᾱ_{t_mid}.",
            ),
            (
                _eps_target,
                "You returned the ε that makes the student's step land (ε̃ = (x_t − α_t x̃)/σ_t). The "
                "target asked for is x̃ itself, the x̂₀ of that step: "
                "(x_end − (σ_end/σ_t) x_t) / (α_end − (σ_end/σ_t) α_t).",
            ),
            (
                lambda m, x, t, tm, te, ab: _two_steps(m, x, t, tm, te, ab),
                "You returned x_end, where the teacher's two steps land. The student does not learn "
                "x_end but the x̂₀ that takes one DDIM step from x_t to x_end: solve "
                "x_end = α_end x̃ + σ_end (x_t − α_t x̃)/σ_t for x̃.",
            ),
            (
                _one_step,
                "Your teacher took one step from t to t_end. Progressive distillation takes two teacher "
                "steps, t → t_mid → t_end, and teaches the student to do them in one.",
            ),
            (
                _inverted_ratio,
                "The noise ratio is upside down: it is σ_end/σ_t = √(1 − ᾱ_end)/√(1 − ᾱ_t), the share of "
                "x_t's noise that is left at t_end.",
            ),
        ],
        rtol=1e-5,
        atol=1e-6,
    )


__all__ = ["alpha_bar", "check_distillation_target", "teacher"]
