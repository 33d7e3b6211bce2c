r"""Which of the T training timesteps a sampler visits.

Every strategy returns a LongTensor of ``steps`` distinct indices in 0..T−1, strictly descending (the order a
sampler walks them). After the last listed t the sampler steps to ᾱ = 1 (the clean data, ``t_prev = -1``).

With ``S = steps`` and round(·) = round half to even (numpy's rule), computed exactly on rationals:

* ``"linspace"``  t_k = round(k (T−1)/(S−1)), k = 0..S−1, reversed. Visits T−1 and 0 (S = 1 gives [0]).
* ``"leading"``   t_k = k ⌊T/S⌋, k = 0..S−1, reversed (offset 0). Starts at (S−1)⌊T/S⌋, so it never visits
  T−1 unless S = T (or T = 1); e.g. T = 1000, S = 50 → 980, 960, …, 0.
* ``"trailing"``  t_k = round(T (S−k)/S) − 1, k = 0..S−1. Starts at T−1, ends at round(T/S) − 1.
* ``"quadratic"`` DDIM's schedule: q_k = ⌊0.8 T (k/(S−1))²⌋, ascending, then made strictly increasing
  (q_k ← max(q_k, q_{k−1} + 1)) and capped (q_k ← min(q_k, T − S + k)), then reversed. Tops out near 0.8 T.
* ``"log"``       t = round(T^u) − 1 for u = linspace(1, 0, S) (log-spaced in t + 1, dense near t = 0), then
  made unique like "quadratic". Visits T−1 (S = 1 gives [T−1]) and 0 (S ≥ 2).

Rounding exactly gives every grid S distinct values; docs/SAMPLING.md, "Timestep grids", compares the grids
with diffusers' ``timestep_spacing``, Lin et al. (2023), Table 2 and the DDIM reference code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .._checks import check_choice, check_int, fail


def timestep_grid(
    T: int, steps: int | None = None, strategy: str | Sequence[int] | torch.Tensor = "trailing"
):
    """The descending timesteps of a sampler with ``steps`` steps out of ``T`` (see the module docstring).

    ``strategy`` is one of ``STRATEGIES`` or a custom list/tensor of indices (strictly descending, in 0..T−1;
    ``steps``, if given, must equal its length).
    """
    T = check_int("T", T, low=1)
    if not isinstance(strategy, str):
        ts = validate_timesteps(strategy, T, name="strategy")
        if steps is not None and check_int("steps", steps, low=1) != ts.numel():
            fail("steps", steps, f"the custom timesteps have {ts.numel()} entries; pass steps=None or that")
        return ts
    check_choice("strategy", strategy, STRATEGIES)
    if steps is None:
        fail("steps", steps, f"give the number of sampling steps, an integer in 1..{T}")
    S = check_int("steps", steps, low=1, high=T)
    ascending = _BUILDERS[strategy](T, S)
    return validate_timesteps(torch.tensor(ascending[::-1], dtype=torch.long), T)


def visits_last(T: int, steps: int, strategy: str | Sequence[int] | torch.Tensor = "trailing") -> bool:
    """Whether the grid starts at t = T−1, the noisiest state (see docs/SAMPLING.md, "Timestep grids")."""
    return int(timestep_grid(T, steps, strategy)[0]) == T - 1


def validate_timesteps(ts, T: int, name: str = "timesteps") -> torch.Tensor:
    """A non-empty, strictly descending sequence of integer indices in 0..T−1, as a CPU LongTensor."""
    if isinstance(ts, int) and not isinstance(ts, bool):
        fail(name, ts, "expected a list or tensor of timesteps; for a step count use timestep_grid(T, steps)")
    if isinstance(ts, torch.Tensor):
        if ts.is_floating_point() or ts.is_complex() or ts.dtype == torch.bool:
            fail(name, ts, "expected integer timestep indices")
        ts = ts.detach().to("cpu", torch.long)
    else:
        try:
            values = list(ts)
        except TypeError:
            fail(name, ts, "expected a list or tensor of integer timesteps")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) and not _is_integer_scalar(v):
                fail(name, values, f"every entry must be an integer, got {v!r}")
        ts = torch.tensor([int(v) for v in values], dtype=torch.long)
    if ts.ndim != 1 or ts.numel() == 0:
        fail(name, ts, "expected a non-empty 1-D sequence")
    shown = ts.tolist() if ts.numel() <= 12 else f"{ts[:6].tolist()} … {ts[-6:].tolist()}"
    if int(ts.min()) < 0 or int(ts.max()) > T - 1:
        fail(name, shown, f"every timestep must lie in 0..{T - 1}")
    steps = ts[:-1] - ts[1:]
    if (steps <= 0).any():
        i = int((steps <= 0).nonzero()[0])
        what = "a duplicate" if steps[i] == 0 else "an increase"
        pair = f"{int(ts[i])} → {int(ts[i + 1])}"
        fail(name, shown, f"must be strictly descending; {what} at position {i + 1} ({pair})")
    return ts


def _is_integer_scalar(v) -> bool:
    return hasattr(v, "__index__") and not isinstance(v, float)


def _round_half_even(num: int, den: int) -> int:
    """round(num/den) with ties to even, exactly (num ≥ 0, den > 0)."""
    q, r = divmod(num, den)
    if 2 * r > den or (2 * r == den and q % 2 == 1):
        q += 1
    return q


def _make_unique(raw: list[int], T: int) -> list[int]:
    """Lift an ascending list to strictly increasing, then cap entry k at T − S + k so it ends ≤ T−1."""
    S = len(raw)
    out, prev = [], -1
    for q in raw:
        prev = max(q, prev + 1)
        out.append(prev)
    return [min(q, T - S + k) for k, q in enumerate(out)]


def _linspace(T: int, S: int) -> list[int]:
    if S == 1:
        return [0]
    return [_round_half_even(k * (T - 1), S - 1) for k in range(S)]


def _leading(T: int, S: int) -> list[int]:
    return [k * (T // S) for k in range(S)]


def _trailing(T: int, S: int) -> list[int]:
    return [_round_half_even(T * (S - k), S) - 1 for k in reversed(range(S))]


def _quadratic(T: int, S: int) -> list[int]:
    if S == 1:
        return [0]
    return _make_unique([(4 * T * k * k) // (5 * (S - 1) ** 2) for k in range(S)], T)


def _log(T: int, S: int) -> list[int]:
    if S == 1:
        return [T - 1]
    raw = [round(math.exp(math.log(T) * k / (S - 1))) - 1 for k in range(S)]
    raw[0], raw[-1] = 0, T - 1
    return _make_unique(raw, T)


_BUILDERS = {
    "linspace": _linspace,
    "leading": _leading,
    "trailing": _trailing,
    "quadratic": _quadratic,
    "log": _log,
}
STRATEGIES = tuple(_BUILDERS)
