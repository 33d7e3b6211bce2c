"""Checkers of notebook 03: right answers pass, each typical mistake (written as a learner would) is named."""

import pytest
import torch

from diffusion_course.exercises.ddpm import check_ddpm_step, check_posterior_mean, check_x0_from_eps


def not_written(*args):
    raise NotImplementedError("Exercise 1: write your code here")


# ---------------------------------------------------------------- posterior mean μ̃_t(x_t, x_0)


def posterior_mean(x_t, x0, t, schedule, *, wrap=False, sqrt_ab_on_xt=False, shift=False, no_sqrt=False):
    """The textbook posterior mean, with switches for typical mistakes."""
    ab = schedule.alpha_bar[t]
    ab_prev = schedule.alpha_bar[t - 1] if wrap else schedule.alpha_bar_prev[t]
    if shift:
        ab_prev = ab
    a, b = schedule.alphas[t], schedule.betas[t]
    c0 = ab_prev.sqrt() * b / (1 - ab)
    ct = (ab if sqrt_ab_on_xt else a).sqrt() * (1 - ab_prev) / (1 - ab)
    if no_sqrt:
        c0, ct = ab_prev * b / (1 - ab), a * (1 - ab_prev) / (1 - ab)
    return c0 * x0 + ct * x_t


def test_posterior_mean_right_answers_pass():
    assert check_posterior_mean(posterior_mean).passed

    def via_gaussian_conditioning(x_t, x0, t, schedule):
        # regression of x_{t−1} on x_t given x_0: mean + Cov/Var · (x_t − E x_t)
        ab, ab_prev, a = schedule.alpha_bar[t], schedule.alpha_bar_prev[t], schedule.alphas[t]
        slope = a.sqrt() * (1 - ab_prev) / (1 - ab)
        return ab_prev.sqrt() * x0 + slope * (x_t - ab.sqrt() * x0)

    assert check_posterior_mean(via_gaussian_conditioning).passed
    todo = check_posterior_mean(not_written)
    assert not todo.passed and not todo.attempted


@pytest.mark.parametrize(
    "mistake, words",
    [
        (dict(wrap=True), ["Wrong at t = 0 only", "alpha_bar_prev"]),
        (dict(sqrt_ab_on_xt=True), ["weight of x_t uses √ᾱ_t", "√α_t"]),
        (dict(shift=True), ["Off by one", "ᾱ_{t−1}"]),
        (dict(no_sqrt=True), ["Missing square roots"]),
    ],
)
def test_posterior_mean_mistakes_are_named(mistake, words):
    feedback = check_posterior_mean(lambda x_t, x0, t, s: posterior_mean(x_t, x0, t, s, **mistake))
    assert not feedback.passed and feedback.attempted
    assert all(w in feedback.message for w in words), feedback.message


def test_posterior_mean_swapped_and_unknown_mistakes():
    def swapped(x_t, x0, t, s):
        ab, ab_prev, a, b = s.alpha_bar[t], s.alpha_bar_prev[t], s.alphas[t], s.betas[t]
        return ab_prev.sqrt() * b / (1 - ab) * x_t + a.sqrt() * (1 - ab_prev) / (1 - ab) * x0

    assert "swapped" in check_posterior_mean(swapped).message
    unknown = check_posterior_mean(lambda x_t, x0, t, s: 0.5 * (x_t + x0))
    assert "largest error" in unknown.message and "at index" in unknown.message


# ---------------------------------------------------------------- x̂_0 from ε


def x0_from_eps(x_t, eps, t, schedule):
    ab = schedule.alpha_bar[t]
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def test_x0_from_eps_right_answer_passes():
    assert check_x0_from_eps(x0_from_eps).passed
    assert not check_x0_from_eps(not_written).attempted


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda x, e, t, s: (x - (1 - s.alphas[t]).sqrt() * e) / s.alphas[t].sqrt(), ["α_t", "alpha_bar"]),
        (lambda x, e, t, s: (x - (1 - s.alpha_bar[t]) * e) / s.alpha_bar[t].sqrt(), ["√(1−ᾱ_t)·ε"]),
        (lambda x, e, t, s: (x - (1 - s.alpha_bar[t]).sqrt() * e) / s.alpha_bar[t], ["Divide by √ᾱ_t"]),
        (lambda x, e, t, s: x - (1 - s.alpha_bar[t]).sqrt() * e, ["did not undo the shrinking"]),
        (lambda x, e, t, s: x / s.alpha_bar[t].sqrt() - (1 - s.alpha_bar[t]).sqrt() * e, ["Brackets"]),
        (lambda x, e, t, s: (x + (1 - s.alpha_bar[t]).sqrt() * e) / s.alpha_bar[t].sqrt(), ["Sign"]),
        (lambda x, e, t, s: (x - s.alpha_bar[t].sqrt() * e) / (1 - s.alpha_bar[t]).sqrt(), ["swapped"]),
        (
            lambda x, e, t, s: (x - (1 - s.alpha_bar_prev[t]).sqrt() * e) / s.alpha_bar_prev[t].sqrt(),
            ["Off by one"],
        ),
    ],
)
def test_x0_from_eps_mistakes_are_named(wrong, words):
    feedback = check_x0_from_eps(wrong)
    assert not feedback.passed and feedback.attempted
    assert all(w in feedback.message for w in words), feedback.message


