r"""Checkers for notebook 13 (latent diffusion: the KL autoencoder and its latent scale).

* ``check_reparameterize(fn)``: ``fn(mean, logvar, noise) -> z``, a sample of q(z|x) = N(μ, σ²) written as
  z = μ + exp(½ log σ²) ⊙ ε, with the noise ε passed in (so the answer is deterministic);
* ``check_kl(fn)``: ``fn(mean, logvar) -> kl`` of shape (B,), the KL term of the autoencoder's loss,
  KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²), summed over every non-batch dimension;
* ``check_scale_latents(fn)``: ``fn(mean, scaling_factor) -> s·μ``, the diffusion data of an image;
* ``check_unscale_latents(fn)``: ``fn(latents, scaling_factor) -> z̃ / s``, what the decoder gets from a
  sampled latent z̃.

The references are the package's: :func:`~diffusion_course.models.autoencoder.kl_divergence`, the formula
of :func:`~diffusion_course.models.autoencoder.reparameterize` with the given ε, and the scaling of
:func:`~diffusion_course.latent.encode_latents` / :func:`~diffusion_course.latent.decode_latents`.
"""

from __future__ import annotations

import torch

from ..models.autoencoder import kl_divergence
from .core import Case, Diagnosis, Feedback, check_function

SHAPES = ((4, 3, 7, 7), (2, 4, 5, 6))  # B differs from the other dimensions


def _posterior(shape, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, log σ²) of shape ``shape``: μ ~ 1.5·N(0, 1), log σ² uniform in [−3, 1.5] (σ from 0.22 to 2.1)."""
    g = torch.Generator().manual_seed(seed)
    mean = 1.5 * torch.randn(shape, generator=g)
    logvar = torch.rand(shape, generator=g) * 4.5 - 3.0
    return mean, logvar


def _std(logvar: torch.Tensor) -> torch.Tensor:
    return torch.exp(0.5 * logvar)


# ---------------------------------------------------------------- z = μ + σ ε


def _reparameterize_cases() -> list[Case]:
    cases = []
    for seed, shape in enumerate(SHAPES):
        mean, logvar = _posterior(shape, seed)
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(100 + seed))
        label = (
            f"mean, logvar and noise of shape {shape} (float32; logvar between −3 and 1.5, so some are "
            f"negative)"
        )
        cases.append(Case({"mean": mean, "logvar": logvar, "noise": noise}, label=label))
    return cases


def _reparameterize(mean, logvar, noise):
    return mean + _std(logvar) * noise


def _fresh_noise(out: torch.Tensor, expected: torch.Tensor, case: Case) -> bool:
    """The learner's noise part, (z − μ)/σ, has unit variance but is not the ε that was passed in."""
    mean, logvar, noise = (case.inputs[k].double() for k in ("mean", "logvar", "noise"))
    implied = ((out - mean) / _std(logvar)).flatten()
    unit_std = 0.7 < float(implied.std()) < 1.3
    correlation = float(torch.corrcoef(torch.stack([implied, noise.flatten()]))[0, 1])
    return unit_std and abs(correlation) < 0.5


