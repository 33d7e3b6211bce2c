"""Named training runs: all a shipped model is rebuilt from (architecture, data, schedule, optimizer).

``python -m diffusion_course train --config mnist-cond --out runs/mnist-cond`` trains one of these; the
checkpoint's JSON records the run config, so the model can be rebuilt from the JSON alone.

Sizes are chosen for the course's two profiles: the plain names fit a 2-core CPU (minutes to half an hour),
``*-full`` is for a GPU. ``test-*`` runs take seconds and exist for the test suite.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from ._checks import check_int, fail
from .data import load_mnist, synthetic_digits
from .models import build_model
from .schedules import NoiseSchedule, make_schedule
from .training import TrainConfig

TASKS = ("diffusion", "classifier", "autoencoder", "distillation")
DATASETS = ("mnist-train", "mnist-latent", "toy-mixture", "toy-mixture-labelled", "synthetic-digits")

UNET_QUICK = dict(
    base_channels=16, channel_mults=(1, 2, 4), num_res_blocks=1, attention_resolutions=(7,), num_classes=10
)  # ≈ 0.69M parameters, 16/32/64 channels at 28/14/7 pixels
UNET_FULL = dict(
    base_channels=64, channel_mults=(1, 2, 2), num_res_blocks=2, attention_resolutions=(7,), num_classes=10,
    dropout=0.1,
)  # fmt: skip  # ≈ 6.5M parameters


@dataclass(frozen=True)
class RunConfig:
    """One named run. ``data_size`` is the number of points drawn for the generated data sets."""

    name: str
    description: str
    task: str
    model_kind: str
    model_config: dict
    data: str
    train: TrainConfig
    schedule: str = "linear"
    T: int = 1000
    data_size: int | None = None
    expected_time: str = ""
    extra: dict = field(default_factory=dict)

    def build_model(self) -> nn.Module:
        """A freshly initialised model; the initial weights depend only on ``train.seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.train.seed)
            return build_model(self.model_kind, **self.model_config)

    def make_schedule(self) -> NoiseSchedule | None:
        """The VP noise schedule of the run; None for a flow model (its path is x_t = (1−t) x₀ + t ε)."""
        return None if self.model_kind == "flow" else make_schedule(self.schedule, self.T)

    def load_data(self, autoencoder: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(inputs, labels or None) for training, on the CPU. ``autoencoder`` (a name or path) replaces
        ``extra["autoencoder"]`` for latent data."""
        return load_run_data(self.data, self.data_size, seed=self.train.seed,
                             autoencoder=autoencoder or self.extra.get("autoencoder"))  # fmt: skip

    def with_train(self, **changes) -> RunConfig:
        """A copy with some ``TrainConfig`` fields replaced (``None`` values are ignored)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, train=self.train.replace(**changes))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_run_data(
    data: str, size: int | None = None, seed: int = 0, autoencoder: str | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The training inputs of a data set name in DATASETS.

    - ``mnist-train``: the bundled MNIST training split (4,500 digits, labels 0..9).
    - ``mnist-latent``: the same digits as scaled latents s·μ(x) of the ``autoencoder`` checkpoint
      (``latent.load_autoencoder_data``).
    - ``toy-mixture``: ``size`` points of ``oracle.toy_mixture()`` (no labels);
      ``toy-mixture-labelled``: the same points with their component index as label.
    - ``synthetic-digits``: ``size`` images of ``data.synthetic_digits`` (a blob whose position encodes the
      label); made for tests, needs no files.
    """
    if data not in DATASETS:
        fail("data", data, f"known data sets are {', '.join(DATASETS)}")
    generator = torch.Generator().manual_seed(seed)
    if data == "mnist-train":
        return load_mnist("train")
    if data == "mnist-latent":
        from .latent import load_autoencoder_data

        if autoencoder is None:
            fail("autoencoder", autoencoder, "latent data needs an autoencoder checkpoint, e.g. mnist-vae")
        return load_autoencoder_data(autoencoder)
    size = check_int("data_size", size, low=1)
    if data in ("toy-mixture", "toy-mixture-labelled"):
        from .oracle import toy_mixture

        points, components = toy_mixture().sample(size, generator=generator, return_components=True)
        return points, (components.long() if data == "toy-mixture-labelled" else None)
    return synthetic_digits(size, generator)


CONFIGS: dict[str, RunConfig] = {}


def register(config: RunConfig) -> RunConfig:
    if config.task not in TASKS:
        fail("task", config.task, f"use one of {', '.join(TASKS)}")
    if config.model_kind == "v_prediction":  # ε = α v + σ x must use the schedule the run trains with
        wrapped = (config.model_config.get("schedule", "linear"), config.model_config.get("T", 1000))
        if wrapped != (config.schedule, config.T):
            fail("model_config", config.model_config, f"a v-model's schedule and T must be the run's, "
                 f"{config.schedule!r} and {config.T}")  # fmt: skip
    CONFIGS[config.name] = config
    return config


register(RunConfig(
    name="mnist-cond",
    description="class-conditional UNet (≈0.69M params) on the MNIST train split, CFG label dropout 0.1",
    task="diffusion",
    model_kind="unet",
    model_config=UNET_QUICK,
    data="mnist-train",
    train=TrainConfig(steps=7000, batch_size=64, lr=1e-3, warmup_steps=200, grad_clip=1.0, ema_decay=0.999,
                      p_uncond=0.1, log_every=50, checkpoint_every=500),
    expected_time="≈ 35–60 min on 2 CPU cores, a few minutes on one GPU",
))  # fmt: skip
register(RunConfig(
    name="mnist-cond-fast",
    description="mnist-cond's UNet for one sitting: higher lr decayed over 4,000 steps or the time budget, "
    "whichever ends first, Min-SNR-5 loss weight, short EMA",
    task="diffusion",
    model_kind="unet",
    model_config=UNET_QUICK,
    data="mnist-train",
    train=TrainConfig(steps=4000, batch_size=64, lr=2e-3, warmup_steps=100, lr_decay="cosine", grad_clip=1.0,
                      ema_decay=0.995, p_uncond=0.1, min_snr_gamma=5.0, log_every=25, checkpoint_every=500),
    expected_time="run it with --time-budget 600 (docs/benchmarks/training.md: quality against seconds)",
))  # fmt: skip
register(RunConfig(
    name="mnist-flow",
    description="mnist-cond's UNet and training, as a flow-matching velocity model (logit-normal t, "
    "label dropout 0.1)",
    task="diffusion",
    model_kind="flow",
    model_config=dict(net="unet", **CONFIGS["mnist-cond"].model_config),
    data="mnist-train",
    train=CONFIGS["mnist-cond"].train,  # the same run, on the flow-matching loss (flow_time's default)
    expected_time="≈ 15–60 min on 2 CPU cores (as mnist-cond), a few minutes on one GPU",
))  # fmt: skip
register(RunConfig(
    name="mnist-cond-full",
    description="class-conditional UNet (≈6.5M params, dropout 0.1) on the MNIST train split, for a GPU",
    task="diffusion",
    model_kind="unet",
    model_config=UNET_FULL,
    data="mnist-train",
    train=TrainConfig(steps=20000, batch_size=128, lr=2e-4, warmup_steps=500, grad_clip=1.0, ema_decay=0.9995,
                      p_uncond=0.1, log_every=100, checkpoint_every=2000),
    expected_time="≈ 10–15 min on one GPU",
))  # fmt: skip
register(RunConfig(
    name="mnist-flow-full",
    description="mnist-cond-full's UNet (≈6.5M params) and training as a flow-matching velocity model, "
    "for a GPU",
    task="diffusion",
    model_kind="flow",
    model_config=dict(net="unet", **CONFIGS["mnist-cond-full"].model_config),
    data="mnist-train",
    train=CONFIGS["mnist-cond-full"].train,
    expected_time="≈ 10–15 min on one GPU",
))  # fmt: skip
UNET_LATENT = dict(
    in_channels=4, image_size=7, base_channels=64, channel_mults=(1,), num_res_blocks=2,
    attention_resolutions=(7,), num_classes=10,
)  # fmt: skip  # ≈ 0.96M parameters, 64 channels at 7×7: ≈ 0.4× mnist-cond's forward time on a CPU
register(RunConfig(
    name="mnist-vae",
    description="KL autoencoder (≈0.12M params): 1×28×28 digits ↔ 4×7×7 latents, KL weight 1e-3",
    task="autoencoder",
    model_kind="autoencoder",
    model_config=dict(in_channels=1, latent_channels=4, base_channels=16),
    data="mnist-train",
    train=TrainConfig(steps=3000, batch_size=64, lr=2e-3, warmup_steps=100, lr_decay="cosine", grad_clip=1.0,
                      log_every=50),
    extra={"kl_weight": 1e-3},
    expected_time="≈ 5 min on 2 CPU cores",
))  # fmt: skip
register(RunConfig(
    name="mnist-latent",
    description="class-conditional UNet (≈0.96M params) on mnist-vae's 4×7×7 latents, label dropout 0.1",
    task="diffusion",
    model_kind="unet",
    model_config=UNET_LATENT,
    data="mnist-latent",
    train=TrainConfig(steps=12000, batch_size=64, lr=1e-3, warmup_steps=200, lr_decay="cosine", grad_clip=1.0,
                      ema_decay=0.999, p_uncond=0.1, log_every=50, checkpoint_every=500),
    extra={"autoencoder": "mnist-vae"},
    expected_time="≈ 30 min on 2 CPU cores (needs mnist-vae)",
))  # fmt: skip
register(RunConfig(
    name="mnist-distill",
    description="progressive distillation of mnist-cond into v-predicting students: DDIM-64 teacher → "
    "32, 16, 8, 4, 2, 1 steps, label dropout 0.1",
    task="distillation",
    model_kind="v_prediction",
    model_config=dict(net="unet", **UNET_QUICK),
    data="mnist-train",
    train=TrainConfig(steps=1500, batch_size=64, lr=3e-4, warmup_steps=50, lr_decay="cosine", grad_clip=1.0,
                      ema_decay=0.995, p_uncond=0.1, log_every=25, checkpoint_every=250),
    extra={"teacher": "mnist-cond", "rounds": (32, 16, 8, 4, 2, 1), "first_round_steps": 3000,
           "name_prefix": "mnist-distilled"},
    expected_time="≈ 40 min on 2 CPU cores (resumable by rounds)",
))  # fmt: skip
register(RunConfig(
    name="mnist-classifier",
    description="small CNN digit classifier (its features define the course's Fréchet distance)",
    task="classifier",
    model_kind="classifier",
    model_config=dict(in_channels=1, num_classes=10, width=32, feature_dim=128),
    data="mnist-train",
    train=TrainConfig(steps=1500, batch_size=128, lr=1e-3, warmup_steps=100, weight_decay=1e-4, log_every=50),
    expected_time="≈ 3–6 min on 2 CPU cores",
))  # fmt: skip
register(RunConfig(
    name="toy2d",
    description="MLP ε-model on 20,000 points of the course's 2-D Gaussian mixture (unconditional)",
    task="diffusion",
    model_kind="mlp",
    model_config=dict(dim=2, hidden=128, depth=3, time_dim=32),
    data="toy-mixture",
    data_size=20000,
    train=TrainConfig(steps=5000, batch_size=256, lr=1e-3, warmup_steps=100, ema_decay=0.999, log_every=100),
    expected_time="≈ 1 min on 2 CPU cores",
))  # fmt: skip
register(RunConfig(
    name="toy2d-v",
    description="toy2d's MLP predicting v instead of ε (VPrediction; the trainer's loss follows the model)",
    task="diffusion",
    model_kind="v_prediction",
    model_config=dict(net="mlp", **CONFIGS["toy2d"].model_config),
    data="toy-mixture",
    data_size=20000,
    train=CONFIGS["toy2d"].train,
    expected_time="≈ 1 min on 2 CPU cores",
))  # fmt: skip
register(RunConfig(
    name="toy2d-flow",
    description="toy2d's MLP as a flow-matching velocity model on the 2-D mixture (logit-normal t)",
    task="diffusion",
    model_kind="flow",
    model_config=dict(net="mlp", **CONFIGS["toy2d"].model_config),
    data="toy-mixture",
    data_size=20000,
    train=CONFIGS["toy2d"].train,
    expected_time="≈ 1 min on 2 CPU cores",
))  # fmt: skip
register(RunConfig(
    name="toy2d-cond",
    description="MLP ε-model on the 2-D mixture conditioned on the component (4 classes), label dropout 0.1",
    task="diffusion",
    model_kind="mlp",
    model_config=dict(dim=2, hidden=128, depth=3, time_dim=32, num_classes=4),
    data="toy-mixture-labelled",
    data_size=20000,
    train=TrainConfig(steps=5000, batch_size=256, lr=1e-3, warmup_steps=100, ema_decay=0.999, p_uncond=0.1,
                      log_every=100),
    expected_time="≈ 1 min on 2 CPU cores",
))  # fmt: skip
register(RunConfig(
    name="test-tiny",
    description="TinyUNet (8 channels) for a few steps on 16 synthetic images — for tests",
    task="diffusion",
    model_kind="tiny_unet",
    model_config=dict(in_channels=1, base_channels=8, time_dim=16),
    data="synthetic-digits",
    data_size=16,
    train=TrainConfig(steps=4, batch_size=8, lr=1e-3, warmup_steps=2, log_every=2),
    expected_time="seconds",
))  # fmt: skip
register(RunConfig(
    name="test-tiny-cond",
    description="conditional two-level UNet (8 channels) for a few steps on 20 synthetic images — for tests",
    task="diffusion",
    model_kind="unet",
    model_config=dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(14,),
                      num_classes=10),
    data="synthetic-digits",
    data_size=20,
    train=TrainConfig(steps=4, batch_size=8, lr=1e-3, warmup_steps=2, p_uncond=0.2, log_every=2),
    expected_time="seconds",
))  # fmt: skip
register(RunConfig(
    name="test-distill",
    description="two rounds (2 → 1 student steps) of a few steps from mnist-cond on 16 synthetic images "
    "— for tests",
    task="distillation",
    model_kind="v_prediction",
    model_config=dict(net="unet", **UNET_QUICK),
    data="synthetic-digits",
    data_size=16,
    train=TrainConfig(steps=2, batch_size=4, lr=1e-4, warmup_steps=1, p_uncond=0.5, log_every=1),
    extra={"teacher": "mnist-cond", "rounds": (2, 1), "first_round_steps": 3,
           "name_prefix": "test-distilled"},
    expected_time="seconds",
))  # fmt: skip
register(RunConfig(
    name="test-vae",
    description="narrow autoencoder for a few steps on 16 synthetic images — for tests",
    task="autoencoder",
    model_kind="autoencoder",
    model_config=dict(in_channels=1, latent_channels=2, base_channels=8),
    data="synthetic-digits",
    data_size=16,
    train=TrainConfig(steps=3, batch_size=8, lr=1e-3, warmup_steps=1, log_every=1),
    extra={"kl_weight": 1e-3},
    expected_time="seconds",
))  # fmt: skip
register(RunConfig(
    name="test-latent",
    description="one-level UNet (8 channels) for a few steps on test-vae latents of MNIST — for tests "
    "(train with --autoencoder PATH)",
    task="diffusion",
    model_kind="unet",
    model_config=dict(in_channels=2, image_size=7, base_channels=8, channel_mults=(1,), num_res_blocks=1,
                      attention_resolutions=(), num_classes=10),
    data="mnist-latent",
    train=TrainConfig(steps=3, batch_size=8, lr=1e-3, warmup_steps=1, p_uncond=0.2, log_every=1),
    extra={"autoencoder": "test-vae"},
    expected_time="seconds",
))  # fmt: skip
register(RunConfig(
    name="test-toy2d",
    description="small MLP for a few steps on 256 mixture points — for tests",
    task="diffusion",
    model_kind="mlp",
    model_config=dict(dim=2, hidden=16, depth=1, time_dim=8),
    data="toy-mixture",
    data_size=256,
    train=TrainConfig(steps=5, batch_size=32, lr=1e-3, warmup_steps=2, log_every=5),
    expected_time="seconds",
))  # fmt: skip
register(RunConfig(
    name="test-flow",
    description="conditional flow model on a two-level UNet (8 channels), a few steps on 20 synthetic images "
    "— for tests",
    task="diffusion",
    model_kind="flow",
    model_config=dict(net="unet", base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                      attention_resolutions=(14,), num_classes=10),
    data="synthetic-digits",
    data_size=20,
    train=TrainConfig(steps=4, batch_size=8, lr=1e-3, warmup_steps=2, p_uncond=0.2, log_every=2),
    expected_time="seconds",
))  # fmt: skip
register(RunConfig(
    name="test-classifier",
    description="narrow classifier for a few steps on 20 synthetic images — for tests",
    task="classifier",
    model_kind="classifier",
    model_config=dict(in_channels=1, num_classes=10, width=4, feature_dim=8),
    data="synthetic-digits",
    data_size=20,
    train=TrainConfig(steps=3, batch_size=8, lr=1e-3, warmup_steps=1, log_every=1),
    expected_time="seconds",
))  # fmt: skip


def get_config(name: str) -> RunConfig:
    """The named run; an unknown name raises a ValueError listing the known ones."""
    if name not in CONFIGS:
        fail("config", name, f"known configs are {', '.join(CONFIGS)}")
    return CONFIGS[name]
