r"""Parameterizations: the one place that converts between ε, x̂₀, v, the score and the flow velocity.

Two forward paths, both with x₀ the data and ε ~ N(0, I):

    VP (discrete time, ``schedule.alpha_bar[t]``):   x_t = a x₀ + σ ε,      a = √ᾱ, σ = √(1−ᾱ)
    linear / rectified flow (t ∈ [0, 1], 1 = noise):  x_t = (1−t) x₀ + t ε,  velocity u = ε − x₀

    v-prediction (Salimans & Ho 2022):  v = a ε − σ x₀        score:  ∇log p_t(x_t) = −E[ε | x_t] / σ

The paths are one path in different coordinates: a VP state at ᾱ is the linear-path state at
t = σ/(a+σ) scaled by (a+σ), i.e. x_lin = x_vp/(a+σ) = (1−t) x₀ + t ε with the *same* x₀ and ε. So an
ε-prediction at a VP point and a velocity at the corresponding flow point carry the same x̂₀ and ε.

Every ``alpha_bar`` / ``t`` is a number or a floating tensor: shape (B,) means one value per sample
(reshaped to (B, 1, …, 1)); any other shape must broadcast to x. Each function refuses exactly the
values where its equation divides by zero (e.g. x̂₀ from ε at ᾱ = 0) and says so.

The oracles at the bottom give the exact score and velocity of a :class:`~.oracle.GaussianMixture`,
computed in float64 and returned in the input's dtype.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from ._checks import check_image_batch, fail
from .oracle import GaussianMixture

# --- argument handling --------------------------------------------------------------------------------------


def _unit(name: str, value, *, low_open: bool = False, high_open: bool = False, why: str = ""):
    """``value`` (a number or a floating tensor) checked to lie in [0, 1], the ends excluded as asked."""
    interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            allowed = (
                "expected a number or a floating-point tensor (timestep indices go through alpha_bar[t])"
            )
            fail(name, value, allowed)
        bad = ~torch.isfinite(value) | (value < 0) | (value > 1)
        bad = bad | (value == 0) if low_open else bad
        bad = bad | (value == 1) if high_open else bad
        if bad.any():
            lo, hi = float(value.min()), float(value.max())
            fail(f"{name} (min {lo:.6g}, max {hi:.6g})", value, f"every value must lie in {interval}{why}")
        return value
    if isinstance(value, bool) or not isinstance(value, Real):
        fail(name, value, "expected a number or a floating-point tensor")
    v = float(value)
    if not (math.isfinite(v) and 0.0 <= v <= 1.0) or (low_open and v == 0.0) or (high_open and v == 1.0):
        fail(name, value, f"must lie in {interval}{why}")
    return v


def _broadcast(name: str, value, like: torch.Tensor, **ends):
    """``value`` checked by :func:`_unit` and shaped to broadcast against ``like``: a float stays a float;
    a tensor of shape (B,) becomes (B, 1, …, 1), in float64 (float32 on MPS) on like's device."""
    value = _unit(name, value, **ends)
    if not isinstance(value, torch.Tensor):
        return value
    B = like.shape[0]
    if value.ndim == 1 and value.shape[0] in (1, B):
        value = value.reshape(-1, *([1] * (like.ndim - 1)))
    elif (
        value.ndim == 1
        or value.ndim > like.ndim
        or any(n not in (1, m) for n, m in zip(value.shape[::-1], like.shape[::-1]))
    ):
        allowed = f"expected a number, shape ({B},) (one per sample) or a shape that broadcasts to "
        fail(name, value, allowed + str(tuple(like.shape)))
    dtype = torch.float32 if like.device.type == "mps" else torch.float64
    return value.to(device=like.device, dtype=dtype)


def _sqrt(v):
    return v.sqrt() if isinstance(v, torch.Tensor) else math.sqrt(v)


def _cast(c, like: torch.Tensor):
    return c.to(like.dtype) if isinstance(c, torch.Tensor) else c


