r"""Scores with their uncertainty: the one way the course measures sample quality.

Every number here comes with an interval, because a quality figure from a few hundred samples moves by several
per cent from the seed alone, and a ranking is only worth stating where the intervals separate.

* **FD** (Fréchet distance on classifier features, :func:`~diffusion_course.metrics.frechet_distance`) with a
  bootstrap interval: the samples' features are resampled with replacement ``n_boot`` times (the reference is
  fixed, as it is shared by everything compared against it), and the spread of the resampled FDs, re-centred
  on the point estimate (resampling with replacement repeats rows and so adds its own upward bias), gives the
  interval ``[FD + (q_lo − mean_b), FD + (q_hi − mean_b)]``. It is an interval for FD *at this n*: FD is
  biased upwards at small n, so compare FDs measured with the same n only.
* **KID** (Bińkowski et al. 2018): the unbiased MMD² with the cubic polynomial kernel
  ``k(x, y) = (xᵀy / d + 1)³`` on the same features. Samples and reference are each split into ``kid_subsets``
  disjoint random parts, part i of the samples is scored against part i of the reference, and KID is the mean
  of these independent estimates, ``kid_std`` their standard error ``std / √subsets``. (Scoring every part
  against the *whole* reference would share the reference's own noise between parts and hide it from the
  standard error: real digits then score significantly below 0.) KID is unbiased, so unlike FD its value does
  not drift with n; it can come out below 0.
* **label accuracy** with the Wilson score interval (:func:`wilson_interval`).
* the **floor**: the same scores for ``n`` real training digits (class-balanced) against the same reference,
  the best a model can do at that n.
* **sliced W2** of 2-D points (:func:`~diffusion_course.metrics.sliced_w2`) against K ≥ 2 independent
  reference draws of the target (:class:`SlicedW2Reference`, :func:`sliced_w2_estimate`): the mean over the
  draws, with an interval from their spread, so that a number comes with how much it moves with the draw.

:class:`Scorer` holds the reference features and answers ``score(samples, labels)``; :func:`compare` says
whether A is better than B, B better than A, or the two are indistinguishable at this n, and roughly which n
would separate them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ._checks import check_float, check_int, check_labels, fail
from .metrics import (
    _check_points,
    _check_same_dim,
    _cov,
    classifier_features,
    frechet_distance,
    gaussian_frechet,
    sliced_w2,
)

Z95 = 1.959963984540054  # the two-sided 95 % point of N(0, 1)


@dataclass(frozen=True)
class Estimate:
    """A quality figure with its 95 % interval: ``value`` in ``[low, high]``, measured on ``n`` samples."""

    name: str
    value: float
    low: float
    high: float
    n: int
    lower_is_better: bool
    method: str

    def __str__(self) -> str:
        digits = 3 if abs(self.value) < 10 else 1
        fmt = f"{{:.{digits}{'g' if abs(self.value) < 10 else 'f'}}}"
        low, high = (fmt.format(v) for v in (self.low, self.high))
        return f"{self.name} {fmt.format(self.value)} [{low}, {high}] (n={self.n})"

    @property
    def half_width(self) -> float:
        return 0.5 * (self.high - self.low)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Scores:
    """What :meth:`Scorer.score` returns: FD and KID, and label accuracy where labels were given."""

    fd: Estimate
    kid: Estimate
    label_accuracy: Estimate | None
    n: int

    def __iter__(self):
        yield from (e for e in (self.fd, self.kid, self.label_accuracy) if e is not None)

    def __str__(self) -> str:
        return ", ".join(str(e) for e in self)

    def record(self) -> dict:
        """Flat keys for JSON: fd(_low/_high), kid, kid_std, kid(_low/_high), label_accuracy(_low/_high)."""
        out = {"fd": self.fd.value, "fd_low": self.fd.low, "fd_high": self.fd.high}
        out.update({"kid": self.kid.value, "kid_std": self.kid.half_width / Z95})
        out.update({"kid_low": self.kid.low, "kid_high": self.kid.high})
        if self.label_accuracy is not None:
            a = self.label_accuracy
            out.update(
                {"label_accuracy": a.value, "label_accuracy_low": a.low, "label_accuracy_high": a.high}
            )
        return {k: round(v, 6) for k, v in out.items()}


# --- intervals -------------------------------------------------------------------------------------------


def mean_distance(points: torch.Tensor, reference: torch.Tensor, name: str = "mean distance") -> Estimate:
    """Mean ‖points_i − reference_i‖ over paired rows (e.g. one start sampled two ways) with its 95 %
    interval, mean ± 1.96 · sd / √n over the n rows."""
    for label, value in (("points", points), ("reference", reference)):
        if not isinstance(value, torch.Tensor) or value.ndim < 2 or value.shape[0] < 2:
            fail(label, value, "expected a tensor (N, …) with N ≥ 2 rows")
    if points.shape != reference.shape:
        fail("reference", reference, f"expected the shape of points, {tuple(points.shape)}")
    d = (points.detach().double() - reference.detach().double().to(points.device)).flatten(1).norm(dim=1)
    mean, half = float(d.mean()), Z95 * float(d.std()) / math.sqrt(d.numel())
    return Estimate(name, mean, mean - half, mean + half, d.numel(), True, "mean ± 1.96 sd/√n over the rows")


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n (Wilson 1927):

        (p̂ + z²/2n ± z √(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n),  p̂ = k/n.

    Unlike p̂ ± z√(p̂(1−p̂)/n) it stays inside [0, 1] and does not collapse to a point at k = 0 or k = n.
    """
    n = check_int("n", n, low=1)
    successes = check_int("successes", successes, low=0, high=n)
    z = check_float("z", z, low=0.0)
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denom = 1 + z * z / n
    low = 0.0 if successes == 0 else max(0.0, (centre - spread) / denom)
    high = 1.0 if successes == n else min(1.0, (centre + spread) / denom)
    return low, high


