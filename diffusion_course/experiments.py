r"""Measurements the sampling notebooks and benchmarks share.

* **Runs from one fixed start.** :func:`runs_from_fixed_start` samples ``R`` times from the *same* x_T, each
  run with its own ``torch.Generator`` (so only the z's of the stochastic steps differ);
  :func:`cross_run_variance` is the mean over pixels of the per-pixel variance across those runs,

      V = (1/P) Σ_p  1/(R−1) Σ_r (x_0^(r)[p] − mean_r x_0^(r)[p])²,

  which is exactly 0 for DDIM with η = 0 (a deterministic map x_T → x_0) and grows with η.
  :func:`feature_spread` measures the same diversity in classifier-feature space: the mean pairwise distance
  between the R runs' features, averaged over the starting points.
* **The η × steps table** (DDIM, Table 1): :func:`eta_steps_table` runs DDIM for every (η, steps) from one
  x_T and one seed (common random numbers, so the cells differ only in η and steps), scores each cell with a
  metric (FD on classifier features, sliced W2 on the oracle, …) and records the sampler's wall-clock time
  per sample.
* **Cost and quality**: :func:`pareto_front` (the configurations no other one beats on both time and score)
  and :func:`speedup_at_quality` (how much faster the cheapest configuration within a tolerance of the
  reference score is than the reference).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ._checks import check_float, check_image_batch, check_int, fail
from .sampling.ddim import ddim_sample, ddim_sigma
from .sampling.timesteps import timesteps as make_timesteps
from .sampling.timesteps import validate_timesteps

# DDIM (Song et al., 2021), Table 1: CIFAR-10 FID (Inception features, 50k samples) by η and steps.
DDIM_TABLE1_CIFAR10: dict[float, dict[int, float]] = {
    0.0: {10: 13.36, 20: 6.84, 50: 4.67, 100: 4.16, 1000: 4.04},
    1.0: {10: 41.07, 20: 18.36, 50: 8.01, 100: 5.78, 1000: 4.73},
}

SampleFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


# --- σ along a grid ---------------------------------------------------------------------------------------


def ddim_sigmas(schedule, ts, eta: float) -> torch.Tensor:
    """σ_i of every step of the descending grid ``ts`` (float64, one per step), DDIM Eq. 16 (``ddim_sigma``):

        σ_i = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev),   ᾱ_t = ᾱ[ts[i]],   ᾱ_prev = ᾱ[ts[i+1]] or 1,

    i.e. exactly the σ's the sampler uses; the last one is 0 (the final step lands on the clean data).
    """
    ts = validate_timesteps(ts, schedule.T, name="ts")
    ab_t = schedule.alpha_bar[ts]
    ab_prev = torch.cat([schedule.alpha_bar[ts[1:]], torch.ones(1, dtype=ab_t.dtype)])
    return torch.zeros_like(ab_t) + ddim_sigma(ab_t, ab_prev, eta)


# --- runs from one fixed x_T ------------------------------------------------------------------------------


def _check_seeds(seeds, low: int = 1) -> list[int]:
    if isinstance(seeds, (int, str)) or not isinstance(seeds, Sequence):
        fail("seeds", seeds, "expected a list of integer seeds, one per run")
    seeds = [check_int("seeds[]", s) for s in seeds]
    if len(seeds) < low:
        fail("seeds", seeds, f"expected at least {low} seeds")
    if len(set(seeds)) != len(seeds):
        fail("seeds", seeds, "the seeds must differ, or the runs draw the same z's")
    return seeds


def check_independent_start(x_T: torch.Tensor, seed: int) -> None:
    """ValueError when ``x_T`` is the first draw of ``torch.Generator().manual_seed(seed)``.

    A sampler seeded like that would draw x_T itself as its first z, so the "fresh" noise of the first
    stochastic step would be the start again (x_prev ≈ (√(1−ᾱ_prev−σ²) + σ)·x_T: too much noise, which a
    stochastic sampler then carries to the end). Draw x_T from a seed the sampler does not use.
    """
    generator = torch.Generator(device=x_T.device).manual_seed(seed)
    first = torch.randn(x_T.shape, generator=generator, device=x_T.device, dtype=x_T.dtype)
    if torch.equal(first, x_T):
        fail(
            "seed",
            seed,
            "x_T is the first draw of a generator with this seed, so the sampler's first z would equal x_T; "
            "draw x_T from a different seed than the sampler's generators",
        )


def runs_from_fixed_start(sample: SampleFn, x_T: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
    """R runs from the same x_T, ``stack_r sample(x_T, torch.Generator().manual_seed(seeds[r]))``: (R, …).

    ``sample(x_T, generator) -> x_0`` is any sampler with its model, schedule and grid bound, e.g.
    ``lambda x, g: ddim_sample(model, x, schedule, ts, eta=0.5, generator=g)``. x_T is never redrawn: the
    runs differ only through the generator, i.e. through the z's of the stochastic steps. Refuses a seed whose
    generator would draw x_T itself as its first z (:func:`check_independent_start`).
    """
    if not callable(sample):
        fail("sample", type(sample).__name__, "expected a function sample(x_T, generator) -> x_0")
    x_T = check_image_batch("x_T", x_T)
    seeds = _check_seeds(seeds)
    device = x_T.device
    runs = []
    for seed in seeds:
        check_independent_start(x_T, seed)
        generator = torch.Generator(device=device).manual_seed(seed)
        out = sample(x_T, generator)
        if not isinstance(out, torch.Tensor) or out.shape != x_T.shape:
            fail("sample output", out, f"expected a tensor shaped like x_T, {tuple(x_T.shape)}")
        runs.append(out)
    return torch.stack(runs)


def per_pixel_variance(runs: torch.Tensor) -> torch.Tensor:
    """The unbiased variance across runs (dim 0) of every pixel: (R, B, …) → (B, …); needs R ≥ 2."""
    if not isinstance(runs, torch.Tensor) or not runs.is_floating_point() or runs.ndim < 2:
        fail("runs", runs, "expected a float tensor (R, B, …) of R runs")
    if runs.shape[0] < 2:
        fail("runs", runs, "a variance across runs needs at least 2 runs")
    return runs.double().var(dim=0, unbiased=True)


def cross_run_variance(sample: SampleFn, x_T: torch.Tensor, seeds: Sequence[int]) -> float:
    """V = mean over pixels of the per-pixel variance across runs that all start from ``x_T`` (module doc).

    0 exactly for a deterministic sampler (DDIM η = 0); for DDIM with η > 0 it grows with η.
    """
    _check_seeds(seeds, low=2)
    return float(per_pixel_variance(runs_from_fixed_start(sample, x_T, seeds)).mean())


def feature_spread(features: torch.Tensor) -> float:
    """Mean over the B starting points of the mean pairwise distance ‖f_r − f_r'‖ (r < r') of the R runs.

    ``features`` is (R, B, F): features[r, b] of the sample that run r made from starting point b.
    0 when every run from a starting point gives the same sample.
    """
    if not isinstance(features, torch.Tensor) or features.ndim != 3 or not features.is_floating_point():
        fail("features", features, "expected a float tensor (R runs, B starting points, F features)")
    R = features.shape[0]
    if R < 2:
        fail("features", features, "the spread across runs needs at least 2 runs")
    f = features.double().transpose(0, 1)  # (B, R, F)
    d = torch.cdist(f, f)  # (B, R, R)
    i, j = torch.triu_indices(R, R, offset=1)
    return float(d[:, i, j].mean())


# --- the η × steps table -----------------------------------------------------------------------------------


@dataclass
class SweepTable:
    """A table of ``values[i, j]`` for η = ``etas[i]`` and ``steps[j]``; ``seconds[i, j]`` is the sampler's
    wall-clock time per sample (model calls included, metric excluded)."""

    etas: list[float]
    steps: list[int]
    values: torch.Tensor
    seconds: torch.Tensor
    metric: str = "score"

    def value(self, eta: float, steps: int) -> float:
        return float(self.values[self._row(eta), self._col(steps)])

    def row(self, eta: float) -> list[float]:
        return self.values[self._row(eta)].tolist()

    def _row(self, eta: float) -> int:
        for i, e in enumerate(self.etas):
            if math.isclose(e, float(eta)):
                return i
        fail("eta", eta, f"the table has η ∈ {self.etas}")

    def _col(self, steps: int) -> int:
        if steps not in self.steps:
            fail("steps", steps, f"the table has steps ∈ {self.steps}")
        return self.steps.index(steps)

    def format(self, paper: Mapping[float, Mapping[int, float]] | None = None, digits: int = 2) -> str:
        """The table as text, one row per η; with ``paper``, the paper's row beside each (— where missing)."""
        width = max(8, digits + 6)
        head = f"{'η':>5} | " + " ".join(f"{s:>{width}}" for s in self.steps)
        lines = [f"{self.metric} by steps (columns) and η (rows)", head, "-" * len(head)]
        for eta, values in zip(self.etas, self.values.tolist()):
            lines.append(f"{eta:>5.2f} | " + " ".join(f"{v:>{width}.{digits}f}" for v in values))
        if paper is not None:
            lines += ["", "paper (DDIM Table 1, CIFAR-10 FID)", head, "-" * len(head)]
            for eta in self.etas:
                row = next((r for e, r in paper.items() if math.isclose(e, eta)), None)
                cells = [
                    f"{row[s]:>{width}.2f}" if row is not None and s in row else f"{'—':>{width}}"
                    for s in self.steps
                ]
                lines.append(f"{eta:>5.2f} | " + " ".join(cells))
        return "\n".join(lines)


