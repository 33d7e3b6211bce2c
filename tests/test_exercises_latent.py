"""Checkers of notebook 13: the reparameterised sample, the KL term and the latent scale s."""

import pytest
import torch
from torch.distributions import Normal
from torch.distributions import kl_divergence as torch_kl

from diffusion_course.exercises.latent import (
    check_kl,
    check_reparameterize,
    check_scale_latents,
    check_unscale_latents,
)
from diffusion_course.models.autoencoder import kl_divergence, reparameterize

pytestmark = pytest.mark.usefixtures("one_thread")


def not_written(*args):
    raise NotImplementedError("Exercise 1: write your code here")


def assert_named(feedback, words):
    assert not feedback.passed and feedback.attempted, str(feedback)
    for word in words:
        assert word in feedback.message, (word, feedback.message)


# ---------------------------------------------------------------- z = μ + σ ε


def reparameterize_right(mean, logvar, noise):
    return mean + torch.exp(0.5 * logvar) * noise


def test_reparameterize_solution_passes_and_is_the_packages_formula():
    assert check_reparameterize(reparameterize_right).passed
    assert check_reparameterize(lambda m, lv, e: m + lv.exp().sqrt() * e).passed
    assert check_reparameterize(lambda m, lv, e: torch.addcmul(m, (lv / 2).exp(), e)).passed
    mean, logvar = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(5))
    package = reparameterize(mean, logvar, torch.Generator().manual_seed(5))
    assert torch.allclose(package, reparameterize_right(mean, logvar, noise))


def test_reparameterize_not_attempted():
    todo = check_reparameterize(not_written)
    assert not todo.passed and not todo.attempted and "not attempted yet" in str(todo)


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda m, lv, e: m + torch.exp(lv) * e, ["exp(logvar) = σ²", "standard deviation"]),
        (lambda m, lv, e: m + lv * e, ["`logvar` as if it were σ"]),
        (lambda m, lv, e: m + torch.sqrt(lv) * e, ["square root of `logvar`"]),
        (lambda m, lv, e: m + torch.exp(-0.5 * lv) * e, ["Sign error in the exponent"]),
        (lambda m, lv, e: m, ["You returned the mean", "no noise"]),
        (lambda m, lv, e: m + torch.exp(0.5 * lv), ["without the noise"]),
        (lambda m, lv, e: m + e, ["noise unscaled"]),
        (lambda m, lv, e: torch.exp(0.5 * lv) * e, ["forgot the mean"]),
        (lambda m, lv, e: m * e + torch.exp(0.5 * lv), ["roles are swapped"]),
        (lambda m, lv, e: (m + torch.exp(0.5 * lv)) * e, ["multiplied the mean by the noise as well"]),
        (lambda m, lv, e: m * e, ["multiplied the mean by the noise"]),
        (lambda m, lv, e: reparameterize_right(m, lv, torch.randn_like(e)), ["not the `noise` argument"]),
        (lambda m, lv, e: m.add_(torch.exp(0.5 * lv) * e), ["changed its input `mean` in place"]),
        (lambda m, lv, e: reparameterize_right(m, lv, e).double(), ["values are right", "torch.float32"]),
    ],
)
def test_reparameterize_mistakes_are_named(wrong, words):
    assert_named(check_reparameterize(wrong), words)


@pytest.mark.parametrize(
    "garbage, words",
    [
        (lambda m, lv, e: reparameterize_right(m, lv, e)[0], ["returned shape (3, 7, 7)", "(4, 3, 7, 7)"]),
        (lambda m, lv, e: reparameterize_right(m, lv, e) + 0.1, ["does not match", "largest error is 0.1"]),
        (lambda m, lv, e: None, ["returned None"]),
    ],
)
def test_reparameterize_unknown_answers_get_the_generic_message(garbage, words):
    assert_named(check_reparameterize(garbage), words)


# ---------------------------------------------------------------- KL(N(μ, σ²) ‖ N(0, I))


def kl_right(mean, logvar):
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).sum(dim=1)


