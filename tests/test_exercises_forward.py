"""The exercise framework and the checkers of notebook 01: right answers pass, each known mistake is named."""

import numpy as np
import pytest
import torch

from diffusion_course.exercises import (
    Case,
    Diagnosis,
    Feedback,
    check_alpha_bar,
    check_function,
    check_q_sample,
    check_snr,
)


def not_written(*args):
    raise NotImplementedError("Exercise 1: write your code here")


# ---------------------------------------------------------------- Feedback and the generic checker


def test_feedback_text_and_html_show_the_status():
    ok = Feedback(True, "matches", name="q_sample")
    bad = Feedback(False, "use `alpha_bar`", name="q_sample")
    todo = Feedback(False, "write it", attempted=False, name="q_sample")
    assert str(ok).startswith("✓ q_sample: passed") and repr(ok) == str(ok)
    assert str(bad).startswith("✗ q_sample: failed") and "use `alpha_bar`" in str(bad)
    assert str(todo).startswith("○ q_sample: not attempted yet")
    assert (
        "#1a7f37" in ok._repr_html_() and "#cf222e" in bad._repr_html_() and "#6e7781" in todo._repr_html_()
    )
    assert "<code>alpha_bar</code>" in bad._repr_html_()
    assert "&lt;b&gt;" in Feedback(False, "<b>")._repr_html_()  # messages are text, not markup


def _square_checker(fn):
    return check_function(
        fn,
        name="square",
        cases=[Case({"x": torch.tensor([1.0, 2.0, 3.0])})],
        reference=lambda x: x**2,
        diagnoses=[(lambda x: 2 * x, "You doubled x instead of squaring it.")],
    )


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda x: x**2, ["passed", "matches the reference"]),
        (not_written, ["not attempted yet", "write your code"]),
        (lambda x: 2 * x, ["You doubled x"]),
        (lambda x: None, ["returned None", "return"]),
        (lambda x: (x**2).numpy(), ["numpy array", "torch.Tensor"]),
        (lambda x: [1.0, 4.0, 9.0], ["returned a list", "torch.Tensor"]),
        (lambda x: (x**2).double(), ["values are right", "torch.float64", "torch.float32"]),
        (lambda x: (x**2).long(), ["integers"]),
        (lambda x: x[:2] ** 2, ["shape (2,)", "expected (3,)"]),
        (lambda x: x**2 / (x - 2), ["non-finite", "index (1,)"]),
        (
            lambda x: x**2 + torch.tensor([0.0, 0.0, 0.5]),
            ["1 of 3 values differ", "0.5", "index (2,)", "9.5"],
        ),
        (lambda x: x.mul_(x), ["changed its input `x` in place"]),
        (
            lambda x: x.undefined_method(),
            ["AttributeError", "undefined_method", "x = a float32 tensor of shape"],
        ),
    ],
)
def test_generic_checker_says_what_is_wrong(fn, words):
    feedback = _square_checker(fn)
    for word in words:
        assert word in str(feedback), (word, str(feedback))
    assert feedback.passed == ("passed" in words)
    assert feedback.attempted == (fn is not not_written)


def test_exception_message_names_the_learners_line():
    def square(x):
        y = x**2
        return y + torch.zeros(5)  # shape error on this line

    feedback = _square_checker(square)
    assert "RuntimeError" in feedback.message and "return y + torch.zeros(5)" in feedback.message


def test_scalar_reference_accepts_numbers():
    checker = lambda fn: check_function(
        fn, name="mean", cases=[Case({"x": torch.arange(4.0)})], reference=lambda x: float(x.mean())
    )
    assert checker(lambda x: x.mean()).passed
    assert checker(lambda x: np.float64(1.5)).passed
    assert "expected a number" in checker(lambda x: "1.5").message
    assert "does not match" in checker(lambda x: 2.0).message


def test_symptom_diagnosis_and_bad_checker_arguments():
    checker = lambda fn: check_function(
        fn,
        name="f",
        cases=lambda: [Case({"x": torch.ones(3)}, label="three ones")],
        reference=lambda x: x,
        diagnoses=[Diagnosis("Everything is negative.", when=lambda out, ref, case: bool((out < 0).all()))],
    )
    assert checker(lambda x: -x).message == "Everything is negative."
    assert "three ones" in checker(lambda x: x + 1).message
    with pytest.raises(ValueError, match="fn"):
        checker("not a function")
    with pytest.raises(ValueError, match="exactly one"):
        Diagnosis("no test given")
    with pytest.raises(ValueError, match="cases"):
        check_function(lambda x: x, name="f", cases=[], reference=lambda x: x)


# ---------------------------------------------------------------- check_alpha_bar


def alpha_bar_right(betas):
    return torch.cumprod(1 - betas, dim=0)


