import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_course.sampling import STRATEGIES, timestep_grid, validate_timesteps, visits_last


def assert_valid(ts, T, steps):
    assert ts.dtype == torch.long and ts.ndim == 1
    assert ts.numel() == steps
    assert int(ts.min()) >= 0 and int(ts.max()) <= T - 1
    assert (ts[:-1] > ts[1:]).all(), ts.tolist()


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("T", [1, 2, 3, 7, 20])
def test_every_step_count_on_small_T(strategy, T):
    for steps in range(1, T + 1):
        assert_valid(timestep_grid(T, steps, strategy), T, steps)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sample_of_step_counts_on_T1000(strategy):
    for steps in [1, 2, 3, 7, 10, 20, 25, 49, 50, 99, 100, 250, 333, 500, 800, 999, 1000]:
        assert_valid(timestep_grid(1000, steps, strategy), 1000, steps)


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 400), data=st.data(), strategy=st.sampled_from(STRATEGIES))
def test_any_T_and_steps_give_a_valid_grid(T, data, strategy):
    steps = data.draw(st.integers(1, T))
    assert_valid(timestep_grid(T, steps, strategy), T, steps)


def test_lin_et_al_table_2_ten_steps():
    # Lin et al. (2023) Table 2 lists 1-based indices; these are the same grids 0-based.
    assert timestep_grid(1000, 10, "linspace").tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert timestep_grid(1000, 10, "leading").tolist() == list(range(900, -1, -100))
    assert timestep_grid(1000, 10, "trailing").tolist() == list(range(999, 0, -100))


def test_leading_fifty_of_a_thousand():
    assert timestep_grid(1000, 50, "leading").tolist() == list(range(980, -1, -20))


@pytest.mark.parametrize("steps", [1, 2, 4, 5, 8, 10, 20, 25, 40, 50, 100, 125, 200, 250, 500, 1000])
def test_matches_diffusers_float_formulas_on_usual_step_counts(steps):
    T = 1000
    lin = np.linspace(0, T - 1, steps).round()[::-1].astype(np.int64)
    lead = (np.arange(0, steps) * (T // steps)).round()[::-1].astype(np.int64)
    trail = np.round(np.arange(T, 0, -T / steps)).astype(np.int64) - 1
    assert timestep_grid(T, steps, "linspace").tolist() == lin.tolist()
    assert timestep_grid(T, steps, "leading").tolist() == lead.tolist()
    assert timestep_grid(T, steps, "trailing").tolist() == trail.tolist()


def test_trailing_has_exactly_steps_values_where_float_arange_does_not():
    # np.arange(15, 0, -15/13) has 14 entries; the exact rationals give 13.
    assert len(np.arange(15, 0, -15 / 13)) == 14
    assert_valid(timestep_grid(15, 13, "trailing"), 15, 13)


def test_rounding_ties_go_to_even():
    # T=20, 8 steps: T(S−k)/S hits 17.5, 12.5, 7.5, 2.5 → 18, 12, 8, 2 (minus one).
    assert timestep_grid(20, 8, "trailing").tolist() == [19, 17, 14, 11, 9, 7, 4, 1]


def test_quadratic_matches_ddim_reference_when_that_is_duplicate_free():
    T = 1000
    checked = 0
    for steps in range(2, 60):
        squares = np.linspace(0, np.sqrt(0.8 * T), steps) ** 2
        ref = [int(s) for s in squares]
        if len(set(ref)) == steps:
            ours = timestep_grid(T, steps, "quadratic").flip(0).tolist()
            # the reference floors 511.99999… where the exact value is 512; we floor the exact rational
            assert ours == [int(s + 1e-9) for s in squares]
            assert max(abs(a - b) for a, b in zip(ours, ref)) <= 1
            checked += 1
    assert checked >= 25


def test_quadratic_removes_the_reference_duplicates():
    ref = [int(s) for s in np.linspace(0, np.sqrt(800), 50) ** 2]
    assert len(set(ref)) == 49  # the DDIM code's own grid repeats a timestep
    ts = timestep_grid(1000, 50, "quadratic").flip(0).tolist()
    assert ts[0] == 0 and ts[-1] == 800
    # away from the collisions the grid is the reference one
    assert ts[10:] == ref[10:]


def test_log_grid_is_geometric_in_t_plus_one():
    assert timestep_grid(1000, 4, "log").tolist() == [999, 99, 9, 0]
    assert timestep_grid(1000, 1, "log").tolist() == [999]
    ts = timestep_grid(1000, 50, "log")
    assert int(ts[0]) == 999 and int(ts[-1]) == 0


def test_visits_last_table():
    T, steps = 1000, 50
    table = {s: visits_last(T, steps, s) for s in STRATEGIES}
    assert table == {"linspace": True, "leading": False, "trailing": True, "quadratic": False, "log": True}
    assert visits_last(T, T, "leading")  # all steps: leading is every index
    assert not visits_last(T, 1, "linspace")  # linspace's single step is t = 0


def test_custom_list_and_tensor():
    assert timestep_grid(10, strategy=[9, 5, 0]).tolist() == [9, 5, 0]
    assert timestep_grid(10, 3, torch.tensor([9, 5, 0])).tolist() == [9, 5, 0]
    assert timestep_grid(10, strategy=np.array([7, 3])).tolist() == [7, 3]
    assert validate_timesteps(range(9, -1, -1), 10).tolist() == list(range(9, -1, -1))


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 200), data=st.data())
def test_any_descending_subset_round_trips(T, data):
    subset = data.draw(st.sets(st.integers(0, T - 1), min_size=1))
    ts = sorted(subset, reverse=True)
    assert validate_timesteps(ts, T).tolist() == ts


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, r"steps=0 .*1\.\.20"),
        ({"steps": 21}, r"steps=21 .*1\.\.20"),
        ({"steps": 2.5}, "steps=2.5"),
        ({"steps": True}, "steps=True"),
        ({"steps": None}, "steps=None"),
        ({"steps": 5, "strategy": "uniform"}, "strategy='uniform'.*'linspace'"),
        ({"strategy": [3, 5, 1]}, "strictly descending; an increase at position 1"),
        ({"strategy": [5, 3, 3, 1]}, "a duplicate at position 2"),
        ({"strategy": [20, 3]}, r"in 0\.\.19"),
        ({"strategy": [3, -1]}, r"in 0\.\.19"),
        ({"strategy": []}, "non-empty"),
        ({"strategy": [3.0, 1.0]}, "integer"),
        ({"strategy": torch.tensor([3.0, 1.0])}, "integer"),
        ({"strategy": [[3, 1]]}, "integer"),
        ({"strategy": [9, 5], "steps": 3}, "2 entries"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timestep_grid(20, **kwargs)


def test_bad_T_and_plain_int_timesteps():
    with pytest.raises(ValueError, match="T=0"):
        timestep_grid(0, 1)
    with pytest.raises(ValueError, match="timestep_grid\\(T, steps\\)"):
        validate_timesteps(50, 100)
