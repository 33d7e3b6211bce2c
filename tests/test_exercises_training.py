"""Checkers of notebook 02: the ε-prediction loss and the EMA update with warm-up."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffusion_course.exercises.training import ToyEpsModel, check_ema_update, check_training_loss, ema_decay
from diffusion_course.schedules import linear_schedule
from diffusion_course.training import EMA, diffusion_loss


def not_written(*args):
    raise NotImplementedError("Exercise 1: write your code here")


# ---------------------------------------------------------------- the loss


def make_loss(*, low=0, high=0, first="t", coef="sqrt_ab", target="eps", sum_=False, dtype_cast=True):
    def training_loss(model, x0, schedule, generator):
        B = x0.shape[0]
        if first == "t":
            t = torch.randint(low, schedule.T + high, (B,), generator=generator)
            noise = torch.randn(x0.shape, generator=generator)
        else:
            noise = torch.randn(x0.shape, generator=generator)
            t = torch.randint(low, schedule.T + high, (B,), generator=generator)
        values = schedule.alphas if coef == "alpha" else schedule.alpha_bar
        ab = values[t].view(-1, 1, 1, 1)
        ab = ab.to(x0.dtype) if dtype_cast else ab
        if coef == "no_sqrt":
            x_t = ab * x0 + (1 - ab) * noise
        else:
            x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        eps = model(x_t, t)
        err = (eps - (x0 if target == "x0" else noise)) ** 2
        return err.sum() if sum_ else err.mean()

    return training_loss


def test_the_loss_solution_passes_and_is_the_packages():
    assert check_training_loss(make_loss()).passed
    assert check_training_loss(
        lambda model, x0, schedule, g: diffusion_loss(model, x0, schedule, generator=g)
    ).passed


def test_the_reference_draws_t_then_eps_from_the_generator():
    """Formula = code: diffusion_loss draws t ~ U{0..T−1} first, then ε, and regresses ε on x_t."""
    schedule = linear_schedule(1000)
    x0 = torch.rand(6, 1, 4, 4) * 2 - 1
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, 1000, (6,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    by_hand = F.mse_loss(ToyEpsModel()(schedule.q_sample(x0, t, noise), t), noise)
    package = diffusion_loss(ToyEpsModel(), x0, schedule, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(by_hand, package)


def test_loss_not_attempted():
    result = check_training_loss(not_written)
    assert not result.attempted and "not attempted yet" in str(result)


@pytest.mark.parametrize(
    "fn, words",
    [
        (make_loss(target="x0"), ["target is", "`noise`"]),
        (make_loss(low=1, high=1), ["1..T", "torch.randint(0, schedule.T"]),
        (make_loss(high=1), ["0..T", "exclusive"]),
        (make_loss(coef="no_sqrt"), ["Missing square roots"]),
        (make_loss(coef="alpha"), ["α_t", "`schedule.alpha_bar`"]),
        (make_loss(sum_=True), ["summed"]),
        (make_loss(first="eps"), ["drew ε before t"]),
        (make_loss(dtype_cast=False), ["values are right", "torch.float32"]),
    ],
)
def test_loss_mistakes_are_named(fn, words):
    result = check_training_loss(fn)
    assert not result.passed and result.attempted
    assert all(w in result.message for w in words), result.message


def test_loss_mistakes_that_only_show_with_a_variant():
    def one_based(model, x0, schedule, g):
        t = torch.randint(1, schedule.T + 1, (x0.shape[0],), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        return F.mse_loss(model(schedule.q_sample(x0, t - 1, noise), t), noise)

    def clean_input(model, x0, schedule, g):
        t = torch.randint(0, schedule.T, (x0.shape[0],), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        return F.mse_loss(model(x0, t), noise)

    assert "1-based" in check_training_loss(one_based).message
    assert "clean x0" in check_training_loss(clean_input).message


def test_t_out_of_range_that_crashes_gets_the_range_hint():
    """On T = 10 a t = T is drawn: indexing alpha_bar fails, and the hint names the range."""

    def crashes(model, x0, schedule, g):
        if schedule.T == 1000:  # right on the first cases, 0..T on the last one
            return make_loss()(model, x0, schedule, g)
        return make_loss(high=1)(model, x0, schedule, g)

    result = check_training_loss(crashes)
    assert "IndexError" in result.message and "0..T−1" in result.message


def test_loss_unknown_mistake_gets_the_generic_message():
    def fresh_noise(model, x0, schedule, g):
        t = torch.randint(0, schedule.T, (x0.shape[0],), generator=g)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(99))
        return F.mse_loss(model(schedule.q_sample(x0, t, noise), t), noise)

    result = check_training_loss(fresh_noise)
    assert not result.passed and "largest error" in result.message


# ---------------------------------------------------------------- EMA


def ema_solution(ema, weights, decay, num_updates):
    d = min(decay, (1 + num_updates) / (10 + num_updates))
    return d * ema + (1 - d) * weights


def test_ema_solution_passes_and_matches_the_trainers_ema():
    assert check_ema_update(ema_solution).passed
    model = nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    for n in range(30):
        before = ema.model.weight.detach().clone()
        with torch.no_grad():
            model.weight.add_(0.1)
        ema.update(model)
        assert ema_decay(0.9, n) == pytest.approx(min(0.9, (1 + n) / (10 + n)))
        assert torch.allclose(ema.model.weight, ema_solution(before, model.weight.detach(), 0.9, n))


def test_ema_not_attempted():
    assert not check_ema_update(not_written).attempted


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda e, w, d, n: ema_solution(w, e, d, n), ["swapped"]),
        (lambda e, w, d, n: d * e + (1 - d) * w, ["`decay` directly", "decay^n"]),
        (lambda e, w, d, n: min(d, n / (10 + n)) * e + (1 - min(d, n / (10 + n))) * w, ["off by one"]),
        (lambda e, w, d, n: max(d, (1 + n) / (10 + n)) * e + (1 - max(d, (1 + n) / (10 + n))) * w, ["min"]),
        (lambda e, w, d, n: (1 + n) / (10 + n) * e + (1 - (1 + n) / (10 + n)) * w, ["min", "alone"]),
        (lambda e, w, d, n: w, ["returned the new weights"]),
        (lambda e, w, d, n: e.mul_(ema_decay(d, n)).add_((1 - ema_decay(d, n)) * w), ["in place"]),
        (lambda e, w, d, n: e, ["old average unchanged"]),
        (lambda e, w, d, n: ema_solution(e, w, d, n) * 1.01, ["largest error"]),
    ],
)
def test_ema_mistakes_are_named(fn, words):
    result = check_ema_update(fn)
    assert not result.passed and all(w in result.message for w in words), result.message
