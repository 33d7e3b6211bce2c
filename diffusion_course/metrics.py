r"""Sample-quality metrics: Fréchet distance, label accuracy, sliced W2 and a memorisation probe.

All distances are computed in float64 on the CPU. Point clouds are (N, D) tensors; images (N, C, H, W) are
flattened where a metric works on raw pixels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._checks import check_image_batch, check_int, check_labels, fail

# --- Fréchet distance ----------------------------------------------------------------------------------


def gaussian_frechet(mu1, cov1, mu2, cov2) -> float:
    """Fréchet (2-Wasserstein²) distance between N(μ1, Σ1) and N(μ2, Σ2):

        FD = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2}.

    Both square roots come from eigendecompositions of symmetric PSD matrices (Σ1, then Σ1^{1/2} Σ2 Σ1^{1/2}),
    which stays accurate where sqrtm(Σ1 Σ2) of a non-symmetric product can turn complex. Eigenvalues that
    are rounding noise (below 10·n·ε·λ_max in size) count as 0, as √ would blow that noise up to ~1e-8;
    eigenvalues below −1e-10·λ_max mean the input was not PSD and raise ValueError.
    """
    mu1, mu2 = _as_f64("mu1", mu1), _as_f64("mu2", mu2)
    cov1, cov2 = _as_f64("cov1", cov1), _as_f64("cov2", cov2)
    if mu1.ndim != 1:
        fail("mu1", mu1, "expected a vector (F,)")
    F = mu1.shape[0]
    for name, v, shape in [("mu2", mu2, (F,)), ("cov1", cov1, (F, F)), ("cov2", cov2, (F, F))]:
        if v.shape != shape:
            fail(name, v, f"expected shape {shape} to match mu1's {F} features")
    sqrt1 = _psd_sqrt("cov1", cov1)
    _psd_sqrt("cov2", cov2)
    middle = sqrt1 @ cov2 @ sqrt1
    eig = _psd_eigvals("Σ1^{1/2} Σ2 Σ1^{1/2}", 0.5 * (middle + middle.T))
    tr_sqrt = eig.sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2.0 * tr_sqrt)


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """FD between Gaussians fitted to two feature sets (N, F) and (M, F) (sample mean, covariance with N−1).

    This is FID's formula; with Inception features it is FID, with the course classifier's it is "FD".
    """
    a = _check_points("feats_a", feats_a, min_n=2)
    b = _check_points("feats_b", feats_b, min_n=2)
    _check_same_dim(a, b, "feats_a", "feats_b")
    return gaussian_frechet(a.mean(0), _cov(a), b.mean(0), _cov(b))


# --- classifier-based ------------------------------------------------------------------------------------


@torch.no_grad()
def classifier_features(classifier: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Penultimate-layer features ``classifier.features(x)`` for every image, as a float64 CPU tensor (N, F).

    Runs in eval mode (the module's previous mode is restored) on the classifier's device.
    """
    images = _check_images(images)
    batch_size = check_int("batch_size", batch_size, low=1)
    if not callable(getattr(classifier, "features", None)):
        fail("classifier", type(classifier).__name__, "expected a module with a features(x) -> (B, F) method")
    out = [
        _checked_output("classifier.features", classifier.features(x), len(x))
        for x in _batches(classifier, images, batch_size)
    ]
    return torch.cat(out).to("cpu", torch.float64)


@torch.no_grad()
def label_accuracy(
    classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256
) -> float:
    """Fraction of images whose classifier argmax equals ``labels`` (e.g. the classes a sampler was given)."""
    images = _check_images(images)
    batch_size = check_int("batch_size", batch_size, low=1)
    labels = check_labels(labels, images.shape[0], None)
    preds = [
        _checked_output("classifier(x)", classifier(x), len(x)).argmax(dim=1).cpu()
        for x in _batches(classifier, images, batch_size)
    ]
    return float((torch.cat(preds) == labels.cpu()).double().mean())


# --- point-cloud distances ------------------------------------------------------------------------------


