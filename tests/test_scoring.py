"""The scorer: FD, KID and label accuracy with intervals, checked against torchmetrics and fresh draws; sliced
W2 of 2-D points with its spread over reference draws."""

import math

import pytest
import torch
from torch import nn

from diffusion_course.data import load_mnist
from diffusion_course.metrics import frechet_distance, sliced_w2
from diffusion_course.oracle import toy_mixture
from diffusion_course.scoring import (
    Estimate,
    Scorer,
    SlicedW2Reference,
    compare,
    fd_interval,
    kid,
    mean_distance,
    polynomial_mmd2,
    sliced_w2_estimate,
    wilson_interval,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian(n, d, shift=0.0, seed=0, scale=None):
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 2.0, d, dtype=torch.float64) if scale is None else scale
    return shift + torch.randn(n, d, generator=g, dtype=torch.float64) * scale


# --- Wilson ----------------------------------------------------------------------------------------------


def test_wilson_matches_its_formula_and_stays_in_0_1():
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)  # the textbook value for 0/10
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(1 - 0.2775, abs=1e-4)
    low, high = wilson_interval(45, 100)
    z = 1.959963984540054
    p, n = 0.45, 100
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (low, high) == pytest.approx((centre - half, centre + half), abs=1e-12)


def test_wilson_covers_the_true_proportion_about_95_percent_of_the_time():
    g = torch.Generator().manual_seed(1)
    p, n, trials = 0.9, 200, 2000
    hits = (torch.rand(trials, n, generator=g) < p).sum(1)
    covered = sum(lo <= p <= hi for lo, hi in (wilson_interval(int(k), n) for k in hits))
    assert 0.93 <= covered / trials <= 0.97


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: wilson_interval(11, 10), "successes"),
        (lambda: wilson_interval(1, 0), "n"),
        (lambda: wilson_interval(1, 10, z=-1.0), "z"),
    ],
)
def test_wilson_errors_name_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# --- against torchmetrics --------------------------------------------------------------------------------


class Lookup(nn.Module):
    """A 'feature extractor' for torchmetrics that returns its input: our features go in unchanged."""

    def __init__(self, d):
        super().__init__()
        self.num_features = d

    def forward(self, x):
        return x


def test_fd_matches_torchmetrics_fid_on_the_same_features():
    from torchmetrics.image.fid import FrechetInceptionDistance

    a, b = gaussian(300, 16, seed=0), gaussian(400, 16, shift=0.3, seed=1)
    fid = FrechetInceptionDistance(feature=Lookup(16), reset_real_features=True)
    fid.update(b.float(), real=True)
    fid.update(a.float(), real=False)
    assert frechet_distance(a.float().double(), b.float().double()) == pytest.approx(
        float(fid.compute()), rel=1e-4
    )


def test_kid_statistic_matches_torchmetrics_on_one_full_subset():
    from torchmetrics.image.kid import KernelInceptionDistance

    a, b = gaussian(200, 16, seed=2), gaussian(200, 16, shift=0.2, seed=3)
    metric = KernelInceptionDistance(feature=Lookup(16), subsets=1, subset_size=200)
    metric.update(b.float(), real=True)
    metric.update(a.float(), real=False)
    mean, _ = metric.compute()
    ours = polynomial_mmd2(a.float().double(), b.float().double())
    assert ours == pytest.approx(float(mean), rel=1e-3, abs=1e-6)


# --- the intervals are calibrated ------------------------------------------------------------------------


def test_fd_bootstrap_interval_is_as_wide_as_the_spread_over_fresh_draws():
    """Its width tracks the seed-to-seed spread (1.3× on Gaussian features when written; 0.5–2.5× allowed)."""
    reference = gaussian(500, 16, seed=100)
    fresh = torch.tensor([frechet_distance(gaussian(200, 16, 0.2, seed=s), reference) for s in range(40)])
    fd, low, high = fd_interval(gaussian(200, 16, 0.2, seed=999), reference, n_boot=200)
    assert low < fd < high
    bootstrap_std = (high - low) / (2 * 1.96)
    assert 0.5 < bootstrap_std / float(fresh.std()) < 2.5
    # and, re-centred, it does not carry the resampling's upward bias: the fresh draws' mean lies inside it
    assert low < float(fresh.mean()) < high


def test_kid_standard_error_matches_the_spread_over_fresh_draws():
    reference = gaussian(400, 8, seed=200)
    fresh = torch.tensor([kid(gaussian(400, 8, 0.1, seed=s), reference, 10)[0] for s in range(30)])
    _, se = kid(gaussian(400, 8, 0.1, seed=777), reference, 10)
    # each fresh value also re-splits the fixed reference; the s.e. must be of the size of that spread
    assert 0.4 < se / float(fresh.std()) < 2.5


def test_kid_is_near_zero_for_one_law_and_clearly_positive_for_two():
    same = kid(gaussian(400, 8, seed=5), gaussian(400, 8, seed=6), 10)
    apart = kid(gaussian(400, 8, 1.0, seed=7), gaussian(400, 8, seed=8), 10)
    assert abs(same[0]) < 3 * same[1]
    assert apart[0] > 3 * apart[1] > 0


# --- compare ---------------------------------------------------------------------------------------------


def est(value, half, n=100, lower=True, name="FD"):
    return Estimate(name, value, value - half, value + half, n, lower, "test")


def test_compare_ranks_only_separated_intervals():
    assert compare(est(10, 1), est(20, 1)).verdict == "A better"
    assert compare(est(20, 1), est(10, 1)).verdict == "B better"
    assert compare(
        est(0.9, 0.01, lower=False, name="acc"), est(0.8, 0.01, lower=False, name="acc")
    ).verdict == ("A better")
    tie = compare(est(10, 3), est(12, 3))
    assert tie.verdict == "indistinguishable"
    assert tie.n_to_separate == math.ceil(100 * ((3 + 3) / 2) ** 2)  # half-widths shrink as 1/√n
    assert "indistinguishable at n=100" in str(tie) and "900" in str(tie)


