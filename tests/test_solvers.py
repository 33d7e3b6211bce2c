import math

import pytest
import torch

from diffusion_course.oracle import GaussianMixtureOracle, toy_mixture
from diffusion_course.sampling import (
    NonFiniteError,
    ddim_sample,
    ddim_step,
    dpmpp_2m_coefficients,
    dpmpp_2m_sample,
    dpmpp_first_order_step,
    euler_sample,
    euler_step,
    half_log_snr,
    heun_sample,
    timestep_grid,
    vp_sigma,
)
from diffusion_course.sampling.registry import SAMPLERS, nfe, run_sampler
from diffusion_course.schedules import cosine_schedule, linear_schedule, make_schedule

from exact_models import exact_eps_model

SOLVERS = {"euler": euler_sample, "heun": heun_sample, "dpmpp2m": dpmpp_2m_sample}


pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian_eps_model(mu, var, schedule):
    """Exact ε of N(mu, var·I): ε = √(1−ᾱ) (x − √ᾱ mu) / (ᾱ var + 1 − ᾱ); cheap, for long runs."""

    def model(x, t):
        ab = schedule.alpha_bar.to(x.dtype)[t].reshape(-1, *[1] * (x.ndim - 1))
        return (1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * var + 1 - ab)

    return model


def mean_error(a, b):
    return float((a - b).norm(dim=1).mean())


def slope(ns, errors):
    """Least-squares slope of −log(error) against log(N): the observed order of convergence."""
    x = torch.tensor([math.log(n) for n in ns], dtype=torch.float64)
    y = torch.tensor([-math.log(e) for e in errors], dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x * x).sum())


# --- noise levels ---------------------------------------------------------------------------------------


def test_sigma_and_lambda_closed_forms():
    for ab in [1e-9, 4e-5, 0.3, 0.5, 0.9999]:
        assert vp_sigma(ab) == pytest.approx(math.sqrt((1 - ab) / ab), rel=1e-14)
        assert half_log_snr(ab) == pytest.approx(0.5 * math.log(ab / (1 - ab)), rel=1e-12, abs=1e-12)
        assert half_log_snr(ab) == pytest.approx(-math.log(vp_sigma(ab)), rel=1e-12, abs=1e-12)
    assert vp_sigma(1.0) == 0.0 and half_log_snr(1.0) == math.inf
    s = linear_schedule(1000)
    assert vp_sigma(float(s.alpha_bar[10])) == pytest.approx(float(s.sigmas[10]), rel=1e-14)
    assert half_log_snr(float(s.alpha_bar[10])) == pytest.approx(float(s.log_snr[10]) / 2, rel=1e-12)
    for bad in [0.0, -0.1, 1.5, float("nan")]:
        with pytest.raises(ValueError, match="^alpha_bar=.*in \\(0, 1\\]"):
            half_log_snr(bad)


# --- the identities -------------------------------------------------------------------------------------

PAIRS = [(4e-5, 0.02), (0.02, 0.5), (0.5, 0.99), (0.9999, 1.0), (4e-5, 1.0), (2.4e-9, 3e-6), (0.3, 0.3)]


@pytest.mark.parametrize(("ab_t", "ab_prev"), PAIRS)
def test_first_order_dpm_solver_pp_step_is_the_ddim_step(ab_t, ab_prev):
    g = torch.Generator().manual_seed(0)
    x_t, eps = torch.randn(64, 3, generator=g, dtype=torch.float64), torch.randn(64, 3, generator=g).double()
    x_ddim, x0_pred = ddim_step(x_t, eps, ab_t, ab_prev, 0.0)
    x_dpm = dpmpp_first_order_step(x_t, x0_pred, ab_t, ab_prev)
    assert torch.allclose(x_dpm, x_ddim, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("ab_t", "ab_prev"), PAIRS)
