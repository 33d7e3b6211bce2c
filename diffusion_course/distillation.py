r"""Progressive distillation (Salimans & Ho 2022): a student learns to take in one DDIM step what its
teacher takes in two; each round halves the steps, and the student of a round teaches the next.

Round with N student steps: the teacher walks the trailing grid of 2N steps, the student every other time
of it (the trailing grid of N, exactly). For a training digit x_0 (label y), a student step i ~ U{0..N−1}
goes from t = s_i to t'' = s_{i+1} (−1, the clean data, after the last), through the teacher's t' between.
With x_t = α_t x_0 + σ_t ε (α = √ᾱ, σ = √(1−ᾱ)), two deterministic DDIM steps of the teacher,
x_t → x_t' → x_t'', and the x̃ that makes one DDIM step from x_t land on x_t'':

    x_t'' = α'' x̃ + σ'' (x_t − α x̃)/σ   ⇔   x̃ = (x_t'' − (σ''/σ) x_t) / (α'' − (σ''/σ) α).

The student predicts v (``models.VPrediction``: x̂₀ = α x_t − σ v, finite where α → 0, as the one-step
student needs) and is trained on ‖v_θ(x_t, t, y) − ṽ‖², ṽ = (α x_t − x̃)/σ: the x̂₀ error weighted by
1/σ² = 1 + SNR, Salimans & Ho's "SNR+1" weighting. Labels are dropped to the null class with the run's
``p_uncond`` for student and teacher alike: the conditional teacher is distilled (guidance scale 1), and
the student keeps an unconditional branch, so classifier-free guidance still applies to it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_float, check_int, fail
from .models import VPrediction, model_kind
from .sampling.ddim import ddim_step
from .sampling.timesteps import timestep_grid
from .schedules import NoiseSchedule
from .training import TrainConfig, TrainResult, drop_labels, train


def distillation_target(x_t: torch.Tensor, x_end: torch.Tensor, alpha_bar_t, alpha_bar_end) -> torch.Tensor:
    """x̃ = (x_end − (σ_end/σ_t) x_t) / (α_end − (σ_end/σ_t) α_t): the x̂₀ with which one DDIM (η = 0)
    step from x_t at ᾱ_t lands exactly on x_end at ᾱ_end (ᾱ_end = 1, the clean data, gives x̃ = x_end).
    ᾱ's are numbers or per-sample tensors (B,); the coefficients are computed in float64."""
    ab_t, ab_end = _alpha_bar("alpha_bar_t", alpha_bar_t), _alpha_bar("alpha_bar_end", alpha_bar_end)
    if bool((ab_t >= 1).any()):
        fail("alpha_bar_t", alpha_bar_t, "must be < 1: the step starts from a noisy x_t")
    if bool((ab_end <= ab_t).any()):
        fail("alpha_bar_end", alpha_bar_end, "must exceed alpha_bar_t (the step goes towards the data)")
    ratio = (1.0 - ab_end).sqrt() / (1.0 - ab_t).sqrt()
    scale = 1.0 / (ab_end.sqrt() - ratio * ab_t.sqrt())
    shape = (-1, *([1] * (x_t.ndim - 1))) if ab_t.ndim or ab_end.ndim else ()
    a, b = ((scale * c).reshape(shape).to(x_t) for c in (torch.ones_like(ratio), ratio))
    return a * x_end - b * x_t


def _alpha_bar(name: str, value) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=torch.float64).cpu()
    if bool(((value <= 0) | (value > 1)).any()):
        fail(name, value, "each ᾱ must lie in (0, 1]")
    return value


@dataclass(frozen=True)
class StudentGrid:
    """The N student steps of a round: step i goes from ``t[i]`` through the teacher's ``t_mid[i]`` to
    ``t_end[i]`` (−1 after the last), with ᾱ at each (ᾱ_{−1} = 1)."""

    t: torch.Tensor
    t_mid: torch.Tensor
    t_end: torch.Tensor
    alpha_bar: torch.Tensor
    alpha_bar_mid: torch.Tensor
    alpha_bar_end: torch.Tensor


