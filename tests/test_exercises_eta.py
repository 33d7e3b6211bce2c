"""Checkers of notebook 05: σ along a grid (Eq. 16) and the cross-run variance from one fixed x_T."""

import pytest
import torch

from diffusion_course.exercises.eta import check_cross_run_variance, check_sigma_schedule


def not_written(*args):
    raise NotImplementedError("Exercise 1: write your code here")


# ---------------------------------------------------------------- σ along a grid


def _pairs(schedule, ts):
    ab = schedule.alpha_bar[ts]
    return ab, torch.cat([schedule.alpha_bar[ts[1:]], torch.ones(1, dtype=ab.dtype)])


def sigma_right(schedule, ts, eta):
    ab, prev = _pairs(schedule, ts)
    return eta * ((1 - prev) / (1 - ab)).sqrt() * (1 - ab / prev).sqrt()


def sigma_loop(schedule, ts, eta):
    out = []
    for i, t in enumerate(ts.tolist()):
        a = schedule.alpha_bar[t].item()
        p = schedule.alpha_bar[ts[i + 1]].item() if i + 1 < len(ts) else 1.0
        out.append(eta * ((1 - p) / (1 - a)) ** 0.5 * (1 - a / p) ** 0.5)
    return torch.tensor(out, dtype=torch.float64)


def _sigma_with(pairs, f):
    def fn(schedule, ts, eta):
        ab, prev = pairs(schedule, ts)
        return f(ab, prev, eta)

    return fn


@pytest.mark.parametrize("fn", [sigma_right, sigma_loop])
def test_sigma_solutions_pass(fn):
    result = check_sigma_schedule(fn)
    assert result.passed and result.attempted, result


def test_sigma_not_attempted():
    result = check_sigma_schedule(not_written)
    assert not result.passed and not result.attempted


@pytest.mark.parametrize(
    "fn, words",
    [
        (
            _sigma_with(_pairs, lambda a, p, e: ((1 - p) / (1 - a)).sqrt() * (1 - a / p).sqrt()),
            ["multiply by `eta`"],
        ),
        (_sigma_with(_pairs, lambda a, p, e: e**2 * ((1 - p) / (1 - a)).sqrt() * (1 - a / p).sqrt()), ["η²"]),
        (_sigma_with(_pairs, lambda a, p, e: e**2 * (1 - p) / (1 - a) * (1 - a / p)), ["σ²", "square root"]),
        (_sigma_with(_pairs, lambda a, p, e: e * (1 - p) / (1 - a) * (1 - a / p)), ["Missing square roots"]),
        (
            _sigma_with(_pairs, lambda a, p, e: e * (1 - p) / (1 - a) * (1 - a / p).sqrt()),
            ["(1−ᾱ_prev)/(1−ᾱ_t)"],
        ),
        (
            _sigma_with(_pairs, lambda a, p, e: e * ((1 - p) / (1 - a)).sqrt() * (1 - a / p)),
            ["1 − ᾱ_t/ᾱ_prev:"],
        ),
        (
            _sigma_with(_pairs, lambda a, p, e: e * ((1 - a) / (1 - p)).sqrt() * (1 - p / a).sqrt()),
            ["swapped"],
        ),
        (
            _sigma_with(
                lambda s, ts: (s.alpha_bar[ts], s.alpha_bar_prev[ts]),
                lambda a, p, e: e * ((1 - p) / (1 - a)).sqrt() * (1 - a / p).sqrt(),
            ),
            ["consecutive step", "next listed timestep"],
        ),
        (
            _sigma_with(
                lambda s, ts: (s.alpha_bar[ts], s.alpha_bar[torch.cat([ts[1:], torch.tensor([-1])])]),
                lambda a, p, e: e * ((1 - p) / (1 - a)).sqrt() * (1 - a / p).sqrt(),
            ),
            ["last σ", "ᾱ_prev = 1"],
        ),
        (_sigma_with(_pairs, lambda a, p, e: e * (1 - p).sqrt()), ["noise budget"]),
        (lambda s, ts, e: sigma_right(s, ts, e)[:-1], ["shape (9,)", "expected (10,)"]),
        (lambda s, ts, e: sigma_right(s, ts, e).float(), ["dtype", "torch.float64"]),
        (lambda s, ts, e: sigma_right(s, ts, e) * 1.01, ["largest error", "at index"]),
    ],
)
def test_sigma_mistakes_are_named(fn, words):
    result = check_sigma_schedule(fn)
    assert not result.passed and result.attempted
    for word in words:
        assert word in result.message, (word, result.message)