def test_euler_step_in_sigma_is_the_ddim_step(ab_t, ab_prev):
    g = torch.Generator().manual_seed(1)
    x_t, eps = torch.randn(64, 3, generator=g, dtype=torch.float64), torch.randn(64, 3, generator=g).double()
    x_ddim, x0_ddim = ddim_step(x_t, eps, ab_t, ab_prev, 0.0)
    x_euler, x0_euler = euler_step(x_t, eps, ab_t, ab_prev)
    # the literal k-diffusion form: x̃ = x/√ᾱ, x̃ ← x̃ + (σ_prev − σ_t) ε, x = √ᾱ_prev x̃
    sig_t, sig_p = math.sqrt((1 - ab_t) / ab_t), math.sqrt((1 - ab_prev) / ab_prev)
    by_hand = math.sqrt(ab_prev) * (x_t / math.sqrt(ab_t) + (sig_p - sig_t) * eps)
    assert torch.allclose(x_euler, by_hand, rtol=1e-13, atol=1e-13)
    assert torch.allclose(x_euler, x_ddim, rtol=1e-12, atol=1e-12)
    assert torch.allclose(x0_euler, x0_ddim, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule", [linear_schedule(1000), cosine_schedule(1000)], ids=["linear", "cosine"])
@pytest.mark.parametrize("strategy", ["trailing", "linspace", "log"])
def test_euler_sampler_equals_ddim_eta_zero_with_the_exact_eps(schedule, strategy):
    oracle = GaussianMixtureOracle(toy_mixture(), schedule)
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for steps in [1, 7, 50]:
        grid = timestep_grid(schedule.T, steps, strategy)
        a, traj_a = euler_sample(oracle, x_T, schedule, grid, return_trajectory=True)
        b, traj_b = ddim_sample(oracle, x_T, schedule, grid, eta=0.0, return_trajectory=True)
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)
        for xa, xb in zip(traj_a.xs, traj_b.xs):
            # x/√ᾱ reaches 2·10⁴ on the cosine schedule: compare at the scale of the state
            assert torch.allclose(xa, xb, rtol=1e-9, atol=1e-9 * (1 + float(xb.abs().max())))
    # in float32 they differ by rounding only; on the cosine schedule the float32 rounding of ε is multiplied
    # by Δσ ≈ 2·10⁴ on the first step, in both forms, so both are about 2e-3 from the float64 result
    x32 = x_T.float()
    grid = timestep_grid(schedule.T, 20)
    a, b = euler_sample(oracle, x32, schedule, grid), ddim_sample(oracle, x32, schedule, grid)
    exact = ddim_sample(oracle, x_T, schedule, grid)
    tol = 1e-5 if schedule.name == "linear" else 5e-3
    assert a.dtype == torch.float32 and torch.allclose(a.double(), exact, atol=tol)
    assert torch.allclose(b.double(), exact, atol=tol)


