"""Notebook 06's measurements: the Pareto front of cost and quality, the speed-up at equal quality."""

import math

import pytest

from diffusion_course.lessons.steps import pareto_front, speedup_at_quality


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