def test_sigma_math_sqrt_on_tensors_gets_a_hint():
    import math

    result = check_sigma_schedule(lambda s, ts, e: e * math.sqrt(1 - s.alpha_bar[ts]))
    assert not result.passed and "torch.sqrt" in result.message


# ---------------------------------------------------------------- the cross-run variance


def _stack(sample, x_T, seeds, start=None):
    return torch.stack(
        [sample(x_T if start is None else start(s), torch.Generator().manual_seed(s)) for s in seeds]
    )


def variance_right(sample, x_T, seeds):
    return _stack(sample, x_T, seeds).var(dim=0).mean()


def variance_float(sample, x_T, seeds):
    runs = [sample(x_T, torch.Generator().manual_seed(s)) for s in seeds]
    mean = sum(runs) / len(runs)
    return float(sum((r - mean) ** 2 for r in runs).mean() / (len(runs) - 1))


def variance_resampled(sample, x_T, seeds):
    outs = []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        outs.append(sample(torch.randn(x_T.shape, generator=g, dtype=x_T.dtype), g))
    return torch.stack(outs).var(dim=0).mean()


@pytest.mark.parametrize("fn", [variance_right, variance_float])
def test_variance_solutions_pass(fn):
    result = check_cross_run_variance(fn)
    assert result.passed and result.attempted, result


def test_variance_not_attempted():
    result = check_cross_run_variance(not_written)
    assert not result.passed and not result.attempted


@pytest.mark.parametrize(
    "fn, words",
    [
        (variance_resampled, ["drew a new x_T", "η = 0", "Keep x_T fixed"]),
        (lambda sample, x_T, seeds: variance_right(sample, x_T, seeds) + 0.5, ["not 0 for η = 0"]),
        (lambda sample, x_T, seeds: _stack(sample, x_T, seeds).var(dim=0, unbiased=False).mean(), ["biased"]),
        (lambda sample, x_T, seeds: _stack(sample, x_T, seeds).std(dim=0).mean(), ["standard deviation"]),
        (lambda sample, x_T, seeds: _stack(sample, x_T, seeds).var(dim=0), ["returned a Tensor", "a number"]),
        (lambda sample, x_T, seeds: _stack(sample, x_T, seeds).var(dim=(0, 1)).mean(), ["over the batch"]),
        (
            lambda sample, x_T, seeds: _stack(sample, x_T, seeds).flatten(1).var(dim=1).mean(),
            ["pixels of each"],
        ),
        (
            lambda sample, x_T, seeds: (
                torch.stack([sample(x_T, torch.Generator().manual_seed(0)) for _ in seeds]).var(dim=0).mean()
            ),
            ["same generator", "same seed"],
        ),
        (
            lambda sample, x_T, seeds: torch.stack([sample(x_T, None) for _ in seeds]).var(0).mean(),
            ["Generator"],
        ),
        (lambda sample, x_T, seeds: variance_right(sample, x_T, seeds) * 1.5, ["largest error"]),
    ],
)
def test_variance_mistakes_are_named(fn, words):
    result = check_cross_run_variance(fn)
    assert not result.passed and result.attempted
    for word in words:
        assert word in result.message, (word, result.message)