def test_dpm_solver_pp_with_one_or_two_steps_is_ddim():
    """Both steps of a 2-step run are first order (the first has no history, the last goes to λ = ∞)."""
    schedule = linear_schedule(1000)
    oracle = GaussianMixtureOracle(toy_mixture(), schedule)
    x_T = torch.randn(128, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for steps in [1, 2]:
        grid = timestep_grid(1000, steps)
        a, b = dpmpp_2m_sample(oracle, x_T, schedule, grid), ddim_sample(oracle, x_T, schedule, grid)
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    grid = timestep_grid(1000, 3)  # the middle step is second order: no longer DDIM
    a, b = dpmpp_2m_sample(oracle, x_T, schedule, grid), ddim_sample(oracle, x_T, schedule, grid)
    assert mean_error(a, b) > 1e-3


def test_2m_coefficients_are_in_lambda():
    ab_before, ab_t, ab_prev = 0.01, 0.2, 0.7
    lam = [0.5 * math.log(a / (1 - a)) for a in (ab_before, ab_t, ab_prev)]
    r_expected = (lam[1] - lam[0]) / (lam[2] - lam[1])
    r, c = dpmpp_2m_coefficients(ab_before, ab_t, ab_prev)
    assert r == pytest.approx(r_expected, rel=1e-13) and c == pytest.approx(1 / (2 * r_expected), rel=1e-13)
    # equal steps in λ give r = 1
    lam_t = 0.3
    abs_ = [1 / (1 + math.exp(-2 * v)) for v in (lam_t - 0.4, lam_t, lam_t + 0.4)]
    assert dpmpp_2m_coefficients(*abs_)[0] == pytest.approx(1.0, rel=1e-9)

    g = torch.Generator().manual_seed(4)
    x_t, x0, x0_before = (torch.randn(16, 2, generator=g, dtype=torch.float64) for _ in range(3))
    d = (1 + 1 / (2 * r_expected)) * x0 - 1 / (2 * r_expected) * x0_before
    a_p, s_p, s_t = math.sqrt(ab_prev), math.sqrt(1 - ab_prev), math.sqrt(1 - ab_t)
    h = lam[2] - lam[1]
    expected = (s_p / s_t) * x_t - a_p * (math.exp(-h) - 1) * d
    got = dpmpp_first_order_step(x_t, x0 + c * (x0 - x0_before), ab_t, ab_prev)  # the sampler's 2M update
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
    # the last step (to ᾱ = 1) returns the x̂₀ it is given exactly: no inf, no NaN
    assert torch.equal(dpmpp_first_order_step(x_t, x0, ab_t, 1.0), x0)


def kdiffusion_dpmpp_2m(denoise, x, sigmas):
    """k-diffusion's sample_dpmpp_2m, literally, in the x̃ = x/√ᾱ frame (t = −log σ)."""
    old = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, i)
        t, t_next = -math.log(sigmas[i]), (math.inf if sigmas[i + 1] == 0 else -math.log(sigmas[i + 1]))
        h = t_next - t
        if old is None or sigmas[i + 1] == 0:
            x = (sigmas[i + 1] / sigmas[i]) * x - math.expm1(-h) * denoised
        else:
            r = (t - (-math.log(sigmas[i - 1]))) / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
            x = (sigmas[i + 1] / sigmas[i]) * x - math.expm1(-h) * d
        old = denoised
    return x


def kdiffusion_heun(denoise, x, sigmas):
    """k-diffusion's sample_heun (no churn), literally, in the x̃ frame."""
    for i in range(len(sigmas) - 1):
        d = (x - denoise(x, i)) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - denoise(x_2, i + 1)) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
    return x


