"""Checkers of notebook 04: right answers pass, each typical mistake (written as a learner would) is named."""

import math

import pytest
import torch

from diffusion_course.exercises.ddim import check_ddim_sigma, check_ddim_step
from diffusion_course.sampling import ddim_sigma


def not_written(*args):
    raise NotImplementedError("Exercise 1: write your code here")


# ---------------------------------------------------------------- σ (Eq. 16)


def sigma(ab_t, ab_prev, eta):
    return eta * ((1 - ab_prev) / (1 - ab_t)).sqrt() * (1 - ab_t / ab_prev).sqrt()


def test_ddim_sigma_right_answers_pass():
    assert check_ddim_sigma(sigma).passed
    # the same σ written as η √β̃ of the strided step
    strided_beta_tilde = lambda ab_t, ab_p, eta: eta * ((1 - ab_p) / (1 - ab_t) * (1 - ab_t / ab_p)).sqrt()
    assert check_ddim_sigma(strided_beta_tilde).passed
    todo = check_ddim_sigma(not_written)
    assert not todo.passed and not todo.attempted


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda ab_t, ab_p, eta: sigma(ab_t, ab_p, 1.0), ["does not depend on η"]),
        (lambda ab_t, ab_p, eta: eta**2 * sigma(ab_t, ab_p, 1.0), ["η²"]),
        (lambda ab_t, ab_p, eta: sigma(ab_t, ab_p, eta) ** 2, ["You returned σ²"]),
        (lambda ab_t, ab_p, eta: eta * (1 - ab_p) / (1 - ab_t) * (1 - ab_t / ab_p), ["Missing square roots"]),
        (lambda ab_t, ab_p, eta: eta * torch.sqrt(1 - ab_t / ab_p), ["only the factor", "σ² = β̃"]),
        (
            lambda ab_t, ab_p, eta: eta * ((1 - ab_t) / (1 - ab_p)).sqrt() * (1 - ab_t / ab_p).sqrt(),
            ["upside down"],
        ),
        (lambda ab_t, ab_p, eta: eta * ((1 - ab_p) / (1 - ab_t)).sqrt() * (1 - ab_p / ab_t).sqrt(), ["NaN"]),
        (
            lambda ab_t, ab_p, eta: eta * ((1 - ab_p) / (1 - ab_t)).sqrt() * (1 - ab_t).sqrt(),
            ["1 − ᾱ_t/ᾱ_prev"],
        ),
        (lambda ab_t, ab_p, eta: eta * math.sqrt(1 - ab_t / ab_p), ["RuntimeError", "torch.sqrt"]),
    ],
)
def test_ddim_sigma_mistakes_are_named(wrong, words):
    feedback = check_ddim_sigma(wrong)
    assert not feedback.passed and feedback.attempted
    assert all(w in feedback.message for w in words), feedback.message


def test_ddim_sigma_unknown_mistake_gets_the_generic_message():
    feedback = check_ddim_sigma(lambda ab_t, ab_p, eta: eta * (ab_p - ab_t))
    assert "largest error" in feedback.message and "at index" in feedback.message


# ---------------------------------------------------------------- the DDIM step (Eq. 12)


def ddim_step(
    x_t,
    eps,
    t,
    t_prev,
    schedule,
    eta,
    noise,
    *,
    table="alpha_bar",
    final="clean",
    sigma_kind="eq16",
    direction_minus_sigma2=True,
    add_noise=True,
    direction_along="eps",
):
    """x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε + σ z, with switches for typical mistakes."""
    values = schedule.alpha_bar if table == "alpha_bar" else schedule.alphas
    ab_t = values[t]
    if t_prev >= 0:
        ab_prev = values[t_prev]
    elif final == "clean":
        ab_prev = torch.tensor(1.0, dtype=torch.float64)
    elif final == "wrap":
        ab_prev = values[t_prev]
    else:  # "consecutive": ᾱ_{t−1}
        ab_prev = schedule.alpha_bar_prev[t]
    if final == "consecutive":
        ab_prev = schedule.alpha_bar_prev[t]
    if eta == 0:
        s = torch.tensor(0.0, dtype=torch.float64)
    elif sigma_kind == "eq16":
        s = ddim_sigma(ab_t, ab_prev, eta)
    elif sigma_kind == "consecutive":
        s = eta * schedule.posterior_variance[t].sqrt()
    elif sigma_kind == "beta":
        s = eta * (1 - ab_t / ab_prev).sqrt()
    else:  # "variance": σ² used as σ
        s = ddim_sigma(ab_t, ab_prev, eta) ** 2
    x0 = (x_t - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
    dir_var = 1 - ab_prev - (s**2 if direction_minus_sigma2 else 0.0)
    along = eps if direction_along == "eps" else noise
    out = ab_prev.sqrt() * x0 + dir_var.sqrt() * along
    return out + s * noise if add_noise else out


def test_ddim_step_right_answers_pass():
    assert check_ddim_step(ddim_step).passed

    def with_the_package_pieces(x_t, eps, t, t_prev, schedule, eta, noise):
        from diffusion_course.sampling import ddim_direction_variance, predict_x0

        ab_t = float(schedule.alpha_bar[t])
        ab_prev = float(schedule.alpha_bar[t_prev]) if t_prev >= 0 else 1.0
        x0 = predict_x0(x_t, eps, ab_t)
        s = ddim_sigma(ab_t, ab_prev, eta)
        return (
            math.sqrt(ab_prev) * x0 + math.sqrt(ddim_direction_variance(ab_t, ab_prev, eta)) * eps + s * noise
        )

    assert check_ddim_step(with_the_package_pieces).passed
    assert not check_ddim_step(not_written).attempted


@pytest.mark.parametrize(
    "mistake, words",
    [
        (dict(table="alphas"), ["α (`schedule.alphas`)", "ᾱ"]),
        (dict(final="wrap"), ["last step (t_prev = −1)", "ᾱ = 1"]),
        (dict(final="consecutive"), ["ᾱ_{t−1}", "t_prev"]),
        (dict(direction_minus_sigma2=False), ["left out the −σ²"]),
        (dict(sigma_kind="consecutive"), ["one consecutive step", "Eq. 16"]),
        (dict(sigma_kind="beta"), ["σ² = β", "√((1−ᾱ_prev)/(1−ᾱ_t))"]),
        (dict(sigma_kind="variance"), ["σ² of Eq. 16"]),
        (dict(add_noise=False), ["no σ·z term"]),
        (dict(direction_along="noise"), ["along the predicted ε"]),
    ],
)
def test_ddim_step_mistakes_are_named(mistake, words):
    feedback = check_ddim_step(lambda *args: ddim_step(*args, **mistake))
    assert not feedback.passed and feedback.attempted
    assert all(w in feedback.message for w in words), feedback.message


def test_ddim_step_last_step_errors_get_the_hint():
    def raises_on_the_last_step(x_t, eps, t, t_prev, schedule, eta, noise):
        ab_t, ab_prev = float(schedule.alpha_bar[t]), float(schedule.alpha_bar[t_prev])
        s = eta * math.sqrt((1 - ab_prev) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_prev)  # domain error at −1
        x0 = (x_t - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
        return math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev - s**2) * eps + s * noise

    feedback = check_ddim_step(raises_on_the_last_step)
    assert "ValueError: math domain error" in feedback.message and "t_prev = −1" in feedback.message
    unknown = check_ddim_step(lambda x, e, t, tp, s, eta, z: x - e)
    assert "largest error" in unknown.message
