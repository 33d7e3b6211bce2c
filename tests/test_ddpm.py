import math

import pytest
import torch
from torch import nn

from diffusion_course.oracle import GaussianMixtureOracle, toy_mixture
from diffusion_course.sampling import (
    NonFiniteError,
    ddpm_posterior,
    ddpm_sample,
    ddpm_step,
    eps_from_x0,
    predict_x0,
    timestep_grid,
)
from diffusion_course.schedules import cosine_schedule, linear_schedule

from exact_models import exact_eps_model

pytestmark = pytest.mark.usefixtures("one_thread")


def assert_mixture_statistics(x, mixture, mean_tol=0.06, cov_tol=0.08, weight_tol=0.03):
    x = x.double()
    assert torch.isfinite(x).all()
    assert torch.allclose(x.mean(0), mixture.mean(), atol=mean_tol), x.mean(0)
    assert torch.allclose(torch.cov(x.T), mixture.covariance(), atol=cov_tol), torch.cov(x.T)
    modes = mixture.responsibilities(x).argmax(1)
    freq = torch.bincount(modes, minlength=mixture.K).double() / len(x)
    assert torch.allclose(freq, mixture.weights, atol=weight_tol), freq


# --- x̂₀ and the posterior -----------------------------------------------------------------------------


def test_predict_x0_inverts_the_forward_process():
    x0, eps = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    for ab in [0.999, 0.5, 0.01]:
        xt = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
        assert torch.allclose(predict_x0(xt, eps, ab), x0)
        assert torch.allclose(eps_from_x0(xt, x0, ab), eps)


def test_predict_x0_refuses_zero_alpha_bar():
    with pytest.raises(ValueError, match="alpha_bar_t=0.0 .*zero terminal SNR"):
        predict_x0(torch.zeros(2, 2), torch.zeros(2, 2), 0.0)


def test_posterior_on_consecutive_steps_is_the_textbook_one():
    schedule = linear_schedule(100)
    x0, xt = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    b, a, ab, ab_prev = schedule.betas, schedule.alphas, schedule.alpha_bar, schedule.alpha_bar_prev
    for t in [1, 37, 99]:
        mean, var = ddpm_posterior(xt, x0, t, t - 1, schedule)
        expected = (ab_prev[t].sqrt() * b[t] * x0 + a[t].sqrt() * (1 - ab_prev[t]) * xt) / (1 - ab[t])
        assert torch.allclose(mean, expected)
        assert var == pytest.approx(float(schedule.posterior_variance[t]), rel=1e-12)


@pytest.mark.parametrize(("t", "t_prev"), [(57, 56), (99, 60), (40, 3), (10, -1), (0, -1)])
def test_posterior_is_gaussian_conditioning_of_the_strided_chain(t, t_prev):
    # x_prev = √ᾱ_p x0 + √(1−ᾱ_p) e1;  x_t = √(ᾱ_t/ᾱ_p) x_prev + √(1−ᾱ_t/ᾱ_p) e2
    schedule = cosine_schedule(100)
    ab_t = float(schedule.alpha_bar[t])
    ab_p = 1.0 if t_prev < 0 else float(schedule.alpha_bar[t_prev])
    x0, xt = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    cov_pt = math.sqrt(ab_t / ab_p) * (1 - ab_p)
    mean = math.sqrt(ab_p) * x0 + cov_pt / (1 - ab_t) * (xt - math.sqrt(ab_t) * x0)
    var = (1 - ab_p) - cov_pt**2 / (1 - ab_t)
    got_mean, got_var = ddpm_posterior(xt, x0, t, t_prev, schedule)
    assert torch.allclose(got_mean, mean, atol=1e-12)
    assert got_var == pytest.approx(var, abs=1e-12)


@pytest.mark.parametrize(("t", "t_prev"), [(1, 0), (50, 49), (99, 98), (99, 40), (30, -1)])
def test_posterior_mean_equals_the_eps_form(t, t_prev):
    # μ = (x_t − β^(s)/√(1−ᾱ_t) ε) / √α^(s) with α^(s) = ᾱ_t/ᾱ_prev
    schedule = linear_schedule(100)
    xt, eps = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    ab_t = float(schedule.alpha_bar[t])
    ab_p = 1.0 if t_prev < 0 else float(schedule.alpha_bar[t_prev])
    alpha = ab_t / ab_p
    eps_form = (xt - (1 - alpha) / math.sqrt(1 - ab_t) * eps) / math.sqrt(alpha)
    mean, _ = ddpm_posterior(xt, predict_x0(xt, eps, ab_t), t, t_prev, schedule)
    assert torch.allclose(mean, eps_form, atol=1e-10)


def test_posterior_bad_pairs():
    schedule = linear_schedule(10)
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match=r"t_prev=5 .*-1\.\.4"):
        ddpm_posterior(x, x, 5, 5, schedule)
    with pytest.raises(ValueError, match=r"t=10 .*0\.\.9"):
        ddpm_posterior(x, x, 10, 3, schedule)


# --- one step -----------------------------------------------------------------------------------------


