r"""Checkers for notebook 05 (the η family of DDIM samplers).

* ``check_sigma_schedule(fn)``: ``fn(schedule, ts, eta) -> sigmas``, one σ per step of a (skipping) grid, with
  DDIM's Eq. 16, σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev), ᾱ_prev taken at the next listed timestep;
* ``check_cross_run_variance(fn)``: ``fn(sample, x_T, seeds) -> float``, the mean over pixels of the per-pixel
  variance across runs ``sample(x_T, torch.Generator().manual_seed(seed))`` that all start from the same x_T.
"""

from __future__ import annotations

import torch

from ..lessons.eta import cross_run_variance, ddim_sigmas
from ..oracle import GaussianMixtureOracle, toy_mixture
from ..sampling import ddim_sample, timestep_grid
from ..schedules import cosine_schedule, linear_schedule
from .core import Case, Diagnosis, Feedback, check_function

# ---------------------------------------------------------------- σ_t(η) along a sampling grid, DDIM Eq. 16


def _sigma_cases() -> list[Case]:
    cases = []
    for schedule, steps, strategy, eta in [
        (linear_schedule(1000), 10, "trailing", 0.5),
        (cosine_schedule(1000), 20, "quadratic", 0.3),
        (linear_schedule(1000), 50, "leading", 1.0),
    ]:
        ts = timestep_grid(schedule.T, steps, strategy)
        label = f"the {steps}-step {strategy!r} grid of the {schedule.name} schedule (T = 1000), eta = {eta}"
        cases.append(Case({"schedule": schedule, "ts": ts, "eta": eta}, label=label))
    return cases


def _pairs(schedule, ts):
    """(ᾱ_t, ᾱ_prev) per step: ᾱ_prev is ᾱ at the *next listed* timestep, and 1 after the last one."""
    ab_t = schedule.alpha_bar[ts]
    return ab_t, torch.cat([schedule.alpha_bar[ts[1:]], torch.ones(1, dtype=ab_t.dtype)])


def _eq16(pairs=_pairs, *, power=1, root_first=True, root_ratio=True, swap=False):
    """A variant η^power · f · g of Eq. 16 with or without each square root, or with ᾱ_t, ᾱ_prev swapped."""

    def variant(schedule, ts, eta):
        ab_t, ab_prev = pairs(schedule, ts)
        if swap:
            ab_t, ab_prev = ab_prev, ab_t
        first, ratio = (1 - ab_prev) / (1 - ab_t), 1 - ab_t / ab_prev
        return eta**power * (first.sqrt() if root_first else first) * (ratio.sqrt() if root_ratio else ratio)

    return variant


def _consecutive(schedule, ts):
    return schedule.alpha_bar[ts], schedule.alpha_bar_prev[ts]


def _wrapped_last(schedule, ts):
    """ᾱ_prev = alpha_bar[ts_next] with the last ts_next = −1: ᾱ_{T−1} instead of 1 on the final step."""
    nxt = torch.cat([ts[1:], torch.tensor([-1])])
    return schedule.alpha_bar[ts], schedule.alpha_bar[nxt]


def check_sigma_schedule(fn) -> Feedback:
    """Check ``fn(schedule, ts, eta) -> sigmas`` (one σ per step of the descending grid ``ts``), DDIM Eq. 16:

    σ_i = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev),  ᾱ_t = ᾱ[ts[i]],  ᾱ_prev = ᾱ[ts[i+1]] (1 after the last).
    """
    return check_function(
        fn,
        name="sigma_schedule",
        cases=_sigma_cases,
        reference=ddim_sigmas,
        diagnoses=[
            (
                _eq16(power=0),
                "Your σ is the η = 1 value whatever η is: multiply by `eta`. η scales the fresh noise of "
                "every step, from 0 (deterministic DDIM) to 1 (DDPM's posterior variance).",
            ),
            (_eq16(power=2), "You multiplied by η²: σ itself is linear in η (it is σ² that has η²)."),
            (
                _eq16(power=2, root_first=False, root_ratio=False),
                "You returned σ², the variance: take the square root of both factors.",
            ),
            (
                _eq16(root_first=False, root_ratio=False),
                "Missing square roots: both (1−ᾱ_prev)/(1−ᾱ_t) and 1 − ᾱ_t/ᾱ_prev sit under a square root.",
            ),
            (
                _eq16(root_first=False),
                "Missing square root on (1−ᾱ_prev)/(1−ᾱ_t): σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) · √(1 − ᾱ_t/ᾱ_prev).",
            ),
            (
                _eq16(root_ratio=False),
                "Missing square root on 1 − ᾱ_t/ᾱ_prev: σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) · √(1 − ᾱ_t/ᾱ_prev).",
            ),
            (
                _eq16(swap=True),
                "ᾱ_t and ᾱ_prev are swapped (hence the NaN: 1 − ᾱ_prev/ᾱ_t < 0 because ᾱ_prev > ᾱ_t). ᾱ_t "
                "belongs to the noisy state the step starts from, ᾱ_prev to the cleaner one it goes to.",
            ),
            (
                _eq16(_consecutive),
                "You used ᾱ_{t−1} (`schedule.alpha_bar_prev[t]`), the consecutive step. When the sampler "
                "skips steps, the step from ts[i] goes to ts[i+1]: use ᾱ at the next listed timestep (and 1 "
                "after the last one).",
            ),
            (
                _eq16(_wrapped_last),
                "Your last σ is wrong: after the last listed timestep the sampler reaches the clean data, "
                "where ᾱ_prev = 1 (so σ = 0). Indexing `alpha_bar[-1]` gives ᾱ_{T−1}, the noisiest step.",
            ),
            (
                lambda schedule, ts, eta: eta * (1 - _pairs(schedule, ts)[1]).sqrt(),
                "You used the whole noise budget √(1−ᾱ_prev) as σ: Eq. 16 scales it by "
                "√((1 − ᾱ_t/ᾱ_prev)/(1−ᾱ_t)), so that η = 1 gives DDPM's posterior variance β̃.",
            ),
        ],
        error_hints=[
            (
                "only one element tensors",
                "Hint: `math.sqrt` takes one number; on tensors use `torch.sqrt(x)` or `x.sqrt()`.",
            ),
        ],
        rtol=1e-6,
        atol=1e-9,
    )