def test_alpha_bar_right_answer_passes_and_todo_is_not_attempted():
    assert check_alpha_bar(alpha_bar_right).passed
    loop = lambda betas: torch.stack([torch.prod(1 - betas[: t + 1]) for t in range(len(betas))])
    assert check_alpha_bar(loop).passed
    todo = check_alpha_bar(not_written)
    assert not todo.passed and not todo.attempted and "not attempted" in str(todo)


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda b: 1 - b, ["You returned α_t", "cumprod"]),
        (lambda b: torch.cumsum(1 - b, dim=0), ["added up", "cumprod"]),
        (lambda b: torch.cumprod(b, dim=0), ["multiplied the β's"]),
        (lambda b: b.clone(), ["betas unchanged"]),
        (lambda b: 1 - torch.cumsum(b, dim=0), ["first-order approximation"]),
        (lambda b: torch.cat([torch.ones(1, dtype=b.dtype), alpha_bar_right(b)]), ["T+1 entries"]),
        (lambda b: torch.cat([torch.ones(1, dtype=b.dtype), alpha_bar_right(b)[:-1]]), ["shifted by one"]),
        (lambda b: alpha_bar_right(b).sqrt(), ["√ᾱ_t"]),
        (lambda b: alpha_bar_right(b) * 0.99, ["does not match", "largest error", "index"]),
    ],
)
def test_alpha_bar_mistakes_are_named(wrong, words):
    feedback = check_alpha_bar(wrong)
    assert not feedback.passed and feedback.attempted
    for word in words:
        assert word in feedback.message, (word, feedback.message)


# ---------------------------------------------------------------- check_q_sample


def q_sample_right(x0, t, noise, schedule):
    ab = schedule.alpha_bar[t].view(-1, 1, 1, 1).to(x0.dtype)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def _q_sample_with(signal, noise_coef):
    """A q_sample built from two coefficient rules (functions of the schedule and t, shaped (B,1,1,1))."""

    def q_sample(x0, t, noise, schedule):
        shape = (-1, 1, 1, 1)
        return (
            signal(schedule, t).view(shape).float() * x0 + noise_coef(schedule, t).view(shape).float() * noise
        )

    return q_sample


def test_q_sample_right_answer_passes_and_todo_is_not_attempted():
    assert check_q_sample(q_sample_right).passed
    assert check_q_sample(lambda x0, t, noise, s: s.q_sample(x0, t, noise)).passed
    todo = check_q_sample(not_written)
    assert not todo.attempted and "not attempted yet" in str(todo)


ab = lambda s, t: s.alpha_bar[t]
ab_prev = lambda s, t: s.alpha_bar_prev[t]


@pytest.mark.parametrize(
    "wrong, words",
    [
        (
            _q_sample_with(lambda s, t: s.alphas[t].sqrt(), lambda s, t: s.betas[t].sqrt()),
            ["keeps too much signal at t=999", "alpha_t", "instead of alpha_bar_t"],
        ),
        (_q_sample_with(ab, lambda s, t: 1 - ab(s, t)), ["Missing square roots"]),
        (
            _q_sample_with(lambda s, t: ab(s, t).sqrt(), lambda s, t: 1 - ab(s, t)),
            ["its variance", "standard"],
        ),
        (_q_sample_with(ab, lambda s, t: (1 - ab(s, t)).sqrt()), ["scaled x0 by ᾱ_t"]),
        (_q_sample_with(lambda s, t: (1 - ab(s, t)).sqrt(), lambda s, t: ab(s, t).sqrt()), ["swapped"]),
        (
            _q_sample_with(lambda s, t: ab_prev(s, t).sqrt(), lambda s, t: (1 - ab_prev(s, t)).sqrt()),
            ["Off by one", "ᾱ_{t−1}"],
        ),
        (_q_sample_with(lambda s, t: ab(s, t).sqrt(), lambda s, t: torch.zeros_like(t)), ["no noise"]),
        (_q_sample_with(lambda s, t: ab(s, t).sqrt(), lambda s, t: torch.ones_like(t)), ["unscaled"]),
        (
            lambda x0, t, noise, s: q_sample_right(x0, t, torch.randn_like(noise), s),
            ["not the `noise` argument"],
        ),
        (
            lambda x0, t, noise, s: q_sample_right(x0, t, noise, s) + 0.1,
            ["does not match", "largest error is 0.1", "at index"],
        ),
    ],
)
def test_q_sample_mistakes_are_named(wrong, words):
    feedback = check_q_sample(wrong)
    assert not feedback.passed and feedback.attempted
    for word in words:
        assert word in feedback.message, (word, feedback.message)


def test_q_sample_exceptions_get_hints():
    def no_reshape(x0, t, noise, schedule):
        ab = schedule.alpha_bar[t].float()
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def next_index(x0, t, noise, schedule):
        return q_sample_right(x0, t + 1, noise, schedule)

    broadcast = check_q_sample(no_reshape).message
    assert (
        "RuntimeError" in broadcast and "t = [0, 250, 500, 999]" in broadcast and "(B, 1, 1, 1)" in broadcast
    )
    index = check_q_sample(next_index).message
    assert "IndexError" in index and "index it with t itself" in index


def test_q_sample_float64_result_is_a_dtype_problem():
    def float64(x0, t, noise, schedule):
        ab = schedule.alpha_bar[t].view(-1, 1, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    feedback = check_q_sample(float64)
    assert "values are right" in feedback.message and ".to(torch.float32)" in feedback.message


# ---------------------------------------------------------------- check_snr


def test_snr_right_answer_and_mistakes():
    assert check_snr(lambda ab: ab / (1 - ab)).passed
    assert not check_snr(not_written).attempted
    cases = {
        "noise-to-signal": lambda ab: (1 - ab) / ab,
        "standard deviations": lambda ab: ab.sqrt() / (1 - ab).sqrt(),
        "log SNR": lambda ab: torch.log(ab / (1 - ab)),
        "You returned ᾱ_t": lambda ab: ab.clone(),
        "1 + ᾱ_t": lambda ab: ab / (1 + ab),
        "largest error": lambda ab: ab / (1 - ab) * 1.01,
    }
    for words, wrong in cases.items():
        assert words in check_snr(wrong).message, (words, check_snr(wrong).message)