def test_x0_from_eps_unknown_mistake_gets_the_generic_message():
    feedback = check_x0_from_eps(lambda x, e, t, s: x - e)
    assert "largest error" in feedback.message and "at index" in feedback.message


# ---------------------------------------------------------------- the reverse step


def ddpm_step(
    x_t,
    eps,
    t,
    noise,
    schedule,
    *,
    mean_denominator="sqrt",
    divide_by="alpha",
    variance="beta_tilde",
    sigma_is_variance=False,
    wrap=False,
    fresh_noise=False,
):
    """x_{t−1} = (x_t − β_t/√(1−ᾱ_t) ε)/√α_t + σ_t z, with switches for typical mistakes."""
    ab, a, b = schedule.alpha_bar[t], schedule.alphas[t], schedule.betas[t]
    ab_prev = schedule.alpha_bar[t - 1] if wrap else schedule.alpha_bar_prev[t]
    denominator = (1 - ab).sqrt() if mean_denominator == "sqrt" else 1 - ab
    mean = (x_t - b / denominator * eps) / (a if divide_by == "alpha" else ab).sqrt()
    var = (1 - ab_prev) / (1 - ab) * b if variance == "beta_tilde" else b
    sigma = var if sigma_is_variance else var.sqrt()
    if fresh_noise:
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(123))
    return mean + sigma * noise


def test_ddpm_step_right_answers_pass():
    assert check_ddpm_step(ddpm_step).passed

    def via_x0(x_t, eps, t, noise, schedule):  # the Bayes-form mean at x̂_0, the same step
        ab, ab_prev, a, b = (
            v[t] for v in (schedule.alpha_bar, schedule.alpha_bar_prev, schedule.alphas, schedule.betas)
        )
        x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
        mean = ab_prev.sqrt() * b / (1 - ab) * x0 + a.sqrt() * (1 - ab_prev) / (1 - ab) * x_t
        return mean + ((1 - ab_prev) / (1 - ab) * b).sqrt() * noise if t > 0 else mean

    assert check_ddpm_step(via_x0).passed
    assert not check_ddpm_step(not_written).attempted


@pytest.mark.parametrize(
    "mistake, words",
    [
        (dict(mean_denominator="variance"), ["must be √(1 − ᾱ_t)"]),
        (dict(divide_by="alpha_bar"), ["divided by √ᾱ_t", "√α_t"]),
        (dict(variance="beta"), ["σ_t² = β_t", "β̃_t"]),
        (dict(sigma_is_variance=True), ["standard deviation √β̃_t"]),
        (dict(wrap=True), ["At t = 0", "adds noise", "alpha_bar_prev"]),
        (dict(fresh_noise=True), ["not the `noise` argument"]),
    ],
)
def test_ddpm_step_mistakes_are_named(mistake, words):
    feedback = check_ddpm_step(lambda x, e, t, z, s: ddpm_step(x, e, t, z, s, **mistake))
    assert not feedback.passed and feedback.attempted
    assert all(w in feedback.message for w in words), feedback.message


def test_ddpm_step_more_mistakes():
    no_noise = lambda x, e, t, z, s: ddpm_step(x, e, t, torch.zeros_like(z), s)
    assert "no noise in your step" in check_ddpm_step(no_noise).message

    def alpha_in_denominator(x_t, eps, t, noise, s):
        a, b = s.alphas[t], s.betas[t]
        return (x_t - b / (1 - a).sqrt() * eps) / a.sqrt() + s.posterior_variance[t].sqrt() * noise

    assert "√(1 − α_t) = √β_t" in check_ddpm_step(alpha_in_denominator).message

    def noise_always_beta(x_t, eps, t, noise, s):  # σ² = β̃ except a forced √β on the last step
        out = ddpm_step(x_t, eps, t, noise, s)
        return out + s.betas[0].sqrt() * noise if t == 0 else out

    assert "At t = 0" in check_ddpm_step(noise_always_beta).message
    unknown = check_ddpm_step(lambda x, e, t, z, s: x - 0.1 * e)
    assert "largest error" in unknown.message
