r"""Timestep and class embeddings shared by the denoisers, plus the input checks every model runs.

Sinusoidal timestep embedding (Vaswani et al. 2017; Ho et al. 2020), for an embedding of even size d:

    ω_i = P^(−i / (d/2)),                 i = 0, …, d/2 − 1,   P = ``max_period`` (10 000)
    emb(t) = [sin(t ω_0), …, sin(t ω_{d/2−1}), cos(t ω_0), …, cos(t ω_{d/2−1})]

Low i are fast waves that tell neighbouring steps apart; high i are slow waves that say roughly where in
0..T−1 the step lies. An odd d gets one zero column at the end.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_labels, check_timesteps_tensor, fail


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """emb(t) of shape (B, dim), float32, as in the module docstring."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


class TimeEmbedding(nn.Module):
    """Sinusoid of size ``freq_dim`` followed by a two-layer MLP: Linear → SiLU → Linear, output ``dim``."""

    def __init__(self, freq_dim: int, dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))


class ClassEmbedding(nn.Module):
    """A learned vector per class plus one learned vector for the null class (index ``num_classes``)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.table(labels)


def check_num_classes(num_classes) -> int | None:
    """None (unconditional) or an integer ≥ 1."""
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        fail("num_classes", num_classes, "expected None (unconditional) or an integer ≥ 1")
    return num_classes


def check_model_inputs(
    x: torch.Tensor, t, labels, num_classes: int | None, *, ndim: int, continuous: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate (x_t, t, labels) against the ε-model contract; return t and labels as LongTensors (B,).

    ``continuous`` (a network's ``continuous_time`` attribute, set by a wrapper such as ``FlowVelocity``)
    admits real-valued times, returned as float32: the sinusoidal embedding takes any real t.

    ``labels=None`` on a conditional model means "unconditional" and becomes the null class
    ``num_classes`` for every row; an unconditional model (``num_classes=None``) accepts only ``labels=None``.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != ndim:
        fail("x", x, f"expected a floating-point tensor with {ndim} dimensions (batch first)")
    batch = x.shape[0]
    t = check_timesteps_tensor("t", t, None, batch, device=x.device, continuous=continuous)

    if num_classes is None:
        if labels is not None:
            fail("labels", labels, "this model is unconditional (num_classes=None); pass labels=None")
        return t, None
    if labels is None:
        return t, torch.full((batch,), num_classes, dtype=torch.long, device=x.device)
    return t, check_labels(labels, batch, num_classes, device=x.device, null_class=True)