def student_grid(schedule: NoiseSchedule, student_steps: int) -> StudentGrid:
    """The trailing grid of N = ``student_steps`` inside the teacher's trailing grid of 2N."""
    n = check_int("student_steps", student_steps, low=1, high=schedule.T // 2)
    teacher = timestep_grid(schedule.T, 2 * n, "trailing")
    t, t_mid = teacher[0::2], teacher[1::2]
    assert torch.equal(t, timestep_grid(schedule.T, n, "trailing"))  # exact rationals: every other time
    t_end = torch.cat([t[1:], torch.tensor([-1])])
    ab = torch.cat([schedule.alpha_bar, torch.ones(1, dtype=schedule.alpha_bar.dtype)])  # index −1 → 1
    return StudentGrid(t, t_mid, t_end, ab[t], ab[t_mid], ab[t_end])


@torch.no_grad()
def teacher_two_steps(teacher, x_t, t, t_mid, alpha_bar_t, alpha_bar_mid, alpha_bar_end, labels=None):
    """x_t → x_t' → x_t'': two DDIM (η = 0) steps of the ε-model ``teacher``, per sample (t, t_mid LongTensors
    (B,); the ᾱ's tensors (B,))."""
    shape = (-1, *([1] * (x_t.ndim - 1)))
    ab_t, ab_mid, ab_end = (a.reshape(shape).to(x_t) for a in (alpha_bar_t, alpha_bar_mid, alpha_bar_end))
    x_mid, _ = ddim_step(x_t, _eps(teacher, x_t, t, labels), ab_t, ab_mid)
    x_end, _ = ddim_step(x_mid, _eps(teacher, x_mid, t_mid, labels), ab_mid, ab_end)
    return x_end


def _eps(model, x, t, labels):
    return model(x, t.to(x.device)) if labels is None else model(x, t.to(x.device), labels=labels)


class DistillationLoss:
    """``loss(student, x0, labels, generator)`` for :func:`training.train`: mean ‖v_θ − ṽ‖² of one round
    (module docstring). ``teacher`` is any ε-model (a network, a ``VPrediction`` student of the last round,
    or the exact oracle); ``student`` must be a ``VPrediction`` (or a wrapper around one)."""

    def __init__(self, teacher, schedule: NoiseSchedule, student_steps: int, p_uncond: float = 0.0):
        if not callable(teacher):
            fail("teacher", teacher, "expected an ε-model (callable)")
        self.teacher, self.schedule = teacher, schedule
        self.grid = student_grid(schedule, student_steps)
        self.p_uncond = check_float("p_uncond", p_uncond, low=0.0, high=1.0)

    def targets(self, x0: torch.Tensor, labels=None, generator: torch.Generator | None = None):
        """(x_t, t, labels, ṽ) for a batch: a student step i ~ U{0..N−1} and ε drawn from ``generator``,
        labels dropped to the null class with ``p_uncond``, the teacher's two steps and ṽ = (α x_t − x̃)/σ."""
        dev = generator.device if generator is not None else x0.device
        g = self.grid
        i = torch.randint(0, g.t.numel(), (x0.shape[0],), generator=generator, device=dev).cpu()
        noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype).to(x0.device)
        labels = drop_labels(self.teacher, labels, self.p_uncond, generator)
        t = g.t[i].to(x0.device)
        x_t = self.schedule.q_sample(x0, t, noise)
        ab = self.schedule.alpha_bar
        alpha, sigma = (self.schedule.gather(c, t, x0) for c in (ab.sqrt(), (1.0 - ab).sqrt()))
        x_end = teacher_two_steps(self.teacher, x_t, g.t[i], g.t_mid[i], g.alpha_bar[i], g.alpha_bar_mid[i],
                                  g.alpha_bar_end[i], labels)  # fmt: skip
        target = distillation_target(x_t, x_end, g.alpha_bar[i], g.alpha_bar_end[i])
        return x_t, t, labels, (alpha * x_t - target) / sigma

    def __call__(self, student, x0: torch.Tensor, labels=None, generator: torch.Generator | None = None):
        x_t, t, labels, v_target = self.targets(x0, labels, generator)
        v = student(x_t, t, labels, predict="v") if labels is not None else student(x_t, t, predict="v")
        return F.mse_loss(v.float(), v_target.float())


def v_student(teacher: nn.Module, schedule: NoiseSchedule) -> VPrediction:
    """A v-predicting student whose network starts as a copy of ``teacher``'s (an ε-model network such as
    the U-Net, or a ``VPrediction`` whose copy is returned)."""
    if isinstance(teacher, VPrediction):
        return copy.deepcopy(teacher)
    student = VPrediction(model_kind(teacher), schedule.name, schedule.T, **teacher.config)
    student.net.load_state_dict(teacher.state_dict())
    return student.to(next(teacher.parameters()).device)


def distill(
    teacher,
    student: VPrediction,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    schedule: NoiseSchedule,
    rounds: Sequence[int],
    config: TrainConfig | Callable[[int], TrainConfig],
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_round: Callable[[int, TrainResult, float], None] | None = None,
    finished: Callable[[int], nn.Module | None] | None = None,
) -> VPrediction:
    """Run the rounds: for each N in ``rounds`` (descending student step counts, e.g. 32, 16, …, 1), train
    ``student`` with :class:`DistillationLoss` against ``teacher`` by :func:`training.train` (EMA, resume
    state in ``out_dir/round-N``), then the round's EMA student teaches the next round and starts its student.

    ``config`` is a TrainConfig or a function of N giving one. ``on_round(N, result, seconds)`` sees each
    finished round (e.g. to write its checkpoint); ``finished(N)`` may return an already trained student of
    round N (e.g. a checkpoint written before), which is then used instead of training it again. Returns the
    last round's student (EMA weights).
    """
    if not isinstance(student, VPrediction):
        fail("student", type(student).__name__, "expected a VPrediction (see v_student)")
    rounds = [check_int("rounds", n, low=1) for n in rounds]
    if not rounds or any(b >= a for a, b in zip(rounds, rounds[1:])):
        fail("rounds", rounds, "expected a non-empty, strictly decreasing list of student step counts")
    for n in rounds:
        done = finished(n) if finished is not None else None
        if done is not None:
            teacher, student = done.eval().requires_grad_(False), copy.deepcopy(done).requires_grad_(True)
            continue
        round_config = config(n) if callable(config) else config
        loss = DistillationLoss(teacher, schedule, n, round_config.p_uncond)
        round_dir = Path(out_dir) / f"round-{n}" if out_dir is not None else None
        started = time.perf_counter()
        result = train(student, images, labels, schedule, round_config, round_dir, resume, progress,
                       loss_fn=loss, desc=f"round {2 * n} → {n} steps")  # fmt: skip
        if on_round is not None:
            on_round(n, result, time.perf_counter() - started)
        teacher = result.ema_model.eval().requires_grad_(False)
        student = copy.deepcopy(result.ema_model).train().requires_grad_(True)
    return teacher


__all__ = [
    "DistillationLoss",
    "StudentGrid",
    "distill",
    "distillation_target",
    "student_grid",
    "teacher_two_steps",
    "v_student",
]
