r"""Exact ε for Gaussian-mixture data: a perfect "trained network" to test samplers against.

If x_0 ~ Σ_k w_k N(μ_k, Σ_k), then x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε is again a mixture,

    p_t(x) = Σ_k w_k N(x; √ᾱ_t μ_k, C_k),   C_k = ᾱ_t Σ_k + (1−ᾱ_t) I,

and the minimiser of the ε-prediction loss is ε*(x, t) = E[ε | x_t = x] = −√(1−ᾱ_t) ∇log p_t(x):

    ε*(x, t) = √(1−ᾱ_t) Σ_k r_k(x) C_k⁻¹ (x − √ᾱ_t μ_k),   r_k(x) = w_k N(x; √ᾱ_t μ_k, C_k) / p_t(x).

Everything is computed in float64 (responsibilities with logsumexp) and returned in the input's dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from ._checks import check_float, check_image_batch, check_int, check_labels, check_timesteps_tensor, fail
from .schedules import NoiseSchedule


@dataclass(frozen=True, eq=False)
class GaussianMixture:
    """Σ_k w_k N(μ_k, Σ_k) with ``means`` (K, D), ``covs`` (K, D, D), ``weights`` (K,), stored as float64.

    Covariances must be symmetric positive definite; weights positive and summing to 1 (to within 1e-6;
    they are then renormalised exactly).
    """

    means: torch.Tensor
    covs: torch.Tensor
    weights: torch.Tensor

    def __post_init__(self):
        means = _as_float64("means", self.means)
        covs = _as_float64("covs", self.covs)
        weights = _as_float64("weights", self.weights)
        if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            fail("means", means, "expected shape (K, D) with K ≥ 1 components in D ≥ 1 dimensions")
        K, D = means.shape
        if covs.shape != (K, D, D):
            fail("covs", covs, f"expected shape ({K}, {D}, {D}) to match means")
        if weights.shape != (K,):
            fail("weights", weights, f"expected shape ({K},) to match means")
        asym = (covs - covs.transpose(1, 2)).abs().amax(dim=(1, 2))
        scale = covs.abs().amax(dim=(1, 2))
        if (asym > 1e-10 * scale).any():
            k = int((asym > 1e-10 * scale).nonzero()[0])
            fail(f"covs[{k}]", covs[k].tolist(), "each covariance must be symmetric")
        covs = 0.5 * (covs + covs.transpose(1, 2))
        min_eig = torch.linalg.eigvalsh(covs)[:, 0]
        if (min_eig <= 0).any():
            k = int((min_eig <= 0).nonzero()[0])
            fail(
                f"covs[{k}]",
                covs[k].tolist(),
                f"must be positive definite (smallest eigenvalue {min_eig[k]:.3g})",
            )
        if (weights <= 0).any():
            fail("weights", weights.tolist(), "every weight must be > 0")
        if abs(float(weights.sum()) - 1.0) > 1e-6:
            fail("weights", weights.tolist(), f"must sum to 1 (they sum to {float(weights.sum()):.8g})")
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "covs", covs)
        object.__setattr__(self, "weights", weights / weights.sum())

    @property
    def K(self) -> int:
        return self.means.shape[0]

    @property
    def D(self) -> int:
        return self.means.shape[1]

    @cached_property
    def _chol(self) -> torch.Tensor:
        return torch.linalg.cholesky(self.covs)

    @cached_property
    def _precisions(self) -> torch.Tensor:
        return torch.cholesky_inverse(self._chol)

    @cached_property
    def _logdets(self) -> torch.Tensor:
        return 2.0 * self._chol.diagonal(dim1=1, dim2=2).log().sum(dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None, return_components: bool = False):
        """n float32 samples (n, D); with ``return_components`` also the component index of each (n,)."""
        n = check_int("n", n, low=1)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.D, 1, generator=generator, dtype=torch.float64)
        x = (self.means[k] + (self._chol[k] @ z).squeeze(-1)).float()
        return (x, k) if return_components else x

    def mean(self) -> torch.Tensor:
        """E[x] = Σ_k w_k μ_k, shape (D,)."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """Cov[x] = Σ_k w_k (Σ_k + μ_k μ_kᵀ) − E[x] E[x]ᵀ, shape (D, D)."""
        m = self.mean()
        second = torch.einsum(
            "k,kij->ij", self.weights, self.covs + self.means[:, :, None] * self.means[:, None, :]
        )
        return second - torch.outer(m, m)

    def noised(self, alpha_bar: float) -> GaussianMixture:
        """The law of √ᾱ x + √(1−ᾱ) ε: means √ᾱ μ_k, covariances ᾱ Σ_k + (1−ᾱ) I, same weights."""
        ab = check_float("alpha_bar", alpha_bar, low=0.0, high=1.0)
        eye = torch.eye(self.D, dtype=torch.float64)
        return GaussianMixture(math.sqrt(ab) * self.means, ab * self.covs + (1.0 - ab) * eye, self.weights)

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; μ_k, Σ_k), shape (N, K), float64 (differentiable in x)."""
        x = self._check_points(x)
        diff = x[:, None, :] - self.means.to(x.device)
        maha = torch.einsum("nki,kij,nkj->nk", diff, self._precisions.to(x.device), diff)
        log_norm = self._logdets.to(x.device) + self.D * math.log(2 * math.pi)
        return self.weights.to(x.device).log() - 0.5 * (maha + log_norm)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = logsumexp_k (log w_k + log N(x; μ_k, Σ_k)), shape (N,), float64."""
        return torch.logsumexp(self.component_log_probs(x), dim=1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """r_k(x) = p(k | x), shape (N, K), float64."""
        return torch.softmax(self.component_log_probs(x), dim=1)

    def score(self, x: torch.Tensor, responsibilities: torch.Tensor | None = None) -> torch.Tensor:
        """∇ log p(x) = −Σ_k r_k(x) Σ_k⁻¹ (x − μ_k), shape (N, D), float64.

        ``responsibilities`` (N, K) replaces r_k(x), e.g. one-hot rows to condition on a component.
        """
        x = self._check_points(x)
        r = self.responsibilities(x) if responsibilities is None else responsibilities
        diff = x[:, None, :] - self.means.to(x.device)
        return -torch.einsum("nk,kij,nkj->ni", r, self._precisions.to(x.device), diff)

    def _check_points(self, x) -> torch.Tensor:
        x = check_image_batch("x", x, ndim=2)
        if x.shape[1] != self.D:
            fail("x", x, f"expected shape (N, {self.D}) for this {self.D}-D mixture")
        return x.to(torch.float64)

    def __repr__(self) -> str:
        return (
            f"GaussianMixture(K={self.K}, D={self.D}, weights={[round(w, 3) for w in self.weights.tolist()]})"
        )


def toy_mixture() -> GaussianMixture:
    """The course's 2-D mixture: four well-separated modes of unequal weight and shape, scale ~1.

    =====  ==============  ======  ==========================================
    k      mean            weight  shape (standard deviations along the axes)
    =====  ==============  ======  ==========================================
    0      (−1.0, −0.5)    0.4     elongated, 0.35 × 0.08, long axis at 30°
    1      (1.0, −0.5)     0.3     round, 0.15
    2      (0.0, 0.9)      0.2     long and thin, 0.40 × 0.06, at −15°
    3      (1.2, 1.1)      0.1     small and rare, round, 0.08
    =====  ==============  ======  ==========================================

    A good sampler recovers the rare mode's 10 % and the thin mode's anisotropy; a poor one blurs them.
    """
    means = torch.tensor([[-1.0, -0.5], [1.0, -0.5], [0.0, 0.9], [1.2, 1.1]], dtype=torch.float64)
    shapes = [(0.35, 0.08, 30.0), (0.15, 0.15, 0.0), (0.40, 0.06, -15.0), (0.08, 0.08, 0.0)]
    covs = torch.stack([_rotated_cov(*s) for s in shapes])
    weights = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    return GaussianMixture(means, covs, weights)


class GaussianMixtureOracle:
    """The exact ε-model ε*(x_t, t) of a :class:`GaussianMixture` under a :class:`NoiseSchedule`.

    Call it like a network: ``oracle(x_t, t, labels=None) -> eps`` with x_t (B, D), t a LongTensor (B,).
    With ``conditional=True`` it is a class-conditional model with ``num_classes = K``: label k means
    "x_0 came from component k" (ε* of that single Gaussian) and label K, the null class, means
    unconditional (the whole mixture), as classifier-free guidance expects. Unconditional oracles have
    ``num_classes = None`` and refuse labels.
    """

    def __init__(self, mixture: GaussianMixture, schedule: NoiseSchedule, conditional: bool = False):
        if not isinstance(mixture, GaussianMixture):
            fail("mixture", type(mixture).__name__, "expected a GaussianMixture")
        if not isinstance(schedule, NoiseSchedule):
            fail("schedule", type(schedule).__name__, "expected a NoiseSchedule")
        self.mixture = mixture
        self.schedule = schedule
        self.num_classes = mixture.K if conditional else None
        self.sample_shape = (mixture.D,)
        self._noised: dict[int, GaussianMixture] = {}

    def __call__(self, x_t: torch.Tensor, t, labels: torch.Tensor | None = None) -> torch.Tensor:
        """ε*(x_t, t) = √(1−ᾱ_t) Σ_k r_k C_k⁻¹ (x_t − √ᾱ_t μ_k) = −√(1−ᾱ_t) ∇log p_t(x_t)."""
        return self._per_timestep(x_t, t, labels, lambda m, x, r, ab: -math.sqrt(1.0 - ab) * m.score(x, r))

    def score(self, x_t: torch.Tensor, t, labels: torch.Tensor | None = None) -> torch.Tensor:
        """∇_x log p_t(x_t) = −Σ_k r_k C_k⁻¹ (x_t − √ᾱ_t μ_k)."""
        return self._per_timestep(x_t, t, labels, lambda m, x, r, ab: m.score(x, r))

    def x0_mean(self, x_t: torch.Tensor, t, labels: torch.Tensor | None = None) -> torch.Tensor:
        """E[x_0 | x_t] = Σ_k r_k (μ_k + √ᾱ_t Σ_k C_k⁻¹ (x_t − √ᾱ_t μ_k)) (defined at ᾱ_t = 0 too)."""

        def fn(m, x, r, ab):
            mu, cov = self.mixture.means.to(x.device), self.mixture.covs.to(x.device)
            gain = math.sqrt(ab) * cov @ m._precisions.to(x.device)  # √ᾱ Σ_k C_k⁻¹, (K, D, D)
            per_k = mu + torch.einsum("kij,nkj->nki", gain, x[:, None, :] - m.means.to(x.device))
            return torch.einsum("nk,nki->ni", r, per_k)

        return self._per_timestep(x_t, t, labels, fn)

    def noised_mixture(self, t: int) -> GaussianMixture:
        """The mixture of x_t at index t (cached)."""
        t = check_int("t", t, low=0, high=self.schedule.T - 1)
        if t not in self._noised:
            self._noised[t] = self.mixture.noised(float(self.schedule.alpha_bar[t]))
        return self._noised[t]

    def _per_timestep(self, x_t, t, labels, fn) -> torch.Tensor:
        x_t = check_image_batch("x_t", x_t, ndim=2)
        if x_t.shape[1] != self.mixture.D:
            fail("x_t", x_t, f"expected shape (B, {self.mixture.D}) for this {self.mixture.D}-D mixture")
        B = x_t.shape[0]
        t = check_timesteps_tensor("t", t, self.schedule.T, B)
        labels = self._check_labels(labels, B)
        device = torch.device("cpu") if x_t.device.type == "mps" else x_t.device  # MPS has no float64
        x = x_t.to(device=device, dtype=torch.float64)
        t = t.to(device)
        out = torch.empty_like(x)
        for tv in torch.unique(t).tolist():
            rows = (t == tv).nonzero().squeeze(1)
            m = self.noised_mixture(tv)
            xs = x[rows]
            r = m.responsibilities(xs)
            if labels is not None:
                lab = labels.to(device)[rows]
                picked = lab < self.mixture.K
                one_hot = torch.nn.functional.one_hot(lab.clamp(max=self.mixture.K - 1), self.mixture.K)
                r = torch.where(picked[:, None], one_hot.to(r.dtype), r)
            out[rows] = fn(m, xs, r, float(self.schedule.alpha_bar[tv]))
        return out.to(device=x_t.device, dtype=x_t.dtype)

    def _check_labels(self, labels, batch: int):
        if labels is None:
            return None
        if self.num_classes is None:
            fail(
                "labels",
                labels,
                "labels given but the oracle is unconditional (build it with conditional=True)",
            )
        return check_labels(labels, batch, self.num_classes, null_class=True, note=" (unconditional)")

    def __repr__(self) -> str:
        return f"GaussianMixtureOracle({self.mixture!r}, {self.schedule!r}, num_classes={self.num_classes})"


def _rotated_cov(std_major: float, std_minor: float, degrees: float) -> torch.Tensor:
    a = math.radians(degrees)
    R = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    return R @ torch.diag(torch.tensor([std_major**2, std_minor**2], dtype=torch.float64)) @ R.T


def _as_float64(name: str, value) -> torch.Tensor:
    try:
        v = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        fail(name, value, "expected a tensor or nested list of numbers")
    if v.is_complex() or v.dtype == torch.bool:
        fail(name, v, "expected real numbers")
    v = v.detach().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(v).all():
        fail(name, v, "every entry must be finite")
    return v
