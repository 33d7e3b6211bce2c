import math

import pytest
import torch

from diffusion_course.oracle import GaussianMixture, GaussianMixtureOracle, toy_mixture
from diffusion_course.sampling import (
    ddim_direction_variance,
    ddim_invert,
    ddim_reconstruction_error,
    ddim_sample,
    ddim_sigma,
    ddim_step,
    ddpm_sample,
    ddpm_step,
    eps_from_x0,
    timestep_grid,
)
from diffusion_course.schedules import cosine_schedule, linear_schedule

from exact_models import exact_eps_model

pytestmark = pytest.mark.usefixtures("one_thread")


def noised_start(mixture, schedule, grid, n, seed):
    g = torch.Generator().manual_seed(seed)
    return mixture.noised(float(schedule.alpha_bar[grid[0]])).sample(n, generator=g).double(), g


# --- σ and the step -----------------------------------------------------------------------------------


def test_sigma_is_eq_16_and_eta_one_gives_beta_tilde():
    schedule = linear_schedule(100)
    ab = schedule.alpha_bar
    for t in [1, 50, 99]:
        a_t, a_p = float(ab[t]), float(ab[t - 1])
        eq16 = 0.7 * math.sqrt((1 - a_p) / (1 - a_t)) * math.sqrt(1 - a_t / a_p)
        assert ddim_sigma(a_t, a_p, 0.7) == pytest.approx(eq16, rel=1e-14)
        assert ddim_sigma(a_t, a_p, 1.0) ** 2 == pytest.approx(
            float(schedule.posterior_variance[t]), rel=1e-12
        )
    assert ddim_sigma(float(ab[0]), 1.0, 1.0) == 0.0  # the final step is noise-free
    assert ddim_sigma(0.3, 0.5, 0.0) == 0.0


def test_direction_variance_plus_sigma_squared_is_one_minus_alpha_bar_prev():
    for a_t, a_p in [(0.1, 0.2), (1e-6, 0.5), (0.5, 0.999999), (0.98, 0.99)]:
        for eta in [0.0, 0.3, 1.0]:
            total = ddim_direction_variance(a_t, a_p, eta) + ddim_sigma(a_t, a_p, eta) ** 2
            assert total == pytest.approx(1 - a_p, rel=1e-12)


