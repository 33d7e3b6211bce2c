import math

import pytest

from diffusion_course.exercises.solvers import (
    check_dpmpp_2m_combination,
    check_dpmpp_first_order_step,
    check_euler_step,
    check_unipc_trapezoid,
)

# --- Euler in σ ---------------------------------------------------------------------------------------------


def euler_right(x_t, eps, ab_t, ab_prev):
    sigma_t, sigma_prev = math.sqrt((1 - ab_t) / ab_t), math.sqrt((1 - ab_prev) / ab_prev)
    return math.sqrt(ab_prev) * (x_t / math.sqrt(ab_t) + (sigma_prev - sigma_t) * eps)


def euler_no_scaling(x_t, eps, ab_t, ab_prev):
    sigma_t, sigma_prev = math.sqrt((1 - ab_t) / ab_t), math.sqrt((1 - ab_prev) / ab_prev)
    return x_t + (sigma_prev - sigma_t) * eps


def euler_no_division(x_t, eps, ab_t, ab_prev):
    sigma_t, sigma_prev = math.sqrt((1 - ab_t) / ab_t), math.sqrt((1 - ab_prev) / ab_prev)
    return math.sqrt(ab_prev) * (x_t + (sigma_prev - sigma_t) * eps)


def euler_tilde(x_t, eps, ab_t, ab_prev):
    sigma_t, sigma_prev = math.sqrt((1 - ab_t) / ab_t), math.sqrt((1 - ab_prev) / ab_prev)
    return x_t / math.sqrt(ab_t) + (sigma_prev - sigma_t) * eps


def euler_vp_sigma(x_t, eps, ab_t, ab_prev):
    return math.sqrt(ab_prev) * (x_t / math.sqrt(ab_t) + (math.sqrt(1 - ab_prev) - math.sqrt(1 - ab_t)) * eps)


def euler_sign(x_t, eps, ab_t, ab_prev):
    sigma_t, sigma_prev = math.sqrt((1 - ab_t) / ab_t), math.sqrt((1 - ab_prev) / ab_prev)
    return math.sqrt(ab_prev) * (x_t / math.sqrt(ab_t) - (sigma_prev - sigma_t) * eps)


def euler_nan_at_the_end(x_t, eps, ab_t, ab_prev):
    sigma_t = math.sqrt((1 - ab_t) / ab_t)
    sigma_prev = math.exp(-0.5 * (math.log(ab_prev) - math.log(1 - ab_prev))) if ab_prev < 1 else math.nan
    return math.sqrt(ab_prev) * (x_t / math.sqrt(ab_t) + (sigma_prev - sigma_t) * eps)


def test_euler_checker():
    assert check_euler_step(euler_right).passed

    def not_yet(x_t, eps, ab_t, ab_prev):
        raise NotImplementedError("Exercise 1")

    result = check_euler_step(not_yet)
    assert not result.passed and not result.attempted
    for wrong, words in [
        (euler_no_scaling, "x̃ = x/√ᾱ: divide x_t by √ᾱ_t first"),
        (euler_no_division, "Missing /√ᾱ_t"),
        (euler_tilde, "multiply by √ᾱ_prev"),
        (euler_vp_sigma, "Your σ is √(1 − ᾱ)"),
        (euler_sign, "wrong sign"),
        (euler_nan_at_the_end, "NaN or inf on the last step"),
    ]:
        result = check_euler_step(wrong)
        assert not result.passed and result.attempted
        assert words in result.message, (wrong.__name__, result.message)
    result = check_euler_step(lambda x_t, eps, a, b: 1.01 * euler_right(x_t, eps, a, b))
    assert "largest error" in result.message and "at index" in result.message


# --- DPM-Solver++ first order ----------------------------------------------------------------------------


def lam(ab):
    return 0.5 * math.log(ab / (1 - ab))


def dpm_right(x_t, x0, ab_t, ab_prev):
    s_t, s_prev = math.sqrt(1 - ab_t), math.sqrt(1 - ab_prev)
    exp_minus_h = s_prev * math.sqrt(ab_t) / (math.sqrt(ab_prev) * s_t)
    return (s_prev / s_t) * x_t + math.sqrt(ab_prev) * (1 - exp_minus_h) * x0


def dpm_via_lambda(x_t, x0, ab_t, ab_prev):
    h = lam(ab_prev) - lam(ab_t)  # ZeroDivisionError on the last step
    return math.sqrt((1 - ab_prev) / (1 - ab_t)) * x_t + math.sqrt(ab_prev) * (1 - math.exp(-h)) * x0


def dpm_sigma_steps(x_t, x0, ab_t, ab_prev):
    h = math.sqrt((1 - ab_t) / ab_t) - math.sqrt((1 - ab_prev) / ab_prev)
    return math.sqrt((1 - ab_prev) / (1 - ab_t)) * x_t + math.sqrt(ab_prev) * (1 - math.exp(-h)) * x0


def dpm_no_alpha(x_t, x0, ab_t, ab_prev):
    s_t, s_prev = math.sqrt(1 - ab_t), math.sqrt(1 - ab_prev)
    exp_minus_h = s_prev * math.sqrt(ab_t) / (math.sqrt(ab_prev) * s_t)
    return (s_prev / s_t) * x_t + (1 - exp_minus_h) * x0


