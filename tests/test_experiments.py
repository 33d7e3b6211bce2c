"""Shared measurements: runs from one fixed x_T, cross-run variance, feature spread, the η × steps table,
the Pareto front and the speed-up at equal quality."""

import math

import pytest
import torch

from diffusion_course.experiments import (
    DDIM_TABLE1_CIFAR10,
    SweepTable,
    cross_run_variance,
    ddim_sigmas,
    eta_steps_table,
    feature_spread,
    pareto_front,
    per_pixel_variance,
    runs_from_fixed_start,
    speedup_at_quality,
)
from diffusion_course.metrics import sliced_w2
from diffusion_course.oracle import GaussianMixtureOracle, toy_mixture
from diffusion_course.sampling import ddim_sample, ddim_sigma, timesteps
from diffusion_course.schedules import cosine_schedule, linear_schedule

SCHEDULE = linear_schedule(1000)
ORACLE = GaussianMixtureOracle(toy_mixture(), SCHEDULE)


def _x_T(n=256, seed=1000):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _ddim(eta, steps=10):
    ts = timesteps(1000, steps)
    return lambda x, g: ddim_sample(ORACLE, x, SCHEDULE, ts, eta=eta, generator=g)


# ---------------------------------------------------------------- σ along a grid


@pytest.mark.parametrize("strategy", ["trailing", "leading", "quadratic"])
def test_ddim_sigmas_are_eq16_at_each_step_of_the_grid(strategy):
    s = cosine_schedule(1000)
    ts = timesteps(1000, 10, strategy)
    got = ddim_sigmas(s, ts, 0.7)
    ab = s.alpha_bar.tolist()
    for i, t in enumerate(ts.tolist()):
        prev = ab[int(ts[i + 1])] if i + 1 < len(ts) else 1.0
        expected = 0.7 * math.sqrt((1 - prev) / (1 - ab[t])) * math.sqrt(1 - ab[t] / prev)
        assert got[i].item() == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert got[i].item() == pytest.approx(float(ddim_sigma(ab[t], prev, 0.7)), rel=1e-12, abs=1e-15)
    assert got[-1] == 0.0 and got.dtype == torch.float64
    assert torch.equal(ddim_sigmas(s, ts, 0.0), torch.zeros(10, dtype=torch.float64))
    # η = 1 on consecutive steps is DDPM's β̃
    full = timesteps(1000, 1000)
    assert torch.allclose(ddim_sigmas(s, full, 1.0) ** 2, s.posterior_variance[full], rtol=1e-9, atol=1e-15)
    with pytest.raises(ValueError, match="descending"):
        ddim_sigmas(s, ts.flip(0), 0.5)


# ---------------------------------------------------------------- runs from one fixed x_T


def test_runs_share_x_T_and_use_one_seeded_generator_per_run():
    seen = []

    def sample(x, g):
        seen.append(x)
        return x + torch.randn(x.shape, generator=g, dtype=x.dtype)

    x_T = _x_T(5)
    runs = runs_from_fixed_start(sample, x_T, [3, 7])
    assert runs.shape == (2, 5, 2) and all(s is x_T for s in seen)
    for r, seed in enumerate([3, 7]):
        z = torch.randn(x_T.shape, generator=torch.Generator().manual_seed(seed), dtype=x_T.dtype)
        assert torch.equal(runs[r], x_T + z)


def test_cross_run_variance_is_the_noise_variance_of_a_toy_sampler():
    # x_0 = x_T + s·z: the per-pixel variance across runs is s², whatever x_T is
    s = 0.3
    x_T = _x_T(4000)
    v = cross_run_variance(
        lambda x, g: x + s * torch.randn(x.shape, generator=g, dtype=x.dtype), x_T, [0, 1, 2]
    )
    # the mean of 8000 independent unbiased variance estimates from 3 runs: relative sd √(2/2/8000) ≈ 1.1 %
    assert v == pytest.approx(s**2, rel=0.06)
    runs = runs_from_fixed_start(
        lambda x, g: x + torch.randn(x.shape, generator=g, dtype=x.dtype), x_T, [0, 1]
    )
    assert torch.allclose(per_pixel_variance(runs), (runs[0] - runs[1]) ** 2 / 2)


