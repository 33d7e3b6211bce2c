r"""The score/SDE view (Song et al., 2021): the reverse-time SDE of the VP process solved by Euler–Maruyama,
and a predictor–corrector sampler that adds a Langevin step after each predictor step.

The VP SDE dx = −½ β x dτ + √β dw has the marginals of the discrete chain; on the clock λ = −log ᾱ
(dλ = β dτ) it reads dx = −½ x dλ + dw. Its reverse in time, with the score s(x) = ∇ log p_t(x) = −ε/σ_t
(σ_t = √(1 − ᾱ_t)), is dx = [½ x + s(x)] dλ̄ + dw̄ with λ̄ = −λ. One Euler–Maruyama step from ᾱ_t to ᾱ_prev
(h = log ᾱ_prev − log ᾱ_t > 0):

    x_prev = x + h (½ x + s(x)) + √h z,   z ~ N(0, I).

The step to the data (ᾱ_prev = 1) returns x̂₀ = (x − σ_t ε)/√ᾱ_t, with no noise (Tweedie's denoising step,
as in Song et al.'s samplers).

Predictor–corrector ("pc"): after each Euler–Maruyama step to t_prev > −1, one Langevin step at t_prev that
targets p_{t_prev} itself:

    x ← x + δ s(x) + √(2δ) z,   δ = 2 a (r ‖z‖ / ‖s(x)‖)²,   a = ᾱ_t / ᾱ_prev,

with the norms averaged over the batch and the signal-to-noise ratio r (``snr``; Song et al.'s Algorithm 5
for VP). The corrector
pulls the state back towards the marginal it should have, whatever error the step before left: a
stochastic sampler can forgive error that a deterministic one carries to the end. It costs one more
ε-evaluation per step (2N − 1 for N steps).
"""

from __future__ import annotations

import math

import torch

from .._checks import check_float
from .common import Loop, _predict_x0, draw_noise
from .registry import sampler


def _score(x: torch.Tensor, eps: torch.Tensor, ab_t: float) -> torch.Tensor:
    return -eps / math.sqrt(1.0 - ab_t)


def _em_step(x, eps, ab_t, ab_prev, generator=None):
    h = math.log(ab_prev) - math.log(ab_t)
    return x + h * (0.5 * x + _score(x, eps, ab_t)) + math.sqrt(h) * draw_noise(x, generator)


def _langevin_step(x, eps, ab_t, a, snr, generator=None):
    score = _score(x, eps, ab_t)
    z = draw_noise(x, generator)
    # batch means of the norms, as in Song et al.'s code: a per-sample ‖s‖ near 0 (a sample at a mode's
    # centre) would make that sample's step, and its noise, explode
    z_norm, s_norm = (float(v.flatten(1).norm(dim=1).mean()) for v in (z, score))
    delta = 2.0 * a * (snr * z_norm / max(s_norm, 1e-12)) ** 2
    return x + delta * score + math.sqrt(2.0 * delta) * z


@sampler("sde", diffusers=None)
@torch.no_grad()
def sde_sample(eps_model, x_T, schedule, timesteps, *, generator=None, labels=None, return_trajectory=False,
               progress=False):  # fmt: skip
    """Reverse-time VP SDE by Euler–Maruyama (module docstring), x̂₀ at the last step.

    Draws one z per non-final step, in order, from ``generator``. Returns x_0 or (x_0, Trajectory).
    """
    loop = Loop(eps_model, x_T, schedule, timesteps, labels, return_trajectory, progress, "reverse SDE")
    x = loop.x_T
    for i, t, t_prev, ab_t, ab_prev in loop:
        eps = loop.eps(x, t, i)
        x0_pred = _predict_x0(x, eps, ab_t)
        x = x0_pred if t_prev < 0 else _em_step(x, eps, ab_t, ab_prev, generator)
        loop.record(x, x0_pred)
    return loop.result(x)


@sampler("pc", options=("snr",), nfe=lambda steps: 2 * steps - 1, diffusers=None)
@torch.no_grad()
def pc_sample(eps_model, x_T, schedule, timesteps, *, snr=0.16, generator=None, labels=None,
              return_trajectory=False, progress=False):  # fmt: skip
    """Predictor–corrector: an Euler–Maruyama step of the reverse SDE, then a Langevin step (see above).

    ``snr`` is r in the Langevin step size (Song et al. used 0.16 for CIFAR-10). Draws, per non-final step,
    the predictor's z and then the corrector's z from ``generator``. Returns x_0 or (x_0, Trajectory).
    """
    snr = check_float("snr", snr, low=0.0, low_open=True)
    loop = Loop(
        eps_model, x_T, schedule, timesteps, labels, return_trajectory, progress, "predictor–corrector"
    )
    x = loop.x_T
    for i, t, t_prev, ab_t, ab_prev in loop:
        eps = loop.eps(x, t, i)
        x0_pred = _predict_x0(x, eps, ab_t)
        if t_prev < 0:
            x = x0_pred
        else:
            x = _em_step(x, eps, ab_t, ab_prev, generator)
            x = _langevin_step(x, loop.eps(x, t_prev, i), ab_prev, ab_t / ab_prev, snr, generator)
        loop.record(x, x0_pred)
    return loop.result(x)
