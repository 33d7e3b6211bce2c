r"""Checkers for notebook 06 (skipping steps).

* ``check_trailing_timesteps(fn)``: ``fn(T, steps) -> LongTensor``, the "trailing" grid
  t_k = round(T (S−k)/S) − 1, k = 0..S−1 (descending, starts at T−1);
* ``check_speedup(fn)``: ``fn(steps, scores, seconds, tolerance) -> float``, the measured speed-up at equal
  quality, seconds_ref / seconds_fast (see :func:`diffusion_course.lessons.steps.speedup_at_quality`).
"""

from __future__ import annotations

import torch

from ..lessons.steps import speedup_at_quality
from ..sampling import timestep_grid
from .core import Case, Feedback, check_function

# ---------------------------------------------------------------- the trailing grid


def _trailing_cases() -> list[Case]:
    # (T, S) where floating-point versions (np.arange(T, 0, -T/S)) give S values and round like the exact
    # rule, and (100, 8) has ties (87.5 → 88, 62.5 → 62) that separate rounding from flooring.
    return [
        Case({"T": T, "steps": S}, label=f"T = {T}, steps = {S}")
        for T, S in [(1000, 10), (1000, 50), (100, 8)]
    ]


def _grid(T, S, strategy):
    return timestep_grid(T, S, strategy)


def _ascending(T, S):
    return _grid(T, S, "trailing").flip(0)


def _no_minus_one(T, S):
    return _grid(T, S, "trailing") + 1


def _shifted(T, S):
    """round(T (S−k)/S) − 1 for k = 1..S: one stride too low, ends at −1."""
    return torch.tensor([round(T * (S - k) / S) - 1 for k in range(1, S + 1)], dtype=torch.long)