def test_kl_solution_passes_and_is_the_closed_form():
    assert check_kl(kl_right).passed
    assert check_kl(kl_divergence).passed
    assert check_kl(lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 - lv).sum(dim=(1, 2, 3))).passed
    # the formula = torch's KL of the two diagonal Gaussians, summed over the entries of each sample
    mean, logvar = torch.randn(3, 2, 4, 4), torch.rand(3, 2, 4, 4) * 4 - 3
    exact = torch_kl(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(kl_right(mean, logvar), exact, rtol=1e-5)


def test_kl_not_attempted():
    assert not check_kl(not_written).attempted


def _kl_with(terms, reduce=lambda v: v.flatten(1).sum(1), half=0.5):
    return lambda m, lv: half * reduce(terms(m, lv))


RIGHT_TERMS = lambda m, lv: m**2 + lv.exp() - 1 - lv


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda m, lv: kl_right(m, lv).sum(), ["one number for the whole batch", "sum of the per-sample"]),
        (lambda m, lv: kl_right(m, lv).mean(), ["one number for the whole batch", "mean of the per-sample"]),
        (_kl_with(RIGHT_TERMS, half=1.0), ["forgot the factor ½"]),
        (_kl_with(RIGHT_TERMS, reduce=lambda v: v.flatten(1).mean(1)), ["averaged over the latent entries"]),
        (_kl_with(RIGHT_TERMS, reduce=lambda v: v.sum(dim=(2, 3))), ["height and width only"]),
        (_kl_with(lambda m, lv: m**2 + lv.exp() - 1 + lv), ["Sign error on the log term"]),
        (_kl_with(lambda m, lv: m**2 + lv**2 - 1 - lv), ["logvar² where σ² belongs"]),
        (_kl_with(lambda m, lv: m**2 + (0.5 * lv).exp() - 1 - lv), ["You used σ = exp(½·logvar)"]),
        (_kl_with(lambda m, lv: m**2 + lv.exp() - lv), ["forgot the − 1"]),
        (_kl_with(lambda m, lv: lv.exp() - 1 - lv), ["forgot the μ² term"]),
        (_kl_with(lambda m, lv: m + lv.exp() - 1 - lv), ["square the mean"]),
        (lambda m, lv: -kl_right(m, lv), ["never negative"]),
    ],
)
def test_kl_mistakes_are_named(wrong, words):
    assert_named(check_kl(wrong), words)


@pytest.mark.parametrize(
    "garbage, words",
    [
        (lambda m, lv: kl_right(m, lv)[:, None], ["returned shape (4, 1)", "expected (4,)"]),
        (lambda m, lv: kl_right(m, lv) * 1.01, ["does not match", "largest error"]),
        (lambda m, lv: kl_right(m, lv).tolist(), ["returned a list", "torch.Tensor"]),
        (lambda m, lv: kl_right(m, lv).sum(dim=5), ["IndexError", "`.flatten(1).sum(1)`"]),
    ],
)
def test_kl_unknown_answers_get_the_generic_message(garbage, words):
    assert_named(check_kl(garbage), words)


# ---------------------------------------------------------------- the latent scale s


def test_scale_solutions_pass_and_undo_each_other():
    assert check_scale_latents(lambda mean, s: s * mean).passed
    assert check_scale_latents(lambda mean, s: mean / (1 / s)).passed
    assert check_unscale_latents(lambda latents, s: latents / s).passed
    assert check_unscale_latents(lambda latents, s: latents * (1 / s)).passed
    assert not check_scale_latents(not_written).attempted
    assert not check_unscale_latents(not_written).attempted


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda m, s: m / s, ["You divided by s", "decoding side"]),
        (lambda m, s: m * s**2, ["multiplied by s²"]),
        (lambda m, s: m / s**2, ["divided by s²"]),
        (lambda m, s: m, ["latent unchanged"]),
        (lambda m, s: m / m.std(), ["this batch's own std", "`scaling_factor`"]),
        (lambda m, s: (m - m.mean()) / m.std(), ["standardised the batch"]),
    ],
)
def test_scale_mistakes_are_named(wrong, words):
    assert_named(check_scale_latents(wrong), words)


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda z, s: z * s, ["You multiplied by s.", "divide"]),
        (lambda z, s: z / s**2, ["divided by s²"]),
        (lambda z, s: z * s**2, ["multiplied by s²"]),
        (lambda z, s: z, ["latents unchanged"]),
    ],
)
def test_unscale_mistakes_are_named(wrong, words):
    assert_named(check_unscale_latents(wrong), words)


@pytest.mark.parametrize("checker", [check_scale_latents, check_unscale_latents])
def test_scale_unknown_answers_get_the_generic_message(checker):
    assert_named(checker(lambda x, s: x + s), ["does not match", "largest error"])
    assert_named(checker(lambda x, s: x.mean(dim=0)), ["returned shape (3, 7, 7)", "expected (4, 3, 7, 7)"])
    assert_named(checker(lambda x, s: float(s)), ["returned a float", "torch.Tensor"])