def test_ddim_cross_run_variance_is_zero_at_eta_0_and_grows_with_eta():
    x_T = _x_T()
    runs = runs_from_fixed_start(_ddim(0.0), x_T, [0, 1, 2])
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    values = [cross_run_variance(_ddim(eta), x_T, [0, 1, 2, 3]) for eta in (0.0, 0.2, 0.5, 1.0)]
    assert values[0] == 0.0
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_redrawing_x_T_per_run_reports_variance_at_eta_0():
    # the classic mistake the notebook demonstrates: a deterministic sampler looks random
    def wrong(sample, seeds):
        outs = []
        for s in seeds:
            g = torch.Generator().manual_seed(s)
            outs.append(sample(torch.randn(256, 2, generator=g, dtype=torch.float64), g))
        return float(per_pixel_variance(torch.stack(outs)).mean())

    assert wrong(_ddim(0.0), [0, 1, 2, 3]) > 0.3  # about the mixture's per-axis variance (0.92, 0.48)
    assert cross_run_variance(_ddim(0.0), _x_T(), [0, 1, 2, 3]) == 0.0


def test_runs_and_variance_reject_bad_input():
    x_T = _x_T(3)
    with pytest.raises(ValueError, match="seeds"):
        runs_from_fixed_start(_ddim(0.5), x_T, [1, 1])
    with pytest.raises(ValueError, match="seeds"):
        runs_from_fixed_start(_ddim(0.5), x_T, 3)
    with pytest.raises(ValueError, match="at least 2"):
        cross_run_variance(_ddim(0.5), x_T, [0])
    with pytest.raises(ValueError, match="sample output"):
        runs_from_fixed_start(lambda x, g: x[:1], x_T, [0, 1])
    with pytest.raises(ValueError, match="sample"):
        runs_from_fixed_start("ddim", x_T, [0, 1])
    with pytest.raises(ValueError, match="runs"):
        per_pixel_variance(torch.zeros(1, 3, 2))


# ---------------------------------------------------------------- feature spread


def test_feature_spread_is_the_mean_pairwise_distance_per_start():
    f = torch.zeros(3, 2, 2, dtype=torch.float64)
    f[1, 0] = torch.tensor([3.0, 4.0])  # start 0: points 0, (3,4), 0 → distances 5, 0, 5
    f[2, 1] = torch.tensor([1.0, 0.0])  # start 1: points 0, 0, (1,0) → distances 0, 1, 1
    assert feature_spread(f) == pytest.approx(((5 + 0 + 5) / 3 + (0 + 1 + 1) / 3) / 2)
    assert feature_spread(torch.ones(4, 5, 3)) == 0.0
    with pytest.raises(ValueError, match="features"):
        feature_spread(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="2 runs"):
        feature_spread(torch.zeros(1, 5, 3))


# ---------------------------------------------------------------- the η × steps table


def test_table_cells_are_ddim_from_one_x_T_and_one_seed():
    x_T = _x_T(64)
    seen = []
    table = eta_steps_table(
        ORACLE, x_T, SCHEDULE, [0.0, 1.0], [2, 5], lambda s: seen.append(s) or float(s.mean()), seed=4
    )
    assert table.values.shape == table.seconds.shape == (2, 2) and (table.seconds > 0).all()
    expected = ddim_sample(
        ORACLE, x_T, SCHEDULE, timesteps(1000, 5), eta=1.0, generator=torch.Generator().manual_seed(4)
    )
    assert torch.equal(seen[3], expected)
    assert table.value(1.0, 5) == float(expected.mean()) and table.row(0.0) == table.values[0].tolist()
    # chunks give the same deterministic samples
    chunked = eta_steps_table(ORACLE, x_T, SCHEDULE, [0.0], [5], lambda s: float(s.sum()), batch_size=10)
    assert chunked.value(0.0, 5) == pytest.approx(float(seen[1].sum()), rel=1e-9)
    with pytest.raises(ValueError, match="eta"):
        table.value(0.5, 5)
    with pytest.raises(ValueError, match="steps"):
        table.value(0.0, 3)


