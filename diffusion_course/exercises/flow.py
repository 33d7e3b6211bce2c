r"""Checkers for notebook 11 (flow matching): v from ε, the flow-matching loss, an Euler step of the flow ODE.

* ``check_eps_to_v(fn)``: ``fn(x_t, eps, alpha_bar) -> v``, the v-prediction target of a VP state
  (Salimans & Ho 2022), with a = √ᾱ, σ = √(1 − ᾱ) and ᾱ a Python float in (0, 1):

      x̂₀ = (x_t − σ ε)/a,   v = a ε − σ x̂₀   (= (ε − σ x_t)/a);

  the reference is :func:`~diffusion_course.parameterizations.x0_from_eps` followed by
  :func:`~diffusion_course.parameterizations.v_from_eps_x0`.
* ``check_flow_matching_loss(fn)``: ``fn(model, x0, noise, t) -> loss``, with t a tensor of shape (B,):

      x_t = (1 − t) x₀ + t ε,   L = mean over all elements of (model(x_t, t) − (ε − x₀))²,

  the formula of :func:`~diffusion_course.training.flow_matching_loss`, which draws its own t and ε; here
  they are given, so the checker writes out x_t and takes the target from
  :func:`~diffusion_course.parameterizations.flow_velocity_from_eps_x0`.
* ``check_flow_euler_step(fn)``: ``fn(velocity_model, x, t, t_next) -> x_next``, one Euler step of
  dx/dt = u(x, t) from t to t_next < t (t = 1 is noise, t = 0 the data), t and t_next Python floats:

      x_next = x + (t_next − t) u(x, t);

  the reference is the package's sampler :func:`~diffusion_course.sampling.flow.flow_euler_sample`, run on
  the grid (t, t_next, 0) (its grids end at 0), of which the state after the first step is x_next.

The stand-in model of the last two, :func:`toy_velocity`, depends on t, so that a wrong time shows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..parameterizations import flow_velocity_from_eps_x0, v_from_eps_x0, x0_from_eps
from ..sampling.flow import flow_euler_sample
from .core import Case, Feedback, check_function

SHAPE = (3, 1, 5, 7)  # B differs from the other dimensions, so a t that is not reshaped raises

T_BROADCAST_HINT = (
    "Hint: t has shape (B,), one time per sample; reshape it to (B, 1, …, 1) so that it broadcasts "
    "against x0, e.g. `t.view(-1, *[1] * (x0.ndim - 1))`."
)


def toy_velocity(x: torch.Tensor, t) -> torch.Tensor:
    """A fixed stand-in for a velocity network: u(x, t) = tanh(x) · (0.5 + t) − 0.2 x.

    ``t`` is a float or a tensor of one time per sample (shape (B,) or (B, 1, …, 1)); the answer depends on
    t, so calling it at the wrong time changes the result.
    """
    if isinstance(t, torch.Tensor):
        t = t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return torch.tanh(x) * (0.5 + t) - 0.2 * x


# ---------------------------------------------------------------- v from ε

ALPHA_BARS = (0.3, 0.0219, 0.81, 0.97)  # never 0.5, where √ᾱ = √(1 − ᾱ) and a swap would not show


def _v_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    cases = []
    for ab in ALPHA_BARS:
        x_t, eps = (torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in range(2))
        label = f"x_t and eps of shape {SHAPE}, alpha_bar = {ab}"
        cases.append(Case({"x_t": x_t, "eps": eps, "alpha_bar": ab}, label=label))
    return cases


def _eps_to_v(x_t, eps, ab):
    return v_from_eps_x0(eps, x0_from_eps(x_t, eps, ab), ab)


def _v_variant(a_coef, s_coef, *, x0="x0"):
    """v = a_coef(ᾱ)·ε − s_coef(ᾱ)·(x̂₀, x_t or x̂₀ without the division by √ᾱ)."""

    def variant(x_t, eps, ab):
        signal = {
            "x0": (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab),
            "x_t": x_t,
            "undivided": x_t - math.sqrt(1 - ab) * eps,
        }[x0]
        return a_coef(ab) * eps - s_coef(ab) * signal

    return variant


def check_eps_to_v(fn) -> Feedback:
    """Check ``fn(x_t, eps, alpha_bar) -> v`` = √ᾱ ε − √(1−ᾱ) x̂₀, x̂₀ = (x_t − √(1−ᾱ) ε)/√ᾱ."""
    return check_function(
        fn,
        name="eps_to_v",
        cases=_v_cases,
        reference=_eps_to_v,
        diagnoses=[
            (
                _v_variant(lambda ab: math.sqrt(1 - ab), lambda ab: math.sqrt(ab)),
                "√ᾱ and √(1−ᾱ) are swapped: v = √ᾱ ε − √(1−ᾱ) x̂₀, so that at little noise (ᾱ near 1) v is "
                "close to ε, and at much noise (ᾱ near 0) close to −x̂₀.",
            ),
            (
                _v_variant(lambda ab: -math.sqrt(ab), lambda ab: -math.sqrt(1 - ab)),
                "The sign is flipped: you returned √(1−ᾱ) x̂₀ − √ᾱ ε, which is −v. "
                "v = √ᾱ ε − √(1−ᾱ) x̂₀ (Salimans & Ho 2022).",
            ),
            (
                _v_variant(lambda ab: math.sqrt(ab), lambda ab: math.sqrt(1 - ab), x0="x_t"),
                "You used x_t where v needs the clean x̂₀: first x̂₀ = (x_t − √(1−ᾱ) ε)/√ᾱ, the x₀ that ε "
                "explains, then v = √ᾱ ε − √(1−ᾱ) x̂₀.",
            ),
            (
                _v_variant(lambda ab: ab, lambda ab: 1 - ab),
                "Missing square roots: ᾱ and 1 − ᾱ are variances; the coefficients are a = √ᾱ and "
                "σ = √(1−ᾱ): v = √ᾱ ε − √(1−ᾱ) x̂₀.",
            ),
            (
                _v_variant(lambda ab: math.sqrt(ab), lambda ab: math.sqrt(1 - ab), x0="undivided"),
                "x̂₀ is missing the division by √ᾱ: x̂₀ = (x_t − √(1−ᾱ) ε)/√ᾱ.",
            ),
        ],
        error_hints=[
            (
                "must be Tensor, not float",
                "Hint: alpha_bar is a Python float: use `math.sqrt(alpha_bar)` or `alpha_bar ** 0.5`.",
            ),
        ],
    )


# ---------------------------------------------------------------- the flow-matching loss

LOSS_CASES = [
    (SHAPE, [0.05, 0.62, 0.93]),
    ((4, 2, 3, 3), [0.9, 0.3, 0.75, 0.15]),
    ((6, 2), [0.1, 0.2, 0.4, 0.6, 0.8, 0.97]),  # 2-D points, as the toy mixture
]


def _loss_cases() -> list[Case]:
    g = torch.Generator().manual_seed(1)
    cases = []
    for shape, times in LOSS_CASES:
        x0, noise = (torch.randn(shape, generator=g) for _ in range(2))
        t = torch.tensor(times)
        inputs = {"model": toy_velocity, "x0": x0, "noise": noise, "t": t}
        label = f"x0 and noise of shape {shape}, t = {times}"
        cases.append(Case(inputs, label=label))
    return cases


def _loss_reference(model, x0, noise, t):
    tt = t.reshape(-1, *([1] * (x0.ndim - 1)))
    x_t = (1 - tt) * x0 + tt * noise
    return F.mse_loss(model(x_t, t), flow_velocity_from_eps_x0(noise, x0))


def _loss_variant(*, path="right", target="u", model_t="t", model_input="x_t", reduction="mean", ndim=None):
    """The flow-matching loss with one mistake, written as a learner would."""

    def variant(model, x0, noise, t):
        tt = t.reshape(-1, *([1] * ((ndim or x0.ndim) - 1)))
        x_t = tt * x0 + (1 - tt) * noise if path == "reversed" else (1 - tt) * x0 + tt * noise
        out = model(x0 if model_input == "x0" else x_t, 1 - t if model_t == "1-t" else t)
        goal = {"u": noise - x0, "minus_u": x0 - noise, "eps": noise, "x0": x0}[target]
        squared = (out - goal) ** 2
        return {"mean": squared.mean(), "sum": squared.sum(), "none": squared}[reduction]

    return variant


def check_flow_matching_loss(fn) -> Feedback:
    """Check ``fn(model, x0, noise, t) -> loss`` = mean (model((1 − t) x0 + t ε, t) − (ε − x0))²."""
    return check_function(
        fn,
        name="flow_matching_loss",
        cases=_loss_cases,
        reference=_loss_reference,
        diagnoses=[
            (
                _loss_variant(path="reversed"),
                "Your path runs the wrong way: x_t = t·x0 + (1 − t)·ε puts the data at t = 1. In this course "
                "t = 1 is the noise and t = 0 the data: x_t = (1 − t)·x0 + t·ε.",
            ),
            (
                _loss_variant(target="minus_u"),
                "The target has the wrong sign: you used x0 − ε. The velocity of the path "
                "x_t = (1 − t)·x0 + t·ε is dx_t/dt = ε − x0 (t grows towards the noise).",
            ),
            (
                _loss_variant(target="eps"),
                "Your target is ε alone, the target of an ε-prediction model. A flow model learns the "
                "velocity u = ε − x0, the derivative of x_t = (1 − t)·x0 + t·ε with respect to t.",
            ),
            (
                _loss_variant(target="x0"),
                "Your target is x0, the target of an x₀-prediction model. A flow model learns the "
                "velocity u = ε − x0, the derivative of x_t = (1 − t)·x0 + t·ε with respect to t.",
            ),
            (
                _loss_variant(reduction="sum"),
                "You summed the squared errors; use the mean (`F.mse_loss(...)` or `.pow(2).mean()`), so the "
                "loss does not grow with the batch and image size.",
            ),
            (
                _loss_variant(reduction="none"),
                "You returned the squared error of every element; the loss is one number, their mean "
                "(`F.mse_loss(...)` or `.pow(2).mean()`).",
            ),
            (
                _loss_variant(model_t="1-t"),
                "You called the model with 1 − t: it takes the time of x_t itself, `model(x_t, t)`, the same "
                "t that mixes x0 and ε (t = 1 is the noise).",
            ),
            (
                _loss_variant(model_input="x0"),
                "You gave the model the clean x0; it must see the noisy x_t = (1 − t)·x0 + t·ε (and t).",
            ),
            (
                _loss_variant(ndim=4),
                "You reshaped t to (B, 1, 1, 1), which fits images only: here x0 is a batch of 2-D points, "
                "of shape (B, 2). Reshape t to x0's number of dimensions, e.g. "
                "`t.view(-1, *[1] * (x0.ndim - 1))`.",
            ),
        ],
        error_hints=[("must match the size", T_BROADCAST_HINT)],
    )


# ---------------------------------------------------------------- one Euler step of the flow ODE

EULER_CASES = [  # the step that ends at t = 0 is last: there x_next equals x̂₀ = x − t·u
    (SHAPE, 1.0, 0.75),
    ((6, 2), 0.6, 0.35),
    ((2, 3, 4, 4), 0.9, 0.8),
    (SHAPE, 0.3, 0.0),
]


def _euler_cases() -> list[Case]:
    g = torch.Generator().manual_seed(2)
    cases = []
    for shape, t, t_next in EULER_CASES:
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        inputs = {"velocity_model": toy_velocity, "x": x, "t": t, "t_next": t_next}
        cases.append(Case(inputs, label=f"x of shape {shape}, t = {t}, t_next = {t_next}"))
    return cases


def _euler_reference(velocity_model, x, t, t_next):
    """The package's Euler sampler on the grid (t, t_next, 0): its state after the first step."""
    times = torch.tensor([t, t_next, 0.0] if t_next > 0 else [t, 0.0], dtype=torch.float64)
    _, trajectory = flow_euler_sample(velocity_model, x, times, return_trajectory=True)
    return trajectory.xs[1]