def dpm_full_log_snr(x_t, x0, ab_t, ab_prev):
    if ab_prev == 1.0:
        return dpm_right(x_t, x0, ab_t, ab_prev)
    h = 2 * (lam(ab_prev) - lam(ab_t))
    return math.sqrt((1 - ab_prev) / (1 - ab_t)) * x_t + math.sqrt(ab_prev) * (1 - math.exp(-h)) * x0


def dpm_signal_ratio(x_t, x0, ab_t, ab_prev):
    s_t, s_prev = math.sqrt(1 - ab_t), math.sqrt(1 - ab_prev)
    exp_minus_h = s_prev * math.sqrt(ab_t) / (math.sqrt(ab_prev) * s_t)
    return math.sqrt(ab_prev / ab_t) * x_t + math.sqrt(ab_prev) * (1 - exp_minus_h) * x0


def test_dpm_first_order_checker():
    assert check_dpmpp_first_order_step(dpm_right).passed

    def not_yet(*args):
        raise NotImplementedError

    assert not check_dpmpp_first_order_step(not_yet).attempted
    for wrong, words in [
        (dpm_via_lambda, "λ_prev = +∞"),
        (dpm_sigma_steps, "difference of σ's"),
        (dpm_no_alpha, "Missing α_prev"),
        (dpm_full_log_snr, "twice too large"),
        (dpm_signal_ratio, "ratio of the signal coefficients"),
    ]:
        result = check_dpmpp_first_order_step(wrong)
        assert not result.passed and result.attempted
        assert words in result.message, (wrong.__name__, result.message)
    # the error names the exception and the learner's line
    result = check_dpmpp_first_order_step(dpm_via_lambda)
    assert "ZeroDivisionError" in result.message and "(the last step, to σ = 0)" in result.message


# --- the 2M combination ------------------------------------------------------------------------------------


def combo(r_fn, swap=False, two=2.0, sign=-1.0):
    def fn(x0, x0_before, a0, a1, a2):
        r = r_fn(a0, a1, a2)
        new, old = (x0_before, x0) if swap else (x0, x0_before)
        return (1 + 1 / (two * r)) * new + sign * (1 / (two * r)) * old

    return fn


def r_right(a0, a1, a2):
    return (lam(a1) - lam(a0)) / (lam(a2) - lam(a1))


def sig(ab):
    return math.sqrt((1 - ab) / ab)


@pytest.mark.parametrize(
    ("wrong", "words"),
    [
        (combo(lambda *a: 1 / r_right(*a)), "upside down"),
        (combo(lambda a0, a1, a2: (sig(a0) - sig(a1)) / (sig(a1) - sig(a2))), "ratio of σ differences"),
        (combo(lambda a0, a1, a2: (a1 - a0) / (a2 - a1)), "ratio of ᾱ differences"),
        (combo(lambda *a: 1.0), "r = 1"),
        (combo(r_right, two=1.0), "Missing the factor 2"),
        (combo(r_right, swap=True), "swapped"),
        (combo(r_right, sign=1.0), "Sign error"),
        (lambda x0, x0_before, *a: x0, "first-order (DDIM) step"),
    ],
)
def test_2m_combination_checker_names_the_mistake(wrong, words):
    result = check_dpmpp_2m_combination(wrong)
    assert not result.passed and result.attempted
    assert words in result.message, result.message


def test_2m_combination_checker_accepts_the_right_answer_and_reports_unknown_errors():
    assert check_dpmpp_2m_combination(combo(r_right)).passed
    # the full log-SNR gives the same ratio r: not a mistake
    assert check_dpmpp_2m_combination(
        combo(lambda a0, a1, a2: (2 * lam(a1) - 2 * lam(a0)) / (2 * lam(a2) - 2 * lam(a1)))
    ).passed
    result = check_dpmpp_2m_combination(lambda x0, x0_before, *a: 0.9 * x0)
    assert "largest error" in result.message


# --- UniPC's first corrector (the exponential trapezoid) -------------------------------------------------


def trapezoid(w_old=0.5, w_new=0.5, ratio="s", sign=1.0):
    def fn(x_t, x0, x0_new, ab_t, ab_n):
        h = lam(ab_n) - lam(ab_t)
        scale = math.sqrt((1 - ab_n) / (1 - ab_t)) if ratio == "s" else math.sqrt(ab_n / ab_t)
        return scale * x_t + sign * math.sqrt(ab_n) * (1 - math.exp(-h)) * (w_old * x0 + w_new * x0_new)

    return fn


@pytest.mark.parametrize(
    ("wrong", "words"),
    [
        (trapezoid(1.0, 0.0), "the predictor (the DDIM step) again"),
        (trapezoid(0.0, 1.0), "only x̂₀_n"),
        (trapezoid(1.0, 1.0), "added, not averaged"),
        (trapezoid(ratio="alpha"), "s_n/s_t"),
        (trapezoid(sign=-1.0), "Sign error"),
    ],
)
def test_unipc_trapezoid_checker_names_the_mistake(wrong, words):
    result = check_unipc_trapezoid(wrong)
    assert not result.passed and result.attempted
    assert words in result.message, result.message


def test_unipc_trapezoid_checker_accepts_the_right_answer_and_reports_unknown_errors():
    assert check_unipc_trapezoid(trapezoid()).passed
    result = check_unipc_trapezoid(trapezoid(0.4, 0.6))
    assert not result.passed and "largest error" in result.message