@pytest.mark.parametrize("strategy", ["trailing", "log"])
def test_samplers_equal_the_k_diffusion_reference_in_the_sigma_frame(strategy):
    schedule = linear_schedule(1000)
    oracle = GaussianMixtureOracle(toy_mixture(), schedule)
    grid = timestep_grid(1000, 12, strategy)
    ab = [float(schedule.alpha_bar[t]) for t in grid]
    sigmas = [math.sqrt((1 - a) / a) for a in ab] + [0.0]

    def denoise(x_tilde, i):  # D(x̃, σ_i) = x̂₀ from the ε-model at the grid's t
        x = math.sqrt(ab[i]) * x_tilde
        eps = oracle(x, torch.full((x.shape[0],), int(grid[i])))
        return (x - math.sqrt(1 - ab[i]) * eps) / math.sqrt(ab[i])

    x_T = torch.randn(200, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x_tilde_T = x_T / math.sqrt(ab[0])
    ref_dpm = kdiffusion_dpmpp_2m(denoise, x_tilde_T, sigmas)
    ref_heun = kdiffusion_heun(denoise, x_tilde_T, sigmas)
    assert torch.allclose(dpmpp_2m_sample(oracle, x_T, schedule, grid), ref_dpm, rtol=1e-9, atol=1e-9)
    assert torch.allclose(heun_sample(oracle, x_T, schedule, grid), ref_heun, rtol=1e-9, atol=1e-9)


# --- what every solver must get exactly right ----------------------------------------------------------


@pytest.mark.parametrize("name", list(SOLVERS))
@pytest.mark.parametrize("schedule", [linear_schedule(1000), cosine_schedule(1000)], ids=["linear", "cosine"])
def test_the_single_data_point_is_returned_for_any_grid(name, schedule):
    """With x̂₀ ≡ x0 all three are exact: Euler's ε is constant along the exact path (x̃ = x0 + σ ε)."""
    x0 = torch.tensor([[0.3, -0.7]], dtype=torch.float64)
    model = exact_eps_model(x0, schedule)
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    for strategy in ["trailing", "linspace", "log", "quadratic"]:
        for steps in [1, 2, 3, 10, 100]:
            out = SOLVERS[name](model, x_T, schedule, timestep_grid(1000, steps, strategy))
            assert torch.allclose(out, x0.expand_as(out), atol=1e-6), (strategy, steps)


@pytest.mark.parametrize("name", list(SOLVERS))
def test_trajectory_and_determinism(name):
    schedule = linear_schedule(100)
    oracle = GaussianMixtureOracle(toy_mixture(), schedule)
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(7))
    grid = timestep_grid(100, 8)
    out, traj = SOLVERS[name](oracle, x_T, schedule, grid, return_trajectory=True)
    assert torch.equal(traj.timesteps, grid) and len(traj) == 8 and len(traj.xs) == 9
    assert torch.equal(traj.xs[0], x_T) and torch.equal(traj.xs[-1], out)
    assert torch.allclose(traj.x0_preds[-1], out)  # the last step returns x̂₀ at the last t
    ab0 = float(schedule.alpha_bar[grid[0]])
    eps0 = oracle(x_T, torch.full((32,), int(grid[0])))
    assert torch.allclose(traj.x0_preds[0], (x_T - math.sqrt(1 - ab0) * eps0) / math.sqrt(ab0))
    # deterministic: the generator is accepted and unused
    a = SOLVERS[name](oracle, x_T, schedule, grid, generator=torch.Generator().manual_seed(1))
    b = SOLVERS[name](oracle, x_T, schedule, grid, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and torch.equal(a, out)
    assert a.dtype == x_T.dtype and a.shape == x_T.shape


@pytest.mark.parametrize("name", list(SOLVERS))
def test_evaluation_count(name):
    schedule = linear_schedule(100)
    calls = []

    def model(x, t):
        calls.append(int(t[0]))
        return torch.zeros_like(x)

    for steps in [1, 2, 10]:
        calls.clear()
        SOLVERS[name](model, torch.zeros(2, 2), schedule, timestep_grid(100, steps))
        assert len(calls) == nfe(name, steps)
    if name == "heun":  # the corrector evaluates at the next grid point; none after the last t
        assert calls == [99, 89, 89, 79, 79, 69, 69, 59, 59, 49, 49, 39, 39, 29, 29, 19, 19, 9, 9]


def test_registry_knows_the_solvers():
    assert {"dpmpp2m", "euler", "heun"} <= set(SAMPLERS)
    schedule = linear_schedule(100)
    oracle = GaussianMixtureOracle(toy_mixture(), schedule)
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(8))
    for name, fn in SOLVERS.items():
        via_registry = run_sampler(name, oracle, x_T, schedule, 10, strategy="log")
        assert torch.equal(via_registry, fn(oracle, x_T, schedule, timestep_grid(100, 10, "log")))
    with pytest.raises(ValueError, match="^eta=0.5.*'dpmpp2m' takes the options none"):
        run_sampler("dpmpp2m", oracle, x_T, schedule, 10, eta=0.5)


# --- order of convergence -------------------------------------------------------------------------------

ORDER_BANDS = {"euler": (0.8, 1.3), "heun": (1.7, 3.0), "dpmpp2m": (1.7, 2.5)}
NS = [16, 32, 64, 128]


