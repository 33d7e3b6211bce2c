r"""Interpolating between noise latents: linear and spherical.

For two latents z_0, z_1 (one per sample, over all non-batch dimensions) and α ∈ [0, 1]:

    lerp(z_0, z_1, α)  = (1 − α) z_0 + α z_1
    slerp(z_0, z_1, α) = sin((1 − α) θ) / sin θ · z_0 + sin(α θ) / sin θ · z_1,
                         cos θ = ⟨z_0, z_1⟩ / (‖z_0‖ ‖z_1‖).

Why slerp for Gaussian latents: a draw z ~ N(0, I_D) has ‖z‖ ≈ √D, and two independent draws are nearly
orthogonal (cos θ ≈ 0 ± 1/√D). The lerp midpoint (z_0 + z_1)/2 then has norm ≈ √(D/2), i.e. ≈ 0.71 √D: a
point far inside the shell where N(0, I) puts its mass (the norm's spread is only ≈ 0.71 in absolute
terms), so a sampler started there sees an input that is much "too quiet". slerp moves along the great
circle and keeps the norm when ‖z_0‖ = ‖z_1‖: ‖slerp‖² = ‖z‖² (sin²((1−α)θ) + sin²(αθ) + 2 sin((1−α)θ)
sin(αθ) cos θ) / sin² θ = ‖z‖², the identity sin²a + sin²b + 2 sin a sin b cos(a+b) = sin²(a+b).

``alpha`` is a number, or a 1-D tensor of N values (one α per output sample). ``z0`` and ``z1`` are
(B, …) with B = N or B = 1 (a single pair broadcast along a path of N α's).
"""

from __future__ import annotations

import torch

from ._checks import check_image_batch, fail

METHODS = ("slerp", "lerp")

# Below this sin θ the two directions count as parallel (slerp → lerp) or antipodal (refused).
_SIN_EPS = 1e-6


def _prepare(z0, z1, alpha) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check the inputs; return z0, z1 broadcast to (N, …) and α as a float64 tensor of shape (N,)."""
    z0 = check_image_batch("z0", z0)
    z1 = check_image_batch("z1", z1)
    if z0.shape[1:] != z1.shape[1:]:
        fail("z1", z1, f"expected the per-sample shape of z0, {tuple(z0.shape[1:])}")
    if isinstance(alpha, torch.Tensor):
        if alpha.ndim > 1 or not (alpha.is_floating_point() or alpha.dtype in (torch.int64, torch.int32)):
            fail("alpha", alpha, "expected a number in [0, 1] or a 1-D tensor of them")
        a = alpha.detach().to("cpu", torch.float64).reshape(-1)
    elif isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        a = torch.tensor([float(alpha)], dtype=torch.float64)
    else:
        fail("alpha", alpha, "expected a number in [0, 1] or a 1-D tensor of them")
    if a.numel() == 0:
        fail("alpha", alpha, "expected at least one value")
    bad = ~torch.isfinite(a) | (a < 0) | (a > 1)
    if bad.any():
        value = float(a[bad.nonzero()[0]])
        fail("alpha", value, "interpolation is defined for α in [0, 1] (α = 0 gives z0, α = 1 gives z1)")
    n = max(z0.shape[0], z1.shape[0], a.numel())
    for name, size in (("z0", z0.shape[0]), ("z1", z1.shape[0]), ("alpha", a.numel())):
        if size not in (1, n):
            fail(name, f"{size} entries", f"batch sizes must be equal or 1 (z0: {z0.shape[0]}, "
                 f"z1: {z1.shape[0]}, alpha: {a.numel()})")  # fmt: skip
    z0 = z0.expand(n, *z0.shape[1:])
    z1 = z1.expand(n, *z1.shape[1:])
    return z0, z1, a.expand(n)


def _per_sample(coef: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return coef.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def lerp(z0: torch.Tensor, z1: torch.Tensor, alpha) -> torch.Tensor:
    """(1 − α) z_0 + α z_1, per sample (see the module docstring for shapes)."""
    z0, z1, a = _prepare(z0, z1, alpha)
    return _per_sample(1.0 - a, z0) * z0 + _per_sample(a, z0) * z1


def angle(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    """θ = arccos(⟨z_0, z_1⟩ / (‖z_0‖ ‖z_1‖)) per sample, over all non-batch dimensions (float64, (B,))."""
    z0, z1, _ = _prepare(z0, z1, 0.0)
    a, b = z0.flatten(1).double(), z1.flatten(1).double()
    norms = a.norm(dim=1) * b.norm(dim=1)
    if (norms == 0).any():
        fail("z0/z1", "a zero vector", "the angle needs non-zero latents")
    return torch.arccos(((a * b).sum(1) / norms).clamp(-1.0, 1.0))


def slerp(z0: torch.Tensor, z1: torch.Tensor, alpha) -> torch.Tensor:
    """Spherical interpolation sin((1−α)θ)/sin θ · z_0 + sin(αθ)/sin θ · z_1, θ per sample.

    Falls back to lerp where sin θ < 1e-6 with θ ≈ 0 (parallel latents: the two formulas agree there);
    refuses antipodal latents (θ ≈ π), where the great circle is not unique. Computed in float64 and returned
    in z0's dtype.
    """
    z0, z1, a = _prepare(z0, z1, alpha)
    x, y = z0.flatten(1).double(), z1.flatten(1).double()
    norms = x.norm(dim=1) * y.norm(dim=1)
    if (norms == 0).any():
        fail("z0/z1", "a zero vector", "slerp needs non-zero latents (the angle is undefined)")
    cos = ((x * y).sum(1) / norms).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    sin = torch.sin(theta)
    parallel = sin < _SIN_EPS
    if (parallel & (cos < 0)).any():
        fail("z1", z1, "z0 and z1 point in opposite directions (θ = π): the great circle between them is "
             "not unique; perturb one of them or use lerp")  # fmt: skip
    a = a.to(x.device)
    safe_sin = torch.where(parallel, torch.ones_like(sin), sin)
    w0 = torch.where(parallel, 1.0 - a, torch.sin((1.0 - a) * theta) / safe_sin)
    w1 = torch.where(parallel, a, torch.sin(a * theta) / safe_sin)
    out = w0[:, None] * x + w1[:, None] * y
    return out.reshape(z0.shape).to(z0.dtype)


def interpolate(z0: torch.Tensor, z1: torch.Tensor, alpha, method: str = "slerp") -> torch.Tensor:
    """``slerp`` or ``lerp`` by name."""
    if method not in METHODS:
        fail("method", method, f"choose one of {', '.join(map(repr, METHODS))}")
    return slerp(z0, z1, alpha) if method == "slerp" else lerp(z0, z1, alpha)


def relative_norm(z: torch.Tensor) -> torch.Tensor:
    """‖z‖ / √D per sample (D = number of non-batch elements): ≈ 1 for a draw from N(0, I_D)."""
    z = check_image_batch("z", z)
    flat = z.flatten(1).double()
    return flat.norm(dim=1) / flat.shape[1] ** 0.5
