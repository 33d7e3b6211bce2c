"""UniPC: its predictor is DDIM / DPM-Solver++(2M), its corrector is exact on polynomials, it agrees with
diffusers' UniPCMultistepScheduler, and it converges faster than DPM-Solver++(2M) at one ε-call per step."""

import math

import numpy
import pytest
import torch
from test_solvers import gaussian_eps_model, gaussian_flow, mean_error, slope

from diffusion_course.bridge import diffusers_available
from diffusion_course.oracle import GaussianMixtureOracle, toy_mixture
from diffusion_course.sampling import (
    ddim_sample,
    dpmpp_2m_sample,
    half_log_snr,
    timestep_grid,
    unipc_correct,
    unipc_predict,
    unipc_sample,
    unipc_weights,
)
from diffusion_course.sampling.registry import SAMPLERS, nfe, run_sampler
from diffusion_course.schedules import cosine_schedule, linear_schedule

pytestmark = pytest.mark.usefixtures("one_thread")


# --- the predictor is the solver you know --------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["trailing", "quadratic", "log"])
def test_predictor_of_order_1_is_ddim_and_of_order_2_is_dpm_solver_pp_2m(strategy):
    schedule = linear_schedule(1000)
    oracle = GaussianMixtureOracle(toy_mixture(), schedule)
    x_T = torch.randn(128, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = timestep_grid(1000, 10, strategy)
    p1 = unipc_sample(oracle, x_T, schedule, grid, order=1, corrector=False)
    p2 = unipc_sample(oracle, x_T, schedule, grid, order=2, corrector=False)
    torch.testing.assert_close(p1, ddim_sample(oracle, x_T, schedule, grid), rtol=0, atol=1e-10)
    torch.testing.assert_close(p2, dpmpp_2m_sample(oracle, x_T, schedule, grid), rtol=0, atol=1e-10)
    # and the corrector changes the result
    assert (unipc_sample(oracle, x_T, schedule, grid) - p2).abs().max() > 1e-3


# --- one step against the exact solution ----------------------------------------------------------------


def exact_step(x, lam_t, lam_n, x0_of_lam):
    """x_n = (s_n/s_t) x + α_n ∫_{λ_t}^{λ_n} e^{λ − λ_n} x̂₀(λ) dλ (the data-prediction ODE, exactly)."""
    ab_t, ab_n = 1 / (1 + math.exp(-2 * lam_t)), 1 / (1 + math.exp(-2 * lam_n))
    nodes, weights = (torch.from_numpy(v) for v in numpy.polynomial.legendre.leggauss(40))  # exact here
    lam = lam_t + (nodes + 1) * (lam_n - lam_t) / 2
    integral = (
        (weights[:, None] * torch.exp(lam - lam_n)[:, None] * x0_of_lam(lam)).sum(0) * (lam_n - lam_t) / 2
    )
    return math.sqrt((1 - ab_n) / (1 - ab_t)) * x + math.sqrt(ab_n) * integral


def polynomial(degree):
    coeffs = torch.tensor([[0.3, -0.7], [0.9, 0.2], [-0.4, 0.5], [0.25, -0.15]], dtype=torch.float64)[
        : degree + 1
    ]
    return lambda lam: sum(c[None, :] * (lam[:, None] - 0.4) ** j for j, c in enumerate(coeffs))


def ab_of(lam):
    return 1 / (1 + math.exp(-2 * lam))


@pytest.mark.parametrize(("order", "exact_degree"), [(2, 2), (3, 3)])
def test_corrector_is_exact_for_polynomial_data_predictions(order, exact_degree):
    """UniC after a UniP of order p uses p + 1 points: exact when x̂₀(λ) is a polynomial of degree ≤ p."""
    lam_t, lam_n = 0.4, 1.3
    lams = [lam_t, -0.1, -0.9][:order]  # the current point first, then earlier ones (smaller λ)
    x = torch.tensor([[0.8, -1.1]], dtype=torch.float64)
    for degree in range(exact_degree + 2):
        f = polynomial(min(degree, 3))
        preds = [f(torch.tensor([lam], dtype=torch.float64))[0:1] for lam in lams]
        pred_n = f(torch.tensor([lam_n], dtype=torch.float64))[0:1]
        got = unipc_correct(x, lams, preds, ab_of(lam_t), ab_of(lam_n), pred_n, order)
        error = float((got - exact_step(x, lam_t, lam_n, f)).abs().max())
        if degree <= exact_degree:
            assert error < 1e-9, (degree, error)
        elif degree <= 3:
            assert error > 1e-6, (degree, error)


def test_predictor_of_order_3_is_exact_for_quadratics_and_order_2_uses_one_half():
    lam_t, lam_n = 0.4, 1.3
    lams = [lam_t, -0.1, -0.9]
    x = torch.tensor([[0.8, -1.1]], dtype=torch.float64)
    for degree, order, exact in [(2, 3, True), (3, 3, False), (0, 2, True), (1, 2, False), (0, 1, True)]:
        f = polynomial(degree)
        preds = [f(torch.tensor([lam], dtype=torch.float64))[0:1] for lam in lams]
        got = unipc_predict(x, lams, preds, ab_of(lam_t), ab_of(lam_n), order)
        error = float((got - exact_step(x, lam_t, lam_n, f)).abs().max())
        assert (error < 1e-9) == exact, (degree, order, error)


def test_weights():
    assert unipc_weights([], 0.7, corrector=False) == []
    assert unipc_weights([-0.5], 0.7, corrector=False) == [0.5]
    assert unipc_weights([], 0.7, corrector=True) == [0.5]
    # two points (r and the new point at 1): R a = b with R = [[1, 1], [r, 1]] and the exponential-integrator
    # order conditions b_1 = −h φ₂(−h)/B(h), b_2 = −2h φ₃(−h)/B(h), B(h) = e^{−h} − 1
    h, r = 0.7, -0.6
    phi1 = math.expm1(-h) / -h
    phi2 = (phi1 - 1) / -h
    phi3 = (phi2 - 0.5) / -h
    b = torch.tensor([-h * phi2, -2 * h * phi3], dtype=torch.float64) / math.expm1(-h)
    a = torch.linalg.solve(torch.tensor([[1.0, 1.0], [r, 1.0]], dtype=torch.float64), b)
    assert unipc_weights([r], h, corrector=True) == pytest.approx(a.tolist(), rel=1e-12)
    with pytest.raises(ValueError, match="^h=-0.1 .*> 0"):
        unipc_weights([], -0.1, corrector=True)


# --- samplers: agreement, order, robustness -----------------------------------------------------------


@pytest.mark.skipif(not diffusers_available(), reason="diffusers is an optional extra")
@pytest.mark.parametrize("order", [1, 2, 3])
def test_agrees_with_diffusers_unipc(order):
    """On the linear schedule. (On the cosine one diffusers' float32 ᾱ, 2.4e-9 at t = 999, moves λ enough
    for differences of ~6e-4: the definitions agree, the rounding does not.)"""
    schedule = linear_schedule(1000)
    from diffusion_course.bridge import make_diffusers_scheduler, run_diffusers_scheduler

    oracle = GaussianMixtureOracle(toy_mixture(), schedule)
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(1))
    for steps in (5, 10, 20):
        scheduler = make_diffusers_scheduler(
            "UniPCMultistepScheduler", schedule, solver_order=order, solver_type="bh2", predict_x0=True
        )
        theirs = run_diffusers_scheduler(scheduler, oracle, x_T, steps=steps)
        ours = unipc_sample(oracle, x_T, schedule, timestep_grid(1000, steps), order=order)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=5e-5)