def polynomial_mmd2(a: torch.Tensor, b: torch.Tensor) -> float:
    """Unbiased MMD² between feature sets a (N, d) and b (M, d) with the cubic kernel k(x, y) = (xᵀy/d + 1)³:

        MMD² = Σ_{i≠j} k(a_i, a_j) / N(N−1) + Σ_{i≠j} k(b_i, b_j) / M(M−1) − 2 Σ_{i,j} k(a_i, b_j) / NM.

    This is KID's statistic on one subset (it can be slightly negative when a and b share a law).
    """
    a, b = _check_points("a", a, min_n=2), _check_points("b", b, min_n=2)
    _check_same_dim(a, b, "a", "b")
    d = a.shape[1]
    kaa, kbb, kab = ((x @ y.T / d + 1.0) ** 3 for x, y in ((a, a), (b, b), (a, b)))
    n, m = a.shape[0], b.shape[0]
    saa = (kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1))
    sbb = (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
    return float(saa + sbb - 2.0 * kab.mean())


def kid(
    feats: torch.Tensor, reference: torch.Tensor, subsets: int = 10, generator: torch.Generator | None = None
) -> tuple[float, float]:
    """KID of ``feats`` against ``reference`` and its standard error: the mean and std/√k of
    :func:`polynomial_mmd2` between part i of ``feats`` and part i of ``reference``, each split into
    ``subsets`` = k disjoint random parts (of ≥ 2 rows), so that the k estimates are independent.
    """
    feats = _check_points("feats", feats, min_n=2)
    reference = _check_points("reference", reference, min_n=2)
    high = min(feats.shape[0], reference.shape[0]) // 2
    subsets = check_int("subsets", subsets, low=2, high=max(2, high))
    g = _generator(generator)
    parts = zip(
        torch.randperm(feats.shape[0], generator=g).chunk(subsets),
        torch.randperm(reference.shape[0], generator=g).chunk(subsets),
    )
    values = torch.tensor([polynomial_mmd2(feats[i], reference[j]) for i, j in parts])
    return float(values.mean()), float(values.std() / math.sqrt(subsets))


def fd_interval(
    feats: torch.Tensor,
    reference: torch.Tensor,
    n_boot: int = 200,
    level: float = 0.95,
    generator: torch.Generator | None = None,
) -> tuple[float, float, float]:
    """FD of ``feats`` against ``reference`` and its bootstrap interval: ``(fd, low, high)``."""
    feats = _check_points("feats", feats, min_n=2)
    n_boot = check_int("n_boot", n_boot, low=10)
    level = check_float("level", level, low=0.5, high=0.999)
    fd = frechet_distance(feats, reference)
    reference = _check_points("reference", reference, min_n=2)
    ref_mean, ref_cov = reference.mean(0), _cov(reference)  # fixed: computed once, not per resample
    g = _generator(generator)
    n = feats.shape[0]

    def resampled_fd():
        x = feats[torch.randint(n, (n,), generator=g)]
        return gaussian_frechet(x.mean(0), _cov(x), ref_mean, ref_cov)

    boot = torch.tensor([resampled_fd() for _ in range(n_boot)], dtype=torch.float64)
    q_lo, q_hi = torch.quantile(boot, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    shift = float(boot.mean())
    return fd, max(0.0, fd + float(q_lo) - shift), fd + float(q_hi) - shift


def _generator(generator: torch.Generator | None) -> torch.Generator:
    return torch.Generator().manual_seed(0) if generator is None else generator


# --- the scorer --------------------------------------------------------------------------------------------


class Scorer:
    """FD, KID and label accuracy of image samples, each with its interval, against fixed reference digits.

    ``Scorer()`` uses the shipped ``mnist-classifier``'s 128 penultimate features and the 500 held-out MNIST
    digits (neither the diffusion models nor the classifier trained on them). ``score(samples, labels)``
    returns :class:`Scores`; ``floor(n)`` scores n real training digits the same way. The resampling that
    gives the intervals is seeded (``seed``), so the same samples always get the same intervals.
    """

    def __init__(
        self,
        classifier: nn.Module | None = None,
        reference: torch.Tensor | None = None,
        *,
        device: str | torch.device = "cpu",
        n_boot: int = 200,
        kid_subsets: int = 10,
        seed: int = 0,
    ):
        from .evaluation import load_classifier

        self.classifier = load_classifier(device) if classifier is None else classifier
        if reference is None:
            from .data import load_mnist

            reference = load_mnist("heldout")[0]
        self.reference = classifier_features(self.classifier, reference)
        self.n_boot = check_int("n_boot", n_boot, low=10)
        self.kid_subsets = check_int("kid_subsets", kid_subsets, low=2)
        self.seed = check_int("seed", seed, low=0)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return classifier_features(self.classifier, images)

    @torch.no_grad()
    def predictions(self, images: torch.Tensor) -> torch.Tensor:
        """The classifier's argmax label of each image (CPU long tensor)."""
        device = next(self.classifier.parameters()).device
        return torch.cat([self.classifier(x.to(device)).argmax(1).cpu() for x in images.split(256)])

    def score(self, samples: torch.Tensor, labels: torch.Tensor | None = None) -> Scores:
        """Scores of image samples (N, C, H, W), N ≥ 4; label accuracy where ``labels`` are given."""
        if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
            fail("samples", samples, "expected a tensor of images (N, C, H, W)")
        if not torch.isfinite(samples).all():
            fail("samples", samples, "contains NaN or inf (the sampler diverged)")
        n = samples.shape[0]
        check_int("number of samples", n, low=4)
        correct = None
        if labels is not None:
            correct = int((self.predictions(samples) == check_labels(labels, n, None, device="cpu")).sum())
        return self.score_features(self.features(samples), correct)

    def score_features(self, feats: torch.Tensor, correct: int | None = None) -> Scores:
        """Scores from features (N, F) and, optionally, the number of correctly labelled samples."""
        n = feats.shape[0]
        g = torch.Generator().manual_seed(self.seed)
        fd, low, high = fd_interval(feats, self.reference, self.n_boot, generator=g)
        subsets = min(self.kid_subsets, n // 2, self.reference.shape[0] // 2)
        k, se = kid(feats, self.reference, subsets, generator=g)
        accuracy = None
        if correct is not None:
            a_low, a_high = wilson_interval(correct, n)
            accuracy = Estimate("label accuracy", correct / n, a_low, a_high, n, False, "Wilson 95 %")
        return Scores(
            Estimate("FD", fd, low, high, n, True, f"bootstrap 95 % ({self.n_boot} resamples)"),
            Estimate("KID", k, k - Z95 * se, k + Z95 * se, n, True, f"±1.96 s.e. over {subsets} subsets"),
            accuracy,
            n,
        )

    def floor(self, n: int, seed: int = 0) -> Scores:
        """Scores of n real training digits (class-balanced, drawn with ``seed``): the best to expect at n."""
        from .data import load_mnist

        images, labels = load_mnist("train")
        n = check_int("n", n, low=2 * self.kid_subsets, high=images.shape[0])
        g = torch.Generator().manual_seed(seed)
        per_class = [torch.nonzero(labels == c).flatten() for c in range(10)]
        picked = [idx[torch.randperm(len(idx), generator=g)] for idx in per_class]
        order = torch.stack([p[: min(map(len, picked))] for p in picked], 1).flatten()[:n]
        return self.score(images[order], labels[order])


# --- comparisons -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """The verdict of :func:`compare`: ``"A better"``, ``"B better"`` or ``"indistinguishable"``."""

    verdict: str
    a: Estimate
    b: Estimate
    n_to_separate: int | None  # about the n at which the intervals would separate (None: already, or never)

    def __str__(self) -> str:
        if self.verdict != "indistinguishable":
            return f"{self.verdict}: {self.a} vs {self.b}"
        more = f"; about n ≈ {self.n_to_separate} would separate them" if self.n_to_separate else ""
        return f"indistinguishable at n={self.a.n}: {self.a} vs {self.b}{more}"


def compare(a: Estimate, b: Estimate) -> Comparison:
    """Is A better than B? Only where their 95 % intervals do not overlap (a conservative test).

    Where they overlap, the interval half-widths h are taken to shrink as 1/√n, so they separate at about
    ``n' = n · ((h_a + h_b) / |value_a − value_b|)²``; that estimate is ``n_to_separate``.
    """
    if not (isinstance(a, Estimate) and isinstance(b, Estimate)):
        fail("a, b", (type(a).__name__, type(b).__name__), "expected two Estimate objects")
    if a.name != b.name:
        fail("b", b.name, f"compares like with like; a is {a.name!r}")
    a_wins = a.high < b.low if a.lower_is_better else a.low > b.high
    b_wins = b.high < a.low if a.lower_is_better else b.low > a.high
    if a_wins or b_wins:
        return Comparison("A better" if a_wins else "B better", a, b, None)
    diff = abs(a.value - b.value)
    n = max(a.n, b.n)
    needed = math.ceil(n * ((a.half_width + b.half_width) / diff) ** 2) if diff > 0 else None
    return Comparison("indistinguishable", a, b, needed)


# --- sliced W2 of 2-D points, with its spread ---------------------------------------------------------


class SlicedW2Reference:
    """Sliced W2 against K ≥ 2 independent reference draws of a target, as an Estimate with its spread.

    ``SlicedW2Reference(references)(points)`` is :func:`sliced_w2_estimate`, with the references' sorted
    projections computed once and reused for every call (a table scores dozens of point sets against the
    same references). Values equal ``metrics.sliced_w2(points, reference, n_projections)`` (the same seeded
    directions); point sets of another size than the references go through ``sliced_w2`` itself.
    """

    def __init__(self, references: Sequence[torch.Tensor], n_projections: int = 64, name: str = "SW2"):
        if (
            isinstance(references, torch.Tensor)
            or not isinstance(references, Sequence)
            or len(references) < 2
        ):
            fail(
                "references", type(references).__name__, "expected a list of at least 2 reference point sets"
            )
        self.references = [r.detach().to("cpu", torch.float64) for r in references]
        if any(r.ndim != 2 or r.shape != self.references[0].shape for r in self.references):
            fail(
                "references",
                [tuple(r.shape) for r in self.references],
                "expected point sets of one shape (N, D)",
            )
        self.n_projections = check_int("n_projections", n_projections, low=1)
        self.name = name
        # the directions sliced_w2 draws by default: N(0, I) from a generator seeded with 0, normalised
        theta = torch.randn(
            self.references[0].shape[1], self.n_projections, generator=torch.Generator().manual_seed(0),
            dtype=torch.float64,
        )  # fmt: skip
        self.theta = theta / theta.norm(dim=0, keepdim=True)
        self.sorted = [(r @ self.theta).T.contiguous().sort(dim=1).values for r in self.references]

    def distances(self, points: torch.Tensor) -> torch.Tensor:
        """SW2(points, reference_k) for each of the K references (float64, K values)."""
        if not isinstance(points, torch.Tensor) or points.ndim != 2 or points.shape[1] != self.theta.shape[0]:
            fail("points", points, f"expected a tensor (N, {self.theta.shape[0]}) of points")
        points = points.detach().to("cpu", torch.float64)
        if not torch.isfinite(points).all():
            fail("points", points, "contains NaN or inf (the sampler diverged)")
        if points.shape[0] != self.references[0].shape[0]:
            return torch.tensor(
                [sliced_w2(points, r, self.n_projections) for r in self.references], dtype=torch.float64
            )
        mine = (points @ self.theta).T.contiguous().sort(dim=1).values
        return torch.stack([(mine - ref).pow(2).mean(dim=1).mean().sqrt() for ref in self.sorted])

    def __call__(self, points: torch.Tensor) -> Estimate:
        values = self.distances(points)
        k = len(self.references)
        mean, sd = float(values.mean()), float(values.std())
        half = Z95 * sd * math.sqrt(1.0 + 1.0 / k)
        method = f"mean over K = {k} reference draws ± 1.96 sd √(1+1/K), sd = {sd:.3g}"
        return Estimate(self.name, mean, max(0.0, mean - half), mean + half, points.shape[0], True, method)


def sliced_w2_estimate(
    points: torch.Tensor, references: Sequence[torch.Tensor], n_projections: int = 64, name: str = "SW2"
) -> Estimate:
    """Sliced W2 of ``points`` to K ≥ 2 independent reference draws of the target, with its spread.

    ``value`` is the mean of SW2(points, reference_k) over the K draws; their standard deviation sd says how
    much the number moves with the reference draw alone (it is written into ``method``). The sample set's own
    draw moves it by about as much (both are sets of n points from nearly the same law), so the 95 % interval
    is ``mean ± 1.96 · sd · √(1 + 1/K)``: one sample draw's noise plus that of the K-draw mean. SW2 of n
    points is biased upwards (exact samples do not score 0), so compare values at equal n only. Every
    reference is scored with the same projection directions (``sliced_w2``'s seeded default). To score many
    point sets against the same references, build a :class:`SlicedW2Reference` once.
    """
    return SlicedW2Reference(references, n_projections, name)(points)


__all__ = [
    "Comparison",
    "Estimate",
    "Scorer",
    "Scores",
    "SlicedW2Reference",
    "compare",
    "fd_interval",
    "kid",
    "mean_distance",
    "polynomial_mmd2",
    "sliced_w2_estimate",
    "wilson_interval",
]
