"""Notebook 05's measurements: σ along a grid, runs from one fixed x_T, cross-run variance, feature spread,
and the η × steps table with its intervals and DDIM's σ̂ row."""

import copy
import math

import pytest
import torch

from diffusion_course.lessons.eta import (
    SIGMA_HAT,
    SweepTable,
    cross_run_variance,
    ddim_sigmas,
    eta_steps_table,
    feature_spread,
    per_pixel_variance,
    runs_from_fixed_start,
)
from diffusion_course.lessons.steps import DDIM_TABLE1_CIFAR10
from diffusion_course.metrics import sliced_w2
from diffusion_course.oracle import GaussianMixtureOracle, toy_mixture
from diffusion_course.sampling import ddim_sample, ddim_sigma, ddpm_sample, timestep_grid
from diffusion_course.schedules import cosine_schedule, linear_schedule
from diffusion_course.scoring import Estimate, compare, sliced_w2_estimate

SCHEDULE = linear_schedule(1000)
ORACLE = GaussianMixtureOracle(toy_mixture(), SCHEDULE)


def _x_T(n=256, seed=1000):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _ddim(eta, steps=10):
    ts = timestep_grid(1000, steps)
    return lambda x, g: ddim_sample(ORACLE, x, SCHEDULE, ts, eta=eta, generator=g)


# ---------------------------------------------------------------- σ along a grid


@pytest.mark.parametrize("strategy", ["trailing", "leading", "quadratic"])
def test_ddim_sigmas_are_eq16_at_each_step_of_the_grid(strategy):
    s = cosine_schedule(1000)
    ts = timestep_grid(1000, 10, strategy)
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
    full = timestep_grid(1000, 1000)
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


def test_a_start_drawn_from_a_run_seed_is_refused():
    # that run's first "fresh" z would be x_T itself: x_prev ≈ (√(1−ᾱ_prev−σ²) + σ)·x_T, too much noise
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match="first z would equal x_T"):
        runs_from_fixed_start(_ddim(0.5), x_T, [2, 3])
    with pytest.raises(ValueError, match="first z would equal x_T"):
        eta_steps_table(ORACLE, x_T, SCHEDULE, [0.0], [5], float, seed=3)
    assert runs_from_fixed_start(_ddim(0.5), x_T, [1, 2]).shape == (2, 8, 2)


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
        ORACLE, x_T, SCHEDULE, timestep_grid(1000, 5), eta=1.0, generator=torch.Generator().manual_seed(4)
    )
    assert torch.equal(seen[3], expected)
    assert table.value(1.0, 5) == float(expected.mean()) and table.row(0.0) == table.values[0].tolist()
    # chunks give the same deterministic samples
    chunked = eta_steps_table(ORACLE, x_T, SCHEDULE, [0.0], [5], lambda s: float(s.sum()), batch_size=10)
    assert chunked.value(0.0, 5) == pytest.approx(float(seen[1].sum()), rel=1e-9)
    with pytest.raises(ValueError, match="row"):
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
    table = SweepTable([0.0, 0.5], [10, 100], torch.tensor([[1.5, 1.25], [2.0, 3.0]]), torch.ones(2, 2), "FD")
    text = table.format(paper=DDIM_TABLE1_CIFAR10)
    assert "FD by steps" in text and "1.50" in text and "13.36" in text and "4.16" in text
    assert "16.66" in text and "—" in text  # η = 0.5 is listed at S = 10 only among these columns
    assert "41.07" not in text  # η = 1 is not a row of this table
    assert "[" not in text  # bare numbers: no intervals to show


def test_table_rejects_bad_input():
    x_T = _x_T(4)
    with pytest.raises(ValueError, match="etas"):
        eta_steps_table(ORACLE, x_T, SCHEDULE, [-0.1], [5], float)
    with pytest.raises(ValueError, match="steps"):
        eta_steps_table(ORACLE, x_T, SCHEDULE, [0.0], [1001], float)
    with pytest.raises(ValueError, match="metric"):
        eta_steps_table(ORACLE, x_T, SCHEDULE, [0.0], [5], "fd")


