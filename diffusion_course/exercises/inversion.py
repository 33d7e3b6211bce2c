r"""Checkers for notebook 09 (DDIM inversion and interpolation).

* ``check_slerp(fn)``: ``fn(z0, z1, alpha) -> z`` (z0, z1 of shape (B, …), α a number), per sample
  z = sin((1−α)θ)/sin θ · z_0 + sin(αθ)/sin θ · z_1 with cos θ = ⟨z_0, z_1⟩/(‖z_0‖ ‖z_1‖);
* ``check_ddim_inversion_step(fn)``: ``fn(x, eps, alpha_bar_cur, alpha_bar_next) -> x_next``, one step of
  deterministic DDIM towards the noisier ᾱ_next:
  x_next = √ᾱ_next x̂_0 + √(1 − ᾱ_next) ε, with x̂_0 = (x − √(1−ᾱ_cur) ε)/√ᾱ_cur.

The references are the package's :func:`~diffusion_course.interpolation.slerp` and
:func:`~diffusion_course.sampling.ddim_step` (η = 0, from ᾱ_cur to ᾱ_next).
"""

from __future__ import annotations

import math

import torch

from ..interpolation import slerp
from ..sampling import ddim_step
from .core import Case, Diagnosis, Feedback, check_function

SHAPE = (3, 1, 4, 5)  # B differs from the other dimensions

# ---------------------------------------------------------------- slerp


def _slerp_cases() -> list[Case]:
    g = torch.Generator().manual_seed(9)
    z0 = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    noise = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    z1 = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    z1[0] = 2.0 * z1[0]  # a different norm
    z1[1] = z0[1] + 0.5 * noise[1]  # a small angle (≈ 0.45 rad)
    z1[2] = -z0[2] + 0.8 * noise[2]  # an obtuse angle (≈ 2.5 rad)
    cases = []
    for alpha in (0.3, 0.8):
        label = (
            f"z0, z1 of shape {SHAPE} (float64; per-sample angles ≈ 1.6, 0.45 and 2.5 rad, sample 0 of z1 "
            f"twice as long), alpha = {alpha}"
        )
        cases.append(Case({"z0": z0, "z1": z1, "alpha": alpha}, label=label))
    return cases


def _theta(z0, z1, per_sample=True):
    if per_sample:
        a, b = z0.flatten(1), z1.flatten(1)
        cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
        return torch.arccos(cos.clamp(-1, 1)).view(-1, *([1] * (z0.ndim - 1)))
    cos = (z0 * z1).sum() / (z0.norm() * z1.norm())
    return torch.arccos(cos.clamp(-1, 1))


def _slerp_with(theta_fn, normalise=True, swap=False):
    def variant(z0, z1, alpha):
        theta = theta_fn(z0, z1)
        a = 1 - alpha if swap else alpha
        w0, w1 = torch.sin((1 - a) * theta), torch.sin(a * theta)
        if normalise:
            w0, w1 = w0 / torch.sin(theta), w1 / torch.sin(theta)
        return w0 * z0 + w1 * z1

    return variant


def _raw_dot_angle(out, expected, case) -> bool:
    """NaN/inf output while the raw dot products ⟨z0, z1⟩ lie outside [−1, 1] (arccos of an unnormalised
    dot product)."""
    z0, z1 = case.inputs["z0"], case.inputs["z1"]
    raw = (z0.flatten(1) * z1.flatten(1)).sum(1)
    return bool((~torch.isfinite(out)).any() and (raw.abs() > 1).any())


def _unit_directions(z0, z1, alpha):
    u0 = z0 / z0.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    u1 = z1 / z1.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return slerp(u0, u1, alpha)


def check_slerp(fn) -> Feedback:
    """Check ``fn(z0, z1, alpha)`` = sin((1−α)θ)/sin θ · z0 + sin(αθ)/sin θ · z1, θ per sample."""
    return check_function(
        fn,
        name="slerp",
        cases=_slerp_cases,
        reference=lambda z0, z1, alpha: slerp(z0, z1, alpha),
        diagnoses=[
            (
                lambda z0, z1, alpha: (1 - alpha) * z0 + alpha * z1,
                "You returned the linear interpolation (1 − α) z0 + α z1. slerp moves along the great "
                "circle: weight z0 by sin((1 − α)θ)/sin θ and z1 by sin(αθ)/sin θ, with θ the angle between "
                "them.",
            ),
            (
                _slerp_with(_theta, normalise=False),
                "The weights are missing the division by sin θ: sin((1 − α)θ) and sin(αθ) alone shrink the "
                "result (at α = 0 you return sin θ · z0 instead of z0). Divide both by sin θ.",
            ),
            (
                _slerp_with(_theta, swap=True),
                "α is swapped: your result is z1 at α = 0 and z0 at α = 1. z0 gets sin((1 − α)θ)/sin θ.",
            ),
            (
                _slerp_with(lambda z0, z1: _theta(z0, z1, per_sample=False)),
                "Wrong angle: you computed one θ over the whole batch. Each sample has its own angle: sum "
                "the products over the non-batch dimensions only, e.g. `(z0 * z1).flatten(1).sum(1)`, and "
                "divide by each sample's norms `z0.flatten(1).norm(dim=1)`; reshape θ to (B, 1, 1, 1).",
            ),
            (
                _slerp_with(lambda z0, z1: torch.cos(_theta(z0, z1))),
                "Wrong angle: you used cos θ = ⟨z0, z1⟩/(‖z0‖‖z1‖) as if it were θ. Take `torch.arccos` of "
                "it.",
            ),
            (
                _slerp_with(lambda z0, z1: torch.rad2deg(_theta(z0, z1))),
                "Wrong angle: θ is in degrees. torch.sin expects radians, and `torch.arccos` already "
                "returns them.",
            ),
            (
                _slerp_with(lambda z0, z1: _theta(z0, z1) / 2),
                "Wrong angle: you used θ/2. The weights use the full angle between z0 and z1.",
            ),
            (
                _unit_directions,
                "You interpolated the directions z/‖z‖, so the result has norm 1 instead of the latents' "
                "norm (≈ √D for Gaussian noise). Apply the slerp weights to z0 and z1 themselves.",
            ),
            Diagnosis(
                "Your result is NaN: the angle came from the raw dot product ⟨z0, z1⟩, which for Gaussian "
                "latents is far outside [−1, 1], so arccos is undefined. Divide by ‖z0‖ ‖z1‖ first.",
                when=_raw_dot_angle,
            ),
        ],
        error_hints=[
            (
                "must match the size of tensor",
                "Hint: per-sample quantities have shape (B,); reshape them to (B, 1, 1, 1) with "
                "`.view(-1, 1, 1, 1)` before multiplying the images.",
            ),
        ],
        rtol=1e-6,
        atol=1e-8,
    )


