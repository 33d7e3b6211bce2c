"""A small CNN digit classifier; its penultimate features define the course's Fréchet distance.

x (1, 28, 28) → [Conv3×3 → ReLU] ×2 → MaxPool → (w, 14, 14)
              → [Conv3×3 → ReLU] ×2 → MaxPool → (2w, 7, 7)
              → flatten → Linear → ReLU → features (F) → Linear → logits (10)
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_image_batch, check_int, fail


class Classifier(nn.Module):
    """``forward(x)`` gives logits (B, num_classes); ``features(x)`` the penultimate layer (B, F)."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width: int = 32,
        feature_dim: int = 128,
        image_size: int = 28,
    ):
        super().__init__()
        in_channels = check_int("in_channels", in_channels, low=1)
        num_classes = check_int("num_classes", num_classes, low=2)
        width = check_int("width", width, low=1)
        feature_dim = check_int("feature_dim", feature_dim, low=1)
        image_size = check_int("image_size", image_size, low=4)
        if image_size % 4:
            fail("image_size", image_size, "expected a multiple of 4 (two 2× poolings)")
        self.config = dict(
            in_channels=in_channels,
            num_classes=num_classes,
            width=width,
            feature_dim=feature_dim,
            image_size=image_size,
        )
        w = width
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * w * (image_size // 4) ** 2, feature_dim), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (after ReLU), shape (B, feature_dim)."""
        check_image_batch("x", x, ndim=4)
        size = self.config["image_size"]
        if x.shape[1:] != (self.config["in_channels"], size, size):
            fail(
                "x", x, f"expected shape (B, {self.config['in_channels']}, {size}, {size}), images in [−1, 1]"
            )
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