def eta_steps_table(
    eps_model,
    x_T: torch.Tensor,
    schedule,
    etas: Sequence[float],
    steps: Sequence[int],
    metric: Callable[[torch.Tensor], float],
    *,
    labels: torch.Tensor | None = None,
    strategy: str = "trailing",
    seed: int = 0,
    batch_size: int | None = None,
    metric_name: str = "score",
    progress: bool = False,
) -> SweepTable:
    """Run DDIM(η, steps) from the same ``x_T`` for every cell and score the samples with ``metric``.

    Every cell starts from the same x_T (and labels) with a generator seeded with ``seed``, so differences
    between cells come from η and the number of steps, not from different draws. ``batch_size`` splits x_T
    into chunks (one generator walks through them in order). ``seconds`` holds the sampler's wall-clock time
    per sample (``time.perf_counter``; the metric is not timed). Refuses a ``seed`` whose generator would draw
    x_T itself as its first z (:func:`check_independent_start`).
    """
    x_T = check_image_batch("x_T", x_T)
    etas = [check_float("etas[]", e, low=0.0) for e in etas]
    steps = [check_int("steps[]", s, low=1, high=schedule.T) for s in steps]
    if not etas or not steps:
        fail("etas/steps", (etas, steps), "expected at least one η and one step count")
    if not callable(metric):
        fail("metric", type(metric).__name__, "expected a function samples -> float")
    check_independent_start(x_T, seed)
    n = x_T.shape[0]
    batch_size = n if batch_size is None else check_int("batch_size", batch_size, low=1)
    values = torch.zeros(len(etas), len(steps), dtype=torch.float64)
    seconds = torch.zeros_like(values)
    cells = [(i, j) for i in range(len(etas)) for j in range(len(steps))]
    if progress:
        from tqdm.auto import tqdm

        cells = tqdm(cells, desc=f"η × steps ({metric_name})")
    for i, j in cells:
        ts = make_timesteps(schedule.T, steps[j], strategy)
        generator = torch.Generator(device=x_T.device).manual_seed(seed)
        chunks = []
        start = time.perf_counter()
        for lo in range(0, n, batch_size):
            chunk_labels = None if labels is None else labels[lo : lo + batch_size]
            chunks.append(
                ddim_sample(
                    eps_model, x_T[lo : lo + batch_size], schedule, ts, eta=etas[i], generator=generator,
                    labels=chunk_labels,
                )
            )  # fmt: skip
        if x_T.device.type == "cuda":
            torch.cuda.synchronize(x_T.device)
        seconds[i, j] = (time.perf_counter() - start) / n
        values[i, j] = float(metric(torch.cat(chunks)))
    return SweepTable(etas=etas, steps=steps, values=values, seconds=seconds, metric=metric_name)


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