def _floored(T, S):
    return torch.tensor([T * (S - k) // S - 1 for k in range(S)], dtype=torch.long)


def _strided_from_last(T, S):
    """T−1, T−1−⌊T/S⌋, … (stride ⌊T/S⌋ from T−1)."""
    return torch.tensor([T - 1 - k * (T // S) for k in range(S)], dtype=torch.long)


def check_trailing_timesteps(fn) -> Feedback:
    """Check ``fn(T, steps) -> LongTensor``: t_k = round(T (S−k)/S) − 1, k = 0..S−1, strictly descending."""
    return check_function(
        fn,
        name="trailing_timesteps",
        cases=_trailing_cases,
        reference=lambda T, S: _grid(T, S, "trailing"),
        diagnoses=[
            (
                _no_minus_one,
                "Off by one: your grid starts at T = 1000, which is not a timestep (they run over 0..T−1). "
                "Subtract 1 after rounding: t_k = round(T (S−k)/S) − 1.",
            ),
            (
                _ascending,
                "Your grid is ascending. A sampler walks from noise to data, so the grid must be descending, "
                "starting at T−1 (flip it, or count k from 0 with S−k).",
            ),
            (
                lambda T, S: _grid(T, S, "leading"),
                "That is the 'leading' grid, k·⌊T/S⌋, which starts at T − T/S (900 for S = 10) and never "
                "visits T−1. 'Trailing' counts back from T: t_k = round(T (S−k)/S) − 1.",
            ),
            (
                lambda T, S: _grid(T, S, "leading").flip(0),
                "That is the 'leading' grid k·⌊T/S⌋, and ascending. 'Trailing' counts back from T and "
                "descends: t_k = round(T (S−k)/S) − 1, k = 0..S−1.",
            ),
            (
                lambda T, S: _grid(T, S, "linspace"),
                "That is the 'linspace' grid from T−1 down to 0. 'Trailing' steps by T/S from T−1 and stops "
                "at round(T/S) − 1, never visiting 0: t_k = round(T (S−k)/S) − 1.",
            ),
            (
                _shifted,
                "Your grid does not start at T−1: it is one stride too low (and ends at −1). Start with "
                "k = 0, so that the first timestep is round(T·S/S) − 1 = T−1.",
            ),
            (
                _floored,
                "You rounded down (floor or `//`): trailing rounds to the nearest integer, ties to even "
                "(`torch.round`), e.g. T = 100, S = 8 gives 88 − 1 = 87, not 86.",
            ),
            (
                _strided_from_last,
                "You stepped down from T−1 by ⌊T/S⌋: that drifts away from the trailing grid when T/S is not "
                "an integer. Round each T (S−k)/S separately: t_k = round(T (S−k)/S) − 1.",
            ),
        ],
        error_hints=[("arange", "Hint: `torch.arange(S)` gives k = 0..S−1.")],
        rtol=0.0,
        atol=0.0,
    )


# ---------------------------------------------------------------- the measured speed-up


def _speedup_cases() -> list[Case]:
    steps = torch.tensor([10, 20, 50, 100, 200, 500, 1000])
    # time per sample with per-sample overhead, a + b·steps, so time ratios differ from step ratios
    seconds = 0.004 + 0.0021 * steps.double()
    # tolerance 0.1 → 50 steps; absolute → 100; no tolerance → 200; best score → 500: every mistake differs
    scores_a = torch.tensor([31.0, 12.5, 8.6, 8.05, 7.95, 7.9, 8.0], dtype=torch.float64)
    scores_b = torch.tensor([9.0, 5.2, 4.4, 4.1, 4.0, 4.3, 4.2], dtype=torch.float64)
    return [
        Case({"steps": steps, "scores": scores_a, "seconds": seconds, "tolerance": 0.1},
             label="steps 10..1000, FD 8.0 at 1000 steps, tolerance 0.1"),
        Case({"steps": steps, "scores": scores_b, "seconds": seconds, "tolerance": 0.25},
             label="steps 10..1000, FD 4.2 at 1000 steps (200 steps is better), tolerance 0.25"),
    ]  # fmt: skip


def _cheapest_ok(steps, scores, seconds, ok):
    ref = int(steps.argmax())
    return float(seconds[ref]) / float(seconds[ok].min())


def check_speedup(fn) -> Feedback:
    """Check ``fn(steps, scores, seconds, tolerance) -> float``: seconds_ref / seconds of the quickest entry
    with score ≤ (1 + tolerance)·score_ref, the reference being the entry with the most steps."""

    def ref_index(steps):
        return int(steps.argmax())

    return check_function(
        fn,
        name="speedup",
        cases=_speedup_cases,
        reference=speedup_at_quality,
        diagnoses=[
            (
                lambda st, sc, se, tol: 1.0 / speedup_at_quality(st, sc, se, tol),
                "Upside down: the speed-up is the reference time over the fast time (a number > 1 when the "
                "fast sampler is faster).",
            ),
            (
                lambda st, sc, se, tol: float(
                    st[ref_index(st)] / st[sc <= (1 + tol) * sc[ref_index(st)]].min()
                ),
                "You divided step counts: the speed-up must come from the measured `seconds`, which are not "
                "proportional to steps (every sample also pays a fixed overhead).",
            ),
            (
                lambda st, sc, se, tol: _cheapest_ok(st, sc, se, sc <= sc[ref_index(st)] + tol),
                "You used the tolerance as an absolute difference (score ≤ score_ref + tolerance); it is "
                "relative: score ≤ (1 + tolerance)·score_ref.",
            ),
            (
                lambda st, sc, se, tol: _cheapest_ok(st, sc, se, sc <= sc[ref_index(st)]),
                "You ignored the tolerance (only scores ≤ the reference count): accept every entry with "
                "score ≤ (1 + tolerance)·score_ref.",
            ),
            (
                lambda st, sc, se, tol: float(se[ref_index(st)] / se[int(sc.argmin())]),
                "You picked the entry with the best score; the question is how fast you can go while staying "
                "within the tolerance: take the quickest entry that meets it.",
            ),
            (
                lambda st, sc, se, tol: float(se.max() / se.min()),
                "You compared the slowest with the fastest entry regardless of quality: keep only entries "
                "whose score is within the tolerance of the reference, then take the quickest.",
            ),
        ],
        rtol=1e-6,
        atol=1e-9,
    )