def test_sweep_table_rejects_bad_shapes_and_rows():
    with pytest.raises(ValueError, match="values"):
        SweepTable([0.0], [10, 20], torch.zeros(2, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="rows"):
        SweepTable([0.0], [10], torch.zeros(1, 1), torch.zeros(1, 1), rows=["a", "b"])
    table = SweepTable([0.0, None], [10], torch.tensor([[1.0], [2.0]]), torch.ones(2, 1))
    assert table.rows == ["η = 0", SIGMA_HAT] and table.value(SIGMA_HAT, 10) == 2.0
    with pytest.raises(ValueError, match="row"):
        table.value("η = 2", 10)
    with pytest.raises(ValueError, match="records"):
        table.select("kid")


# ---------------------------------------------------------------- intervals and DDIM's σ̂ row


def _estimate(value, half, n=100, name="SW2"):
    return Estimate(name, value, value - half, value + half, n, True, "test")


def test_cells_keep_estimates_and_print_their_intervals():
    x_T = _x_T(32)
    table = eta_steps_table(
        ORACLE, x_T, SCHEDULE, [0.0, 1.0], [2, 5], lambda s: _estimate(float(s.abs().mean()), 0.25)
    )
    e = table.estimate(1.0, 5)
    assert isinstance(e, Estimate) and e.value == table.value(1.0, 5)
    assert table.low[1, 1] == pytest.approx(e.value - 0.25) and table.high[1, 1] == pytest.approx(
        e.value + 0.25
    )
    text = table.format(digits=3)
    assert f"{e.value:.3f} [{e.low:.3f}, {e.high:.3f}]" in text
    assert compare(table.estimate(0.0, 2), table.estimate(1.0, 5)).verdict in (
        "A better",
        "B better",
        "indistinguishable",
    )
    bare = eta_steps_table(ORACLE, x_T, SCHEDULE, [0.0], [2], lambda s: float(s.mean()))
    assert torch.isnan(bare.low).all() and "[" not in bare.format()
    with pytest.raises(ValueError, match="bare number"):
        bare.estimate(0.0, 2)


def test_a_record_of_estimates_is_tabulated_by_key_and_the_others_selected():
    x_T = _x_T(16)

    def metric(s):
        m = float(s.mean())
        return {"a": _estimate(m, 0.1, name="A"), "b": _estimate(2 * m, 0.2, name="B")}

    table = eta_steps_table(ORACLE, x_T, SCHEDULE, [0.0, 0.5], [3], metric, key="a", metric_name="A")
    other = table.select("b")
    assert other.metric == "B" and other.value(0.5, 3) == pytest.approx(2 * table.value(0.5, 3))
    assert other.estimate(0.0, 3).half_width == pytest.approx(0.2)
    assert torch.equal(other.seconds, table.seconds)
    with pytest.raises(ValueError, match="no Estimate named 'c'"):
        table.select("c")
    with pytest.raises(ValueError, match="name the Estimate"):
        eta_steps_table(ORACLE, x_T, SCHEDULE, [0.0], [3], metric)  # a record needs a key


def test_sigma_hat_row_is_strided_ddpm_with_beta_variance():
    x_T = _x_T(64)
    seen = []
    table = eta_steps_table(
        ORACLE,
        x_T,
        SCHEDULE,
        [1.0],
        [4, 10],
        lambda s: seen.append(s) or float(s.mean()),
        sigma_hat=True,
        seed=5,
    )
    assert table.rows == ["η = 1", SIGMA_HAT] and table.etas == [1.0, None]
    expected = ddpm_sample(
        ORACLE,
        x_T,
        SCHEDULE,
        timestep_grid(1000, 10),
        variance="beta",
        generator=torch.Generator().manual_seed(5),
    )
    assert torch.equal(seen[3], expected) and table.value(SIGMA_HAT, 10) == float(expected.mean())
    # η = 1 is DDPM with β̃: same z's, smaller variance than σ̂, so the two rows differ
    assert not torch.allclose(seen[1], seen[3])
    only = eta_steps_table(ORACLE, x_T, SCHEDULE, [], [4], lambda s: float(s.mean()), sigma_hat=True)
    assert only.rows == [SIGMA_HAT]
    with pytest.raises(ValueError, match="sigma_hat"):
        eta_steps_table(ORACLE, x_T, SCHEDULE, [], [4], float)
    with pytest.raises(ValueError, match="sigma_hat"):
        eta_steps_table(ORACLE, x_T, SCHEDULE, [0.0], [4], float, sigma_hat="yes")


def test_sigma_hat_adds_more_spread_than_eta_1_with_few_steps():
    # σ̂² = β of the jump ≥ β̃ = σ²(η = 1): with 5 big jumps its samples spread out more than η = 1's
    # (with the exact ε every sampler here is too narrow at 5 steps, so the extra noise brings it closer)
    mixture = toy_mixture()
    refs = [mixture.sample(2000, generator=torch.Generator().manual_seed(10 + k)) for k in range(4)]
    spread = {}

    def metric(s):
        spread[len(spread)] = float(torch.cov(s.double().T).trace())
        return sliced_w2_estimate(s, refs)

    table = eta_steps_table(ORACLE, _x_T(2000).float(), SCHEDULE, [1.0], [5], metric, sigma_hat=True)
    target = float(torch.cov(refs[0].double().T).trace())
    assert spread[0] < spread[1] < target
    assert compare(table.estimate(SIGMA_HAT, 5), table.estimate(1.0, 5)).verdict == "A better"


def test_the_shipped_eta_table_separates_only_label_accuracy_at_ten_steps():
    from diffusion_course.lessons.eta import eta_reference, eta_rows_indistinguishable
    from diffusion_course.reference_results import load_results

    results = load_results("eta-steps")
    assert eta_rows_indistinguishable(results)
    assert eta_reference(results, "η = 1", 10, "label_accuracy").value == pytest.approx(0.982)
    # a table where η = 0.5 clearly beats η = 0 in FD at S = 20 is not "indistinguishable"
    doctored = copy.deepcopy(results)
    cell = next(c for c in doctored["cells"] if c["row"] == "η = 0.5" and c["col"] == "S = 20")
    cell.update(fd=1.0, fd_low=0.5, fd_high=1.5)
    assert not eta_rows_indistinguishable(doctored)
