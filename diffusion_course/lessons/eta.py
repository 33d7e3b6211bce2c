r"""Measurements of notebook 05 (the η knob of DDIM), which notebook 06 reuses for the η × steps table.

* **σ along a grid.** :func:`ddim_sigmas` gives the σ of every step of a grid, exactly as DDIM's sampler
  uses them (Eq. 16).
* **Runs from one fixed start.** :func:`runs_from_fixed_start` samples ``R`` times from the *same* x_T, each
  run with its own ``torch.Generator`` (so only the z's of the stochastic steps differ);
  :func:`cross_run_variance` is the mean over pixels of the per-pixel variance across those runs,

      V = (1/P) Σ_p  1/(R−1) Σ_r (x_0^(r)[p] − mean_r x_0^(r)[p])²,

  which is exactly 0 for DDIM with η = 0 (a deterministic map x_T → x_0) and grows with η.
  :func:`feature_spread` measures the same diversity in classifier-feature space: the mean pairwise distance
  between the R runs' features, averaged over the starting points.
* **The η × steps table** (DDIM, Table 1): :func:`eta_steps_table` runs DDIM for every (η, steps) from one
  x_T and one seed (common random numbers, so the cells differ only in η and steps), optionally with DDIM's
  σ̂ row (the strided DDPM update with σ² = β of the whole jump), scores each cell with a metric and records
  the sampler's wall-clock time per sample. A metric may return a bare number, an
  :class:`~diffusion_course.scoring.Estimate` (value and 95 % interval) or a record of several Estimates
  (e.g. the :class:`~diffusion_course.scoring.Scores` of :class:`~diffusion_course.scoring.Scorer`); the
  :class:`SweepTable` keeps the intervals, prints them and hands out each cell's Estimate for ``compare``.
  The paper's own numbers are :data:`diffusion_course.lessons.steps.DDIM_TABLE1_CIFAR10`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from .._checks import check_float, check_image_batch, check_int, fail
from ..sampling.ddim import ddim_sample, ddim_sigma
from ..sampling.ddpm import ddpm_sample
from ..sampling.timesteps import timestep_grid, validate_timesteps
from ..scoring import Estimate

# The label of DDIM's σ̂ row (as in the shipped ``eta-steps`` reference table): the strided DDPM update with
# σ² = β of the whole jump t → t_prev, β = 1 − ᾱ_t/ᾱ_prev, which is ≥ β̃ = σ²(η = 1).
SIGMA_HAT = "σ̂ (σ² = β of the jump)"

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
    """A table of ``values[i, j]`` for row i (η = ``etas[i]``, or DDIM's σ̂ where ``etas[i]`` is None) and
    ``steps[j]``; ``seconds[i, j]`` is the sampler's wall-clock time per sample (model calls included, metric
    excluded).

    ``low``/``high`` hold each cell's 95 % interval (NaN where the metric gave a bare number); ``results``
    the tabulated entry of each cell (a number or an :class:`~diffusion_course.scoring.Estimate`) and
    ``records`` the metric's whole return value where it was a record of several Estimates (such as
    :class:`~diffusion_course.scoring.Scores`), for :meth:`select`. ``rows`` are the row labels, "η = 0", …,
    :data:`SIGMA_HAT`: the names the shipped ``eta-steps`` reference table uses.
    """

    etas: list[float | None]
    steps: list[int]
    values: torch.Tensor
    seconds: torch.Tensor
    metric: str = "score"
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None
    rows: list[str] | None = None
    results: list[list] | None = None
    records: list[list] | None = None

    def __post_init__(self):
        shape = (len(self.etas), len(self.steps))
        self.values = torch.as_tensor(self.values, dtype=torch.float64)
        self.seconds = torch.as_tensor(self.seconds, dtype=torch.float64)
        nan = torch.full(shape, math.nan, dtype=torch.float64)
        self.low = nan.clone() if self.low is None else torch.as_tensor(self.low, dtype=torch.float64)
        self.high = nan.clone() if self.high is None else torch.as_tensor(self.high, dtype=torch.float64)
        for name in ("values", "seconds", "low", "high"):
            if tuple(getattr(self, name).shape) != shape:
                fail(name, getattr(self, name), f"expected shape {shape}: one entry per (row, steps)")
        if self.rows is None:
            self.rows = [row_name(e) for e in self.etas]
        if len(self.rows) != len(self.etas):
            fail("rows", self.rows, f"expected {len(self.etas)} labels, one per row")

    def value(self, row: float | str, steps: int) -> float:
        """The cell's value; ``row`` is an η or a row label (e.g. :data:`SIGMA_HAT`)."""
        return float(self.values[self._row(row), self._col(steps)])

    def row(self, row: float | str) -> list[float]:
        return self.values[self._row(row)].tolist()

    def estimate(self, row: float | str, steps: int) -> Estimate:
        """The cell's :class:`~diffusion_course.scoring.Estimate`, for ``compare``; refuses a bare number."""
        i, j = self._row(row), self._col(steps)
        result = None if self.results is None else self.results[i][j]
        if not isinstance(result, Estimate):
            fail(
                "row, steps", (row, steps), f"this cell of '{self.metric}' is a bare number, without interval"
            )
        return result

    def select(self, key: str) -> SweepTable:
        """The same table for another Estimate of each cell's record, e.g. ``table.select("kid")``."""
        if self.records is None:
            fail("key", key, "this table keeps no records of several Estimates to select from")
        picked = [[_pick(r, key) for r in row] for row in self.records]
        return _table_of(
            self.etas, self.steps, picked, self.seconds, picked[0][0].name, self.rows, self.records
        )

    def _row(self, row: float | str) -> int:
        if isinstance(row, str):
            if row in self.rows:
                return self.rows.index(row)
        elif isinstance(row, (int, float)) and not isinstance(row, bool):
            for i, e in enumerate(self.etas):
                if e is not None and math.isclose(e, float(row)):
                    return i
        fail("row", row, f"give an η or a row label; the rows are {self.rows}")

    def _col(self, steps: int) -> int:
        if steps not in self.steps:
            fail("steps", steps, f"the table has steps ∈ {self.steps}")
        return self.steps.index(steps)

    def format(self, paper: Mapping[float | str, Mapping[int, float]] | None = None, digits: int = 2) -> str:
        """The table as text, one row per η (and σ̂), each value with its 95 % interval where it has one.
        With ``paper`` (keyed by η or by row label), the paper's numbers beside it (— where missing)."""
        intervals = bool(torch.isfinite(self.low).any())
        width = max(8, digits + 6) * (3 if intervals else 1)
        label = max(5, *(len(r) for r in self.rows))
        head = f"{'':>{label}} | " + " ".join(f"{f'S = {s}':>{width}}" for s in self.steps)
        lines = [f"{self.metric} by steps (columns) and sampler (rows)", head, "-" * len(head)]

        def cell(i, j):
            v, lo, hi = (float(t[i, j]) for t in (self.values, self.low, self.high))
            text = f"{v:.{digits}f}"
            if math.isfinite(lo) and math.isfinite(hi):
                text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
            return f"{text:>{width}}"

        for i, name in enumerate(self.rows):
            lines.append(f"{name:>{label}} | " + " ".join(cell(i, j) for j in range(len(self.steps))))
        if paper is not None:
            lines += ["", "paper (DDIM Table 1, CIFAR-10 FID)", head, "-" * len(head)]
            for eta, name in zip(self.etas, self.rows):
                row = _paper_row(paper, eta, name)
                cells = [
                    f"{row[s]:>{width}.2f}" if row is not None and s in row else f"{'—':>{width}}"
                    for s in self.steps
                ]
                lines.append(f"{name:>{label}} | " + " ".join(cells))
        return "\n".join(lines)