def check_reparameterize(fn) -> Feedback:
    """Check ``fn(mean, logvar, noise) -> z`` = μ + exp(½ log σ²) ⊙ ε (the given ε, elementwise)."""
    return check_function(
        fn,
        name="reparameterize",
        cases=_reparameterize_cases,
        reference=_reparameterize,
        diagnoses=[
            (
                lambda m, lv, e: m + torch.exp(lv) * e,
                "You scaled the noise by exp(logvar) = σ², the variance. The noise is scaled by the standard "
                "deviation σ = exp(½·logvar): `mean + torch.exp(0.5 * logvar) * noise`.",
            ),
            (
                lambda m, lv, e: m + lv * e,
                "You used `logvar` as if it were σ. It is log σ²: the standard deviation is "
                "σ = exp(½·logvar), which is always positive.",
            ),
            (
                lambda m, lv, e: m + lv.sqrt() * e,
                "You took the square root of `logvar` (NaN where it is negative). It is a log-variance: "
                "undo the log first, σ = exp(½·logvar) = √exp(logvar).",
            ),
            (
                lambda m, lv, e: m + torch.exp(-0.5 * lv) * e,
                "Sign error in the exponent: exp(−½·logvar) = 1/σ. The standard deviation is "
                "σ = exp(+½·logvar).",
            ),
            (
                lambda m, lv, e: m.clone(),
                "You returned the mean: there is no noise in your z. Add σ ⊙ noise, with "
                "σ = exp(½·logvar), so that z is a sample of q(z|x) and not only its centre.",
            ),
            (
                lambda m, lv, e: m + _std(lv),
                "You added σ itself, without the noise: z = μ + σ ⊙ ε, multiply σ by `noise`.",
            ),
            (
                lambda m, lv, e: m + e,
                "You added the noise unscaled (as if σ = 1): multiply it by σ = exp(½·logvar) first.",
            ),
            (
                lambda m, lv, e: _std(lv) * e,
                "You forgot the mean: z = μ + σ ⊙ ε, centred on `mean`, not on 0.",
            ),
            (
                lambda m, lv, e: m * e + _std(lv),
                "The roles are swapped: you multiplied the mean by the noise and added σ. The noise is "
                "scaled by σ and then added to the mean: z = μ + σ ⊙ ε.",
            ),
            (
                lambda m, lv, e: (m + _std(lv)) * e,
                "You multiplied the mean by the noise as well: only σ is multiplied by ε, the mean is "
                "added as it is, z = μ + σ ⊙ ε.",
            ),
            (
                lambda m, lv, e: m * e,
                "You multiplied the mean by the noise: z = μ + σ ⊙ ε adds the scaled noise to the mean, "
                "with σ = exp(½·logvar).",
            ),
            Diagnosis(
                "Your noise is not the `noise` argument: use the ε that is passed in (do not draw a new one "
                "with torch.randn), so the result is reproducible and can be checked.",
                when=_fresh_noise,
            ),
        ],
    )


# ---------------------------------------------------------------- KL(N(μ, σ²) ‖ N(0, I))


def _kl_cases() -> list[Case]:
    cases = []
    for seed, shape in enumerate(SHAPES):
        mean, logvar = _posterior(shape, 10 + seed)
        label = f"mean and logvar of shape {shape} (float32; logvar between −3 and 1.5)"
        cases.append(Case({"mean": mean, "logvar": logvar}, label=label))
    return cases


def _kl_terms(terms):
    """A KL variant: ½ Σ_j terms(μ, log σ²) per sample."""
    return lambda m, lv: 0.5 * terms(m, lv).flatten(1).sum(1)


def check_kl(fn) -> Feedback:
    """Check ``fn(mean, logvar) -> (B,)`` = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²) over all non-batch dims."""
    terms = lambda m, lv: m.pow(2) + lv.exp() - 1 - lv
    return check_function(
        fn,
        name="kl",
        cases=_kl_cases,
        reference=kl_divergence,
        diagnoses=[
            (
                lambda m, lv: kl_divergence(m, lv).sum(),
                "You returned one number for the whole batch (the sum of the per-sample KLs): return one "
                "value per sample, shape (B,), by summing over every dimension except the first, e.g. "
                "`.flatten(1).sum(1)`.",
            ),
            (
                lambda m, lv: kl_divergence(m, lv).mean(),
                "You returned one number for the whole batch (the mean of the per-sample KLs): return one "
                "value per sample, shape (B,), by summing over every dimension except the first; the loss "
                "averages over the batch later.",
            ),
            (
                lambda m, lv: 2 * kl_divergence(m, lv),
                "Your values are twice the KL: you forgot the factor ½ in front of the sum.",
            ),
            (
                lambda m, lv: 0.5 * terms(m, lv).flatten(1).mean(1),
                "You averaged over the latent entries: the KL of a diagonal Gaussian is the sum of the "
                "per-entry KLs, so sum over the non-batch dimensions (`.sum`, not `.mean`).",
            ),
            (
                lambda m, lv: 0.5 * terms(m, lv).sum(dim=(2, 3)),
                "You summed over height and width only: sum over the channels too (every dimension except "
                "the batch), so that each sample gets one number.",
            ),
            (
                _kl_terms(lambda m, lv: m.pow(2) + lv.exp() - 1 + lv),
                "Sign error on the log term: it is − log σ² (`- logvar`), not + log σ². With − the KL is "
                "never negative and is 0 exactly when μ = 0 and σ = 1.",
            ),
            (
                _kl_terms(lambda m, lv: m.pow(2) + lv.pow(2) - 1 - lv),
                "You used logvar² where σ² belongs: `logvar` is log σ², so σ² = exp(logvar) "
                "(`logvar.exp()`).",
            ),
            (
                _kl_terms(lambda m, lv: m.pow(2) + _std(lv) - 1 - lv),
                "You used σ = exp(½·logvar) where the formula has the variance σ² = exp(logvar).",
            ),
            (
                _kl_terms(lambda m, lv: m.pow(2) + lv.exp() - lv),
                "You forgot the − 1: without it the KL of the prior to itself (μ = 0, σ = 1) would be ½ per "
                "entry instead of 0.",
            ),
            (
                _kl_terms(lambda m, lv: lv.exp() - 1 - lv),
                "You forgot the μ² term: the KL grows as the mean moves away from 0.",
            ),
            (
                _kl_terms(lambda m, lv: m + lv.exp() - 1 - lv),
                "You used μ where the formula has μ²: square the mean (`mean.pow(2)`).",
            ),
            (
                lambda m, lv: -kl_divergence(m, lv),
                "Your values have the wrong sign: a KL divergence is never negative. "
                "KL = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²).",
            ),
        ],
        error_hints=[
            (
                "Dimension out of range",
                "Hint: sum over every dimension except the batch; `.flatten(1).sum(1)` works for any number "
                "of dimensions.",
            )
        ],
    )


