r"""What every sampler shares: the trajectory record, the guarded ε-model call and :class:`Loop`, over which
each sampler writes its own loop (docs/AUTHORING.md §7 has the recipe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .._checks import check_image_batch, check_labels, fail
from ..schedules import NoiseSchedule
from .timesteps import validate_timesteps


class NonFiniteError(ValueError):
    """The ε-model returned NaN or ±inf during sampling."""


@dataclass
class Trajectory:
    """What a sampler visited: ``timesteps`` (N,) in walking order, N + 1 states ``xs`` (``xs[0]`` the input,
    ``xs[i+1]`` the state after step i) and ``x0_preds[i]``, the x̂₀ at ``timesteps[i]``."""

    timesteps: torch.Tensor
    xs: list[torch.Tensor] = field(default_factory=list)
    x0_preds: list[torch.Tensor] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.x0_preds)


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """x̂₀ = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t, the x_0 that ε explains (undefined where ᾱ_t = 0)."""
    if _min(alpha_bar_t) <= 0.0:
        allowed = (
            "must be > 0: at ᾱ_t = 0 (zero terminal SNR) x_t is pure noise and ε cannot predict x_0; "
            "drop that timestep or use a schedule with ᾱ_(T−1) > 0"
        )
        fail("alpha_bar_t", alpha_bar_t, allowed)
    return _predict_x0(x_t, eps, alpha_bar_t)


def _predict_x0(x_t, eps, alpha_bar_t):
    return (x_t - _sqrt(1.0 - alpha_bar_t) * eps) / _sqrt(alpha_bar_t)


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """ε = (x_t − √ᾱ_t x_0) / √(1−ᾱ_t), the noise that turns x_0 into x_t."""
    return (x_t - _sqrt(alpha_bar_t) * x0) / _sqrt(1.0 - alpha_bar_t)


def draw_noise(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z ~ N(0, I) shaped like ``like``, drawn on the generator's device and moved, so a CPU generator gives
    the same z on any device; every sampler draws through this."""
    device = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def alpha_bar_at(schedule: NoiseSchedule, t: int) -> float:
    """ᾱ_t as a Python float, with ᾱ_{−1} = 1."""
    return 1.0 if t < 0 else float(schedule.alpha_bar[t])


def model_labels(eps_model, labels, batch: int, device: torch.device) -> torch.Tensor | None:
    """``labels`` checked for ``eps_model`` (see docs/SAMPLING.md, "Shared pieces"); None stays None."""
    if labels is None:
        return None
    num_classes = getattr(eps_model, "num_classes", None)
    if not num_classes if hasattr(eps_model, "num_classes") else isinstance(eps_model, torch.nn.Module):
        fail("labels", labels, f"labels given but the model ({type(eps_model).__name__}) is unconditional")
    return check_labels(labels, batch, num_classes, device=device)


def call_eps_model(
    eps_model, x_t: torch.Tensor, t: int, labels=None, step: int | None = None
) -> torch.Tensor:
    """ε = eps_model(x_t, t·1_B[, labels]) in x_t's dtype, checked (see docs/SAMPLING.md, "Shared pieces")."""
    where = f"at step {step} (t={t})" if step is not None else f"at t={t}"
    t_batch = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
    try:
        eps = eps_model(x_t, t_batch) if labels is None else eps_model(x_t, t_batch, labels=labels)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as e:
        if step not in (None, 0):
            raise
        # On the first call a RuntimeError almost always means x_T does not fit the model.
        raise ValueError(
            f"eps_model failed {where} on x_t of shape {tuple(x_t.shape)}, dtype {x_t.dtype}: {e}"
        ) from e
    if not isinstance(eps, torch.Tensor):
        fail("eps_model output", type(eps).__name__, "the ε-model must return a torch.Tensor")
    if eps.shape != x_t.shape:
        allowed = (
            f"expected the shape of x_t, {tuple(x_t.shape)}, {where} (is x_T the shape the model expects?)"
        )
        fail("eps_model output", eps, allowed)
    if not torch.isfinite(eps).all():
        bad = int((~torch.isfinite(eps)).sum())
        raise NonFiniteError(f"eps_model returned {bad} non-finite values (NaN/inf) {where}")
    return eps.to(x_t.dtype)


