r"""An ε-model for low-dimensional data (the 2-D toy sets).

e = MLP_t(sinusoid(t)) [+ E_class[y]]
h_0 = W_in x
h_{k+1} = h_k + Linear(SiLU(Linear(h_k + e)))      k = 0, …, depth − 1   (residual, e added every layer)
ε̂ = W_out SiLU(h_depth)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, fail
from .embeddings import ClassEmbedding, TimeEmbedding, check_model_inputs, check_num_classes


class MLP(nn.Module):
    """ε̂ = MLP(x_t, t, labels) for x of shape (B, dim)."""

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 128,
        depth: int = 3,
        time_dim: int = 32,
        num_classes: int | None = None,
    ):
        super().__init__()
        dim = check_int("dim", dim, low=1)
        hidden = check_int("hidden", hidden, low=1)
        depth = check_int("depth", depth, low=1)
        time_dim = check_int("time_dim", time_dim, low=2)
        num_classes = check_num_classes(num_classes)
        self.config = dict(dim=dim, hidden=hidden, depth=depth, time_dim=time_dim, num_classes=num_classes)
        self.num_classes = num_classes

        self.time_embedding = TimeEmbedding(time_dim, hidden)
        self.class_embedding = ClassEmbedding(num_classes, hidden) if num_classes is not None else None
        self.input = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            [
                nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
                for _ in range(depth)
            ]
        )
        self.output = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        t, labels = check_model_inputs(
            x, t, labels, self.num_classes, ndim=2, continuous=getattr(self, "continuous_time", False)
        )
        if x.shape[1] != self.config["dim"]:
            fail("x", x, f"expected shape (B, {self.config['dim']})")
        emb = self.time_embedding(t)
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(labels)
        h = self.input(x)
        for block in self.blocks:
            h = h + block(h + emb)
        return self.output(F.silu(h))
