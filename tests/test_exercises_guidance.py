"""Checkers of notebook 07: the right answers pass, each typical mistake is named in words."""

import pytest
import torch

from diffusion_course.exercises.guidance import (
    ToyClassModel,
    check_batched_guidance,
    check_guided_eps,
    check_label_dropout,
)


def not_written(*args):
    raise NotImplementedError("Exercise 1: write your code here")


# --- ε̃ = ε_u + s(ε_c − ε_u) ----------------------------------------------------------------------------


def test_guided_eps_solution_passes():
    result = check_guided_eps(lambda c, u, s: u + s * (c - u))
    assert result.passed, result
    assert check_guided_eps(lambda c, u, s: s * c - (s - 1) * u).passed  # the same, rearranged


@pytest.mark.parametrize(
    "fn, words",
    [
        (not_written, ["not attempted yet"]),
        (lambda c, u, s: c + s * (u - c), ["swapped", "ε_u + s(ε_c − ε_u)"]),
        (lambda c, u, s: (1 + s) * c - s * u, ["Ho & Salimans", "s + 1"]),
        (lambda c, u, s: u + (s - 1) * (c - u), ["scale s − 1", "w = s − 1"]),
        (lambda c, u, s: u + s * c - u, ["s·ε_c", "parentheses"]),
        (lambda c, u, s: s * u + (c - u), ["wrong term"]),
        (lambda c, u, s: s * (c - u), ["add it to the unconditional"]),
        (lambda c, u, s: u + s * (c + u), ["not the sum"]),
        (lambda c, u, s: c, ["ε_c unchanged"]),
        (lambda c, u, s: u, ["ε_u unchanged"]),
        (lambda c, u, s: u + s * (c - u) + 0.01, ["largest error", "at index"]),
    ],
)
def test_guided_eps_mistakes_are_named(fn, words):
    result = check_guided_eps(fn)
    assert not result.passed
    for word in words:
        assert word in str(result), str(result)
    assert result.attempted == (fn is not not_written)


# --- one call on the 2B batch ---------------------------------------------------------------------------


def batched(model, x_t, t, labels, s):
    null = torch.full_like(labels, model.num_classes)
    eps = model(torch.cat([x_t, x_t]), torch.cat([t, t]), labels=torch.cat([labels, null]))
    eps_c, eps_u = eps.chunk(2)
    return eps_u + s * (eps_c - eps_u)


def two_calls(model, x_t, t, labels, s):
    eps_c = model(x_t, t, labels=labels)
    eps_u = model(x_t, t, labels=torch.full_like(labels, model.num_classes))
    return eps_u + s * (eps_c - eps_u)


def wrong_null(null_of):
    def fn(model, x_t, t, labels, s):
        null = torch.full_like(labels, null_of(model))
        eps = model(torch.cat([x_t, x_t]), torch.cat([t, t]), labels=torch.cat([labels, null]))
        eps_c, eps_u = eps.chunk(2)
        return eps_u + s * (eps_c - eps_u)

    return fn


def swapped_halves(model, x_t, t, labels, s):
    null = torch.full_like(labels, model.num_classes)
    eps = model(torch.cat([x_t, x_t]), torch.cat([t, t]), labels=torch.cat([labels, null]))
    eps_u, eps_c = eps.chunk(2)
    return eps_u + s * (eps_c - eps_u)


def t_not_repeated(model, x_t, t, labels, s):
    null = torch.full_like(labels, model.num_classes)
    eps = model(torch.cat([x_t, x_t]), t, labels=torch.cat([labels, null]))
    eps_c, eps_u = eps.chunk(2)
    return eps_u + s * (eps_c - eps_u)


def test_batched_solution_passes_and_two_calls_do_not():
    result = check_batched_guidance(batched)
    assert result.passed, result
    result = check_batched_guidance(two_calls)
    assert not result.passed
    assert "called 2 time(s)" in result.message and "ONE call on 2B = 8 rows" in result.message


@pytest.mark.parametrize(
    "fn, words",
    [
        (not_written, ["not attempted yet"]),
        (wrong_null(lambda m: m.num_classes - 1), ["num_classes − 1", "null class"]),
        (wrong_null(lambda m: 0), ["label 0"]),
        (swapped_halves, ["halves are swapped"]),
        (lambda m, x, t, y, s: m(x, t, labels=y), ["conditional prediction ε_c"]),
        (lambda m, x, t, y, s: m(x, t, labels=torch.full_like(y, 10)), ["unconditional prediction ε_u"]),
        (t_not_repeated, ["ValueError", "torch.cat([t, t])"]),
        (lambda m, x, t, y, s: m(torch.cat([x, x]), torch.cat([t, t])), ["torch.full_like"]),
    ],
)
def test_batched_mistakes_are_named(fn, words):
    result = check_batched_guidance(fn)
    assert not result.passed
    for word in words:
        assert word in str(result), str(result)


def test_toy_class_model_depends_on_the_class_and_checks_its_inputs():
    model = ToyClassModel(num_classes=10)
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([1, 2, 3])
    a, b = model(x, t, labels=torch.tensor([0, 1, 10])), model(x, t, labels=torch.tensor([1, 1, 10]))
    assert not torch.allclose(a[0], b[0]) and torch.equal(a[1:], b[1:])
    with pytest.raises(ValueError, match="0..10"):
        model(x, t, labels=torch.tensor([0, 1, 11]))
    assert model.calls == 3 and model.batch_sizes == [3, 3, 3]


# --- label dropout --------------------------------------------------------------------------------------


def dropout(labels, u, p_uncond, num_classes):
    return torch.where(u < p_uncond, torch.full_like(labels, num_classes), labels)


@pytest.mark.parametrize(
    "fn, words",
    [
        (not_written, ["not attempted yet"]),
        (lambda y, u, p, K: torch.where(u >= p, torch.full_like(y, K), y), ["1 − p_uncond"]),
        (lambda y, u, p, K: torch.where(u < p, torch.full_like(y, K - 1), y), ["num_classes − 1"]),
        (lambda y, u, p, K: torch.where(u < p, torch.full_like(y, -1), y), ["−1"]),
        (lambda y, u, p, K: torch.where(u < p, torch.zeros_like(y), y), ["with 0"]),
        (lambda y, u, p, K: torch.full_like(y, K), ["every label"]),
        (lambda y, u, p, K: y, ["differ"]),
    ],
)
def test_label_dropout_mistakes_are_named(fn, words):
    result = check_label_dropout(fn)
    assert not result.passed
    for word in words:
        assert word in str(result), str(result)


def test_label_dropout_solution_passes_and_is_the_trainers_rule():
    assert check_label_dropout(dropout).passed
    from diffusion_course.schedules import linear_schedule
    from diffusion_course.training import diffusion_loss

    class Recorder(torch.nn.Module):
        num_classes = 10

        def forward(self, x, t, labels=None):
            self.labels = labels
            return torch.zeros_like(x)

    model, schedule = Recorder(), linear_schedule(100)
    x0, labels = torch.zeros(64, 1, 2, 2), torch.arange(64) % 10
    diffusion_loss(model, x0, schedule, labels, p_uncond=0.3, generator=torch.Generator().manual_seed(5))
    # replay the trainer's draws: t, the noise, then one uniform per example
    g = torch.Generator().manual_seed(5)
    torch.randint(0, 100, (64,), generator=g), torch.randn(x0.shape, generator=g)
    u = torch.rand(64, generator=g)
    assert torch.equal(model.labels, dropout(labels, u, 0.3, 10))
    assert 5 < int((model.labels == 10).sum()) < 35