def test_step_formula():
    x_t, eps, z = (torch.randn(4, 3, dtype=torch.float64) for _ in range(3))
    a_t, a_p, eta = 0.3, 0.6, 0.5
    x0 = (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    sigma = eta * math.sqrt((1 - a_p) / (1 - a_t) * (1 - a_t / a_p))
    expected = math.sqrt(a_p) * x0 + math.sqrt(1 - a_p - sigma**2) * eps + sigma * z
    x_prev, x0_pred = ddim_step(x_t, eps, a_t, a_p, eta, noise=z)
    assert torch.allclose(x_prev, expected) and torch.allclose(x0_pred, x0)


def test_clip_recomputes_eps_from_the_clipped_x0():
    x_t, eps = 3 * torch.randn(64, 2, dtype=torch.float64), torch.randn(64, 2, dtype=torch.float64)
    a_t, a_p = 0.2, 0.5
    x_prev, x0 = ddim_step(x_t, eps, a_t, a_p, clip_x0=True)
    assert x0.abs().max() <= 1.0
    eps_clipped = eps_from_x0(x_t, x0, a_t)
    assert torch.allclose(math.sqrt(a_t) * x0 + math.sqrt(1 - a_t) * eps_clipped, x_t)
    assert torch.allclose(x_prev, math.sqrt(a_p) * x0 + math.sqrt(1 - a_p) * eps_clipped)


@pytest.mark.parametrize("clip_x0", [False, True])
def test_eta_one_on_consecutive_steps_is_the_ddpm_step(clip_x0):
    schedule = cosine_schedule(100)
    x_t, eps, z = 2 * torch.randn(6, 2, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64), None
    z = torch.randn(6, 2, dtype=torch.float64)
    for t in [99, 60, 1, 0]:
        a_t = float(schedule.alpha_bar[t])
        a_p = 1.0 if t == 0 else float(schedule.alpha_bar[t - 1])
        ddim = ddim_step(x_t, eps, a_t, a_p, 1.0, noise=z, clip_x0=clip_x0)
        ddpm = ddpm_step(x_t, eps, t, t - 1, schedule, noise=z, clip_x0=clip_x0)
        assert torch.allclose(ddim[0], ddpm[0], atol=1e-12) and torch.allclose(ddim[1], ddpm[1])


def test_eta_one_sampler_equals_ddpm_sampler_with_the_same_seed():
    mixture, schedule = toy_mixture(), cosine_schedule(50)
    oracle = GaussianMixtureOracle(mixture, schedule)
    x_T = torch.randn(64, 2, dtype=torch.float64)
    ddim = ddim_sample(
        oracle, x_T, schedule, timestep_grid(50, 50), eta=1.0, generator=torch.Generator().manual_seed(7)
    )
    ddpm = ddpm_sample(oracle, x_T, schedule, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(ddim, ddpm, atol=1e-9)
    other = ddpm_sample(oracle, x_T, schedule, generator=torch.Generator().manual_seed(8))
    assert not torch.allclose(ddim, other, atol=1e-3)


def test_eta_zero_is_bitwise_deterministic():
    mixture, schedule = toy_mixture(), cosine_schedule(50)
    oracle = GaussianMixtureOracle(mixture, schedule)
    x_T = torch.randn(32, 2)
    grid = timestep_grid(50, 10)
    a = ddim_sample(oracle, x_T, schedule, grid, generator=torch.Generator().manual_seed(0))
    b = ddim_sample(oracle, x_T, schedule, grid, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


# --- the final step lands on the data --------------------------------------------------------------------


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("strategy", ["linspace", "leading", "trailing", "quadratic", "log", [5, 4]])
def test_returns_the_single_data_point_for_any_grid(eta, strategy):
    schedule = cosine_schedule(50)
    grid = timestep_grid(50, None if not isinstance(strategy, str) else 8, strategy)
    x0 = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    x_T = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    out = ddim_sample(exact_eps_model(x0, schedule), x_T, schedule, grid, eta=eta, generator=g)
    assert torch.allclose(out, x0, atol=1e-9)


# --- against the oracle --------------------------------------------------------------------------------


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_oracle_samples_have_the_mixture_statistics(eta):
    mixture, schedule = toy_mixture(), cosine_schedule(100)
    grid = timestep_grid(100, 100)
    x_T, g = noised_start(mixture, schedule, grid, 4000, seed=0)
    x = ddim_sample(GaussianMixtureOracle(mixture, schedule), x_T, schedule, grid, eta=eta, generator=g)
    assert torch.allclose(x.mean(0), mixture.mean(), atol=0.06)
    assert torch.allclose(torch.cov(x.T), mixture.covariance(), atol=0.08)
    freq = torch.bincount(mixture.responsibilities(x).argmax(1), minlength=4).double() / len(x)
    assert torch.allclose(freq, mixture.weights, atol=0.03), freq


@pytest.mark.parametrize(("eta", "steps"), [(0.0, 100), (1.0, 100), (0.0, 50)])
def test_every_visited_state_has_the_right_marginal(eta, steps):
    # one anisotropic Gaussian: x at t must be N(√ᾱ_t μ, ᾱ_t Σ + (1−ᾱ_t) I)
    mu = torch.tensor([0.5, -0.3], dtype=torch.float64)
    cov = torch.tensor([[0.3, 0.12], [0.12, 0.1]], dtype=torch.float64)
    gaussian = GaussianMixture(mu[None], cov[None], torch.tensor([1.0]))
    schedule = cosine_schedule(100)
    grid = timestep_grid(100, steps)
    x_T, g = noised_start(gaussian, schedule, grid, 20_000, seed=0)
    oracle = GaussianMixtureOracle(gaussian, schedule)
    _, traj = ddim_sample(oracle, x_T, schedule, grid, eta=eta, generator=g, return_trajectory=True)
    eye = torch.eye(2, dtype=torch.float64)
    for t, x in zip(grid.tolist()[1:] + [-1], traj.xs[1:]):
        ab = 1.0 if t < 0 else float(schedule.alpha_bar[t])
        assert torch.allclose(x.mean(0), math.sqrt(ab) * mu, atol=0.03), (t, x.mean(0))
        assert torch.allclose(torch.cov(x.T), ab * cov + (1 - ab) * eye, atol=0.04), (t, torch.cov(x.T))


def test_error_falls_as_steps_grow():
    mixture, schedule = toy_mixture(), linear_schedule(1000)
    oracle = GaussianMixtureOracle(mixture, schedule)
    x_T, _ = noised_start(mixture, schedule, [999], 300, seed=0)
    reference = ddim_sample(oracle, x_T, schedule, timestep_grid(1000, 1000))
    errors = [
        float((ddim_sample(oracle, x_T, schedule, timestep_grid(1000, s)) - reference).norm(dim=1).mean())
        for s in [10, 50, 200]
    ]
    assert errors[0] > 2 * errors[1] > 4 * errors[2], errors
    assert errors[0] > 0.05 and errors[2] < 0.02, errors


# --- inversion -------------------------------------------------------------------------------------------


def test_reconstruction_error_falls_with_steps():
    mixture, schedule = toy_mixture(), linear_schedule(1000)
    oracle = GaussianMixtureOracle(mixture, schedule)
    x0 = mixture.sample(200, generator=torch.Generator().manual_seed(1)).double()
    errors = [
        float(ddim_reconstruction_error(oracle, x0, schedule, timestep_grid(1000, s)).mean())
        for s in [10, 50, 250]
    ]
    assert errors[0] > 2 * errors[1] > 4 * errors[2], errors
    assert errors[2] < 1e-3, errors


def test_inversion_lands_on_the_noise_distribution():
    # the inverted data should be distributed like x at t = T−1 (≈ N(0, I)); the approximation error
    # (ε taken at the current point) is largest where thin modes are stretched, and shrinks with steps
    mixture, schedule = toy_mixture(), linear_schedule(1000)
    oracle = GaussianMixtureOracle(mixture, schedule)
    x0 = mixture.sample(4000, generator=torch.Generator().manual_seed(2)).double()
    target = mixture.noised(float(schedule.alpha_bar[999]))
    cov_error = {}
    for steps in [50, 250]:
        x_T, traj = ddim_invert(oracle, x0, schedule, timestep_grid(1000, steps), return_trajectory=True)
        assert torch.allclose(x_T.mean(0), target.mean(), atol=0.06)
        cov_error[steps] = float((torch.cov(x_T.T) - target.covariance()).abs().max())
    assert cov_error[250] < 0.06 and cov_error[50] > 1.5 * cov_error[250], cov_error
    assert traj.timesteps.tolist() == timestep_grid(1000, 250).flip(0).tolist()
    assert torch.equal(traj.xs[0], x0) and torch.equal(traj.xs[-1], x_T) and len(traj) == 250


def test_reconstruction_error_shape_and_units():
    schedule = cosine_schedule(20)
    x0 = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 2 - 1
    err = ddim_reconstruction_error(lambda x, t: 0.3 * x, x0, schedule, timestep_grid(20, 5))
    assert err.shape == (3,) and (err >= 0).all()


# --- η range and bad input -------------------------------------------------------------------------------


def test_eta_above_one_is_allowed_while_sigma_fits():
    # σ² ≤ 1 − ᾱ_prev ⇔ η² ≤ ᾱ_prev (1−ᾱ_t) / (ᾱ_prev − ᾱ_t): about 1.15 for this schedule's smallest ratio
    schedule = linear_schedule(100)
    x_T = torch.randn(8, 2)
    out = ddim_sample(lambda x, t: 0.1 * x, x_T, schedule, timestep_grid(100, 100), eta=1.1)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="eta=3.0 .*η ≤"):
        ddim_sample(lambda x, t: 0.1 * x, x_T, schedule, timestep_grid(100, 100), eta=3.0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, x, s: ddim_sample(m, x, s, [5, 2], eta=-0.1), "eta=-0.1"),
        (lambda m, x, s: ddim_sample(m, x, s, [5, 2], eta=float("nan")), "eta=nan"),
        (lambda m, x, s: ddim_sample(m, x, s, [2, 5]), "strictly descending"),
        (lambda m, x, s: ddim_sample(m, x, s, [5, 5, 2]), "duplicate"),
        (lambda m, x, s: ddim_sample(m, x, s, [10]), r"0\.\.9"),
        (lambda m, x, s: ddim_sample(m, x.long(), s, [5]), "floating-point"),
        (lambda m, x, s: ddim_sample(m, x[:, :1], s, [5]), r"x_t=.*\(B, 2\)"),
        (lambda m, x, s: ddim_invert(m, x, s, [2, 5]), "strictly descending"),
        (lambda m, x, s: ddim_step(x, x, 0.5, 0.3, 0.5), "alpha_bar_prev=0.3 .*≥ alpha_bar_t"),
        (lambda m, x, s: ddim_step(x, x, 1.0, 1.0, 0.5), "alpha_bar_t=1.0"),
        (lambda m, x, s: ddim_step(x, x[:1], 0.5, 0.6), r"eps=.*\(4, 2\)"),
        (lambda m, x, s: ddim_step(x, x, 0.5, 0.6, 0.5, noise=x[:1]), r"noise=.*\(4, 2\)"),
        (lambda m, x, s: ddim_sigma(0.5, 0.6, -1.0), "eta=-1.0"),
    ],
)
def test_bad_input(call, match):
    schedule = linear_schedule(10)
    with pytest.raises(ValueError, match=match):
        call(GaussianMixtureOracle(toy_mixture(), schedule), torch.randn(4, 2), schedule)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_with_a_cpu_generator_gives_the_cpu_samples():
    mixture, schedule = toy_mixture(), cosine_schedule(50)
    oracle = GaussianMixtureOracle(mixture, schedule)
    x_T = torch.randn(16, 2, dtype=torch.float64)
    grid = timestep_grid(50, 10)
    cpu = ddim_sample(oracle, x_T, schedule, grid, eta=1.0, generator=torch.Generator().manual_seed(0))
    gpu = ddim_sample(oracle, x_T.cuda(), schedule, grid, eta=1.0, generator=torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, atol=1e-9)