def test_faster_convergence_than_dpm_solver_pp_on_the_gaussian_flow():
    """Against the exact flow of N(μ, v I) (as in test_solvers): second order or better, and at every N at
    least 2× closer than DPM-Solver++(2M) for the same number of ε-evaluations."""
    schedule, model, x_T, reference = gaussian_flow()
    ns = [8, 16, 32, 64]
    errors = {
        name: [mean_error(fn(model, x_T, schedule, timestep_grid(1000, n, "log")), reference) for n in ns]
        for name, fn in {"unipc": unipc_sample, "dpmpp2m": dpmpp_2m_sample}.items()
    }
    assert 1.8 <= slope(ns, errors["unipc"]) <= 3.6, errors
    assert all(u < d / 2 for u, d in zip(errors["unipc"], errors["dpmpp2m"])), errors


@pytest.mark.parametrize("schedule", [linear_schedule(1000), cosine_schedule(1000)], ids=["linear", "cosine"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_finite_at_every_step_count(schedule, order):
    model = gaussian_eps_model(torch.tensor([0.5, -0.25]), 0.3, schedule)
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(11))
    for steps in [1, 2, 3, 5, 1000]:
        out, traj = unipc_sample(
            model, x_T, schedule, timestep_grid(1000, steps), order=order, return_trajectory=True
        )
        assert all(torch.isfinite(x).all() for x in traj.xs + traj.x0_preds), steps
        assert out.abs().max() < 10, steps


def test_registry_one_evaluation_per_step_and_options():
    schedule = linear_schedule(100)
    oracle = GaussianMixtureOracle(toy_mixture(), schedule)
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(2))
    calls = []

    def counting(x, t):
        calls.append(int(t[0]))
        return oracle(x, t)

    assert SAMPLERS["unipc"].fn is unipc_sample and nfe("unipc", 7) == 7
    out = run_sampler("unipc", counting, x_T, schedule, steps=7, order=3)
    assert calls == timestep_grid(100, 7).tolist()
    torch.testing.assert_close(out, unipc_sample(oracle, x_T, schedule, timestep_grid(100, 7), order=3))
    with pytest.raises(ValueError, match="^eta=.*'unipc' takes the options order, corrector"):
        run_sampler("unipc", oracle, x_T, schedule, steps=7, eta=0.5)


def test_bad_input():
    schedule = linear_schedule(100)
    oracle = GaussianMixtureOracle(toy_mixture(), schedule)
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="^order=4 "):
        unipc_sample(oracle, x, schedule, timestep_grid(100, 5), order=4)
    with pytest.raises(ValueError, match="^corrector='yes' "):
        unipc_sample(oracle, x, schedule, timestep_grid(100, 5), corrector="yes")
    with pytest.raises(ValueError, match="^timesteps="):
        unipc_sample(oracle, x, schedule, [10, 50])
    with pytest.raises(ValueError, match="^preds=1 .*order 2 needs 2"):
        unipc_predict(x, [0.1], [x], 0.5, 0.9, 2)
    with pytest.raises(ValueError, match="^alpha_bar_n=0.2 .*towards the data"):
        unipc_predict(x, [half_log_snr(0.5)], [x], 0.5, 0.2, 1)
    with pytest.raises(ValueError, match="^alpha_bar_n=1.0 .*needs ε at the new point"):
        unipc_correct(x, [half_log_snr(0.5)], [x], 0.5, 1.0, x, 1)
