r"""A small KL-regularised convolutional autoencoder (Rombach et al. 2022's "KL-f4" shape, sized for MNIST).

The encoder maps an image x (1×28×28 in [−1, 1]) to a diagonal Gaussian q(z|x) = N(μ(x), diag σ²(x)) on a
latent of ``latent_channels`` × 7 × 7 (two stride-2 convolutions: a downsampling factor f = 4); the decoder
maps a latent back to pixels. Sampling q uses the reparameterisation z = μ + σ ⊙ ε, ε ~ N(0, I), so the
gradient reaches μ and σ. The KL term to the prior N(0, I) is, per sample,

    KL(q ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²).

``scaling_factor`` is the number s that latent diffusion multiplies latents by (Stable Diffusion's
``vae.config.scaling_factor``): s = 1 / std(z) over the training latents, so that the diffusion model sees
unit-variance data, which its noise schedule assumes. It is measured after training
(:func:`diffusion_course.latent.measure_scaling_factor`) and stored in the config, hence in the checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_float, check_int, fail

LOGVAR_RANGE = (-30.0, 20.0)  # as diffusers' DiagonalGaussianDistribution: keeps exp(logvar) finite


class ResidualBlock(nn.Module):
    """out = x + Conv(SiLU(GN(Conv(SiLU(GN(x)))))) — no time input: the autoencoder sees clean images."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Autoencoder(nn.Module):
    """q(z|x) = N(μ, σ²) by ``encode``, x̂ = ``decode``(z); 28×28 → ``latent_channels``×7×7 → 28×28.

    Channels ``base_channels`` at 28×28 and 2·``base_channels`` at 14×14 and 7×7, one residual block per
    resolution on each side.
    """

    def __init__(
        self,
        in_channels: int = 1,
        latent_channels: int = 4,
        base_channels: int = 16,
        groups: int = 8,
        image_size: int = 28,
        scaling_factor: float = 1.0,
    ):
        super().__init__()
        in_channels = check_int("in_channels", in_channels, low=1)
        latent_channels = check_int("latent_channels", latent_channels, low=1)
        base_channels = check_int("base_channels", base_channels, low=1)
        groups = check_int("groups", groups, low=1)
        image_size = check_int("image_size", image_size, low=4)
        scaling_factor = check_float("scaling_factor", scaling_factor, low=0.0, low_open=True)
        if base_channels % groups:
            fail("groups", groups, f"must divide base_channels = {base_channels}")
        if image_size % 4:
            fail("image_size", image_size, "must be divisible by 4 (two stride-2 downsamplings)")
        self.config = dict(
            in_channels=in_channels,
            latent_channels=latent_channels,
            base_channels=base_channels,
            groups=groups,
            image_size=image_size,
            scaling_factor=scaling_factor,
        )
        self.scaling_factor = scaling_factor
        c1, c2 = base_channels, 2 * base_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), ResidualBlock(c1, groups),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), ResidualBlock(c2, groups),
            nn.Conv2d(c2, c2, 3, stride=2, padding=1), ResidualBlock(c2, groups),
            nn.GroupNorm(groups, c2), nn.SiLU(), nn.Conv2d(c2, 2 * latent_channels, 3, padding=1),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, c2, 3, padding=1), ResidualBlock(c2, groups),
            nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(c2, c2, 3, padding=1),
            ResidualBlock(c2, groups),
            nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(c2, c1, 3, padding=1),
            ResidualBlock(c1, groups),
            nn.GroupNorm(groups, c1), nn.SiLU(), nn.Conv2d(c1, in_channels, 3, padding=1),
        )  # fmt: skip

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        size = self.config["image_size"] // 4
        return (self.config["latent_channels"], size, size)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) of q(z|x), each (B, latent_channels, H/4, W/4); log σ² clamped to LOGVAR_RANGE."""
        size, channels = self.config["image_size"], self.config["in_channels"]
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1:] != (channels, size, size):
            fail("x", x if not isinstance(x, torch.Tensor) else tuple(x.shape),
                 f"expected images of shape (B, {channels}, {size}, {size})")  # fmt: skip
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x̂ = decoder(z) for unscaled latents z (B, latent_channels, H/4, W/4); no clamp to [−1, 1]."""
        if not isinstance(z, torch.Tensor) or z.ndim != 4 or z.shape[1:] != self.latent_shape:
            fail("z", z if not isinstance(z, torch.Tensor) else tuple(z.shape),
                 f"expected latents of shape (B, {', '.join(map(str, self.latent_shape))})")  # fmt: skip
        return self.decoder(z)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x̂, μ, log σ²): the reconstruction of a reparameterised sample z = μ + σ ε of q(z|x)."""
        mean, logvar = self.encode(x)
        return self.decode(reparameterize(mean, logvar, generator)), mean, logvar


def reparameterize(
    mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """z = μ + exp(½ log σ²) ⊙ ε with ε ~ N(0, I) (from ``generator`` when given): differentiable in μ, σ."""
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
    return mean + torch.exp(0.5 * logvar) * noise


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²), one value per sample (B,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def reconstruction_error(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Σ_pixels (x̂ − x)², one value per sample (B,): the Gaussian decoder's negative log-likelihood up to
    constants and scale."""
    return F.mse_loss(x_hat, x, reduction="none").flatten(1).sum(1)
