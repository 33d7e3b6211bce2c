r"""Training the digit classifier whose features define the course's Fréchet distance.

Cross-entropy on the labelled digits, with each image translated by its own random integer offset
(dy, dx) ∈ [−max_shift, max_shift]² (:func:`random_shift`), AdamW with the same linear warm-up and gradient
clipping as the diffusion trainer (:mod:`diffusion_course.training`), single process. The classifier is
judged by :func:`classifier_accuracy`, the fraction of digits whose arg-max logit is their label.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._checks import check_int, fail
from .profiles import resolve_device
from .training import TrainConfig, TrainResult, check_training_data, optimizer_step, stream_seed


def random_shift(
    x: torch.Tensor, max_shift: int, generator: torch.Generator, fill: float = -1.0
) -> torch.Tensor:
    """Translate each image by its own integer (dy, dx) ∈ [−max_shift, max_shift]², filling with ``fill``."""
    if max_shift == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=fill)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    max_shift: int = 2,
    progress: bool = True,
) -> TrainResult:
    """Cross-entropy training with random shifts of up to ``max_shift`` pixels (single process).

    Uses ``steps, batch_size, lr, weight_decay, warmup_steps, grad_clip, seed, log_every, device`` of
    ``config``; the diffusion-only fields are ignored. Returns ``TrainResult`` with ``ema_model=None``.
    """
    if not isinstance(config, TrainConfig):
        fail("config", type(config).__name__, "expected a TrainConfig")
    check_training_data(images, labels, getattr(model, "config", {}).get("num_classes"))
    if labels is None:
        fail("labels", labels, "the classifier needs labels")
    max_shift = check_int("max_shift", max_shift, low=0)
    device = resolve_device(config.device)
    model.to(device)
    images, labels = images.to(device), labels.to(device)
    data_gen = torch.Generator().manual_seed(stream_seed(config.seed, 0, 0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses = []
    model.train()
    bar = tqdm(range(config.steps), disable=not progress, desc="train classifier")
    for step in bar:
        idx = torch.randint(0, images.shape[0], (config.batch_size,), generator=data_gen).to(device)
        x = random_shift(images[idx], max_shift, data_gen)
        loss = F.cross_entropy(model(x), labels[idx])
        losses.append(optimizer_step(model, optimizer, loss, step, config, "classifier"))
        if (step + 1) % config.log_every == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-config.log_every :]):.4f}")
    model.eval()
    return TrainResult(model=model, ema_model=None, losses=losses, step=config.steps, device=str(device))


@torch.no_grad()
def classifier_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> float:
    """Fraction of ``images`` whose arg-max logit equals ``labels`` (model in eval mode during the pass)."""
    check_training_data(images, labels, None)
    if labels is None:
        fail("labels", labels, "accuracy needs labels")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        logits = model(images[start : start + batch_size].to(device))
        correct += int((logits.argmax(dim=1).cpu() == labels[start : start + batch_size].cpu()).sum())
    model.train(was_training)
    return correct / max(1, images.shape[0])


__all__ = ["classifier_accuracy", "random_shift", "train_classifier"]
