r"""DDIM (Song et al., 2021): the η-family of samplers and deterministic inversion.

For a step t → t_prev with ᾱ_t, ᾱ_prev (ᾱ_prev = 1 after the last listed t):

    x̂₀ = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t
    σ   = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev)                      (Eq. 16)
    x_prev = √ᾱ_prev x̂₀ + √(1 − ᾱ_prev − σ²) ε + σ z,   z ~ N(0, I)      (Eq. 12)

η = 0 is the deterministic DDIM; η = 1 on consecutive steps is DDPM with σ² = β̃_t; η > 1 is allowed while
σ² ≤ 1 − ᾱ_prev (docs/SAMPLING.md, "DDIM"). With ``clip_x0``, x̂₀ is clamped to [−1, 1] and ε recomputed from
it, ε = (x_t − √ᾱ_t x̂₀)/√(1−ᾱ_t), so that x_t = √ᾱ_t x̂₀ + √(1−ᾱ_t) ε still holds.
"""

from __future__ import annotations

import math

import torch

from .._checks import check_float, fail
from ..schedules import NoiseSchedule
from .common import Loop, _max, _min, _predict_x0, _sqrt, draw_noise, eps_from_x0, predict_x0
from .registry import sampler


def ddim_sigma(alpha_bar_t, alpha_bar_prev, eta: float):
    """σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev) (DDIM Eq. 16); floats or broadcastable tensors.

    Needs 0 ≤ ᾱ_t ≤ 1 and 0 < ᾱ_prev ≤ 1; when η > 0 also ᾱ_t < 1 and ᾱ_prev ≥ ᾱ_t (a step towards the data).
    """
    eta = check_float("eta", eta, low=0.0)
    _check_alpha_bars(alpha_bar_t, alpha_bar_prev, stochastic=eta > 0)
    return _sigma(alpha_bar_t, alpha_bar_prev, eta)


def _sigma(ab_t, ab_prev, eta):
    return 0.0 if eta == 0.0 else eta * _sqrt((1.0 - ab_prev) / (1.0 - ab_t)) * _sqrt(1.0 - ab_t / ab_prev)


def ddim_direction_variance(alpha_bar_t, alpha_bar_prev, eta: float):
    """1 − ᾱ_prev − σ², the squared weight of ε in the DDIM step.

    Written as (1−ᾱ_prev) [ᾱ_t (1−ᾱ_prev) + (1−η²)(ᾱ_prev−ᾱ_t)] / [ᾱ_prev (1−ᾱ_t)], which for 0 ≤ η ≤ 1 is a
    sum of non-negative terms, so rounding can never make it negative (the literal 1 − ᾱ_prev − σ² can).
    """
    eta = check_float("eta", eta, low=0.0)
    _check_alpha_bars(alpha_bar_t, alpha_bar_prev, stochastic=eta > 0)
    var = _direction_variance(alpha_bar_t, alpha_bar_prev, eta)
    if _min(var) < 0.0:
        ratio = (alpha_bar_prev - alpha_bar_t) / (alpha_bar_prev * (1.0 - alpha_bar_t))
        allowed = (
            f"σ² exceeds 1 − ᾱ_prev on this step (ᾱ_t={_show(alpha_bar_t)}, ᾱ_prev={_show(alpha_bar_prev)}); "
            f"η ≤ {1.0 / math.sqrt(_max(ratio)):.4g} is allowed here"
        )
        fail("eta", eta, allowed)
    return var


def _direction_variance(ab_t, ab_prev, eta):
    if eta == 0.0:
        return 1.0 - ab_prev
    bracket = ab_t * (1.0 - ab_prev) + (1.0 - eta**2) * (ab_prev - ab_t)
    return (1.0 - ab_prev) * bracket / (ab_prev * (1.0 - ab_t))


def ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev, eta=0.0, noise=None, clip_x0=False, *, generator=None):
    """One DDIM step (module docstring); returns (x_prev, x̂₀).

    z is used (``noise``, or drawn with ``generator``) only when σ > 0, i.e. η > 0 and ᾱ_prev < 1.
    """
    for name, value in (("eps", eps), ("noise", noise)):
        if value is not None and value.shape != x_t.shape:
            fail(name, value, f"expected the shape of x_t, {tuple(x_t.shape)}")
    ddim_direction_variance(alpha_bar_t, alpha_bar_prev, eta)  # checks η and the ᾱ's
    if _min(alpha_bar_t) <= 0.0:
        predict_x0(x_t, eps, alpha_bar_t)  # raises, naming ᾱ_t
    return _ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev, float(eta), clip_x0, noise, generator)


