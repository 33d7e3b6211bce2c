"""Checkers of notebook 06: the trailing grid and the measured speed-up at equal quality."""

import numpy as np
import pytest
import torch

from diffusion_course.exercises.steps import check_speedup, check_trailing_timesteps


def not_written(*args):
    raise NotImplementedError("Exercise 1: write your code here")


# ---------------------------------------------------------------- the trailing grid


def trailing_float(T, steps):
    return torch.round(torch.arange(T, 0, -T / steps)).long() - 1


def trailing_exact(T, steps):
    return torch.tensor([round(T * (steps - k) / steps) - 1 for k in range(steps)])


def trailing_numpy_style(T, steps):
    return torch.from_numpy(np.round(np.arange(T, 0, -T / steps)).astype(np.int64) - 1)


@pytest.mark.parametrize("fn", [trailing_float, trailing_exact, trailing_numpy_style])
def test_trailing_solutions_pass(fn):
    result = check_trailing_timesteps(fn)
    assert result.passed and result.attempted, result


def test_trailing_not_attempted():
    result = check_trailing_timesteps(not_written)
    assert not result.passed and not result.attempted


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda T, S: trailing_float(T, S) + 1, ["Off by one", "Subtract 1"]),
        (lambda T, S: trailing_float(T, S).flip(0), ["ascending", "descending"]),
        (lambda T, S: torch.arange(S - 1, -1, -1) * (T // S), ["'leading'", "never visits T−1"]),
        (lambda T, S: torch.arange(S) * (T // S), ["'leading'", "ascending"]),
        (lambda T, S: torch.linspace(T - 1, 0, S).round().long(), ["'linspace'"]),
        (
            lambda T, S: torch.tensor([round(T * (S - k) / S) - 1 for k in range(1, S + 1)]),
            ["does not start at T−1"],
        ),
        (lambda T, S: torch.tensor([T * (S - k) // S - 1 for k in range(S)]), ["rounded down"]),
        (lambda T, S: T - 1 - torch.arange(S) * (T // S), ["⌊T/S⌋", "drifts"]),
        (lambda T, S: trailing_float(T, S).double(), ["dtype", "torch.int64"]),
        (lambda T, S: trailing_float(T, S)[:-1], ["shape"]),
        (lambda T, S: trailing_float(T, S) - 3, ["largest error"]),
    ],
)
def test_trailing_mistakes_are_named(fn, words):
    result = check_trailing_timesteps(fn)
    assert not result.passed and result.attempted
    for word in words:
        assert word in result.message, (word, result.message)


# ---------------------------------------------------------------- the measured speed-up


def speedup_right(steps, scores, seconds, tolerance):
    ref = int(steps.argmax())
    ok = scores <= (1 + tolerance) * scores[ref]
    return seconds[ref] / seconds[ok].min()


def speedup_python(steps, scores, seconds, tolerance):
    rows = list(zip(steps.tolist(), scores.tolist(), seconds.tolist()))
    _, ref_score, ref_time = max(rows)
    return ref_time / min(t for _, s, t in rows if s <= (1 + tolerance) * ref_score)


@pytest.mark.parametrize("fn", [speedup_right, speedup_python])
def test_speedup_solutions_pass(fn):
    result = check_speedup(fn)
    assert result.passed and result.attempted, result


def test_speedup_not_attempted():
    result = check_speedup(not_written)
    assert not result.passed and not result.attempted


def _ok_then(pick):
    def fn(steps, scores, seconds, tolerance):
        ref = int(steps.argmax())
        return pick(steps, scores, seconds, tolerance, ref)

    return fn


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda *a: 1 / speedup_right(*a), ["Upside down"]),
        (
            _ok_then(lambda st, sc, se, tol, ref: st[ref] / st[sc <= (1 + tol) * sc[ref]].min()),
            ["step counts", "measured"],
        ),
        (_ok_then(lambda st, sc, se, tol, ref: se[ref] / se[sc <= sc[ref] + tol].min()), ["absolute"]),
        (_ok_then(lambda st, sc, se, tol, ref: se[ref] / se[sc <= sc[ref]].min()), ["ignored the tolerance"]),
        (_ok_then(lambda st, sc, se, tol, ref: se[ref] / se[sc.argmin()]), ["best score"]),
        (lambda st, sc, se, tol: se.max() / se.min(), ["regardless of quality"]),
        (lambda *a: speedup_right(*a) * 1.1, ["largest error"]),
    ],
)
def test_speedup_mistakes_are_named(fn, words):
    result = check_speedup(fn)
    assert not result.passed and result.attempted
    for word in words:
        assert word in result.message, (word, result.message)