def test_step_adds_the_chosen_variance():
    schedule = linear_schedule(100)
    xt, eps, z = (torch.randn(3, 2, dtype=torch.float64) for _ in range(3))
    t, t_prev = 60, 50
    mean, beta_tilde = ddpm_posterior(
        xt, predict_x0(xt, eps, float(schedule.alpha_bar[t])), t, t_prev, schedule
    )
    beta = 1 - float(schedule.alpha_bar[t] / schedule.alpha_bar[t_prev])
    x_prev, _ = ddpm_step(xt, eps, t, t_prev, schedule, noise=z)
    assert torch.allclose(x_prev, mean + math.sqrt(beta_tilde) * z)
    x_prev, _ = ddpm_step(xt, eps, t, t_prev, schedule, variance="beta", noise=z)
    assert torch.allclose(x_prev, mean + math.sqrt(beta) * z)
    assert beta > beta_tilde


def test_final_step_adds_no_noise_and_returns_x0_pred():
    schedule = linear_schedule(100)
    xt, eps = torch.randn(3, 2), torch.randn(3, 2)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    x_prev, x0_pred = ddpm_step(xt, eps, 7, -1, schedule, generator=g, variance="beta")
    assert torch.equal(g.get_state(), state)  # nothing drawn
    assert torch.allclose(x_prev, x0_pred)
    assert torch.allclose(x0_pred, predict_x0(xt, eps, float(schedule.alpha_bar[7])))


def test_clip_x0_clamps_the_prediction():
    schedule = linear_schedule(100)
    xt, eps = 5 * torch.randn(64, 2), torch.randn(64, 2)
    _, x0 = ddpm_step(xt, eps, 5, 4, schedule, clip_x0=True, noise=torch.zeros(64, 2))
    assert x0.abs().max() <= 1.0
    _, x0 = ddpm_step(xt, eps, 5, 4, schedule, noise=torch.zeros(64, 2))
    assert x0.abs().max() > 1.0


# --- the sampler --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "grid",
    [
        None,
        timestep_grid(50, 10, "trailing"),
        timestep_grid(50, 7, "leading"),
        timestep_grid(50, 1, "trailing"),
        [30, 2],
    ],
)
def test_returns_the_single_data_point_exactly(grid):
    # with an exact ε the x̂₀ is exact, and the last step (no noise) returns it
    schedule = cosine_schedule(50)
    x0 = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    x_T = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    out = ddpm_sample(exact_eps_model(x0, schedule), x_T, schedule, grid, generator=g)
    assert torch.allclose(out, x0, atol=1e-9)


