r"""A DDPM-style U-Net (Ho et al. 2020; Nichol & Dhariwal 2021), sized for 28×28 digits.

Every residual block sees the conditioning vector e = MLP(sinusoid(t)) [+ E_class[y]]:

    h = Conv(SiLU(GN(x)));   h = h + Linear(SiLU(e));   h = Conv(Dropout(SiLU(GN(h))));   out = skip(x) + h

Self-attention (one head per 32 channels) runs at the resolutions in ``attention_resolutions`` and in the
middle. The second conv of each block, each attention output projection and the final conv start at zero,
so the untrained network is a near-identity stack that outputs ε̂ = 0 — training starts from a calm point.

With ``channel_mults=(1, 2, 2)`` the resolutions are 28 → 14 → 7; H and W must be divisible by
2^(len(channel_mults) − 1). A conditional model (``num_classes=K``) has K + 1 class vectors: index K is
the learned null class that ``labels=None`` (and classifier-free guidance's unconditional branch) uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_float, check_int, fail
from .embeddings import ClassEmbedding, TimeEmbedding, check_model_inputs, check_num_classes


def zero_init(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """out = skip(x) + Conv(Dropout(SiLU(GN(Conv(SiLU(GN(x))) + Linear(SiLU(e))))))."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """out = x + W_o · softmax(QKᵀ/√d) V over the H·W positions, with Q, K, V = W_{qkv} · GN(x)."""

    def __init__(self, channels: int, groups: int, head_channels: int = 32):
        super().__init__()
        self.num_heads = max(1, channels // head_channels)
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w).unbind(1)
        # (b, heads, positions, head_channels) for scaled_dot_product_attention
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Block(nn.Module):
    """A ResBlock, optionally followed by self-attention."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, groups: int, attention: bool):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, dropout, groups)
        self.attn = SelfAttention(out_ch, groups) if attention else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.res(x, emb))


class UNet(nn.Module):
    """ε̂ = UNet(x_t, t, labels): residual U-Net with time (and class) conditioning in every block."""

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_resolutions: tuple[int, ...] = (7,),
        num_classes: int | None = None,
        dropout: float = 0.0,
        groups: int = 8,
        image_size: int = 28,
    ):
        super().__init__()
        in_channels = check_int("in_channels", in_channels, low=1)
        base_channels = check_int("base_channels", base_channels, low=1)
        channel_mults = tuple(check_int("channel_mults[i]", m, low=1) for m in channel_mults)
        if not channel_mults:
            fail("channel_mults", channel_mults, "expected at least one level, e.g. (1, 2, 2)")
        num_res_blocks = check_int("num_res_blocks", num_res_blocks, low=1)
        attention_resolutions = tuple(
            check_int("attention_resolutions[i]", r, low=1) for r in attention_resolutions
        )
        num_classes = check_num_classes(num_classes)
        dropout = check_float("dropout", dropout, low=0.0, high=1.0)
        groups = check_int("groups", groups, low=1)
        image_size = check_int("image_size", image_size, low=1)
        for m in channel_mults:
            if (base_channels * m) % groups:
                fail(
                    "groups",
                    groups,
                    f"must divide every level's channels (base_channels × mult = {base_channels * m})",
                )
        if image_size % 2 ** (len(channel_mults) - 1):
            fail(
                "image_size",
                image_size,
                f"must be divisible by 2^(levels − 1) = {2 ** (len(channel_mults) - 1)}",
            )
        self.config = dict(
            in_channels=in_channels,
            base_channels=base_channels,
            channel_mults=channel_mults,
            num_res_blocks=num_res_blocks,
            attention_resolutions=attention_resolutions,
            num_classes=num_classes,
            dropout=dropout,
            groups=groups,
            image_size=image_size,
        )
        self.num_classes = num_classes
        emb_dim = 4 * base_channels

        self.time_embedding = TimeEmbedding(base_channels, emb_dim)
        self.class_embedding = ClassEmbedding(num_classes, emb_dim) if num_classes is not None else None
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        # Encoder: remember every output's channel count; the decoder concatenates them back in reverse order.
        self.down = nn.ModuleList()
        skip_channels = [base_channels]
        ch, res = base_channels, image_size
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(
                    Block(ch, base_channels * mult, emb_dim, dropout, groups, res in attention_resolutions)
                )
                ch = base_channels * mult
                skip_channels.append(ch)
            if level < len(channel_mults) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_channels.append(ch)
                res //= 2

        self.mid = nn.ModuleList(
            [
                Block(ch, ch, emb_dim, dropout, groups, attention=True),
                Block(ch, ch, emb_dim, dropout, groups, False),
            ]
        )

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                out_ch = base_channels * mult
                attention = res in attention_resolutions
                self.up.append(Block(ch + skip_channels.pop(), out_ch, emb_dim, dropout, groups, attention))
                ch = out_ch
            if level > 0:
                self.up.append(
                    nn.Sequential(
                        nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)
                    )
                )
                res *= 2

        self.norm_out = nn.GroupNorm(groups, ch)
        self.conv_out = zero_init(nn.Conv2d(ch, in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        t, labels = check_model_inputs(
            x, t, labels, self.num_classes, ndim=4, continuous=getattr(self, "continuous_time", False)
        )
        size = self.config["image_size"]
        if x.shape[1:] != (self.config["in_channels"], size, size):
            fail("x", x, f"expected shape (B, {self.config['in_channels']}, {size}, {size})")
        emb = self.time_embedding(t)
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(labels)

        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, Block) else layer(h)
            skips.append(h)
        for block in self.mid:
            h = block(h, emb)
        for layer in self.up:
            h = layer(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(layer, Block) else layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))