def _a_sigma(alpha_bar, like: torch.Tensor, **ends):
    """(a, σ) = (√ᾱ, √(1−ᾱ)) shaped for ``like`` and in its dtype (computed in float64)."""
    ab = _broadcast("alpha_bar", alpha_bar, like, **ends)
    return _cast(_sqrt(ab), like), _cast(_sqrt(1.0 - ab), like)


def _tensors(first: str, x, *others):
    """Check ``x`` (batch first) and that each (name, tensor) in ``others`` has x's shape."""
    x = check_image_batch(first, x)
    for name, y in others:
        check_image_batch(name, y)
        if y.shape != x.shape:
            fail(name, y, f"expected the shape of {first}, {tuple(x.shape)}")
    return x


_NEEDS_SIGNAL = ": at ᾱ = 0 x_t is pure noise and says nothing about x₀"
_NEEDS_NOISE = ": at ᾱ = 1 x_t is the data and holds no noise"

# --- VP: ε, x̂₀, v, score -----------------------------------------------------------------------------------


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar) -> torch.Tensor:
    """x̂₀ = (x_t − σ ε) / a, the x₀ that ε explains. ᾱ ∈ (0, 1]."""
    _tensors("x_t", x_t, ("eps", eps))
    a, s = _a_sigma(alpha_bar, x_t, low_open=True, why=_NEEDS_SIGNAL)
    return (x_t - s * eps) / a


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar) -> torch.Tensor:
    """ε = (x_t − a x₀) / σ, the noise that turns x₀ into x_t. ᾱ ∈ [0, 1)."""
    _tensors("x_t", x_t, ("x0", x0))
    a, s = _a_sigma(alpha_bar, x_t, high_open=True, why=_NEEDS_NOISE)
    return (x_t - a * x0) / s


def v_from_eps_x0(eps: torch.Tensor, x0: torch.Tensor, alpha_bar) -> torch.Tensor:
    """v = a ε − σ x₀ (= dx_t/dφ for a = cos φ, σ = sin φ). ᾱ ∈ [0, 1]."""
    _tensors("eps", eps, ("x0", x0))
    a, s = _a_sigma(alpha_bar, eps)
    return a * eps - s * x0


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar) -> torch.Tensor:
    """ε = σ x_t + a v (since a² + σ² = 1). ᾱ ∈ [0, 1]."""
    _tensors("x_t", x_t, ("v", v))
    a, s = _a_sigma(alpha_bar, x_t)
    return s * x_t + a * v


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar) -> torch.Tensor:
    """x̂₀ = a x_t − σ v. ᾱ ∈ [0, 1]."""
    _tensors("x_t", x_t, ("v", v))
    a, s = _a_sigma(alpha_bar, x_t)
    return a * x_t - s * v


def score_from_eps(eps: torch.Tensor, alpha_bar) -> torch.Tensor:
    """∇log p_t(x_t) = −ε / σ (Tweedie: the exact ε* gives the exact score). ᾱ ∈ [0, 1)."""
    _tensors("eps", eps)
    _, s = _a_sigma(alpha_bar, eps, high_open=True, why=_NEEDS_NOISE)
    return -eps / s


def eps_from_score(score: torch.Tensor, alpha_bar) -> torch.Tensor:
    """ε = −σ ∇log p_t(x_t). ᾱ ∈ [0, 1]."""
    _tensors("score", score)
    _, s = _a_sigma(alpha_bar, score)
    return -s * score


# --- the linear (rectified-flow) path -----------------------------------------------------------------------