def gaussian_flow():
    """(schedule, exact ε-model of N(μ, v I), x_T, the exact end point) for order-of-convergence tests.

    The flow is known: x̃(σ) − μ = (x̃_T − μ) √(v + σ²)/√(v + σ_T²). "log" grids end at t = 0 (σ_0 = 0.01), so
    every run ends with the same first-order jump x_0 = x̂₀(x_{t=0}); the end point applies that jump to the
    exact x̃(σ_0), so errors measure the ODE integration alone.
    """
    schedule = linear_schedule(1000)
    mu, var = torch.tensor([0.5, -0.25], dtype=torch.float64), 0.3
    model = gaussian_eps_model(mu, var, schedule)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    ab_T, sigma_0 = float(schedule.alpha_bar[-1]), float(schedule.sigmas[0])
    sigma_T = math.sqrt((1 - ab_T) / ab_T)
    x_tilde_0 = mu + (x_T / math.sqrt(ab_T) - mu) * math.sqrt(var + sigma_0**2) / math.sqrt(var + sigma_T**2)
    return schedule, model, x_T, mu + var / (var + sigma_0**2) * (x_tilde_0 - mu)  # x̂₀ = E[x_0 | x̃] at σ_0


def test_order_of_convergence_on_a_gaussian_against_the_exact_flow():
    """Error ~ N^(−order) against the exact flow of N(μ, v I) (``gaussian_flow``)."""
    schedule, model, x_T, reference = gaussian_flow()
    errors = {
        name: [mean_error(fn(model, x_T, schedule, timestep_grid(1000, n, "log")), reference) for n in NS]
        for name, fn in SOLVERS.items()
    }
    orders = {name: slope(NS, e) for name, e in errors.items()}
    for name, (low, high) in ORDER_BANDS.items():
        assert low <= orders[name] <= high, (orders, errors)


def test_order_of_convergence_on_the_toy_mixture_against_1000_steps():
    """Error vs a 1000-step DPM-Solver++ run from the same x_T (exact marginal at t = 999, "log" grids)."""
    schedule = linear_schedule(1000)
    mixture = toy_mixture()
    oracle = GaussianMixtureOracle(mixture, schedule)
    g = torch.Generator().manual_seed(10)
    x_T = mixture.noised(float(schedule.alpha_bar[-1])).sample(200, generator=g).double()
    # converged far below the errors measured (Heun on all 1000 steps is within 2e-4 of it)
    reference = dpmpp_2m_sample(oracle, x_T, schedule, timestep_grid(1000, 1000))
    errors = {
        name: [mean_error(fn(oracle, x_T, schedule, timestep_grid(1000, n, "log")), reference) for n in NS]
        for name, fn in SOLVERS.items()
    }
    orders = {name: slope(NS, e) for name, e in errors.items()}
    for name, (low, high) in ORDER_BANDS.items():
        assert low <= orders[name] <= high, (orders, errors)
    assert errors["dpmpp2m"][-1] < errors["euler"][-1] / 5


# --- robustness ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SOLVERS))
@pytest.mark.parametrize("schedule", [linear_schedule(1000), cosine_schedule(1000)], ids=["linear", "cosine"])
def test_finite_at_every_step_count(name, schedule):
    """float32; cosine has ᾱ_999 = 2.4e-9 (σ = 2·10⁴); the last step goes to σ = 0 (λ = ∞)."""
    dtype = torch.float32
    model = gaussian_eps_model(torch.tensor([0.5, -0.25], dtype=dtype), 0.3, schedule)
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(11), dtype=dtype)
    for steps in [1, 2, 5, 1000]:
        out, traj = SOLVERS[name](model, x_T, schedule, timestep_grid(1000, steps), return_trajectory=True)
        assert out.dtype == dtype
        assert all(torch.isfinite(x).all() for x in traj.xs + traj.x0_preds), steps
        if not (name == "heun" and schedule.name == "cosine"):
            assert out.abs().max() < 10
    # Heun's trapezoid is poor when one step spans a huge σ ratio (cosine: σ from 2·10⁴ down to ~1 in one
    # step of a 2-step grid): finite, but far off. With all 1000 steps it is accurate.
    if name == "heun":
        assert out.abs().max() < 10


