r"""Measurements of notebook 06 (skipping steps): the paper's η × steps table, cost against quality.

* :data:`DDIM_TABLE1_CIFAR10`: DDIM's Table 1, printed beside the course's own η × steps table
  (:func:`diffusion_course.lessons.eta.eta_steps_table`, ``table.format(paper=DDIM_TABLE1_CIFAR10)``).
* :func:`pareto_front`: the configurations no other one beats on both time and score.
* :func:`speedup_at_quality`: how much faster the cheapest configuration within a tolerance of the
  reference score is than the reference.
"""

from __future__ import annotations

import torch

from .._checks import check_float, fail

# DDIM (Song et al., 2021), Table 1: CIFAR-10 FID (Inception features, 50k samples) by η and steps. The
# η = 0.2 and 0.5 rows are given up to 50 steps only, and DDIM's σ̂ row is left out.
DDIM_TABLE1_CIFAR10: dict[float, dict[int, float]] = {
    0.0: {10: 13.36, 20: 6.84, 50: 4.67, 100: 4.16, 1000: 4.04},
    0.2: {10: 14.04, 20: 7.11, 50: 4.77},
    0.5: {10: 16.66, 20: 8.35, 50: 5.25},
    1.0: {10: 41.07, 20: 18.36, 50: 8.01, 100: 5.78, 1000: 4.73},
}


# --- cost and quality -------------------------------------------------------------------------------------


def _as_vector(name: str, values) -> torch.Tensor:
    v = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    if v.ndim != 1 or v.numel() == 0:
        fail(name, values, "expected a non-empty 1-D sequence of numbers")
    if not torch.isfinite(v).all():
        fail(name, values, "every entry must be finite")
    return v


def pareto_front(costs, scores) -> torch.Tensor:
    """Indices (by increasing cost) of the points that no other point beats: point i is dropped when some j
    has cost_j ≤ cost_i and score_j ≤ score_i with at least one strict (lower is better for both)."""
    c, s = _as_vector("costs", costs), _as_vector("scores", scores)
    if c.shape != s.shape:
        fail("scores", scores, f"expected {c.numel()} entries, one per cost")
    keep = []
    for i in range(c.numel()):
        dominated = ((c <= c[i]) & (s <= s[i]) & ((c < c[i]) | (s < s[i]))).any()
        if not dominated:
            keep.append(i)
    order = sorted(keep, key=lambda i: (float(c[i]), float(s[i])))
    return torch.tensor(order, dtype=torch.long)


def speedup_at_quality(steps, scores, seconds, tolerance: float = 0.1) -> float:
    """seconds_ref / seconds_fast: the reference is the entry with the most steps; "fast" is the quickest
    entry whose score (lower is better) is within the relative ``tolerance`` of the reference's,
    score ≤ (1 + tolerance)·score_ref. Uses measured times, not step counts (time is not proportional to steps
    when there is per-sample overhead)."""
    st, sc, se = _as_vector("steps", steps), _as_vector("scores", scores), _as_vector("seconds", seconds)
    if not st.shape == sc.shape == se.shape:
        fail("scores/seconds", (sc.numel(), se.numel()), f"expected {st.numel()} entries each, one per step")
    if (se <= 0).any():
        fail("seconds", seconds, "every time must be > 0")
    tolerance = check_float("tolerance", tolerance, low=0.0)
    ref = int(st.argmax())
    ok = sc <= (1.0 + tolerance) * sc[ref]
    fastest = float(se[ok].min())
    return float(se[ref]) / fastest
