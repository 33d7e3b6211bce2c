"""Checkers of notebook 11: v from ε, the flow-matching loss and one Euler step of the flow ODE."""

import math

import pytest
import torch

from diffusion_course.exercises.flow import (
    check_eps_to_v,
    check_flow_euler_step,
    check_flow_matching_loss,
    toy_velocity,
)
from diffusion_course.parameterizations import eps_from_v, x0_from_v
from diffusion_course.sampling import run_flow_sampler
from diffusion_course.training import flow_matching_loss, flow_time_samples

pytestmark = pytest.mark.usefixtures("one_thread")


def not_written(*args):
    raise NotImplementedError("Exercise: write your code here")


def assert_named(feedback, words):
    assert not feedback.passed and feedback.attempted, str(feedback)
    for word in words:
        assert word in feedback.message, (word, feedback.message)


def test_toy_velocity_depends_on_t_and_takes_a_float_or_one_time_per_sample():
    x = torch.randn(3, 1, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(toy_velocity(x, 0.2), toy_velocity(x, 0.7))
    assert torch.allclose(toy_velocity(x, torch.full((3,), 0.7)), toy_velocity(x, 0.7))
    t = torch.tensor([0.1, 0.5, 0.9])
    assert torch.allclose(toy_velocity(x, t)[2], toy_velocity(x[2:], 0.9)[0])


# --- v from ε ----------------------------------------------------------------------------------------------


def v_right(x_t, eps, alpha_bar):
    a, s = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    x0 = (x_t - s * eps) / a
    return a * eps - s * x0


def v_closed_form(x_t, eps, alpha_bar):
    return (eps - math.sqrt(1 - alpha_bar) * x_t) / math.sqrt(alpha_bar)


def test_v_solutions_pass_and_invert_with_the_package():
    assert check_eps_to_v(v_right).passed
    assert check_eps_to_v(v_closed_form).passed
    # the v the checker accepts gives back ε and x̂₀ through the package's inverse conversions
    g = torch.Generator().manual_seed(3)
    x_t, eps = torch.randn(2, 4, 3, dtype=torch.float64, generator=g)
    v = v_right(x_t, eps, 0.3)
    assert torch.allclose(eps_from_v(x_t, v, 0.3), eps)
    assert torch.allclose(x0_from_v(x_t, v, 0.3), (x_t - math.sqrt(0.7) * eps) / math.sqrt(0.3))


def test_v_not_attempted():
    todo = check_eps_to_v(not_written)
    assert not todo.passed and not todo.attempted


def v_swapped(x_t, eps, ab):
    x0 = (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    return math.sqrt(1 - ab) * eps - math.sqrt(ab) * x0


def v_sign(x_t, eps, ab):
    x0 = (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    return math.sqrt(1 - ab) * x0 - math.sqrt(ab) * eps


def v_with_x_t(x_t, eps, ab):
    return math.sqrt(ab) * eps - math.sqrt(1 - ab) * x_t


def v_no_roots(x_t, eps, ab):
    x0 = (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    return ab * eps - (1 - ab) * x0


def v_undivided_x0(x_t, eps, ab):
    return math.sqrt(ab) * eps - math.sqrt(1 - ab) * (x_t - math.sqrt(1 - ab) * eps)


@pytest.mark.parametrize(
    "wrong, words",
    [
        (v_swapped, ["√ᾱ and √(1−ᾱ) are swapped"]),
        (v_sign, ["sign is flipped", "−v"]),
        (v_with_x_t, ["You used x_t where v needs the clean x̂₀"]),
        (v_no_roots, ["Missing square roots"]),
        (v_undivided_x0, ["missing the division by √ᾱ"]),
    ],
)
def test_v_slips_are_named(wrong, words):
    assert_named(check_eps_to_v(wrong), words)


def v_torch_sqrt_of_a_float(x_t, eps, ab):
    return (eps - torch.sqrt(1 - ab) * x_t) / torch.sqrt(ab)


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda x_t, eps, ab: x_t[0], ["returned shape (1, 5, 7)", "expected (3, 1, 5, 7)"]),
        (lambda x_t, eps, ab: v_right(x_t, eps, ab).tolist(), ["returned a list", "torch.Tensor"]),
        (lambda x_t, eps, ab: v_right(x_t, eps, ab).numpy(), ["numpy array"]),
        (lambda x_t, eps, ab: None, ["returned None", "return"]),
        (v_torch_sqrt_of_a_float, ["raised TypeError", "alpha_bar is a Python float"]),
        (lambda x_t, eps, ab: 1.01 * v_right(x_t, eps, ab), ["largest error", "at index"]),
    ],
)
def test_v_other_failures_are_reported(wrong, words):
    assert_named(check_eps_to_v(wrong), words)


# --- the flow-matching loss ---------------------------------------------------------------------------------


def loss_right(model, x0, noise, t):
    tt = t.view(-1, *[1] * (x0.ndim - 1))
    x_t = (1 - tt) * x0 + tt * noise
    return ((model(x_t, t) - (noise - x0)) ** 2).mean()


def test_loss_solution_passes_and_is_the_packages_loss():
    assert check_flow_matching_loss(loss_right).passed
    # flow_matching_loss draws t, then ε, from its generator: replayed, they give the same number
    x0 = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    package = flow_matching_loss(toy_velocity, x0, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    t = flow_time_samples(5, "logit_normal", g)
    noise = torch.randn(x0.shape, generator=g)
    assert torch.allclose(package, loss_right(toy_velocity, x0, noise, t), rtol=1e-6)


def test_loss_not_attempted():
    todo = check_flow_matching_loss(not_written)
    assert not todo.passed and not todo.attempted


def _loss(*, reversed_path=False, target=lambda x0, n: n - x0, model_t=lambda t: t, reduce=torch.mean):
    def wrong(model, x0, noise, t):
        tt = t.view(-1, *[1] * (x0.ndim - 1))
        x_t = tt * x0 + (1 - tt) * noise if reversed_path else (1 - tt) * x0 + tt * noise
        return reduce((model(x_t, model_t(t)) - target(x0, noise)) ** 2)

    return wrong


def loss_on_x0(model, x0, noise, t):
    return ((model(x0, t) - (noise - x0)) ** 2).mean()


def loss_image_reshape(model, x0, noise, t):
    tt = t.view(-1, 1, 1, 1)
    x_t = (1 - tt) * x0 + tt * noise
    return ((model(x_t, t) - (noise - x0)) ** 2).mean()


@pytest.mark.parametrize(
    "wrong, words",
    [
        (_loss(reversed_path=True), ["path runs the wrong way", "t = 1 is the noise"]),
        (_loss(target=lambda x0, noise: x0 - noise), ["wrong sign", "you used x0 − ε"]),
        (_loss(target=lambda x0, noise: noise), ["Your target is ε alone"]),
        (_loss(target=lambda x0, noise: x0), ["Your target is x0"]),
        (_loss(reduce=torch.sum), ["You summed the squared errors"]),
        (_loss(reduce=lambda e: e), ["squared error of every element"]),
        (_loss(model_t=lambda t: 1 - t), ["called the model with 1 − t"]),
        (loss_on_x0, ["gave the model the clean x0"]),
        (loss_image_reshape, ["reshaped t to (B, 1, 1, 1)", "x0.ndim"]),
    ],
)
def test_loss_slips_are_named(wrong, words):
    assert_named(check_flow_matching_loss(wrong), words)


def loss_without_reshape(model, x0, noise, t):
    x_t = (1 - t) * x0 + t * noise
    return ((model(x_t, t) - (noise - x0)) ** 2).mean()


@pytest.mark.parametrize(
    "wrong, words",
    [
        (loss_without_reshape, ["raised RuntimeError", "reshape it to (B, 1, …, 1)"]),
        (lambda m, x0, n, t: loss_right(m, x0, n, t).reshape(1), ["returned shape (1,)", "expected ()"]),
        (lambda m, x0, n, t: loss_right(m, x0, n, t).item(), ["returned a float", "torch.Tensor"]),
        (lambda m, x0, n, t: None, ["returned None"]),
        (lambda m, x0, n, t: 1.01 * loss_right(m, x0, n, t), ["largest error", "at index"]),
    ],
)
def test_loss_other_failures_are_reported(wrong, words):
    assert_named(check_flow_matching_loss(wrong), words)


# --- one Euler step of the flow ODE -------------------------------------------------------------------------


def euler_right(velocity_model, x, t, t_next):
    return x + (t_next - t) * velocity_model(x, t)


def test_euler_solution_passes_and_is_the_packages_sampler_step():
    assert check_flow_euler_step(euler_right).passed
    x = torch.randn(3, 1, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    for t in (1.0, 0.3):
        one_step = run_flow_sampler("euler", toy_velocity, x, times=torch.tensor([t, 0.0]))
        assert torch.allclose(one_step, euler_right(toy_velocity, x, t, 0.0), rtol=1e-6, atol=1e-7)


def test_euler_not_attempted():
    todo = check_flow_euler_step(not_written)
    assert not todo.passed and not todo.attempted


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda u, x, t, tn: x + (t - tn) * u(x, t), ["step goes the wrong way", "t − t_next"]),
        (lambda u, x, t, tn: x + (tn - t) * u(x, tn), ["evaluated the velocity at t_next"]),
        (lambda u, x, t, tn: x - t * u(x, t), ["You returned x̂₀ = x − t·u"]),
        (lambda u, x, t, tn: x + tn * u(x, t), ["Your step size is t_next"]),
    ],
)
def test_euler_slips_are_named(wrong, words):
    assert_named(check_flow_euler_step(wrong), words)


def euler_raises(velocity_model, x, t, t_next):
    return x + (t_next - t) * velocity_model(x)


@pytest.mark.parametrize(
    "wrong, words",
    [
        (euler_raises, ["raised TypeError", "t = 1.0, t_next = 0.75"]),
        (lambda u, x, t, tn: euler_right(u, x, t, tn).flatten(1), ["returned shape (3, 35)", "(3, 1, 5, 7)"]),
        (lambda u, x, t, tn: float(euler_right(u, x, t, tn).mean()), ["returned a float", "torch.Tensor"]),
        (lambda u, x, t, tn: None, ["returned None"]),
        (lambda u, x, t, tn: 1.01 * euler_right(u, x, t, tn), ["largest error", "at index"]),
    ],
)
def test_euler_other_failures_are_reported(wrong, words):
    assert_named(check_flow_euler_step(wrong), words)