def _ddim_step(x_t, eps, ab_t, ab_prev, eta, clip_x0=False, noise=None, generator=None):
    sigma, dir_var = _sigma(ab_t, ab_prev, eta), _direction_variance(ab_t, ab_prev, eta)
    x0_pred = _predict_x0(x_t, eps, ab_t)
    if clip_x0:
        x0_pred = x0_pred.clamp(-1.0, 1.0)
        eps = eps_from_x0(x_t, x0_pred, ab_t)
    x_prev = _sqrt(ab_prev) * x0_pred + _sqrt(dir_var) * eps
    if _max(sigma) > 0.0:
        x_prev = x_prev + sigma * (draw_noise(x_t, generator) if noise is None else noise)
    return x_prev, x0_pred


@sampler("ddim", options=("eta", "clip_x0"), diffusers="DDIMScheduler")
@torch.no_grad()
def ddim_sample(eps_model, x_T, schedule, timesteps, *, eta=0.0, clip_x0=False, generator=None, labels=None,
                return_trajectory=False, progress=False):  # fmt: skip
    """DDIM (η-family) from x_T over the descending ``timesteps``; the step after the last goes to ᾱ = 1.

    With η > 0 one z is drawn per non-final step, in order, from ``generator`` (the same draws as
    :func:`ddpm_sample`). Returns x_0 or (x_0, Trajectory).
    """
    eta = check_float("eta", eta, low=0.0)
    loop = Loop(eps_model, x_T, schedule, timesteps, labels, return_trajectory, progress, f"DDIM η={eta:g}")
    for _, _, _, ab_t, ab_prev in loop.steps:
        ddim_direction_variance(ab_t, ab_prev, eta)  # η must fit every step before the first is taken
    x = loop.x_T
    for i, t, _, ab_t, ab_prev in loop:
        x, x0_pred = _ddim_step(x, loop.eps(x, t, i), ab_t, ab_prev, eta, clip_x0, generator=generator)
        loop.record(x, x0_pred)
    return loop.result(x)


@torch.no_grad()
def ddim_invert(eps_model, x0, schedule, timesteps, labels=None, return_trajectory=False, progress=False):
    """Run deterministic DDIM backwards: x_0 → x at ``timesteps[0]`` (the x_T that decodes back to x_0).

    Walks the decoder's descending ``timesteps`` in ascending order with ε = eps_model(x_cur, t_next) (see
    docs/SAMPLING.md, "Inversion"). With ``return_trajectory`` the Trajectory's ``timesteps`` are ascending,
    ``xs[0]`` is x_0 and ``xs[i+1]`` is x at ``timesteps[i]``.
    """
    loop = Loop(eps_model, x0, schedule, timesteps, labels, return_trajectory, progress, "DDIM inversion",
                reverse=True)  # fmt: skip
    x, ab_cur = loop.x_T, 1.0
    for i, t_next, _, ab_next, _ in loop:
        x, x0_pred = _ddim_step(x, loop.eps(x, t_next, i), ab_cur, ab_next, 0.0)
        ab_cur = ab_next
        loop.record(x, x0_pred)
    return loop.result(x)


def ddim_reconstruction_error(
    eps_model, x0: torch.Tensor, schedule: NoiseSchedule, timesteps, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample MSE of ddim_sample(ddim_invert(x_0)) against x_0 over all non-batch dimensions, shape (B,),
    in x_0's own units (docs/SAMPLING.md, "Inversion", compares it with DDIM Table 2)."""
    x_T = ddim_invert(eps_model, x0, schedule, timesteps, labels=labels)
    x_rec = ddim_sample(eps_model, x_T, schedule, timesteps, eta=0.0, labels=labels)
    return (x_rec - x0).pow(2).flatten(1).mean(dim=1)


def _check_alpha_bars(alpha_bar_t, alpha_bar_prev, stochastic: bool) -> None:
    # ᾱ_t = 1 (the clean data) is a valid start only for the deterministic step, as in inversion
    if not 0.0 <= _min(alpha_bar_t) <= _max(alpha_bar_t) <= 1.0 or (stochastic and _max(alpha_bar_t) == 1.0):
        fail("alpha_bar_t", _show(alpha_bar_t), "must lie in [0, 1], and in [0, 1) when η > 0")
    if not 0.0 < _min(alpha_bar_prev) <= _max(alpha_bar_prev) <= 1.0:
        fail("alpha_bar_prev", _show(alpha_bar_prev), "must lie in (0, 1]")
    below = alpha_bar_prev < alpha_bar_t
    if stochastic and bool(below.any() if isinstance(below, torch.Tensor) else below):
        allowed = (
            f"must be ≥ alpha_bar_t={_show(alpha_bar_t)} when η > 0 (a noisy step goes towards the data)"
        )
        fail("alpha_bar_prev", _show(alpha_bar_prev), allowed)


def _show(v):
    return v if not isinstance(v, torch.Tensor) else (float(v) if v.numel() == 1 else v)