def sliced_w2(
    a: torch.Tensor, b: torch.Tensor, n_projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced 2-Wasserstein distance between the empirical measures of a (N, D) and b (M, D):

        SW2(a, b) = ( (1/P) Σ_p W2²(θ_pᵀa, θ_pᵀb) )^{1/2},  θ_p uniform on the unit sphere, P = n_projections.

    Each 1-D W2² is exact: ∫₀¹ (F_a⁻¹(u) − F_b⁻¹(u))² du over the sorted projections, i.e. the mean squared
    difference of sorted values when N = M, and an integral over the merged quantile breakpoints otherwise.
    With ``generator=None`` the directions come from a generator seeded with 0, so the value is reproducible.
    """
    a, b = _check_points("a", a), _check_points("b", b)
    _check_same_dim(a, b, "a", "b")
    n_projections = check_int("n_projections", n_projections, low=1)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    theta = torch.randn(a.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    pa, pb = (a @ theta).sort(dim=0).values, (b @ theta).sort(dim=0).values
    return math.sqrt(float(_w2_sq_sorted(pa, pb).mean()))


def nearest_neighbour_distance(
    samples: torch.Tensor, reference: torch.Tensor, batch_size: int = 1024, return_index: bool = False
):
    """For each sample, the Euclidean distance (over all non-batch dims) to its closest reference item.

    A probe for memorisation: distances near 0 mean a sample copies a training item. Returns a float64 CPU
    tensor (N,), and with ``return_index`` also the index (N,) of that reference item. Computed in float64,
    so an exact copy gives a distance below about 1e-6 of the data scale.
    """
    s = _check_points("samples", _flatten(samples))
    r = _check_points("reference", _flatten(reference))
    _check_same_dim(s, r, "samples", "reference")
    batch_size = check_int("batch_size", batch_size, low=1)
    dist, index = [], []
    for start in range(0, s.shape[0], batch_size):
        d, i = torch.cdist(s[start : start + batch_size], r).min(dim=1)
        dist.append(d)
        index.append(i)
    dist, index = torch.cat(dist), torch.cat(index)
    return (dist, index) if return_index else dist


# --- helpers --------------------------------------------------------------------------------------------


def _w2_sq_sorted(pa: torch.Tensor, pb: torch.Tensor) -> torch.Tensor:
    """W2² per column between two sorted samples (N, P) and (M, P) with uniform weights."""
    N, M = pa.shape[0], pb.shape[0]
    if N == M:
        return (pa - pb).pow(2).mean(dim=0)
    # quantile functions are step functions with jumps at i/N and j/M; in units of 1/L, L = lcm(N, M),
    # those are integers, so the merged breakpoints and each piece's width are exact
    L = math.lcm(N, M)
    cuts = torch.unique(torch.cat([torch.arange(1, N + 1) * (L // N), torch.arange(1, M + 1) * (L // M)]))
    prev = torch.cat([torch.zeros(1, dtype=cuts.dtype), cuts[:-1]])
    ia = ((prev + cuts) * N) // (2 * L)  # the piece's midpoint u lies in step floor(u N) of a
    ib = ((prev + cuts) * M) // (2 * L)
    width = ((cuts - prev).double() / L)[:, None]
    return (width * (pa[ia] - pb[ib]).pow(2)).sum(dim=0)


def _cov(x: torch.Tensor) -> torch.Tensor:
    centred = x - x.mean(0)
    return centred.T @ centred / (x.shape[0] - 1)


def _psd_eigvals(name: str, m: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of a symmetric PSD matrix, with rounding noise set to exactly 0.

    eigvalsh is accurate to about n·ε·λ_max, and the square root turns noise of 1e-17 into 3e-9, so values
    below 10·n·ε·λ_max are zeroed (a true eigenvalue that small changes a square-root trace by ≤ √ of it).
    """
    eig = torch.linalg.eigvalsh(m)
    top = max(float(eig.abs().max()), 1e-300)
    if float(eig.min()) < -1e-10 * top:
        fail(
            name, f"matrix with eigenvalue {float(eig.min()):.3g}", "expected a positive semi-definite matrix"
        )
    floor = 10.0 * m.shape[0] * torch.finfo(torch.float64).eps * top
    return torch.where(eig > floor, eig, torch.zeros_like(eig))


def _psd_sqrt(name: str, m: torch.Tensor) -> torch.Tensor:
    if not torch.allclose(m, m.T, rtol=1e-8, atol=1e-12 * max(float(m.abs().max()), 1e-300)):
        fail(name, m, "expected a symmetric matrix")
    m = 0.5 * (m + m.T)
    _, vec = torch.linalg.eigh(m)
    return (vec * _psd_eigvals(name, m).sqrt()) @ vec.T


def _as_f64(name: str, v) -> torch.Tensor:
    v = torch.as_tensor(v)
    if v.is_complex() or v.dtype == torch.bool:
        fail(name, v, "expected real numbers")
    v = v.detach().to("cpu", torch.float64)
    if not torch.isfinite(v).all():
        fail(name, v, "contains NaN or inf")
    return v


def _check_points(name: str, x, min_n: int = 1) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        fail(name, type(x).__name__, "expected a torch.Tensor")
    if x.is_complex() or x.dtype == torch.bool:
        fail(name, x, "expected real numbers")
    if x.ndim != 2:
        fail(name, x, "expected a 2-D tensor (N, D) of N points")
    if x.shape[0] < min_n:
        fail(name, x, f"need at least {min_n} points (rows)")
    x = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        fail(name, x, "contains NaN or inf")
    return x


def _flatten(x):
    return x.flatten(1) if isinstance(x, torch.Tensor) and x.ndim > 2 else x


def _check_same_dim(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        fail(name_b, b, f"has {b.shape[1]} dimensions but {name_a} has {a.shape[1]}; they must match")


def _check_images(images) -> torch.Tensor:
    images = check_image_batch("images", images)
    if not torch.isfinite(images).all():
        fail("images", images, "contains NaN or inf")
    return images


def _checked_output(what: str, out, batch: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != batch:
        fail(
            what,
            out if isinstance(out, torch.Tensor) else type(out).__name__,
            f"expected a tensor ({batch}, F)",
        )
    return out


def _batches(module: nn.Module, images: torch.Tensor, batch_size: int):
    """Yield batches on the module's device, with the module in eval mode (restored afterwards)."""
    param = next(iter(module.parameters()), None) if isinstance(module, nn.Module) else None
    device = param.device if param is not None else images.device
    was_training = getattr(module, "training", False)
    if isinstance(module, nn.Module):
        module.eval()
    try:
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size].to(device)
    finally:
        if isinstance(module, nn.Module):
            module.train(was_training)