def test_compare_refuses_unlike_quantities():
    with pytest.raises(ValueError, match="like with like"):
        compare(est(1, 1), est(1, 1, name="KID"))
    with pytest.raises(ValueError, match="Estimate"):
        compare(1.0, est(1, 1))


# --- the scorer on real digits ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scorer():
    return Scorer(n_boot=50)


def test_floor_is_real_digits_scored_the_same_way(scorer):
    floor = scorer.floor(200)
    assert floor.n == 200 and floor.label_accuracy.value > 0.95
    assert floor.fd.low < floor.fd.value < floor.fd.high
    assert floor.kid.low < 0 < floor.kid.high or abs(floor.kid.value) < floor.kid.high - floor.kid.low
    record = floor.record()
    keys = {"fd", "fd_low", "fd_high", "kid", "kid_std", "label_accuracy", "label_accuracy_low"}
    assert keys <= set(record)


def test_noise_scores_far_below_the_floor_and_compare_says_so(scorer):
    noise = torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.arange(200) % 10
    bad, floor = scorer.score(noise, labels), scorer.floor(200)
    assert compare(floor.fd, bad.fd).verdict == "A better"
    assert compare(floor.kid, bad.kid).verdict == "A better"
    assert compare(floor.label_accuracy, bad.label_accuracy).verdict == "A better"


def test_scoring_the_same_samples_twice_gives_the_same_intervals(scorer):
    images, labels = load_mnist("train")
    first, second = scorer.score(images[:100], labels[:100]), scorer.score(images[:100], labels[:100])
    assert first == second


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda s: s.score(torch.zeros(10, 28, 28)), "samples"),
        (lambda s: s.score(torch.full((10, 1, 28, 28), float("nan"))), "samples"),
        (lambda s: s.score(torch.zeros(10, 1, 28, 28), torch.zeros(3, dtype=torch.long)), "labels"),
        (lambda s: s.floor(10_000), "n"),
    ],
)
def test_scorer_errors_name_the_parameter(scorer, call, name):
    with pytest.raises(ValueError, match=name):
        call(scorer)


# --- sliced W2 with its spread ---------------------------------------------------------------------------


def test_sliced_w2_estimate_is_the_mean_over_references_with_a_widened_interval():
    mixture = toy_mixture()
    points = mixture.sample(500, generator=torch.Generator().manual_seed(0))
    refs = [mixture.sample(500, generator=torch.Generator().manual_seed(1 + k)) for k in range(5)]
    e = sliced_w2_estimate(points, refs, n_projections=32)
    values = torch.tensor([sliced_w2(points, r, n_projections=32) for r in refs])
    assert e.value == pytest.approx(float(values.mean())) and e.n == 500 and e.lower_is_better
    half = 1.959963984540054 * float(values.std()) * math.sqrt(1 + 1 / 5)
    assert e.high - e.value == pytest.approx(half) and e.half_width > 0
    # a shifted set is far outside the exact sets' interval
    shifted = sliced_w2_estimate(points + 1.0, refs, n_projections=32)
    assert compare(e, shifted).verdict == "A better"
    with pytest.raises(ValueError, match="references"):
        sliced_w2_estimate(points, refs[:1])
    with pytest.raises(ValueError, match="references"):
        sliced_w2_estimate(points, refs[0])


def test_sliced_w2_reference_equals_sliced_w2_for_every_reference():
    mixture = toy_mixture()
    refs = [mixture.sample(300, generator=torch.Generator().manual_seed(1 + k)) for k in range(3)]
    scorer = SlicedW2Reference(refs, n_projections=16)
    points = mixture.sample(300, generator=torch.Generator().manual_seed(9)).float() * 1.1
    expected = [sliced_w2(points, r, n_projections=16) for r in refs]
    assert scorer.distances(points).tolist() == pytest.approx(expected, rel=1e-12)
    other_size = points[:200]  # another n goes through sliced_w2's merged-quantile path
    assert scorer.distances(other_size).tolist() == pytest.approx(
        [sliced_w2(other_size, r, n_projections=16) for r in refs], rel=1e-12
    )
    e = scorer(points)
    assert e.value == pytest.approx(sum(expected) / 3) and e == sliced_w2_estimate(
        points, refs, n_projections=16
    )
    with pytest.raises(ValueError, match="points"):
        scorer(torch.zeros(10, 3))
    with pytest.raises(ValueError, match="points"):
        scorer(torch.full((300, 2), float("nan")))
    with pytest.raises(ValueError, match="references"):
        SlicedW2Reference([refs[0], refs[1][:10]])


def test_mean_distance_is_the_mean_row_distance_with_its_interval():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 3, generator=g), torch.randn(400, 3, generator=g)
    d = (a - b).double().norm(dim=1)
    e = mean_distance(a, b)
    half = 1.959963984540054 * float(d.std()) / math.sqrt(400)
    assert e.value == pytest.approx(float(d.mean())) and e.half_width == pytest.approx(half)
    assert e.lower_is_better and e.n == 400 and mean_distance(a, a).value == 0.0
    assert mean_distance(torch.randn(5, 1, 2, 2), torch.zeros(5, 1, 2, 2)).n == 5  # images: per-row norm
    with pytest.raises(ValueError, match="reference=.*shape of points"):
        mean_distance(a, b[:10])
    with pytest.raises(ValueError, match="N ≥ 2 rows"):
        mean_distance(a[:1], b[:1])