# ---------------------------------------------------------------- one DDIM inversion step


def _inversion_cases() -> list[Case]:
    g = torch.Generator().manual_seed(10)
    shape = (4, 1, 6, 5)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    return [
        Case(
            {"x": x, "eps": eps, "alpha_bar_cur": ab_cur, "alpha_bar_next": ab_next},
            label=f"x, eps of shape {shape} (float64), alpha_bar_cur = {ab_cur}, alpha_bar_next = {ab_next}",
        )
        for ab_cur, ab_next in ((0.9, 0.5), (1.0, 0.98), (0.2, 0.01))
    ]


def _reference_step(x, eps, ab_cur, ab_next):
    return ddim_step(x, eps, ab_cur, ab_next, 0.0)[0]


def _x0(x, eps, ab):
    return (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)


def check_ddim_inversion_step(fn) -> Feedback:
    """Check ``fn(x, eps, alpha_bar_cur, alpha_bar_next)`` = √ᾱ_next x̂_0 + √(1−ᾱ_next) ε (one step)."""
    return check_function(
        fn,
        name="ddim_inversion_step",
        cases=_inversion_cases,
        reference=_reference_step,
        diagnoses=[
            (
                lambda x, eps, c, n: _reference_step(x, eps, n, c),
                "ᾱ_cur and ᾱ_next are swapped: you predicted x̂₀ as if x sat at ᾱ_next and re-noised it to "
                "ᾱ_cur, i.e. an ordinary (denoising) DDIM step. Inversion starts from x at ᾱ_cur: "
                "x̂₀ = (x − √(1−ᾱ_cur) ε)/√ᾱ_cur, then x_next = √ᾱ_next x̂₀ + √(1−ᾱ_next) ε.",
            ),
            (
                lambda x, eps, c, n: math.sqrt(n) * _x0(x, eps, c) - math.sqrt(1 - n) * eps,
                "Wrong direction: the noise term points the wrong way (− √(1−ᾱ_next) ε). Inversion moves "
                "*along* ε, towards more noise: x_next = √ᾱ_next x̂₀ + √(1−ᾱ_next) ε.",
            ),
            (
                lambda x, eps, c, n: _x0(x, eps, c),
                "You returned x̂₀, a jump to the clean data: the step should go the other way, to the noisier "
                "level ᾱ_next: x_next = √ᾱ_next x̂₀ + √(1−ᾱ_next) ε.",
            ),
            (
                lambda x, eps, c, n: math.sqrt(n) * x + math.sqrt(1 - n) * eps,
                "You noised x itself as if it were clean data (q_sample with ε). x already holds "
                "√(1−ᾱ_cur) of noise: first predict x̂₀ = (x − √(1−ᾱ_cur) ε)/√ᾱ_cur, then re-noise x̂₀.",
            ),
            (
                lambda x, eps, c, n: math.sqrt(n) * (x - math.sqrt(1 - c) * eps) + math.sqrt(1 - n) * eps,
                "x̂₀ is missing the division by √ᾱ_cur: x̂₀ = (x − √(1−ᾱ_cur) ε)/√ᾱ_cur.",
            ),
            (
                lambda x, eps, c, n: n * _x0(x, eps, c) + (1 - n) * eps,
                "Missing square roots: ᾱ_next and 1 − ᾱ_next are variances; the coefficients are √ᾱ_next "
                "and √(1−ᾱ_next).",
            ),
            (
                lambda x, eps, c, n: math.sqrt(n / c) * x,
                "You only rescaled x by √(ᾱ_next/ᾱ_cur): that keeps the noise part at the old level. Split x "
                "into x̂₀ and ε and recombine them with the new coefficients.",
            ),
        ],
        error_hints=[
            (
                "must be Tensor, not float",
                "Hint: alpha_bar_cur and alpha_bar_next are Python floats: use `math.sqrt` or `** 0.5`.",
            ),
        ],
    )
