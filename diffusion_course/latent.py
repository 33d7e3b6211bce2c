r"""Latent diffusion: train the autoencoder, scale its latents, encode the data, decode the samples.

A latent diffusion model (Rombach et al. 2022) is an ordinary ε-model whose "images" are the scaled latents
z̃ = s · μ(x) of an autoencoder (:class:`~diffusion_course.models.Autoencoder`); every sampler, guidance and
schedule applies unchanged, and a sample z̃₀ becomes pixels only at the end: x = decode(z̃₀ / s).

Autoencoder objective, per sample (a β-weighted ELBO with a Gaussian decoder, as in Rombach et al.'s KL-f
models, without their perceptual and adversarial terms):

    L = Σ_pixels (decode(z) − x)² + β · KL(q(z|x) ‖ N(0, I)),      z = μ + σ ε ~ q(z|x).

A small β keeps reconstructions sharp (latent diffusion can never beat its reconstructions) while the KL
term keeps the latent's scale bounded and its neighbourhoods decodable. The latent scale is then whatever
training left, so it is measured afterwards: s = 1 / std(z) over the training set (Stable Diffusion's
``scaling_factor``, 0.18215 for SD 1.x), making the diffusion data unit-variance as the schedule assumes.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ._checks import check_float, check_image_batch, fail
from .models.autoencoder import Autoencoder, kl_divergence, reconstruction_error, reparameterize
from .profiles import resolve_device
from .training import TrainConfig, TrainResult, optimizer_step, stream_seed


def vae_loss(
    model: Autoencoder, x: torch.Tensor, kl_weight: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """L = mean over the batch of Σ_pixels (x̂ − x)² + β KL(q(z|x) ‖ N(0, I)); also its two parts."""
    mean, logvar = model.encode(x)
    x_hat = model.decode(reparameterize(mean, logvar, generator))
    reconstruction = reconstruction_error(x_hat, x).mean()
    kl = kl_divergence(mean, logvar).mean()
    return reconstruction + kl_weight * kl, {"reconstruction": reconstruction.item(), "kl": kl.item()}


def train_autoencoder(
    model: Autoencoder,
    images: torch.Tensor,
    config: TrainConfig,
    kl_weight: float = 1e-3,
    progress: bool = True,
) -> TrainResult:
    """Minimise :func:`vae_loss` with AdamW, the diffusion trainer's warm-up/decay and gradient clipping,
    in one process; then measure and store ``scaling_factor`` (:func:`measure_scaling_factor`).

    Uses ``steps, batch_size, lr, weight_decay, warmup_steps, lr_decay, grad_clip, seed, log_every, device``
    of ``config``. Returns a ``TrainResult`` with ``ema_model=None``.
    """
    if not isinstance(model, Autoencoder):
        fail("model", type(model).__name__, "expected an Autoencoder")
    if not isinstance(config, TrainConfig):
        fail("config", type(config).__name__, "expected a TrainConfig")
    check_image_batch("images", images)
    kl_weight = check_float("kl_weight", kl_weight, low=0.0)
    device = resolve_device(config.device)
    model.to(device).train()
    images = images.to(device)
    data_gen = torch.Generator().manual_seed(stream_seed(config.seed, 0, 0))
    noise_gen = torch.Generator().manual_seed(stream_seed(config.seed, 0, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses: list[float] = []
    bar = tqdm(range(config.steps), disable=not progress, desc="train autoencoder")
    for step in bar:
        idx = torch.randint(0, images.shape[0], (config.batch_size,), generator=data_gen).to(device)
        loss, parts = vae_loss(model, images[idx], kl_weight, noise_gen)
        losses.append(optimizer_step(model, optimizer, loss, step, config, "autoencoder"))
        if (step + 1) % config.log_every == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-config.log_every :]):.3f}", kl=f"{parts['kl']:.1f}")
    model.eval()
    set_scaling_factor(model, measure_scaling_factor(model, images, seed=config.seed))
    return TrainResult(model=model, ema_model=None, losses=losses, step=config.steps, device=str(device))


@torch.no_grad()
def measure_scaling_factor(
    model: Autoencoder, images: torch.Tensor, seed: int = 0, batch_size: int = 500
) -> float:
    """s = 1 / std(z), z = μ + σ ε ~ q(z|x) over ``images`` (all latent entries pooled, as Stable Diffusion's
    ``scaling_factor`` was measured): the scaled latents s·z have unit variance."""
    generator = torch.Generator().manual_seed(seed)
    latents = [
        reparameterize(*model.encode(images[i : i + batch_size]), generator)
        for i in range(0, images.shape[0], batch_size)
    ]
    return 1.0 / float(torch.cat(latents).double().std())


def set_scaling_factor(model: Autoencoder, s: float) -> None:
    """Store s in the model (and so in its checkpoint's config)."""
    s = check_float("scaling_factor", s, low=0.0, low_open=True)
    model.scaling_factor = s
    model.config["scaling_factor"] = s


@torch.no_grad()
def encode_latents(
    autoencoder: Autoencoder, images: torch.Tensor, *, scale: bool = True, batch_size: int = 500
) -> torch.Tensor:
    """The diffusion data: s · μ(x) for each image (μ, the posterior mean, is what the model learns to
    generate; ``scale=False`` returns μ itself). Runs on the autoencoder's device, returns on the CPU."""
    check_image_batch("images", images)
    device = next(autoencoder.parameters()).device
    s = autoencoder.scaling_factor if scale else 1.0
    return torch.cat([
        s * autoencoder.encode(images[i : i + batch_size].to(device))[0].cpu()
        for i in range(0, images.shape[0], batch_size)
    ])  # fmt: skip


@torch.no_grad()
def decode_latents(
    autoencoder: Autoencoder, latents: torch.Tensor, *, scaled: bool = True, batch_size: int = 500
) -> torch.Tensor:
    """Pixels of latents: decode(z̃ / s) for scaled latents z̃ (``scaled=False``: decode(z)), CPU float32."""
    device = next(autoencoder.parameters()).device
    s = autoencoder.scaling_factor if scaled else 1.0
    return torch.cat([
        autoencoder.decode(latents[i : i + batch_size].to(device) / s).cpu().float()
        for i in range(0, latents.shape[0], batch_size)
    ])  # fmt: skip


def reconstruct(autoencoder: Autoencoder, images: torch.Tensor) -> torch.Tensor:
    """decode(μ(x)): the autoencoder's best guess of each image, the floor under any latent model."""
    return decode_latents(autoencoder, encode_latents(autoencoder, images, scale=False), scaled=False)


def load_autoencoder_data(autoencoder: str, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """(scaled latents s·μ(x), labels) of the bundled MNIST ``split``, encoded by the ``autoencoder``
    checkpoint (a shipped name or a path)."""
    from .checkpoints import load_checkpoint
    from .data import load_mnist

    model = load_checkpoint(autoencoder, device="cpu").model
    if not isinstance(model, Autoencoder):
        fail("autoencoder", autoencoder, "expected an autoencoder checkpoint (e.g. mnist-vae)")
    images, labels = load_mnist(split)
    return encode_latents(model, images), labels


__all__ = [
    "decode_latents",
    "encode_latents",
    "load_autoencoder_data",
    "measure_scaling_factor",
    "reconstruct",
    "set_scaling_factor",
    "train_autoencoder",
    "vae_loss",
]
