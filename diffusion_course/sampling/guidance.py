r"""Classifier-free guidance (Ho & Salimans, 2022) as an ε-model wrapper, so every sampler works unchanged.

With ε_c = ε_θ(x_t, t, c) and ε_u = ε_θ(x_t, t, ∅) (the learned null class ∅ = index ``num_classes``):

    ε̃ = ε_u + s (ε_c − ε_u)                    (convention "s", the course default; diffusers' guidance_scale)
      = (1 + w) ε_c − w ε_u,   w = s − 1       (convention "w", Ho & Salimans 2022, Eq. 6)

the ε of the tilted density p_t(x) p_t(c | x)^s. s = 1 is the conditional model, s = 0 the unconditional
one; any finite s is allowed (s < 0 guides away from the class). Guidance rescale (Lin et al. 2023, 3.4),
applied to ε̃ itself as diffusers' ``rescale_noise_cfg`` does, with σ(·) the per-sample std:

    ε̂ = ε̃ · (φ σ(ε_c)/σ(ε̃) + 1 − φ),   φ ∈ [0, 1].

:class:`CFG` gets both predictions from one network call on a batch of 2B. docs/SAMPLING.md, "Guidance",
says what each choice means and what the tests pin.
"""

from __future__ import annotations

import torch

from .._checks import check_choice, check_float, check_labels, check_timesteps_tensor, fail
from ..models.flow import is_velocity_model

CONVENTIONS = ("s", "w")


def to_s(scale: float, convention: str = "s") -> float:
    """The scale in the course's convention: s itself for ``"s"``, s = 1 + w for Ho & Salimans' ``"w"``."""
    check_choice("convention", convention, CONVENTIONS)
    scale = check_float("scale", scale)
    return scale if convention == "s" else 1.0 + scale


def guided_eps(
    eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float, convention: str = "s"
) -> torch.Tensor:
    """ε̃ = ε_u + s (ε_c − ε_u); with ``convention="w"``: ε̃ = (1 + w) ε_c − w ε_u (the same for s = 1 + w)."""
    s = to_s(scale, convention)
    _check_pair("eps_cond", eps_cond, "eps_uncond", eps_uncond)
    return eps_uncond + s * (eps_cond - eps_uncond)


def rescale_guided_eps(eps_guided: torch.Tensor, eps_cond: torch.Tensor, rescale: float) -> torch.Tensor:
    """ε̂ = ε̃ · (φ σ(ε_c)/σ(ε̃) + 1 − φ), σ the per-sample std over all non-batch dims (Lin et al. 2023, 3.4).

    φ = ``rescale`` ∈ [0, 1]. Where σ(ε̃) = 0 the factor is 1 (a constant prediction has no spread to match).
    """
    phi = check_float("rescale", rescale, low=0.0, high=1.0)
    _check_pair("eps_guided", eps_guided, "eps_cond", eps_cond)
    if eps_guided.ndim < 2:
        fail("eps_guided", eps_guided, "expected a batch (B, …) with at least one dimension per sample")
    if phi == 0.0:
        return eps_guided
    dims = tuple(range(1, eps_guided.ndim))
    std_guided = eps_guided.std(dim=dims, correction=0, keepdim=True)
    std_cond = eps_cond.std(dim=dims, correction=0, keepdim=True)
    ratio = torch.where(std_guided > 0, std_cond / std_guided, torch.ones_like(std_guided))
    return eps_guided * (phi * ratio + (1.0 - phi))


class CFG:
    """A guided ε-model: ``cfg(x_t, t, labels)`` = ε̃ (module docstring) from ONE call of ``model`` on a
    batch of 2B, ``[x_t; x_t]``, ``[t; t]``, ``[labels; K·1]``: ``nfe_per_call = 2`` evaluations per sample.

    ``model`` is a conditional ε-model with ``num_classes = K`` (K is its null class); ``scale`` is s or, with
    ``convention="w"``, Ho & Salimans' w; ``rescale`` is φ (0: off). ``labels`` lie in 0..K−1.
    """

    nfe_per_call = 2

    def __init__(self, model, scale: float, *, convention: str = "s", rescale: float = 0.0):
        if not callable(model):
            fail("model", type(model).__name__, "expected a conditional ε-model model(x_t, t, labels)")
        num_classes = getattr(model, "num_classes", None)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            allowed = (
                "classifier-free guidance needs a conditional model with a null class: num_classes=K ≥ 1, "
                "class labels 0..K−1 and label K the learned unconditional class (trained with p_uncond > 0)"
            )
            fail("model", f"{type(model).__name__} with num_classes={num_classes!r}", allowed)
        self.model = model
        self.num_classes = num_classes
        self.null_class = num_classes
        self.convention = check_choice("convention", convention, CONVENTIONS)
        self.scale = check_float("scale", scale)
        self.s = to_s(self.scale, convention)
        self.rescale = check_float("rescale", rescale, low=0.0, high=1.0)

    @property
    def w(self) -> float:
        """Ho & Salimans' guidance weight, w = s − 1."""
        return self.s - 1.0

    def __call__(self, x_t: torch.Tensor, t, labels: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(x_t, torch.Tensor) or x_t.ndim < 1:
            fail("x_t", x_t, "expected a torch.Tensor with a batch dimension")
        batch = x_t.shape[0]
        labels = self._check_labels(labels, batch, x_t.device)
        continuous = is_velocity_model(self.model)  # a flow model takes real times t ∈ [0, 1]
        t = check_timesteps_tensor("t", t, None, batch, device=x_t.device, continuous=continuous)
        null = torch.full_like(labels, self.null_class)
        eps = self.model(torch.cat([x_t, x_t]), torch.cat([t, t]), labels=torch.cat([labels, null]))
        if not isinstance(eps, torch.Tensor) or eps.shape != (2 * batch, *x_t.shape[1:]):
            shape = tuple(eps.shape) if isinstance(eps, torch.Tensor) else type(eps).__name__
            fail("model output", shape, f"expected shape {(2 * batch, *x_t.shape[1:])} for the 2B batch")
        eps_cond, eps_uncond = eps[:batch], eps[batch:]
        out = guided_eps(eps_cond, eps_uncond, self.s)
        if self.rescale > 0:
            out = rescale_guided_eps(out, eps_cond, self.rescale)
        return out

    def _check_labels(self, labels, batch: int, device) -> torch.Tensor:
        K = self.num_classes
        if labels is None:
            allowed = (
                "guidance needs one class label per sample (a LongTensor (B,) in "
                f"0..{K - 1}); for unconditional samples call the model itself with labels=None"
            )
            fail("labels", None, allowed)
        return check_labels(
            labels, batch, K, device=device, note=f"; {K} is the null class, which guidance adds itself"
        )

    def __repr__(self) -> str:
        name = type(self.model).__name__
        scale = f"s={self.s:g}" if self.convention == "s" else f"w={self.scale:g} (s={self.s:g})"
        phi = f", rescale={self.rescale:g}" if self.rescale else ""
        return f"CFG({name}, {scale}{phi}, num_classes={self.num_classes})"


def _check_pair(name_a: str, a, name_b: str, b) -> None:
    for name, v in ((name_a, a), (name_b, b)):
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            shown = v if isinstance(v, torch.Tensor) else type(v).__name__
            fail(name, shown, "expected a floating-point torch.Tensor")
    if a.shape != b.shape:
        fail(name_b, b, f"expected the shape of {name_a}, {tuple(a.shape)}")
