r"""Checkers for notebook 02 (training the ε-model).

* ``check_training_loss(fn)``: ``fn(model, x0, schedule, generator) -> loss``, the ε-prediction loss of one
  batch (Ho et al. 2020, the "simple" objective), drawing t first and ε second from ``generator``:

      t ~ U{0, …, T−1},  ε ~ N(0, I),  x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε,  L = mean (ε_θ(x_t, t) − ε)²

  — exactly ``training.diffusion_loss(model, x0, schedule, generator=generator)``.
* ``check_ema_update(fn)``: ``fn(ema, weights, decay, num_updates) -> new_ema``, one EMA step with the
  trainer's warm-up (``training.EMA``):

      d_n = min(decay, (1 + n) / (10 + n)),   θ_ema ← d_n θ_ema + (1 − d_n) θ.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..schedules import cosine_schedule, linear_schedule
from ..training import diffusion_loss
from .core import Case, Feedback, check_function

T_RANGE_HINT = (
    "Hint: t indexes `schedule.alpha_bar`, which has T entries t = 0..T−1; "
    "`torch.randint(0, T, ...)` excludes its upper bound, so it draws exactly 0..T−1."
)


class ToyEpsModel:
    """A fixed stand-in for a network in the checks: ε̂(x_t, t) = tanh(x_t) · (1 + t/1000) − 0.1.

    Cheap, deterministic, and it depends on both x_t and t, so every wrong input changes the loss.
    """

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, labels=None) -> torch.Tensor:
        scale = 1.0 + t.to(x_t.dtype).view(-1, *([1] * (x_t.ndim - 1))) / 1000.0
        return torch.tanh(x_t) * scale - 0.1

    def __repr__(self) -> str:
        return "ToyEpsModel()"


# ---------------------------------------------------------------- the ε-prediction loss


def _loss_cases() -> list[Case]:
    cases = []
    for schedule, shape, seed in [
        (linear_schedule(1000), (8, 1, 6, 6), 0),
        (cosine_schedule(1000), (5, 2, 4, 4), 1),
        (linear_schedule(10), (32, 1, 4, 4), 2),  # T = 10: a t outside 0..T−1 is drawn for sure
    ]:
        x0 = torch.rand(shape, generator=torch.Generator().manual_seed(100 + seed)) * 2 - 1
        inputs = {"model": ToyEpsModel(), "x0": x0, "schedule": schedule,
                  "generator": torch.Generator().manual_seed(seed)}  # fmt: skip
        label = f"x0 of shape {shape}, {schedule.name} schedule (T={schedule.T}), generator seeded {seed}"
        cases.append(Case(inputs, label=label))
    return cases


def _replayed(fn):
    """``fn`` with its generator reset to its seed first, so the learner, the reference and every variant
    draw the same t and ε (the checker hands them the same Generator object)."""

    @functools.wraps(fn)
    def wrapper(model, x0, schedule, generator):
        generator.manual_seed(generator.initial_seed())
        return fn(model, x0, schedule, generator)

    return wrapper


def _loss_variant(*, low=0, high_extra=0, noise_first=False, coef="sqrt_alpha_bar", target="eps", model_t=0,
                  model_input="x_t", reduction="mean"):  # fmt: skip
    """The ε-loss with one mistake, written as a learner would (see ``check_training_loss``)."""

    def variant(model, x0, schedule, generator):
        B = x0.shape[0]
        if noise_first:
            noise = torch.randn(x0.shape, generator=generator)
            t = torch.randint(low, schedule.T + high_extra, (B,), generator=generator)
        else:
            t = torch.randint(low, schedule.T + high_extra, (B,), generator=generator)
            noise = torch.randn(x0.shape, generator=generator)
        index = t - 1 if model_t == 1 else t
        shape = (-1,) + (1,) * (x0.ndim - 1)
        ab = schedule.alpha_bar[index].to(x0.dtype).view(shape)
        a = schedule.alphas[index].to(x0.dtype).view(shape)
        if coef == "no_sqrt":
            x_t = ab * x0 + (1 - ab) * noise
        elif coef == "alpha":
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        elif coef == "swapped":
            x_t = (1 - ab).sqrt() * x0 + ab.sqrt() * noise
        else:
            x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        eps = model(x0 if model_input == "x0" else x_t, t)
        return F.mse_loss(eps, x0 if target == "x0" else noise, reduction=reduction)

    return variant


def check_training_loss(fn) -> Feedback:
    """Check ``fn(model, x0, schedule, generator) -> loss`` = mean (ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t) − ε)²."""
    return check_function(
        _replayed(fn),
        name="training_loss",
        cases=_loss_cases,
        reference=_replayed(lambda model, x0, schedule, g: diffusion_loss(model, x0, schedule, generator=g)),
        diagnoses=[
            (
                _replayed(_loss_variant(target="x0")),
                "Your loss compares the prediction with x0. The network predicts the noise: the target is "
                "the ε you drew (`noise`), not the clean image.",
            ),
            (
                _replayed(_loss_variant(low=1, high_extra=1)),
                "Your t runs over 1..T (`torch.randint(1, T + 1, ...)`): in this course t ∈ {0, …, T−1}, "
                "one index per entry of `schedule.alpha_bar`. Use `torch.randint(0, schedule.T, ...)`.",
            ),
            (
                _replayed(_loss_variant(low=1, high_extra=1, model_t=1)),
                "You draw t in 1..T and index `alpha_bar[t - 1]` (1-based, as in Ho et al.'s paper) but "
                "give the network t itself: the course's indices are 0-based. Draw t in 0..T−1 and use it "
                "for both.",
            ),
            (
                _replayed(_loss_variant(high_extra=1)),
                "Your t runs over 0..T (`torch.randint(0, T + 1, ...)`): randint's upper bound is exclusive, "
                "so `torch.randint(0, schedule.T, ...)` already gives every t in 0..T−1.",
            ),
            (
                _replayed(_loss_variant(coef="no_sqrt")),
                "Missing square roots: ᾱ_t and 1 − ᾱ_t are variances. x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε.",
            ),
            (
                _replayed(_loss_variant(coef="alpha")),
                "You used α_t (`schedule.alphas`, one step's factor) instead of ᾱ_t (`schedule.alpha_bar`, "
                "the product over all steps up to t): the closed form jumps from x0 to x_t in one go.",
            ),
            (
                _replayed(_loss_variant(coef="swapped")),
                "The coefficients are swapped: x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε (√ᾱ_t is near 1 at small t).",
            ),
            (
                _replayed(_loss_variant(model_input="x0")),
                "You gave the network the clean x0; it must see the noisy x_t (and t).",
            ),
            (
                _replayed(_loss_variant(reduction="sum")),
                "You summed the squared errors; use the mean (`F.mse_loss(...)` or `.pow(2).mean()`), so the "
                "loss does not grow with the batch and image size.",
            ),
            (
                _replayed(_loss_variant(noise_first=True)),
                "Right formula, but you drew ε before t. Draw t first, then ε, from `generator`, so your "
                "numbers can be compared with the package's `diffusion_loss`.",
            ),
        ],
        error_hints=[("out of bounds", T_RANGE_HINT)],
    )


# ---------------------------------------------------------------- EMA with warm-up


def ema_decay(decay: float, num_updates: int) -> float:
    """d_n = min(decay, (1 + n)/(10 + n)), the trainer's warmed-up decay (``training.EMA.current_decay``)."""
    return min(decay, (1 + num_updates) / (10 + num_updates))