def check_flow_euler_step(fn) -> Feedback:
    """Check ``fn(velocity_model, x, t, t_next) -> x_next`` = x + (t_next − t)·u(x, t)."""
    return check_function(
        fn,
        name="flow_euler_step",
        cases=_euler_cases,
        reference=_euler_reference,
        diagnoses=[
            (
                lambda u, x, t, t_next: x + (t - t_next) * u(x, t),
                "The step goes the wrong way: you used t − t_next, which moves x back towards the noise. "
                "From t to t_next < t the step is h = t_next − t (negative): "
                "x_next = x + (t_next − t)·u(x, t).",
            ),
            (
                lambda u, x, t, t_next: x + (t_next - t) * u(x, t_next),
                "You evaluated the velocity at t_next. Euler uses the velocity where the step starts, "
                "u(x, t): x_next = x + (t_next − t)·u(x, t).",
            ),
            (
                lambda u, x, t, t_next: x - t * u(x, t),
                "You returned x̂₀ = x − t·u, the jump straight to the data at t = 0. One step goes only to "
                "t_next: x_next = x + (t_next − t)·u(x, t) (the two agree only when t_next = 0).",
            ),
            (
                lambda u, x, t, t_next: x + t_next * u(x, t),
                "Your step size is t_next; it is the difference of the two times, h = t_next − t: "
                "x_next = x + (t_next − t)·u(x, t).",
            ),
        ],
    )


__all__ = ["check_eps_to_v", "check_flow_euler_step", "check_flow_matching_loss", "toy_velocity"]