def row_name(eta: float | None) -> str:
    """The row label of η in a :class:`SweepTable` ("η = 0.5"), or :data:`SIGMA_HAT` for ``None``."""
    return SIGMA_HAT if eta is None else f"η = {eta:g}"


def _paper_row(paper, eta, name):
    for key, row in paper.items():
        if isinstance(key, str) and key == name:
            return row
        if not isinstance(key, str) and eta is not None and math.isclose(float(key), eta):
            return row
    return None


def _pick(record, key: str) -> Estimate:
    """``record.key`` or ``record[key]``, which must be an Estimate."""
    picked = record.get(key) if isinstance(record, Mapping) else getattr(record, key, None)
    if not isinstance(picked, Estimate):
        fail("key", key, f"the metric's result ({type(record).__name__}) has no Estimate named {key!r}")
    return picked


def _entry(result):
    """(value, low, high) of a tabulated entry: an Estimate, or a bare number (NaN interval)."""
    if isinstance(result, Estimate):
        return result.value, result.low, result.high
    if isinstance(result, (int, float, torch.Tensor)) and not isinstance(result, bool):
        return float(result), math.nan, math.nan
    fail(
        "key",
        None,
        f"the metric returned a {type(result).__name__}; name the Estimate to tabulate (e.g. key='kid')",
    )


def _table_of(etas, steps, results, seconds, metric, rows, records=None) -> SweepTable:
    cells = [[_entry(r) for r in row] for row in results]
    values, low, high = (
        torch.tensor([[c[k] for c in row] for row in cells], dtype=torch.float64) for k in range(3)
    )
    return SweepTable(
        list(etas), list(steps), values, seconds.clone(), metric, low, high, list(rows), results, records
    )