@pytest.mark.parametrize("name", list(SOLVERS))
def test_finite_on_the_oracle_for_few_and_many_steps(name):
    schedule = cosine_schedule(1000)
    oracle = GaussianMixtureOracle(toy_mixture(), schedule)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(12))
    for steps in [1, 2, 5]:
        assert torch.isfinite(SOLVERS[name](oracle, x_T, schedule, timestep_grid(1000, steps))).all()


def test_zero_terminal_snr_is_refused_when_the_grid_starts_at_sigma_infinity():
    schedule = linear_schedule(1000).rescale_zero_terminal_snr()
    model = gaussian_eps_model(torch.zeros(2), 0.3, schedule)
    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(13))
    for fn in SOLVERS.values():
        with pytest.raises(ValueError, match="^timesteps=999 .*zero terminal SNR"):
            fn(model, x_T, schedule, timestep_grid(1000, 10))
        # a grid that skips T−1 starts at a finite σ and samples finitely
        assert torch.isfinite(fn(model, x_T, schedule, timestep_grid(1000, 10, "leading"))).all()


# --- guidance -----------------------------------------------------------------------------------------------


class StandInCFG:
    """A guided ε-model like sampling.guidance.CFG: ε̃ = ε_u + s (ε_c − ε_u) with the null class K."""

    def __init__(self, model, scale):
        self.model, self.scale, self.num_classes = model, scale, model.num_classes
        self.calls = 0

    def __call__(self, x, t, labels=None):
        self.calls += 1
        null = torch.full_like(labels, self.num_classes)
        eps_c, eps_u = self.model(x, t, labels=labels), self.model(x, t, labels=null)
        return eps_u + self.scale * (eps_c - eps_u)


@pytest.mark.parametrize("name", list(SOLVERS))
def test_guidance_wrapper_gets_the_labels_on_every_evaluation(name):
    schedule = linear_schedule(1000)
    mixture = toy_mixture()
    oracle = GaussianMixtureOracle(mixture, schedule, conditional=True)
    x_T = torch.randn(400, 2, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    labels = torch.arange(400) % 4
    grid = timestep_grid(1000, 10)
    fn = SOLVERS[name]
    # s = 1 is the conditional model, s = 0 the unconditional one
    guided = StandInCFG(oracle, 1.0)
    assert torch.allclose(
        fn(guided, x_T, schedule, grid, labels=labels), fn(oracle, x_T, schedule, grid, labels=labels)
    )
    assert guided.calls == nfe(name, 10)
    uncond = fn(oracle, x_T, schedule, grid)  # no labels: the conditional oracle's whole mixture
    assert torch.allclose(fn(StandInCFG(oracle, 0.0), x_T, schedule, grid, labels=labels), uncond)
    # with s = 3 every sample lands in its own component (nearest mean), pushed away from the others
    out = fn(StandInCFG(oracle, 3.0), x_T, schedule, grid, labels=labels)
    assert torch.isfinite(out).all()
    nearest = torch.cdist(out, mixture.means).argmin(dim=1)
    assert (nearest == labels).double().mean() > 0.99
    assert mean_error(out, fn(oracle, x_T, schedule, grid, labels=labels)) > 0.02


def test_the_course_cfg_wrapper_if_present():
    guidance = pytest.importorskip("diffusion_course.sampling.guidance")
    if not hasattr(guidance, "CFG"):
        pytest.skip("sampling.guidance has no CFG yet")
    schedule = linear_schedule(1000)
    oracle = GaussianMixtureOracle(toy_mixture(), schedule, conditional=True)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    labels = torch.arange(64) % 4
    grid = timestep_grid(1000, 10)
    for fn in SOLVERS.values():
        a = fn(guidance.CFG(oracle, 2.5), x_T, schedule, grid, labels=labels)
        b = fn(StandInCFG(oracle, 2.5), x_T, schedule, grid, labels=labels)
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)