def test_eta_ordering_on_the_oracle_at_few_steps():
    # with big steps, η = 1's fresh noise is not removed by the next step: worse than η = 0
    reference = toy_mixture().sample(4000, generator=torch.Generator().manual_seed(1))
    table = eta_steps_table(
        ORACLE, _x_T(4000).float(), SCHEDULE, [0.0, 1.0], [5, 10], lambda s: sliced_w2(s, reference)
    )
    assert table.value(0.0, 5) < table.value(1.0, 5)
    assert table.value(0.0, 10) < table.value(1.0, 10)
    assert table.value(0.0, 10) < table.value(0.0, 5)


def test_table_format_shows_the_paper_beside_it():
    table = SweepTable([0.0, 0.5], [10, 20], torch.tensor([[1.5, 1.25], [2.0, 3.0]]), torch.ones(2, 2), "FD")
    text = table.format(paper=DDIM_TABLE1_CIFAR10)
    assert "FD by steps" in text and "1.50" in text and "13.36" in text and "6.84" in text and "—" in text
    assert "41.07" not in text  # η = 1 is not a row of this table


def test_table_rejects_bad_input():
    x_T = _x_T(4)
    with pytest.raises(ValueError, match="etas"):
        eta_steps_table(ORACLE, x_T, SCHEDULE, [-0.1], [5], float)
    with pytest.raises(ValueError, match="steps"):
        eta_steps_table(ORACLE, x_T, SCHEDULE, [0.0], [1001], float)
    with pytest.raises(ValueError, match="metric"):
        eta_steps_table(ORACLE, x_T, SCHEDULE, [0.0], [5], "fd")


# ---------------------------------------------------------------- cost and quality


def test_pareto_front_keeps_exactly_the_undominated_points():
    costs = [1.0, 2.0, 3.0, 4.0, 2.0, 5.0]
    scores = [9.0, 5.0, 6.0, 2.0, 5.0, 2.0]
    # 2 is beaten by 1 (cheaper, better); 5 ties 3 on score but costs more; 1 and 4 are equal (both kept)
    assert pareto_front(costs, scores).tolist() == [0, 1, 4, 3]
    assert pareto_front([1.0], [1.0]).tolist() == [0]
    with pytest.raises(ValueError, match="scores"):
        pareto_front([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        pareto_front([1.0, math.nan], [1.0, 2.0])


def test_speedup_uses_measured_time_and_a_relative_tolerance():
    steps = [10, 20, 50, 1000]
    seconds = [0.03, 0.05, 0.11, 2.0]
    scores = [30.0, 11.0, 10.5, 10.0]
    assert speedup_at_quality(steps, scores, seconds, 0.1) == pytest.approx(2.0 / 0.05)  # 11 ≤ 1.1·10
    assert speedup_at_quality(steps, scores, seconds, 0.0) == pytest.approx(1.0)
    assert speedup_at_quality(steps, scores, seconds, 2.0) == pytest.approx(2.0 / 0.03)
    # the reference is the entry with the most steps wherever it is listed
    assert speedup_at_quality(steps[::-1], scores[::-1], seconds[::-1], 0.1) == pytest.approx(40.0)
    with pytest.raises(ValueError, match="seconds"):
        speedup_at_quality(steps, scores, [0.0, 1, 1, 1])
    with pytest.raises(ValueError, match="tolerance"):
        speedup_at_quality(steps, scores, seconds, -0.1)
    with pytest.raises(ValueError, match="scores"):
        speedup_at_quality(steps, scores[:3], seconds)


def test_a_start_drawn_from_a_run_seed_is_refused():
    # that run's first "fresh" z would be x_T itself: x_prev ≈ (√(1−ᾱ_prev−σ²) + σ)·x_T, too much noise
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match="first z would equal x_T"):
        runs_from_fixed_start(_ddim(0.5), x_T, [2, 3])
    with pytest.raises(ValueError, match="first z would equal x_T"):
        eta_steps_table(ORACLE, x_T, SCHEDULE, [0.0], [5], float, seed=3)
    assert runs_from_fixed_start(_ddim(0.5), x_T, [1, 2]).shape == (2, 8, 2)
