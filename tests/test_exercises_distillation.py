"""Checker of notebook 12: the progressive-distillation target."""

import math

import pytest
import torch

from diffusion_course.distillation import distillation_target, student_grid, teacher_two_steps
from diffusion_course.exercises.distillation import alpha_bar, check_distillation_target, teacher
from diffusion_course.sampling import ddim_step
from diffusion_course.schedules import linear_schedule

pytestmark = pytest.mark.usefixtures("one_thread")


def two_step_target(eps_model, x_t, t, t_mid, t_end, alpha_bar, solve_at):
    """Two DDIM steps to t_end, then x̃ solved from one step that is taken to land at ``solve_at``."""
    a, a_mid, a_end = alpha_bar(t), alpha_bar(t_mid), alpha_bar(t_end)
    x_mid, _ = ddim_step(x_t, eps_model(x_t, t), a, a_mid)
    x_end, _ = ddim_step(x_mid, eps_model(x_mid, t_mid), a_mid, a_end)
    a_solve = alpha_bar(solve_at)
    ratio = math.sqrt(1 - a_solve) / math.sqrt(1 - a)
    return (x_end - ratio * x_t) / (math.sqrt(a_solve) - ratio * math.sqrt(a))


def right(eps_model, x_t, t, t_mid, t_end, alpha_bar):
    return two_step_target(eps_model, x_t, t, t_mid, t_end, alpha_bar, solve_at=t_end)


def by_hand(eps_model, x_t, t, t_mid, t_end, alpha_bar):
    """The same without the package: x̂₀ and the direction written out."""
    x = x_t
    for s, s_next in ((t, t_mid), (t_mid, t_end)):
        a, a_next = alpha_bar(s), alpha_bar(s_next)
        eps = eps_model(x, s)
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        x = math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * eps
    a, a_end = alpha_bar(t), alpha_bar(t_end)
    return (x - math.sqrt(1 - a_end) / math.sqrt(1 - a) * x_t) / (
        math.sqrt(a_end) - math.sqrt((1 - a_end) / (1 - a)) * math.sqrt(a)
    )


def not_written(*args):
    raise NotImplementedError("Exercise: write your code here")


def test_solutions_pass_and_agree_with_the_packages_round_loss():
    assert check_distillation_target(right).passed
    assert check_distillation_target(by_hand).passed
    # the checker's reference is what DistillationLoss trains on: the package's per-sample two steps
    g = student_grid(linear_schedule(1000), 4)
    x_t = torch.randn(4, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    i = torch.arange(4)
    per_sample = lambda x, t: teacher(x, t.to(x.dtype).reshape(-1, 1, 1, 1))  # noqa: E731
    x_end = teacher_two_steps(
        per_sample, x_t, g.t[i], g.t_mid[i], g.alpha_bar[i], g.alpha_bar_mid[i], g.alpha_bar_end[i]
    )
    package = distillation_target(x_t, x_end, g.alpha_bar[i], g.alpha_bar_end[i])
    for k in range(4):
        t, tm, te = (int(v[k]) for v in (g.t, g.t_mid, g.t_end))
        assert torch.allclose(package[k], right(teacher, x_t[k : k + 1], t, tm, te, alpha_bar)[0], atol=1e-8)


def test_not_attempted():
    todo = check_distillation_target(not_written)
    assert not todo.passed and not todo.attempted


def wrong_order(m, x, t, tm, te, ab):
    return right(lambda y, s: m(y, tm if s == t else t), x, t, tm, te, ab)


def wrong_endpoint(m, x, t, tm, te, ab):
    return two_step_target(m, x, t, tm, te, ab, solve_at=tm)


def eps_target(m, x, t, tm, te, ab):
    return (x - math.sqrt(ab(t)) * right(m, x, t, tm, te, ab)) / math.sqrt(1 - ab(t))


def landing_point(m, x, t, tm, te, ab):
    x_mid, _ = ddim_step(x, m(x, t), ab(t), ab(tm))
    return ddim_step(x_mid, m(x_mid, tm), ab(tm), ab(te))[0]


def one_teacher_step(m, x, t, tm, te, ab):
    return distillation_target(x, ddim_step(x, m(x, t), ab(t), ab(te))[0], ab(t), ab(te))


def inverted_ratio(m, x, t, tm, te, ab):
    x_end = landing_point(m, x, t, tm, te, ab)
    ratio = math.sqrt(1 - ab(t)) / math.sqrt(1 - ab(te))
    return (x_end - ratio * x) / (math.sqrt(ab(te)) - ratio * math.sqrt(ab(t)))


@pytest.mark.parametrize(
    "wrong, words",
    [
        (wrong_order, ["wrong order"]),
        (wrong_endpoint, ["wrong endpoint", "ᾱ_{t_end}"]),
        (eps_target, ["returned the ε"]),
        (landing_point, ["returned x_end"]),
        (one_teacher_step, ["one step from t to t_end"]),
        (inverted_ratio, ["upside down"]),
    ],
)
def test_common_slips_are_named(wrong, words):
    feedback = check_distillation_target(wrong)
    assert not feedback.passed and feedback.attempted, str(feedback)
    for word in words:
        assert word in feedback.message, (word, feedback.message)


def test_an_unknown_error_reports_the_largest_difference():
    feedback = check_distillation_target(lambda *a: 1.01 * right(*a))
    assert not feedback.passed and "largest" in feedback.message.lower()
