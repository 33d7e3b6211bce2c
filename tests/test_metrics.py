import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from diffusion_course.metrics import (
    classifier_features,
    frechet_distance,
    gaussian_frechet,
    label_accuracy,
    nearest_neighbour_distance,
    sliced_w2,
)


def random_cov(D, g, scale=1.0):
    A = torch.randn(D, D, generator=g, dtype=torch.float64)
    return scale * (A @ A.T / D + 0.1 * torch.eye(D, dtype=torch.float64))


def gaussian_samples(mu, cov, n, g):
    return mu + torch.randn(n, len(mu), generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T


# --- Fréchet distance ----------------------------------------------------------------------------------


def test_gaussian_frechet_in_one_dimension_and_for_commuting_covariances():
    assert gaussian_frechet([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9.0 + (2.0 - 3.0) ** 2)
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 1.0])
    expected = float(((a.sqrt() - b.sqrt()) ** 2).sum())
    assert gaussian_frechet(torch.zeros(3), torch.diag(a), torch.zeros(3), torch.diag(b)) == pytest.approx(
        expected
    )


def test_gaussian_frechet_matches_the_eigenvalues_of_the_product():
    # tr (Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2} = Σ √λ(Σ1 Σ2): an independent route through a non-symmetric product
    g = torch.Generator().manual_seed(0)
    for D in [2, 5, 16]:
        c1, c2 = random_cov(D, g), random_cov(D, g, scale=3.0)
        m1, m2 = (
            torch.randn(D, generator=g, dtype=torch.float64),
            torch.randn(D, generator=g, dtype=torch.float64),
        )
        tr_sqrt = torch.linalg.eigvals(c1 @ c2).real.clamp(min=0).sqrt().sum()
        expected = float((m1 - m2).pow(2).sum() + c1.trace() + c2.trace() - 2 * tr_sqrt)
        assert gaussian_frechet(m1, c1, m2, c2) == pytest.approx(expected, rel=1e-9)
        assert gaussian_frechet(m1, c1, m1, c1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_samples_approaches_the_closed_form():
    g = torch.Generator().manual_seed(1)
    D = 3
    m1, m2 = torch.zeros(D, dtype=torch.float64), torch.tensor([1.0, -0.5, 0.0], dtype=torch.float64)
    c1, c2 = random_cov(D, g), random_cov(D, g, scale=2.0)
    a, b = gaussian_samples(m1, c1, 20_000, g), gaussian_samples(m2, c2, 20_000, g)
    assert frechet_distance(a, b) == pytest.approx(gaussian_frechet(m1, c1, m2, c2), abs=0.05)


def test_frechet_distance_exact_identities():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(500, 6, generator=g, dtype=torch.float64) * torch.arange(1, 7) + 0.3
    delta = torch.linspace(-1, 1, 6, dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, a + delta) == pytest.approx(float(delta.pow(2).sum()), rel=1e-9)
    # x → c·x: FD = (1 − c)² (‖μ‖² + tr Σ)
    c = 1.7
    mu, cov = a.mean(0), torch.cov(a.T)
    expected = (1 - c) ** 2 * float(mu.pow(2).sum() + cov.trace())
    assert frechet_distance(a, c * a) == pytest.approx(expected, rel=1e-9)
    b = torch.randn(300, 6, generator=g, dtype=torch.float64)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 12), m=st.integers(2, 12), D=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_frechet_distance_is_non_negative_even_with_singular_covariances(n, m, D, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, D, generator=g), torch.randn(m, D, generator=g)
    fd = frechet_distance(a, b)
    assert math.isfinite(fd) and fd >= -1e-9
    assert abs(frechet_distance(a, a)) < 1e-9


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: frechet_distance(torch.randn(5, 3), torch.randn(5, 4)), "4 dimensions but feats_a has 3"),
        (lambda: frechet_distance(torch.randn(1, 3), torch.randn(5, 3)), "at least 2"),
        (lambda: frechet_distance(torch.randn(5, 3), torch.full((5, 3), float("nan"))), "NaN"),
        (lambda: frechet_distance(torch.randn(5), torch.randn(5)), "2-D"),
        (lambda: frechet_distance([[0.0]], torch.randn(5, 1)), "torch.Tensor"),
        (
            lambda: gaussian_frechet([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]], [0.0, 0.0], torch.eye(2)),
            "semi-definite",
        ),
        (
            lambda: gaussian_frechet([0.0, 0.0], [[1.0, 0.5], [0.0, 1.0]], [0.0, 0.0], torch.eye(2)),
            "symmetric",
        ),
        (lambda: gaussian_frechet([0.0, 0.0], torch.eye(2), [0.0], torch.eye(2)), r"mu2=.*\(2,\)"),
    ],
)
def test_frechet_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- classifier-based ------------------------------------------------------------------------------------


