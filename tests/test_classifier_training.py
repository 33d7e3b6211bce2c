"""The digit classifier's trainer: random shifts, learning the synthetic digits, counting accuracy."""

import pytest
import torch
from torch import nn

from diffusion_course.classifier_training import classifier_accuracy, random_shift, train_classifier
from diffusion_course.data import synthetic_digits
from diffusion_course.models import Classifier
from diffusion_course.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return synthetic_digits(32, torch.Generator().manual_seed(0))


def test_random_shift_moves_each_image_by_its_own_offset():
    x = torch.full((64, 1, 12, 12), -1.0)
    x[:, :, 5, 5] = 1.0  # one bright pixel in the middle
    shifted = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape
    positions = {tuple((img[0] == 1.0).nonzero()[0].tolist()) for img in shifted}
    assert len(positions) > 10 and all(3 <= r <= 7 and 3 <= c <= 7 for r, c in positions)
    assert torch.equal(random_shift(x, 0, torch.Generator()), x)


def test_classifier_learns_the_synthetic_digits(digits):
    images, labels = digits
    torch.manual_seed(0)
    model = Classifier(width=8, feature_dim=16)
    before = classifier_accuracy(model, images, labels)
    config = TrainConfig(steps=60, batch_size=16, lr=3e-3, warmup_steps=5, log_every=10, device="cpu")
    result = train_classifier(model, images, labels, config, max_shift=1, progress=False)
    assert result.ema_model is None and len(result.losses) == 60
    assert sum(result.losses[-10:]) < sum(result.losses[:10])
    assert classifier_accuracy(model, images, labels) >= max(0.8, before + 0.3)


def test_classifier_accuracy_counts_matches():
    class Fixed(nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(x.flatten(1)[:, 0].long(), 10).float()

    images = torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(4, 1, 1, 1)
    model = Fixed()
    model.register_parameter("p", nn.Parameter(torch.zeros(1)))
    assert classifier_accuracy(model, images, torch.tensor([0, 1, 5, 3]), batch_size=3) == 0.75