def eta_steps_table(
    eps_model,
    x_T: torch.Tensor,
    schedule,
    etas: Sequence[float],
    steps: Sequence[int],
    metric: Callable[[torch.Tensor], object],
    *,
    labels: torch.Tensor | None = None,
    strategy: str = "trailing",
    seed: int = 0,
    batch_size: int | None = None,
    metric_name: str = "score",
    key: str | None = None,
    sigma_hat: bool = False,
    progress: bool = False,
) -> SweepTable:
    """Run DDIM(η, steps) from the same ``x_T`` for every cell and score the samples with ``metric``.

    Every cell starts from the same x_T (and labels) with a generator seeded with ``seed``, so differences
    between cells come from η and the number of steps, not from different draws. ``sigma_hat=True`` adds
    DDIM's σ̂ row (label :data:`SIGMA_HAT`): ``ddpm_sample(..., variance="beta")`` on the same grid, the DDPM
    update with σ² = β of the whole jump, 1 − ᾱ_t/ᾱ_prev. ``metric(samples)`` returns a number, an
    :class:`~diffusion_course.scoring.Estimate`, or a record of Estimates (such as ``Scores``) of which
    ``key`` names the one to tabulate (``table.select(other)`` gives the others). ``batch_size`` splits x_T
    into chunks (one generator walks through them in order). ``seconds`` holds the sampler's wall-clock time
    per sample (``time.perf_counter``; the metric is not timed). Refuses a ``seed`` whose generator would draw
    x_T itself as its first z (:func:`check_independent_start`).
    """
    x_T = check_image_batch("x_T", x_T)
    etas = [check_float("etas[]", e, low=0.0) for e in etas]
    steps = [check_int("steps[]", s, low=1, high=schedule.T) for s in steps]
    if not isinstance(sigma_hat, bool):
        fail("sigma_hat", sigma_hat, "expected True or False")
    if not (etas or sigma_hat) or not steps:
        fail("etas/steps", (etas, steps), "expected at least one η (or sigma_hat=True) and one step count")
    if not callable(metric):
        fail("metric", type(metric).__name__, "expected a function samples -> number, Estimate or Scores")
    check_independent_start(x_T, seed)
    n = x_T.shape[0]
    batch_size = n if batch_size is None else check_int("batch_size", batch_size, low=1)
    rows: list[float | None] = [*etas, *([None] if sigma_hat else [])]
    records = [[None] * len(steps) for _ in rows]
    seconds = torch.zeros(len(rows), len(steps), dtype=torch.float64)
    cells = [(i, j) for i in range(len(rows)) for j in range(len(steps))]
    if progress:
        from tqdm.auto import tqdm

        cells = tqdm(cells, desc=f"η × steps ({metric_name})")
    for i, j in cells:
        ts = timestep_grid(schedule.T, steps[j], strategy)
        generator = torch.Generator(device=x_T.device).manual_seed(seed)
        chunks = []
        start = time.perf_counter()
        for lo in range(0, n, batch_size):
            x, y = x_T[lo : lo + batch_size], None if labels is None else labels[lo : lo + batch_size]
            if rows[i] is None:
                out = ddpm_sample(eps_model, x, schedule, ts, variance="beta", generator=generator, labels=y)
            else:
                out = ddim_sample(eps_model, x, schedule, ts, eta=rows[i], generator=generator, labels=y)
            chunks.append(out)
        if x_T.device.type == "cuda":
            torch.cuda.synchronize(x_T.device)
        seconds[i, j] = (time.perf_counter() - start) / n
        records[i][j] = metric(torch.cat(chunks))
    results = records if key is None else [[_pick(r, key) for r in row] for row in records]
    names = [row_name(e) for e in rows]
    return _table_of(rows, steps, results, seconds, metric_name, names, None if key is None else records)


# --- what the shipped η × steps table decides (notebooks 05 and 06) ---------------------------------------

ETA_ROWS = ("η = 0", "η = 0.5", "η = 1")


def eta_reference(results: dict, row: str, steps: int, metric: str = "fd") -> Estimate:
    """The Estimate of one cell of the shipped ``eta-steps`` table (row "η = 0", …, σ̂ or "floor")."""
    from ..reference_results import estimate

    return estimate(results, row, f"S = {steps}", metric)


def eta_rows_indistinguishable(results: dict) -> bool:
    """Whether the shipped table separates no η rows: no two of η = 0, 0.5, 1 and neither η = 0 nor η = 1
    from σ̂ in FD or KID at S = 10, 20 and 50, and no two η rows in label accuracy except η = 0 against
    η = 1 at S = 10 (the one pair that separates, in η = 1's favour)."""
    from ..scoring import compare

    def same(a, b, steps, metric):
        cells = (eta_reference(results, a, steps, metric), eta_reference(results, b, steps, metric))
        return compare(*cells).verdict == "indistinguishable"

    pairs = [(a, b) for i, a in enumerate(ETA_ROWS) for b in ETA_ROWS[i + 1 :]]
    for steps in (10, 20, 50):
        for metric in ("fd", "kid"):
            if not all(same(a, b, steps, metric) for a, b in pairs):
                return False
            if not all(same(a, SIGMA_HAT, steps, metric) for a in ("η = 0", "η = 1")):
                return False
        accuracy_pairs = [p for p in pairs if steps != 10 or p != ("η = 0", "η = 1")]
        if not all(same(a, b, steps, "label_accuracy") for a, b in accuracy_pairs):
            return False
    best = (eta_reference(results, r, 10, "label_accuracy") for r in ("η = 1", "η = 0"))
    return compare(*best).verdict == "A better"
