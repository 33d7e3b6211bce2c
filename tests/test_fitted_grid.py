"""fit_timesteps: a valid grid, never worse than where it started, better on x_T it was not fitted on."""

import pytest
import torch

from diffusion_course.oracle import GaussianMixtureOracle, toy_mixture
from diffusion_course.sampling import (
    ddim_sample,
    fit_timesteps,
    grid_loss,
    timestep_grid,
    unipc_sample,
)
from diffusion_course.schedules import linear_schedule

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEDULE = linear_schedule(100)
MIXTURE = toy_mixture()
ORACLE = GaussianMixtureOracle(MIXTURE, SCHEDULE)


def draws(n, seed):
    ab_T = float(SCHEDULE.alpha_bar[-1])
    return MIXTURE.noised(ab_T).sample(n, generator=torch.Generator().manual_seed(seed)).double()


@pytest.mark.parametrize(
    ("sampler", "gain"), [(ddim_sample, 0.98), (unipc_sample, 0.7)], ids=["ddim", "unipc"]
)
def test_fitted_grid_is_valid_and_better_on_held_out_x_T(sampler, gain):
    """From "trailing", 5 steps of T = 100. DDIM's error is mostly its first-order last jump, which no grid of
    5 points removes (coordinate descent finds a few per cent); UniPC's falls by more than 30 %."""
    fit = fit_timesteps(sampler, ORACLE, draws(300, 0), SCHEDULE, 5, start="trailing", sweeps=4)
    ts = fit.timesteps
    assert ts.dtype == torch.long and len(ts) == 5 and int(ts[0]) == 99 and int(ts[-1]) >= 0
    assert (ts[:-1] > ts[1:]).all()
    assert fit.loss < gain * fit.start_loss, fit
    assert all(a >= b for a, b in zip(fit.history, fit.history[1:]))
    assert fit.loss == pytest.approx(fit.history[-1])
    # judged on x_T it never saw, against that x_T's own 100-step run
    held_out = draws(300, 1)
    reference = sampler(ORACLE, held_out, SCHEDULE, timestep_grid(100, 100))
    start = timestep_grid(100, 5, "trailing")
    fitted_loss = grid_loss(sampler, ORACLE, held_out, SCHEDULE, ts, reference)
    assert fitted_loss < (gain + 0.1) * grid_loss(sampler, ORACLE, held_out, SCHEDULE, start, reference)


def test_loss_of_the_full_grid_is_zero_and_no_sweeps_keep_the_start():
    x_T = draws(50, 2)
    reference = ddim_sample(ORACLE, x_T, SCHEDULE, timestep_grid(100, 100))
    assert grid_loss(ddim_sample, ORACLE, x_T, SCHEDULE, timestep_grid(100, 100), reference) == 0.0
    fit = fit_timesteps(ddim_sample, ORACLE, x_T, SCHEDULE, 6, start="quadratic", sweeps=0)
    expected = timestep_grid(100, 6, "quadratic")
    expected[0] = 99  # a strategy's grid starts at T − 1
    assert fit.timesteps.tolist() == expected.tolist()
    assert fit.loss == fit.start_loss and fit.history == []


def test_given_reference_and_options_are_used():
    x_T = draws(60, 3)
    calls = []

    def sampler(eps_model, x, schedule, grid, labels=None, order=2):
        calls.append(order)
        return unipc_sample(eps_model, x, schedule, grid, labels=labels, order=order)

    reference = unipc_sample(ORACLE, x_T, SCHEDULE, timestep_grid(100, 100), order=3)
    fit = fit_timesteps(sampler, ORACLE, x_T, SCHEDULE, 4, reference=reference, sweeps=1, order=3)
    assert set(calls) == {3}
    assert fit.start_loss == pytest.approx(
        grid_loss(sampler, ORACLE, x_T, SCHEDULE, _start(4), reference, order=3)
    )


def _start(steps):
    grid = timestep_grid(100, steps, "quadratic")
    grid[0] = 99
    return grid


def test_bad_input():
    x_T = draws(8, 4)
    with pytest.raises(ValueError, match="^sampler='ddim' "):
        fit_timesteps("ddim", ORACLE, x_T, SCHEDULE, 5)
    with pytest.raises(ValueError, match="^steps=1 "):
        fit_timesteps(ddim_sample, ORACLE, x_T, SCHEDULE, 1)
    with pytest.raises(ValueError, match="^start=.*beginning at T−1 = 99"):
        fit_timesteps(ddim_sample, ORACLE, x_T, SCHEDULE, 3, start=[80, 40, 0])
    with pytest.raises(ValueError, match="^start=.*expected 4 timesteps"):
        fit_timesteps(ddim_sample, ORACLE, x_T, SCHEDULE, 4, start=[99, 40, 0])
    with pytest.raises(ValueError, match="^reference=.*shaped like x_T"):
        fit_timesteps(ddim_sample, ORACLE, x_T, SCHEDULE, 3, reference=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="^sweeps=-1 "):
        fit_timesteps(ddim_sample, ORACLE, x_T, SCHEDULE, 3, sweeps=-1)
    with pytest.raises(ValueError, match="^x_T="):
        fit_timesteps(ddim_sample, ORACLE, torch.zeros(4, 2, dtype=torch.long), SCHEDULE, 3)