def test_same_seed_same_samples():
    schedule = cosine_schedule(30)
    model = lambda x, t: 0.5 * x
    x_T = torch.randn(8, 2)
    a = ddpm_sample(model, x_T, schedule, generator=torch.Generator().manual_seed(4))
    b = ddpm_sample(model, x_T, schedule, generator=torch.Generator().manual_seed(4))
    c = ddpm_sample(model, x_T, schedule, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_trajectory_records_every_step():
    schedule = cosine_schedule(40)
    grid = timestep_grid(40, 8)
    x_T = torch.randn(5, 2)
    out, traj = ddpm_sample(
        lambda x, t: 0.1 * x,
        x_T,
        schedule,
        grid,
        generator=torch.Generator().manual_seed(0),
        return_trajectory=True,
    )
    assert torch.equal(traj.timesteps, grid)
    assert len(traj) == 8 and len(traj.xs) == 9 and len(traj.x0_preds) == 8
    assert traj.xs[0] is x_T or torch.equal(traj.xs[0], x_T)
    assert torch.equal(traj.xs[-1], out)
    assert torch.equal(traj.x0_preds[-1], out)  # the last step returns x̂₀


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_oracle_samples_have_the_mixture_statistics(variance):
    mixture, schedule = toy_mixture(), cosine_schedule(100)
    g = torch.Generator().manual_seed(0)
    x_T = mixture.noised(float(schedule.alpha_bar[-1])).sample(4000, generator=g)
    x = ddpm_sample(GaussianMixtureOracle(mixture, schedule), x_T, schedule, variance=variance, generator=g)
    assert_mixture_statistics(x, mixture)


def test_oracle_samples_on_a_strided_grid():
    mixture, schedule = toy_mixture(), cosine_schedule(200)
    g = torch.Generator().manual_seed(1)
    x_T = mixture.noised(float(schedule.alpha_bar[-1])).sample(4000, generator=g)
    x = ddpm_sample(
        GaussianMixtureOracle(mixture, schedule), x_T, schedule, timestep_grid(200, 50), generator=g
    )
    assert_mixture_statistics(x, mixture)


def test_the_statistics_check_catches_a_missing_noise_term():
    # without σ z every step, the "sampler" is a wrong ODE and the statistics check must fail
    mixture, schedule = toy_mixture(), cosine_schedule(100)
    g = torch.Generator().manual_seed(0)
    x_T = mixture.noised(float(schedule.alpha_bar[-1])).sample(4000, generator=g)

    oracle = GaussianMixtureOracle(mixture, schedule)
    collapsed = x_T
    for t in range(99, -1, -1):
        eps = oracle(collapsed, torch.full((len(x_T),), t))
        collapsed, _ = ddpm_step(collapsed, eps, t, t - 1, schedule, noise=torch.zeros_like(x_T))
    with pytest.raises(AssertionError):
        assert_mixture_statistics(collapsed, mixture)


# --- bad input ----------------------------------------------------------------------------------------


class Unconditional(nn.Module):
    def forward(self, x, t, labels=None):
        return x


class Conditional(nn.Module):
    num_classes = 3

    def forward(self, x, t, labels=None):
        return x * 0.1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"variance": "fixed"}, ValueError, "variance='fixed'.*'beta_tilde'"),
        ({"timesteps": [3, 7]}, ValueError, "strictly descending"),
        ({"timesteps": [7, 3, 3]}, ValueError, "duplicate"),
        ({"timesteps": [10, 3]}, ValueError, r"0\.\.9"),
        ({"timesteps": 5}, ValueError, r"timestep_grid\(T, steps\)"),
        ({"x_T": torch.zeros(4, 2, dtype=torch.long)}, ValueError, "x_T=.*floating-point"),
        ({"x_T": torch.randn(4)}, ValueError, "x_T=.*at least 2 dimensions"),
        ({"x_T": torch.full((4, 2), float("nan"))}, ValueError, "x_T=.*NaN"),
        ({"x_T": torch.randn(4, 3)}, ValueError, r"x_t=.*\(B, 2\)"),
        ({"model": lambda x, t: x * float("nan")}, NonFiniteError, r"non-finite .*step 0 \(t=9\)"),
        ({"model": lambda x, t: x[:, :1]}, ValueError, r"eps_model output=.*\(4, 2\)"),
        ({"model": lambda x, t: x.sum()}, ValueError, r"eps_model output=.*\(4, 2\)"),
        ({"model": lambda x, t: "eps"}, ValueError, "must return a torch.Tensor"),
        ({"model": Unconditional(), "labels": torch.zeros(4, dtype=torch.long)}, ValueError, "unconditional"),
        ({"labels": torch.zeros(4, dtype=torch.long)}, ValueError, "oracle.*unconditional|unconditional"),
        ({"model": Conditional(), "labels": torch.full((4,), 3)}, ValueError, r"0\.\.2"),
        ({"model": Conditional(), "labels": torch.zeros(4)}, ValueError, "integer"),
        ({"model": Conditional(), "labels": torch.zeros(3, dtype=torch.long)}, ValueError, r"\(4,\)"),
        ({"schedule": "linear"}, ValueError, "NoiseSchedule"),
    ],
)
def test_bad_input(kwargs, error, match):
    schedule = linear_schedule(10)
    args = {
        "model": GaussianMixtureOracle(toy_mixture(), schedule),
        "x_T": torch.randn(4, 2),
        "schedule": schedule,
        "timesteps": None,
    } | kwargs
    model, x_T, sched, grid = args.pop("model"), args.pop("x_T"), args.pop("schedule"), args.pop("timesteps")
    with pytest.raises(error, match=match):
        ddpm_sample(model, x_T, sched, grid, **args)


def test_nan_in_a_later_step_names_that_step():
    schedule = linear_schedule(10)
    model = lambda x, t: x if int(t[0]) > 4 else torch.full_like(x, float("inf"))
    with pytest.raises(NonFiniteError, match=r"step 5 \(t=4\)"):
        ddpm_sample(model, torch.randn(2, 2), schedule, generator=torch.Generator().manual_seed(0))


def test_model_failing_on_x_T_gets_a_clear_message():
    net = nn.Linear(3, 3)
    with pytest.raises(ValueError, match=r"eps_model failed at step 0 \(t=9\) on x_t of shape \(2, 2\)"):
        ddpm_sample(lambda x, t: net(x), torch.randn(2, 2), linear_schedule(10))


def test_labels_reach_a_conditional_model():
    seen = []

    class Recorder(Conditional):
        def forward(self, x, t, labels=None):
            seen.append(labels)
            assert t.dtype == torch.long and t.shape == (x.shape[0],)
            return 0.1 * x

    labels = torch.tensor([0, 2, 1])
    ddpm_sample(Recorder(), torch.randn(3, 2), linear_schedule(5), labels=labels)
    assert len(seen) == 5 and all(torch.equal(s, labels) for s in seen)
    seen.clear()
    ddpm_sample(Recorder(), torch.randn(3, 2), linear_schedule(5))
    assert seen == [None] * 5


def test_zero_terminal_snr_first_step_is_refused_clearly():
    schedule = cosine_schedule(20).rescale_zero_terminal_snr()
    with pytest.raises(ValueError, match="timesteps=19 .*zero terminal SNR"):
        ddpm_sample(lambda x, t: x, torch.randn(2, 2), schedule)
    # starting one step later works
    out = ddpm_sample(lambda x, t: 0 * x, torch.randn(2, 2), schedule, list(range(18, -1, -1)))
    assert torch.isfinite(out).all()


def test_progress_bar_runs():
    out = ddpm_sample(lambda x, t: 0 * x, torch.randn(2, 2), linear_schedule(5), progress=True)
    assert out.shape == (2, 2)