# --- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SOLVERS))
def test_bad_input(name):
    fn = SOLVERS[name]
    schedule = linear_schedule(100)
    oracle = GaussianMixtureOracle(toy_mixture(), schedule)
    x = torch.randn(4, 2)
    grid = timestep_grid(100, 5)
    with pytest.raises(ValueError, match="^x_T=.*floating-point"):
        fn(oracle, torch.zeros(4, 2, dtype=torch.long), schedule, grid)
    with pytest.raises(ValueError, match="^x_T=.*NaN or inf"):
        fn(oracle, torch.full((4, 2), float("nan")), schedule, grid)
    with pytest.raises(ValueError, match="^timesteps="):
        fn(oracle, x, schedule, [10, 50])
    with pytest.raises(ValueError, match="^timesteps="):
        fn(oracle, x, schedule, [100, 50])
    with pytest.raises(ValueError, match="^schedule="):
        fn(oracle, x, "linear", grid)
    with pytest.raises(ValueError, match="^labels=.*unconditional"):
        fn(oracle, x, schedule, grid, labels=torch.zeros(4, dtype=torch.long))
    conditional = GaussianMixtureOracle(toy_mixture(), schedule, conditional=True)
    with pytest.raises(ValueError, match="class indices must lie in 0..3"):
        fn(conditional, x, schedule, grid, labels=torch.full((4,), 7))
    with pytest.raises(ValueError, match="^eps_model output=.*expected the shape of x_t"):
        fn(lambda x, t: x[:, :1], x, schedule, grid)


@pytest.mark.parametrize("name", list(SOLVERS))
def test_non_finite_eps_names_the_step(name):
    schedule = linear_schedule(100)
    grid = timestep_grid(100, 5)  # 99, 79, 59, 39, 19

    def model(x, t):  # NaN from t = 59 on
        return torch.full_like(x, float("nan")) if int(t[0]) <= 59 else torch.zeros_like(x)

    # Heun's corrector of step 1 (t = 79 → 59) is the first call at t = 59
    step = 1 if name == "heun" else 2
    with pytest.raises(NonFiniteError, match=f"at step {step} \\(t=59\\)"):
        SOLVERS[name](model, torch.zeros(2, 2), schedule, grid)


def test_step_function_errors():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="^eps=.*shaped like x_t"):
        euler_step(x, torch.zeros(3, 3), 0.5, 0.9)
    with pytest.raises(ValueError, match="^alpha_bar_prev=0.2 .*≥ alpha_bar_t"):
        euler_step(x, x, 0.5, 0.2)
    with pytest.raises(ValueError, match="^alpha_bar_t=0.0 .*σ = ∞"):
        euler_step(x, x, 0.0, 0.5)
    with pytest.raises(ValueError, match="^alpha_bar_t=1.0 .*< 1"):
        dpmpp_first_order_step(x, x, 1.0, 1.0)
    with pytest.raises(ValueError, match="ᾱ_before < ᾱ_t < ᾱ_prev < 1"):
        dpmpp_2m_coefficients(0.5, 0.1, 0.9)
    with pytest.raises(ValueError, match="^sampler='plms'.*known samplers are ddim, ddpm"):
        nfe("plms", 3)


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
def test_midpoint_is_second_order_and_beats_euler_at_equal_nfe(schedule_name):
    """Against the same ODE solved on all 1000 timesteps: doubling N divides midpoint's error by > 3.5
    (Euler's by ≈ 2), and midpoint with N steps (2N evaluations) beats Euler with 2N steps."""
    schedule = make_schedule(schedule_name, 1000)
    oracle = GaussianMixtureOracle(toy_mixture(), schedule)
    x_T = torch.randn(300, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = run_sampler("midpoint", oracle, x_T, schedule, 1000)

    def error(name, steps):
        return float((run_sampler(name, oracle, x_T, schedule, steps) - exact).norm(dim=1).mean())

    assert error("midpoint", 10) / error("midpoint", 20) > 3.5
    assert 1.6 < error("euler", 20) / error("euler", 40) < 2.4
    assert error("midpoint", 10) < error("euler", 20) and error("midpoint", 20) < 0.5 * error("euler", 40)