def flow_velocity_from_eps_x0(eps: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """u = ε − x₀ = d/dt [(1−t) x₀ + t ε]."""
    _tensors("eps", eps, ("x0", x0))
    return eps - x0


def flow_x0_from_velocity(x_t: torch.Tensor, u: torch.Tensor, t) -> torch.Tensor:
    """x̂₀ = x_t − t u. t ∈ [0, 1]."""
    _tensors("x_t", x_t, ("u", u))
    return x_t - _cast(_broadcast("t", t, x_t), x_t) * u


def flow_eps_from_velocity(x_t: torch.Tensor, u: torch.Tensor, t) -> torch.Tensor:
    """ε̂ = x_t + (1−t) u. t ∈ [0, 1]."""
    _tensors("x_t", x_t, ("u", u))
    return x_t + _cast(1.0 - _broadcast("t", t, x_t), x_t) * u


def flow_time_from_alpha_bar(alpha_bar):
    """t = σ / (a + σ): the linear-path time of a VP state at ᾱ (ᾱ = 1 → 0, ᾱ = 0 → 1). ᾱ ∈ [0, 1].

    Returns a float for a number, else a tensor of alpha_bar's shape and dtype.
    """
    ab = _unit("alpha_bar", alpha_bar)
    a, s = _sqrt(ab), _sqrt(1.0 - ab)
    return s / (a + s)


def alpha_bar_from_flow_time(t):
    """ᾱ = (1−t)² / ((1−t)² + t²), the inverse of :func:`flow_time_from_alpha_bar` (a/σ = (1−t)/t).

    t ∈ [0, 1]; a float for a number, else a tensor of t's shape and dtype.
    """
    t = _unit("t", t)
    return (1.0 - t) ** 2 / ((1.0 - t) ** 2 + t**2)


def vp_to_flow(x_vp: torch.Tensor, alpha_bar):
    """(x_lin, t) = (x_vp / (a + σ), σ / (a + σ)): a x₀ + σ ε becomes (1−t) x₀ + t ε. ᾱ ∈ [0, 1]."""
    _tensors("x_vp", x_vp)
    a, s = _a_sigma(alpha_bar, x_vp)
    return x_vp / (a + s), flow_time_from_alpha_bar(alpha_bar)


def flow_to_vp(x_lin: torch.Tensor, t):
    """(x_vp, ᾱ) = (x_lin (a + σ), (1−t)²/((1−t)² + t²)), where a + σ = 1/√((1−t)² + t²). t ∈ [0, 1]."""
    _tensors("x_lin", x_lin)
    tt = _broadcast("t", t, x_lin)
    return x_lin / _cast(_sqrt((1.0 - tt) ** 2 + tt**2), x_lin), alpha_bar_from_flow_time(t)


def flow_velocity_from_vp_eps(x_vp: torch.Tensor, eps: torch.Tensor, alpha_bar) -> torch.Tensor:
    """u = ε − x̂₀ with x̂₀ = (x_vp − σ ε)/a: the linear-path velocity at (vp_to_flow(x_vp, ᾱ)), given an
    ε-prediction at the VP point (both carry the same ε and x̂₀). ᾱ ∈ (0, 1]."""
    _tensors("x_vp", x_vp, ("eps", eps))
    return eps - x0_from_eps(x_vp, eps, alpha_bar)


# --- exact fields of a Gaussian mixture ---------------------------------------------------------------------


def mixture_vp_score(mixture: GaussianMixture, x: torch.Tensor, alpha_bar) -> torch.Tensor:
    """∇log p_t(x) of the VP marginal (the mixture noised by ᾱ): −Σ_k r_k C_k⁻¹ (x − a μ_k), C_k = ᾱΣ_k + σ²I.

    x (N, D); ᾱ ∈ [0, 1], a number or one per sample (N,).
    """
    return _per_value(mixture, x, "alpha_bar", alpha_bar, lambda m, x, ab: m.noised(ab).score(x))


def mixture_flow_velocity(mixture: GaussianMixture, x: torch.Tensor, t) -> torch.Tensor:
    r"""The exact marginal velocity u*(x, t) = E[ε − x₀ | x_t = x] of x_t = (1−t) x₀ + t ε, x₀ ~ mixture.

    x_t is the mixture Σ_k w_k N((1−t) μ_k, C_k), C_k = (1−t)² Σ_k + t² I. Within component k, x₀, ε and x_t
    are jointly Gaussian with Cov(ε, x_t) = t I and Cov(x₀, x_t) = (1−t) Σ_k, so with d_k = x − (1−t) μ_k

        E[ε | x, k] = t C_k⁻¹ d_k,      E[x₀ | x, k] = μ_k + (1−t) Σ_k C_k⁻¹ d_k,
        u*(x, t)   = Σ_k r_k(x) [ (t I − (1−t) Σ_k) C_k⁻¹ d_k − μ_k ],   r_k the responsibilities of p_t.

    Summed over k this is u* = −(x + t ∇log p_t(x)) / (1−t) (E[ε|x] = −t ∇log p_t, E[x₀|x] =
    (x + t² ∇log p_t)/(1−t)), but the per-component form has no 1/(1−t) and holds on all of t ∈ [0, 1]:
    t = 0 gives u* = −x (ε is independent of x₀ = x), t = 1 gives u* = x − E[x₀] (x_1 = ε says nothing
    about x₀). x (N, D); t a number or one per sample (N,).
    """

    def velocity(m: GaussianMixture, x: torch.Tensor, t: float) -> torch.Tensor:
        eye = torch.eye(m.D, dtype=torch.float64)
        path = GaussianMixture((1 - t) * m.means, (1 - t) ** 2 * m.covs + t**2 * eye, m.weights)
        mu, gain = m.means.to(x.device), (t * eye - (1 - t) * m.covs).to(x.device)  # (K, D), (K, D, D)
        d = (x[:, None, :] - (1 - t) * mu).unsqueeze(-1)  # d_k, (N, K, D, 1)
        per_k = (gain @ torch.linalg.solve(path.covs.to(x.device), d)).squeeze(-1) - mu
        return torch.einsum("nk,nkd->nd", path.responsibilities(x), per_k)

    return _per_value(mixture, x, "t", t, velocity)


class MixtureVelocity:
    """The exact velocity field of a mixture as a velocity model: ``MixtureVelocity(mixture)(x, t)`` is
    :func:`mixture_flow_velocity` with t a number or a floating tensor (N,), so the flow samplers run on it
    with zero model error (as ``GaussianMixtureOracle`` is the exact ε-model for the VP samplers)."""

    num_classes = None
    velocity_model = True

    def __init__(self, mixture: GaussianMixture):
        if not isinstance(mixture, GaussianMixture):
            fail("mixture", type(mixture).__name__, "expected a GaussianMixture")
        self.mixture = mixture

    def __call__(self, x: torch.Tensor, t, labels=None) -> torch.Tensor:
        if labels is not None:
            fail("labels", labels, "the mixture's velocity is unconditional; pass labels=None")
        return mixture_flow_velocity(self.mixture, x, t)

    def __repr__(self) -> str:
        return f"MixtureVelocity({self.mixture!r})"


def _per_value(mixture, x, name, value, fn) -> torch.Tensor:
    """fn(mixture, x_group, float value) over the groups of samples sharing a value, in float64."""
    if not isinstance(mixture, GaussianMixture):
        fail("mixture", type(mixture).__name__, "expected a GaussianMixture")
    x = check_image_batch("x", x, ndim=2)
    if x.shape[1] != mixture.D:
        fail("x", x, f"expected shape (N, {mixture.D}) for this {mixture.D}-D mixture")
    values = _broadcast(name, value, x[:, :1])  # a float, or (N, 1) / (1, 1) / () tensor
    if isinstance(values, torch.Tensor):
        values = values.to("cpu", torch.float64).expand(x.shape[0], 1).reshape(-1)
    else:
        values = torch.full((x.shape[0],), values, dtype=torch.float64)
    device = torch.device("cpu") if x.device.type == "mps" else x.device  # MPS has no float64
    xd = x.to(device=device, dtype=torch.float64)
    out = torch.empty_like(xd)
    for v in values.unique().tolist():
        rows = (values == v).to(device)
        out[rows] = fn(mixture, xd[rows], v)
    return out.to(device=x.device, dtype=x.dtype)
