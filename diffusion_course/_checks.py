"""Input checks shared by the package: every message names the parameter, the value and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def fail(name: str, value, allowed: str) -> None:
    """Raise ``ValueError("<name>=<value> is not allowed: <allowed>")``."""
    shown = value
    if isinstance(value, torch.Tensor):
        shown = f"tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    raise ValueError(f"{name}={shown!r} is not allowed: {allowed}")


def check_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """An integer in [low, high] (either bound optional)."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
            value = int(value)
        else:
            fail(name, value, "expected an integer" + _range_text(low, high))
    if (low is not None and value < low) or (high is not None and value > high):
        fail(name, value, "expected an integer" + _range_text(low, high))
    return int(value)


def check_float(
    name: str, value, *, low: float | None = None, high: float | None = None, low_open: bool = False
) -> float:
    """A finite real number in [low, high] (or (low, high] with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(name, value, "expected a real number")
    value = float(value)
    if not math.isfinite(value):
        fail(name, value, "expected a finite number")
    if low is not None and (value < low or (low_open and value == low)):
        fail(name, value, f"must be {'>' if low_open else '≥'} {low}")
    if high is not None and value > high:
        fail(name, value, f"must be ≤ {high}")
    return value


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        fail(name, value, f"choose one of {', '.join(map(repr, choices))}")
    return value


def check_image_batch(name: str, x, *, ndim: int | None = None) -> torch.Tensor:
    """A floating-point tensor with a batch dimension (and ``ndim`` dims when given)."""
    if not isinstance(x, torch.Tensor):
        fail(name, type(x).__name__, "expected a torch.Tensor")
    if not x.is_floating_point():
        fail(name, x, "expected a floating-point tensor (float32/float64/bfloat16)")
    if x.ndim < 2 or (ndim is not None and x.ndim != ndim):
        want = f"{ndim} dimensions" if ndim else "at least 2 dimensions (batch first)"
        fail(name, x, f"expected {want}")
    return x


def check_timesteps_tensor(
    name: str, t, T: int | None, batch: int, *, device=None, continuous: bool = False
) -> torch.Tensor:
    """Timestep indices: an int or an integer tensor of shape (batch,) with values in 0..T−1 (any when T is
    None), returned as torch.long (on ``device`` when given). ``continuous=True`` also admits finite
    floating times (a float or a floating tensor (batch,)), returned as float32, for networks fed a real
    time."""
    real = isinstance(t, float) or isinstance(t, torch.Tensor) and t.is_floating_point()
    if continuous and real:
        t = torch.as_tensor(t, dtype=torch.float32)
        if not torch.isfinite(t).all():
            fail(name, t, "expected finite times")
        t = t.expand(batch) if t.ndim == 0 else t
        if t.ndim != 1 or t.shape[0] != batch:
            fail(name, t, f"expected shape ({batch},), one time per batch element")
        return t.to(device=device)
    if isinstance(t, int) and not isinstance(t, bool):
        t = torch.full((batch,), t, dtype=torch.long)
    if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.dtype == torch.bool:
        fail(name, t, "expected integer timestep indices: an int or a LongTensor of shape (B,)")
    if t.ndim == 0:
        t = t.expand(batch)
    if t.ndim != 1 or t.shape[0] != batch:
        fail(name, t, f"expected shape ({batch},), one timestep per batch element")
    if T is not None and t.numel() and (int(t.min()) < 0 or int(t.max()) > T - 1):
        fail(f"{name} (min {int(t.min())}, max {int(t.max())})", t, f"timesteps must lie in 0..{T - 1}")
    return t.to(device=device, dtype=torch.long)


def check_labels(
    labels, batch: int, num_classes: int | None, *, device=None, null_class: bool = False, note: str = ""
) -> torch.Tensor:
    """Class labels: an integer tensor of shape (batch,) in 0..num_classes−1, returned as torch.long.

    ``null_class`` also admits index ``num_classes`` (the learned unconditional class); ``num_classes`` None
    skips the range check. ``note`` is appended to the range message. Moved to ``device`` when given.
    """
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        fail("labels", labels, "expected an integer torch.Tensor (torch.long) of class indices")
    if labels.shape != (batch,):
        fail("labels", labels, f"expected shape ({batch},), one label per image (per sample)")
    top = None if num_classes is None else num_classes if null_class else num_classes - 1
    if top is not None and batch and (int(labels.min()) < 0 or int(labels.max()) > top):
        null = f", or {num_classes} for the null class" if null_class else ""
        fail(
            f"labels (min {int(labels.min())}, max {int(labels.max())})",
            labels,
            f"class indices must lie in 0..{num_classes - 1}{null}{note}",
        )
    return labels.to(device=device, dtype=torch.long)


def _range_text(low, high) -> str:
    if low is not None and high is not None:
        return f" in {low}..{high}"
    if low is not None:
        return f" ≥ {low}"
    if high is not None:
        return f" ≤ {high}"
    return ""