class TinyClassifier(nn.Module):
    """Stand-in with the course Classifier's interface: features(x) -> (B, 8), forward(x) -> (B, 10)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh())
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(8, 10)

    def features(self, x):
        return self.dropout(self.body(x))

    def forward(self, x):
        return self.head(self.features(x))


class PixelClassifier(nn.Module):
    """Predicts the class written in the first pixel."""

    def features(self, x):
        return x.flatten(1)

    def forward(self, x):
        return nn.functional.one_hot(x[:, 0, 0, 0].long(), 10).float()


def test_classifier_features_in_eval_mode_and_batched():
    clf = TinyClassifier().train()
    images = torch.randn(10, 1, 4, 4)
    feats = classifier_features(clf, images, batch_size=3)
    assert feats.shape == (10, 8) and feats.dtype == torch.float64
    assert torch.allclose(feats, clf.body(images).double(), atol=1e-6)  # no dropout: eval mode
    assert clf.training  # mode restored
    assert torch.allclose(feats, classifier_features(clf, images, batch_size=256))


def test_label_accuracy():
    images = torch.zeros(8, 1, 2, 2)
    images[:, 0, 0, 0] = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7]).float()
    labels = torch.tensor([0, 1, 2, 3, 9, 9, 9, 9])
    assert label_accuracy(PixelClassifier(), images, labels, batch_size=3) == 0.5
    assert label_accuracy(PixelClassifier(), images, torch.arange(8)) == 1.0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda c, x: classifier_features(nn.Linear(2, 2), x), "features"),
        (lambda c, x: classifier_features(c, x.long()), "floating-point"),
        (lambda c, x: classifier_features(c, x * float("nan")), "NaN"),
        (lambda c, x: classifier_features(c, x, batch_size=0), "batch_size=0"),
        (lambda c, x: label_accuracy(c, x, torch.zeros(3, dtype=torch.long)), r"\(4,\)"),
        (lambda c, x: label_accuracy(c, x, torch.zeros(4)), "integer"),
    ],
)
def test_classifier_metrics_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(TinyClassifier(), torch.randn(4, 1, 4, 4))


def test_features_of_the_wrong_shape_are_reported():
    class Bad(TinyClassifier):
        def features(self, x):
            return x  # (B, 1, 4, 4), not (B, F)

    with pytest.raises(ValueError, match=r"classifier.features=.*\(4, F\)"):
        classifier_features(Bad(), torch.randn(4, 1, 4, 4))


# --- sliced W2 -------------------------------------------------------------------------------------------


def test_sliced_w2_hand_example_with_unequal_sizes():
    # quantiles of {0,1,2} and {0,2} differ by 1 on (1/3, 2/3): W2² = 1/3
    a, b = torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([[0.0], [2.0]])
    assert sliced_w2(a, b) == pytest.approx(math.sqrt(1 / 3))
    assert sliced_w2(b, a) == pytest.approx(math.sqrt(1 / 3))


def test_sliced_w2_unequal_sizes_agree_with_repeated_points():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(6, 3, generator=g), torch.randn(4, 3, generator=g)
    same_measures = sliced_w2(a.repeat(2, 1), b.repeat(3, 1))  # 12 vs 12 points, same empirical laws
    assert sliced_w2(a, b) == pytest.approx(same_measures, rel=1e-12)
    assert sliced_w2(a, torch.cat([a, a, a])) == pytest.approx(0.0, abs=1e-12)


def test_sliced_w2_of_a_shift():
    # b = a + Δ: every projection shifts by θᵀΔ, so SW2² = mean (θᵀΔ)² → ‖Δ‖²/D
    g = torch.Generator().manual_seed(5)
    a = torch.randn(300, 2, generator=g)
    delta = torch.tensor([0.6, -0.8])
    value = sliced_w2(a, a + delta, n_projections=4000)
    assert value == pytest.approx(math.sqrt(1.0 / 2), rel=0.02)
    assert sliced_w2(a, a) == 0.0


def test_sliced_w2_between_one_dimensional_gaussians():
    g = torch.Generator().manual_seed(6)
    a = torch.randn(20_000, 1, generator=g)
    b = 1.0 + 2.0 * torch.randn(20_000, 1, generator=g)
    assert sliced_w2(a, b, n_projections=8) == pytest.approx(math.sqrt(1.0 + 1.0), rel=0.02)  # √(Δμ² + Δσ²)


def test_sliced_w2_reproducible_and_symmetric():
    g = torch.Generator().manual_seed(7)
    a, b = torch.randn(50, 4, generator=g), torch.randn(40, 4, generator=g) + 1
    assert sliced_w2(a, b) == sliced_w2(a, b)
    assert sliced_w2(a, b) == pytest.approx(sliced_w2(b, a), rel=1e-12)
    seeded = sliced_w2(a, b, generator=torch.Generator().manual_seed(1))
    assert seeded == pytest.approx(sliced_w2(a, b), rel=0.2)


# --- nearest neighbour -----------------------------------------------------------------------------------


def test_nearest_neighbour_finds_copies_and_matches_brute_force():
    g = torch.Generator().manual_seed(10)
    reference = torch.rand(50, 1, 4, 4, generator=g) * 2 - 1
    samples = torch.rand(20, 1, 4, 4, generator=g) * 2 - 1
    samples[3] = reference[17]  # a memorised sample
    dist, index = nearest_neighbour_distance(samples, reference, batch_size=7, return_index=True)
    brute = (samples.double().flatten(1)[:, None] - reference.double().flatten(1)[None]).norm(dim=2)
    assert torch.allclose(dist, brute.min(dim=1).values)
    assert torch.equal(index, brute.argmin(dim=1))
    assert float(dist[3]) < 1e-6 and int(index[3]) == 17
    assert torch.equal(dist, nearest_neighbour_distance(samples, reference))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda a: sliced_w2(a, a[:, :1]), "1 dimensions but a has 2"),
        (lambda a: sliced_w2(a, a, n_projections=0), "n_projections=0"),
        (lambda a: sliced_w2(a, a * float("inf")), "NaN or inf"),
        (lambda a: nearest_neighbour_distance(a, torch.randn(3, 3)), "3 dimensions but samples has 2"),
        (lambda a: nearest_neighbour_distance(a[0], a), "2-D"),
    ],
)
def test_point_cloud_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.randn(10, 2))


def test_works_with_the_course_classifier():
    from diffusion_course.models import Classifier

    clf = Classifier(width=4, feature_dim=8)
    images = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert classifier_features(clf, images, batch_size=4).shape == (6, 8)
    assert 0.0 <= label_accuracy(clf, images, torch.zeros(6, dtype=torch.long)) <= 1.0
