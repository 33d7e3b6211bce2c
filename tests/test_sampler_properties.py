import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from diffusion_course.oracle import GaussianMixtureOracle, toy_mixture
from diffusion_course.sampling import (
    STRATEGIES,
    ddim_direction_variance,
    ddim_invert,
    ddim_sample,
    ddim_sigma,
    ddpm_posterior,
    ddpm_sample,
    predict_x0,
    timestep_grid,
)
from diffusion_course.schedules import SCHEDULES, make_schedule

SETTINGS = settings(max_examples=40, deadline=None)


pytestmark = pytest.mark.usefixtures("one_thread")


@st.composite
def schedule_and_grid(draw, max_T=40):
    kind = draw(st.sampled_from(SCHEDULES))
    T = draw(st.integers(2, max_T))
    steps = draw(st.integers(1, T))
    strategy = draw(st.sampled_from(STRATEGIES))
    return make_schedule(kind, T), timestep_grid(T, steps, strategy)


@SETTINGS
@given(
    sg=schedule_and_grid(),
    eta=st.floats(0.0, 1.0),
    sampler=st.sampled_from(["ddim", "ddpm", "ddpm_beta"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_samplers_return_finite_samples_of_the_right_shape(sg, eta, sampler, dtype, seed):
    schedule, grid = sg
    oracle = GaussianMixtureOracle(toy_mixture(), schedule)
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(3, 2, generator=g, dtype=dtype)
    if sampler == "ddim":
        out, traj = ddim_sample(oracle, x_T, schedule, grid, eta=eta, generator=g, return_trajectory=True)
    else:
        variance = "beta" if sampler == "ddpm_beta" else "beta_tilde"
        out, traj = ddpm_sample(
            oracle, x_T, schedule, grid, variance=variance, generator=g, return_trajectory=True
        )
    assert out.shape == x_T.shape and out.dtype == dtype
    assert torch.isfinite(out).all()
    assert len(traj.xs) == grid.numel() + 1 and all(torch.isfinite(x).all() for x in traj.xs)


@SETTINGS
@given(  # ᾱ of a real schedule is ≥ 1e-9; subnormal ᾱ (< 2.2e-308) lose the last bits of the ratio ᾱ_t/ᾱ_prev
    a=st.floats(0.0, 1.0, exclude_max=True, allow_subnormal=False),
    b=st.floats(0.0, 1.0, exclude_min=True, allow_subnormal=False),
    eta=st.floats(0.0, 1.0),
)
def test_sigma_never_exceeds_the_noise_budget(a, b, eta):
    ab_t, ab_prev = min(a, b), max(a, b)
    assume(ab_prev > 0 and ab_t < 1)
    sigma = ddim_sigma(ab_t, ab_prev, eta)
    assert 0.0 <= sigma <= math.sqrt(1 - ab_prev) * (1 + 1e-12)
    direction = ddim_direction_variance(ab_t, ab_prev, eta)
    assert direction >= 0.0  # exact: a sum of non-negative terms, no clamp needed
    assert direction + sigma**2 == pytest.approx(1 - ab_prev, rel=1e-9, abs=1e-15)


@SETTINGS
@given(sg=schedule_and_grid(max_T=30), eta=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_exact_eps_recovers_the_data_point_on_any_grid(sg, eta, seed):
    schedule, grid = sg
    assume(float(schedule.alpha_bar[grid].min()) > 1e-6)  # ε at ᾱ ≈ 0 carries almost no x0 information
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(2, 3, generator=g, dtype=torch.float64)

    def model(x, t):
        ab = schedule.alpha_bar[t][:, None]
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt()

    x_T = torch.randn(2, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(ddim_sample(model, x_T, schedule, grid, eta=eta, generator=g), x0, atol=1e-7)
    assert torch.allclose(ddpm_sample(model, x_T, schedule, grid, generator=g), x0, atol=1e-7)


@SETTINGS
@given(kind=st.sampled_from(SCHEDULES), T=st.integers(2, 60), data=st.data())
def test_posterior_mean_eps_form_on_any_pair(kind, T, data):
    schedule = make_schedule(kind, T)
    t = data.draw(st.integers(0, T - 1))
    t_prev = data.draw(st.integers(-1, t - 1))
    g = torch.Generator().manual_seed(0)
    x_t, eps = (
        torch.randn(4, 2, generator=g, dtype=torch.float64),
        torch.randn(4, 2, generator=g, dtype=torch.float64),
    )
    ab_t = float(schedule.alpha_bar[t])
    ab_p = 1.0 if t_prev < 0 else float(schedule.alpha_bar[t_prev])
    alpha = ab_t / ab_p
    mean, var = ddpm_posterior(x_t, predict_x0(x_t, eps, ab_t), t, t_prev, schedule)
    eps_form = (x_t - (1 - alpha) / math.sqrt(1 - ab_t) * eps) / math.sqrt(alpha)
    assert torch.allclose(mean, eps_form, rtol=1e-8, atol=1e-8 / math.sqrt(ab_t))
    assert 0.0 <= var <= 1 - alpha + 1e-15


@SETTINGS
@given(sg=schedule_and_grid(max_T=30), seed=st.integers(0, 2**16))
def test_inversion_is_deterministic_and_finite(sg, seed):
    schedule, grid = sg
    oracle = GaussianMixtureOracle(toy_mixture(), schedule)
    x0 = toy_mixture().sample(4, generator=torch.Generator().manual_seed(seed))
    a = ddim_invert(oracle, x0, schedule, grid)
    assert a.shape == x0.shape and torch.isfinite(a).all()
    assert torch.equal(a, ddim_invert(oracle, x0, schedule, grid))


@SETTINGS
@given(sg=schedule_and_grid(max_T=30), eta=st.floats(0.0, 1.0))
def test_zero_terminal_snr_either_refuses_t_last_or_samples_finitely(sg, eta):
    schedule, grid = sg
    schedule = schedule.rescale_zero_terminal_snr()
    oracle = GaussianMixtureOracle(toy_mixture(), schedule)
    x_T = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    if int(grid[0]) == schedule.T - 1:
        with pytest.raises(ValueError, match="zero terminal SNR"):
            ddim_sample(oracle, x_T, schedule, grid, eta=eta)
    else:
        assert torch.isfinite(ddim_sample(oracle, x_T, schedule, grid, eta=eta)).all()