def _ema(ema, weights, decay, n, *, d=None):
    d = ema_decay(decay, n) if d is None else d(decay, n)
    return d * ema + (1 - d) * weights


def _ema_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    cases = []
    # (0.9, 100) first: there the missing warm-up and the off-by-one are right, so the max is told apart
    for decay, n, shape in [(0.9, 100, (2, 3)), (0.999, 50, (5,)), (0.999, 0, (3, 4)), (0.999, 20_000, (4,))]:
        ema, weights = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        inputs = {"ema": ema, "weights": weights, "decay": decay, "num_updates": n}
        cases.append(Case(inputs, label=f"tensors of shape {shape}, decay = {decay}, num_updates = {n}"))
    return cases


def check_ema_update(fn) -> Feedback:
    """Check ``fn(ema, weights, decay, num_updates) -> new_ema`` = d ema + (1 − d) weights, d = d_n above."""
    return check_function(
        fn,
        name="ema_update",
        cases=_ema_cases,
        reference=_ema,
        diagnoses=[
            (
                lambda e, w, decay, n: (1 - ema_decay(decay, n)) * e + ema_decay(decay, n) * w,
                "The weights are swapped: the average keeps d of itself and takes 1 − d of the new weights, "
                "θ_ema ← d·θ_ema + (1 − d)·θ. With yours the EMA follows the raw weights almost exactly.",
            ),
            (
                lambda e, w, decay, n: decay * e + (1 - decay) * w,
                "You used `decay` directly: with the warm-up the decay is d_n = min(decay, (1 + n)/(10 + n))."
                " Without it the average starts at the random initial weights and stays biased towards them "
                "for thousands of steps (their share after n steps is decay^n).",
            ),
            (
                lambda e, w, decay, n: _ema(e, w, decay, n, d=lambda dc, k: min(dc, k / (10 + k))),
                "Warm-up off by one: d_n = (1 + n)/(10 + n), so the very first update (n = 0) keeps 1/10 of "
                "the old average instead of nothing.",
            ),
            (
                lambda e, w, decay, n: _ema(e, w, decay, n, d=lambda dc, k: max(dc, (1 + k) / (10 + k))),
                "Late in training your decay goes above `decay`: use the min of the two,"
                " d_n = min(decay, (1 + n)/(10 + n)) (not the max, nor the warm-up value alone), so that"
                " early updates use the small warm-up decay and late ones `decay`.",
            ),
            (lambda e, w, decay, n: w.clone(), "You returned the new weights: blend them into the average."),
            (
                lambda e, w, decay, n: e.clone(),
                "You returned the old average unchanged: add (1 − d)·weights.",
            ),
        ],
    )


__all__ = ["ToyEpsModel", "check_ema_update", "check_training_loss", "ema_decay"]
