"""The course's first denoiser: a two-level U-Net with the timestep injected at the bottleneck.

    x (C, 28, 28) ─enc1─► h1 (c, 28, 28) ──────────────────────────────┐ skip
                          pool ─enc2─► h2 (2c, 14, 14) ──────────┐ skip  │
                                       pool ─mid─► (2c, 7, 7) + time(t)  │
                                       up ─ cat h2 ─dec2─► (c, 14, 14)   │
                                                   up ─ cat h1 ─dec1─► (c, 28, 28) ─out─► ε̂ (C, 28, 28)

Any H, W divisible by 4 works; MNIST's 28 → 14 → 7 needs no padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, fail
from .embeddings import TimeEmbedding, check_model_inputs


def conv_block(in_channels: int, out_channels: int, groups: int = 8) -> nn.Sequential:
    """(Conv3×3 → GroupNorm → SiLU) twice."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.GroupNorm(groups, out_channels),
        nn.SiLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.GroupNorm(groups, out_channels),
        nn.SiLU(),
    )


class TinyUNet(nn.Module):
    """ε̂ = TinyUNet(x_t, t): two down-sampling levels, skip connections, time embedding at the bottleneck."""

    num_classes = None  # unconditional

    def __init__(self, in_channels: int = 1, base_channels: int = 32, time_dim: int = 128):
        super().__init__()
        in_channels = check_int("in_channels", in_channels, low=1)
        base_channels = check_int("base_channels", base_channels, low=8)
        if base_channels % 8:
            fail("base_channels", base_channels, "expected a multiple of 8 (GroupNorm uses 8 groups)")
        time_dim = check_int("time_dim", time_dim, low=2)
        self.config = dict(in_channels=in_channels, base_channels=base_channels, time_dim=time_dim)
        c = base_channels

        self.time_embedding = TimeEmbedding(time_dim, time_dim)
        self.enc1 = conv_block(in_channels, c)  # 28×28
        self.enc2 = conv_block(c, 2 * c)  # 14×14
        self.mid_in = conv_block(2 * c, 2 * c)  # 7×7
        self.time_to_mid = nn.Linear(time_dim, 2 * c)
        self.mid_out = conv_block(2 * c, 2 * c)
        self.dec2 = conv_block(2 * c + 2 * c, c)  # 14×14, after concatenating h2
        self.dec1 = conv_block(c + c, c)  # 28×28, after concatenating h1
        self.out = nn.Conv2d(c, in_channels, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        t, _ = check_model_inputs(
            x, t, labels, None, ndim=4, continuous=getattr(self, "continuous_time", False)
        )
        if x.shape[1] != self.config["in_channels"] or x.shape[-2] % 4 or x.shape[-1] % 4:
            fail("x", x, f"expected {self.config['in_channels']} channels and H, W divisible by 4")
        h1 = self.enc1(x)
        h2 = self.enc2(F.avg_pool2d(h1, 2))
        h = self.mid_in(F.avg_pool2d(h2, 2))
        h = h + self.time_to_mid(self.time_embedding(t))[:, :, None, None]
        h = self.mid_out(h)
        h = self.dec2(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), h2], dim=1))
        h = self.dec1(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), h1], dim=1))
        return self.out(h)
