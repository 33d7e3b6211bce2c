"""Checkers of notebook 09: the right slerp and inversion step pass, each typical mistake is named."""

import math

import pytest
import torch

from diffusion_course.exercises.inversion import check_ddim_inversion_step, check_slerp


def not_written(*args):
    raise NotImplementedError("Exercise 1: write your code here")


# ---------------------------------------------------------------- slerp


def slerp_solution(z0, z1, alpha):
    a, b = z0.flatten(1), z1.flatten(1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    theta = torch.arccos(cos.clamp(-1, 1)).view(-1, 1, 1, 1)
    return (torch.sin((1 - alpha) * theta) * z0 + torch.sin(alpha * theta) * z1) / torch.sin(theta)


def per_sample_theta(z0, z1):
    a, b = z0.flatten(1), z1.flatten(1)
    return torch.arccos((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).view(-1, 1, 1, 1)


def slerp_theta(theta_fn, normalise=True):
    def fn(z0, z1, alpha):
        theta = theta_fn(z0, z1)
        w0, w1 = torch.sin((1 - alpha) * theta), torch.sin(alpha * theta)
        if normalise:
            w0, w1 = w0 / torch.sin(theta), w1 / torch.sin(theta)
        return w0 * z0 + w1 * z1

    return fn


def batch_theta(z0, z1):
    return torch.arccos((z0 * z1).sum() / (z0.norm() * z1.norm()))


def raw_dot_theta(z0, z1):
    return torch.arccos((z0.flatten(1) * z1.flatten(1)).sum(1)).view(-1, 1, 1, 1)


def unit_slerp(z0, z1, alpha):
    n0 = z0.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    n1 = z1.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return slerp_solution(z0 / n0, z1 / n1, alpha)


def test_slerp_solution_passes():
    result = check_slerp(slerp_solution)
    assert result.passed, result
    # a float32 round trip within the tolerance is fine too
    assert check_slerp(lambda z0, z1, a: slerp_solution(z0, z1, a)).passed


def test_slerp_not_attempted():
    result = check_slerp(not_written)
    assert not result.passed and not result.attempted


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda z0, z1, a: (1 - a) * z0 + a * z1, ["linear interpolation"]),
        (slerp_theta(per_sample_theta, normalise=False), ["division by sin θ"]),
        (lambda z0, z1, a: slerp_solution(z0, z1, 1 - a), ["α is swapped"]),
        (slerp_theta(batch_theta), ["one θ over the whole batch"]),
        (slerp_theta(lambda z0, z1: torch.cos(per_sample_theta(z0, z1))), ["arccos"]),
        (slerp_theta(lambda z0, z1: torch.rad2deg(per_sample_theta(z0, z1))), ["degrees"]),
        (slerp_theta(lambda z0, z1: per_sample_theta(z0, z1) / 2), ["θ/2"]),
        (unit_slerp, ["directions z/‖z‖"]),
        (slerp_theta(raw_dot_theta), ["raw dot product"]),
        (lambda z0, z1, a: slerp_solution(z0, z1, a) + 0.01, ["largest error", "at index"]),
    ],
)
def test_slerp_mistakes_are_named(fn, words):
    result = check_slerp(fn)
    assert not result.passed and result.attempted
    for word in words:
        assert word in str(result), (word, str(result))


def test_slerp_broadcast_error_gets_a_hint():
    def no_reshape(z0, z1, alpha):
        theta = per_sample_theta(z0, z1).view(-1)
        return torch.sin((1 - alpha) * theta) * z0 / torch.sin(theta)

    result = check_slerp(no_reshape)
    assert "RuntimeError" in str(result) and ".view(-1, 1, 1, 1)" in str(result)


# ---------------------------------------------------------------- DDIM inversion step


def inversion_solution(x, eps, alpha_bar_cur, alpha_bar_next):
    x0 = (x - math.sqrt(1 - alpha_bar_cur) * eps) / math.sqrt(alpha_bar_cur)
    return math.sqrt(alpha_bar_next) * x0 + math.sqrt(1 - alpha_bar_next) * eps


def x0_of(x, eps, ab):
    return (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)


def test_inversion_solution_passes():
    result = check_ddim_inversion_step(inversion_solution)
    assert result.passed, result
    assert not check_ddim_inversion_step(not_written).attempted


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda x, e, c, n: inversion_solution(x, e, n, c), ["swapped"]),
        (lambda x, e, c, n: math.sqrt(n) * x0_of(x, e, c) - math.sqrt(1 - n) * e, ["Wrong direction"]),
        (lambda x, e, c, n: x0_of(x, e, c), ["You returned x̂₀"]),
        (lambda x, e, c, n: math.sqrt(n) * x + math.sqrt(1 - n) * e, ["as if it were clean data"]),
        (
            lambda x, e, c, n: math.sqrt(n) * (x - math.sqrt(1 - c) * e) + math.sqrt(1 - n) * e,
            ["division by √ᾱ_cur"],
        ),
        (lambda x, e, c, n: n * x0_of(x, e, c) + (1 - n) * e, ["Missing square roots"]),
        (lambda x, e, c, n: math.sqrt(n / c) * x, ["rescaled x"]),
        (lambda x, e, c, n: inversion_solution(x, e, c, n) * 1.01, ["largest error"]),
    ],
)
def test_inversion_mistakes_are_named(fn, words):
    result = check_ddim_inversion_step(fn)
    assert not result.passed and result.attempted
    for word in words:
        assert word in str(result), (word, str(result))


def test_inversion_tensor_sqrt_of_a_float_gets_a_hint():
    def uses_torch_sqrt(x, eps, c, n):
        return torch.sqrt(n) * x0_of(x, eps, c) + torch.sqrt(1 - n) * eps

    result = check_ddim_inversion_step(uses_torch_sqrt)
    assert "TypeError" in str(result) and "math.sqrt" in str(result)