# ---------------------------------------------------------------- the latent scale s


def _scale_cases(name: str) -> list[Case]:
    cases = []
    for seed, (shape, s) in enumerate([(SHAPES[0], 0.6), (SHAPES[1], 1.8)]):
        g = torch.Generator().manual_seed(20 + seed)
        x = 1.3 * torch.randn(shape, generator=g) + 0.2
        label = f"{name} of shape {shape} (float32), scaling_factor = {s}"
        cases.append(Case({name: x, "scaling_factor": s}, label=label))
    return cases


def check_scale_latents(fn) -> Feedback:
    """Check ``fn(mean, scaling_factor) -> s · μ``: the scaled latent the diffusion model is trained on."""
    return check_function(
        fn,
        name="scale_latents",
        cases=lambda: _scale_cases("mean"),
        reference=lambda m, s: s * m,
        diagnoses=[
            (
                lambda m, s: m / s,
                "You divided by s. Encoding multiplies: z̃ = s·μ (s = 1/std of the latents makes them "
                "unit-variance); dividing by s is the decoding side.",
            ),
            (
                lambda m, s: s * s * m,
                "You multiplied by s² (s·s): s is already 1/std, so the latent is multiplied by s once, "
                "z̃ = s·μ.",
            ),
            (
                lambda m, s: m / (s * s),
                "You divided by s²: the scaled latent is z̃ = s·μ, one multiplication by s (= 1/std).",
            ),
            (
                lambda m, s: m.clone(),
                "You returned the latent unchanged: multiply it by `scaling_factor`, z̃ = s·μ, so that the "
                "diffusion model sees unit-variance data as its noise schedule assumes.",
            ),
            (
                lambda m, s: m / m.std(),
                "You divided by this batch's own std: use the stored `scaling_factor` s (measured once on "
                "the training set), so that every batch, and the decoder later, use the same number.",
            ),
            (
                lambda m, s: (m - m.mean()) / m.std(),
                "You standardised the batch (subtracted its mean, divided by its std): latent diffusion only "
                "multiplies by the stored `scaling_factor`, z̃ = s·μ.",
            ),
        ],
    )


def check_unscale_latents(fn) -> Feedback:
    """Check ``fn(latents, scaling_factor) -> z̃ / s``: the unscaled latent the decoder takes."""
    return check_function(
        fn,
        name="unscale_latents",
        cases=lambda: _scale_cases("latents"),
        reference=lambda z, s: z / s,
        diagnoses=[
            (
                lambda z, s: s * z,
                "You multiplied by s. Decoding undoes the encoder's scaling: divide, z = z̃ / s (the decoder "
                "was trained on unscaled latents).",
            ),
            (
                lambda z, s: z / (s * s),
                "You divided by s²: undo the scaling once, z = z̃ / s.",
            ),
            (
                lambda z, s: s * s * z,
                "You multiplied by s²: decoding divides by s once, z = z̃ / s.",
            ),
            (
                lambda z, s: z.clone(),
                "You returned the latents unchanged: divide them by `scaling_factor` before decoding, "
                "z = z̃ / s, since the decoder was trained on unscaled latents.",
            ),
        ],
    )


__all__ = ["check_kl", "check_reparameterize", "check_scale_latents", "check_unscale_latents"]