def check_sampler_inputs(x_T, schedule, ts, name: str = "timesteps") -> tuple[torch.Tensor, torch.Tensor]:
    """Validate (x_T, schedule, timesteps) and return (x_T, timesteps as a descending LongTensor)."""
    x_T = check_image_batch("x_T", x_T)
    if not isinstance(schedule, NoiseSchedule):
        fail("schedule", type(schedule).__name__, "expected a NoiseSchedule (see diffusion_course.schedules)")
    ts = validate_timesteps(ts, schedule.T, name=name)
    zero = schedule.alpha_bar[ts] <= 0
    if zero.any():
        allowed = "ᾱ_t = 0 there (zero terminal SNR), where an ε-model cannot predict x_0; drop that step"
        fail(name, int(ts[zero][0]), allowed)
    if not torch.isfinite(x_T).all():
        fail("x_T", x_T, "contains NaN or inf")
    return x_T, ts


class Recorder:
    """What every sampler loop does with its states: keep the trajectory when asked for, return the result.
    A subclass sets ``self.trajectory`` (a :class:`Trajectory`, or None when none was asked for)."""

    trajectory: Trajectory | None = None

    def record(self, x: torch.Tensor, x0_pred: torch.Tensor) -> None:
        if self.trajectory is not None:
            self.trajectory.xs.append(x)
            self.trajectory.x0_preds.append(x0_pred)

    def result(self, x: torch.Tensor):
        return (x, self.trajectory) if self.trajectory is not None else x


class Loop(Recorder):
    """The part of a sampler that is not its update: inputs checked once, the walk, ε, the trajectory.

    Iterating yields ``steps``, the tuples ``(i, t, t_prev, ᾱ_t, ᾱ_prev)`` over the descending grid (ascending
    with ``reverse=True``, for inversion); t_prev is the next listed timestep, −1 after the last (ᾱ = 1).
    :meth:`eps` calls the model, :meth:`record` keeps the trajectory when asked for,
    :meth:`result` returns x_0 or (x_0, :class:`Trajectory`).
    """

    def __init__(self, eps_model, x_T, schedule, timesteps, labels=None, return_trajectory=False,
                 progress=False, desc="sampling", *, reverse=False):  # fmt: skip
        self.x_T, ts = check_sampler_inputs(x_T, schedule, timesteps)
        self.timesteps = ts.flip(0) if reverse else ts
        self.eps_model, self.schedule, self.progress, self.desc = eps_model, schedule, progress, desc
        self.labels = model_labels(eps_model, labels, self.x_T.shape[0], self.x_T.device)
        self.trajectory = Trajectory(self.timesteps.clone(), [self.x_T]) if return_trajectory else None
        ts = self.timesteps.tolist() + [-1]
        self.steps = [(i, t, s, alpha_bar_at(schedule, t), alpha_bar_at(schedule, s)) for i, (t, s) in
                      enumerate(zip(ts[:-1], ts[1:]))]  # fmt: skip

    def __iter__(self):
        return iter(progress_bar(self.steps, self.progress, self.desc))

    def eps(self, x: torch.Tensor, t: int, i: int) -> torch.Tensor:
        """ε = eps_model(x, t) for step ``i`` (see :func:`call_eps_model`)."""
        return call_eps_model(self.eps_model, x, t, labels=self.labels, step=i)


def progress_bar(iterable, enabled: bool, desc: str):
    """``tqdm.auto`` around ``iterable`` when ``enabled``."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc)


def _sqrt(v):
    return v.sqrt() if isinstance(v, torch.Tensor) else math.sqrt(v)


def _min(v) -> float:
    return float(v.min()) if isinstance(v, torch.Tensor) else float(v)


def _max(v) -> float:
    return float(v.max()) if isinstance(v, torch.Tensor) else float(v)