# ---------------------------------------------------------------- cross-run variance from one fixed x_T


class _Sampler:
    """DDIM(η) on the course's 2-D oracle, bound to a grid: ``sampler(x_T, generator) -> x_0``.

    It records whether it was ever called with a start other than the ``x_T`` of its case, and refuses to run
    without a generator (the runs must differ through their generators, reproducibly).
    """

    def __init__(self, eta: float, x_T: torch.Tensor, steps: int = 10):
        schedule = linear_schedule(1000)
        self.oracle = GaussianMixtureOracle(toy_mixture(), schedule)
        self.schedule, self.ts, self.eta = schedule, timestep_grid(1000, steps), eta
        self.x_T = x_T.clone()
        self.other_start = False

    def __call__(self, x_T, generator=None):
        if not isinstance(generator, torch.Generator):
            raise ValueError(
                "sample(x_T, generator) needs a torch.Generator as its second argument, e.g. "
                "torch.Generator().manual_seed(seed)"
            )
        if not (isinstance(x_T, torch.Tensor) and x_T.shape == self.x_T.shape and torch.equal(x_T, self.x_T)):
            self.other_start = True
        return ddim_sample(self.oracle, x_T, self.schedule, self.ts, eta=self.eta, generator=generator)

    def __repr__(self) -> str:
        return f"DDIM(eta={self.eta}) sampler on the 2-D oracle"


def _variance_cases() -> list[Case]:
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(1000), dtype=torch.float64)
    cases = []
    for eta, seeds in [(0.0, [0, 1, 2, 3]), (1.0, [0, 1, 2, 3, 4]), (0.5, [10, 11, 12])]:
        label = f"sample = DDIM(eta={eta}) on the 2-D oracle, x_T of shape (64, 2), seeds = {seeds}"
        cases.append(Case({"sample": _Sampler(eta, x_T), "x_T": x_T, "seeds": seeds}, label=label))
    return cases


def _stack(sample, x_T, seeds):
    return torch.stack([sample(x_T, torch.Generator().manual_seed(s)) for s in seeds])


def _resampled_start(out, ref, case: Case) -> bool:
    return case.inputs["sample"].other_start


def _deterministic_but_nonzero(out, ref, case: Case) -> bool:
    return case.inputs["sample"].eta == 0.0 and float(out.abs().max()) > 1e-12


def check_cross_run_variance(fn) -> Feedback:
    """Check ``fn(sample, x_T, seeds) -> float``: mean over pixels of the unbiased per-pixel variance across
    the runs ``sample(x_T, torch.Generator().manual_seed(s))``, s in seeds, all from the same x_T."""
    return check_function(
        fn,
        name="cross_run_variance",
        cases=_variance_cases,
        reference=cross_run_variance,
        diagnoses=[
            Diagnosis(
                "Your runs did not all start from the `x_T` you were given: you drew a new x_T for each run. "
                "Then even η = 0, which is deterministic, shows a large variance, because it measures how "
                "different starting points give different images, not the sampler's own randomness. Keep "
                "x_T fixed and change only the generator: `sample(x_T, torch.Generator().manual_seed(s))`.",
                when=_resampled_start,
            ),
            (
                lambda sample, x_T, seeds: _stack(sample, x_T, seeds).var(dim=0, unbiased=False).mean(),
                "You used the biased variance (dividing by R); use the unbiased one, dividing by R − 1 "
                "(`.var(dim=0)`, torch's default), so that the estimate does not shrink with few runs.",
            ),
            (
                lambda sample, x_T, seeds: _stack(sample, x_T, seeds).std(dim=0).mean(),
                "You averaged the standard deviation; the exercise asks for the variance (`.var(dim=0)`).",
            ),
            (
                lambda sample, x_T, seeds: _stack(sample, x_T, seeds).var(dim=(0, 1)).mean(),
                "You took the variance over runs *and* over the batch, which mixes different starting "
                "points: take it over the runs only (dim 0), then average.",
            ),
            (
                lambda sample, x_T, seeds: _stack(sample, x_T, seeds).flatten(1).var(dim=1).mean(),
                "You took the variance over the pixels of each run, which is large even when every run is "
                "identical: take it across the runs (dim 0), per pixel, then average.",
            ),
            (
                lambda sample, x_T, seeds: torch.zeros(()),
                "Your variance is 0 even for η > 0: did every run use the same generator (or the same seed)? "
                "Make a new `torch.Generator().manual_seed(s)` for each seed s.",
            ),
            Diagnosis(
                "Your variance is not 0 for η = 0, a deterministic sampler whose runs are bitwise identical: "
                "make sure every run starts from the same x_T and that you take the variance across runs.",
                when=_deterministic_but_nonzero,
            ),
        ],
        rtol=1e-6,
        atol=1e-12,
    )
