r"""Training: the ε-prediction loss, EMA of the weights, and the trainer loop.

Loss (Ho et al. 2020, "simple" objective), with t uniform over 0..T−1 and ε ~ N(0, I):

    x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε,        L = E_{x_0, t, ε} ‖ε − ε_θ(x_t, t, y)‖²

With label dropout (classifier-free guidance training, Ho & Salimans 2022) y is replaced by the null class
with probability ``p_uncond``, so the same network also learns the unconditional ε_θ(x_t, t, ∅).

The loop: AdamW with linear learning-rate warm-up (then constant), gradient-norm clipping, an EMA copy of
the weights for sampling, bf16 autocast and channels-last on CUDA, a NaN/inf guard, and resumable state.
Under ``torchrun`` the same ``train`` runs DistributedDataParallel (NCCL on CUDA, gloo on CPU): every rank
draws its own batches (``batch_size`` is per rank), gradients are averaged, only rank 0 writes files and
shows progress.

Randomness comes from three seeded streams per rank — data indices, diffusion noise (t, ε, label dropout)
and torch's global RNG (dropout) — and all three are saved with the optimizer, so an interrupted run
resumed from its state file ends with bitwise the same weights as an uninterrupted one (same device).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._checks import check_choice, check_float, check_image_batch, check_int, check_labels, fail
from .checkpoints import load_training_state, save_training_state
from .profiles import resolve_device

TRAIN_STATE_FILE = "train_state.pt"
# Fields that may change between an interrupted run and its resumption without breaking reproducibility.
LR_DECAYS = ("none", "cosine")
FLOW_TIMES = ("logit_normal", "uniform")  # how a flow model's training draws t (see flow_matching_loss)
RESUMABLE_CHANGES = ("steps", "log_every", "checkpoint_every", "device")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or ±inf; the message names the step."""


@dataclass
class TrainConfig:
    """Hyper-parameters of one run. ``bf16`` / ``channels_last``: True, False or "auto" (= on CUDA only)."""

    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_decay: str = "none"  # "cosine": after warm-up, lr follows a half cosine down to lr/10 at `steps`
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    ema_decay: float = 0.999
    ema_warmup: bool = True
    p_uncond: float = 0.0
    min_snr_gamma: float = 0.0  # loss weight min(SNR_t, γ)/SNR_t (Hang et al. 2023); 0 = plain ε-MSE
    flow_time: str = "logit_normal"  # a flow model's t: sigmoid of N(0, 1) (Esser et al. 2024) or uniform
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 0  # steps between resume states in out_dir; 0 = only at the end
    bf16: bool | str = "auto"
    channels_last: bool | str = "auto"
    device: str = "auto"

    def __post_init__(self):
        check_int("steps", self.steps, low=1)
        check_int("batch_size", self.batch_size, low=1)
        check_float("lr", self.lr, low=0.0, low_open=True)
        check_float("weight_decay", self.weight_decay, low=0.0)
        check_int("warmup_steps", self.warmup_steps, low=0)
        check_choice("lr_decay", self.lr_decay, LR_DECAYS)
        check_float("grad_clip", self.grad_clip, low=0.0)
        check_float("ema_decay", self.ema_decay, low=0.0, high=1.0)
        check_float("p_uncond", self.p_uncond, low=0.0, high=1.0)
        check_float("min_snr_gamma", self.min_snr_gamma, low=0.0)
        check_choice("flow_time", self.flow_time, FLOW_TIMES)
        check_int("seed", self.seed, low=0)
        check_int("log_every", self.log_every, low=1)
        check_int("checkpoint_every", self.checkpoint_every, low=0)
        for name in ("bf16", "channels_last"):
            if getattr(self, name) not in (True, False, "auto"):
                fail(name, getattr(self, name), "use True, False or 'auto' (on when training on CUDA)")
        if not isinstance(self.ema_warmup, bool):
            fail("ema_warmup", self.ema_warmup, "expected True or False")
        if not isinstance(self.device, (str, torch.device)):
            fail("device", self.device, "use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


@dataclass
class TrainResult:
    model: nn.Module  # the raw trained weights (eval mode)
    ema_model: nn.Module | None  # the EMA weights: sample with these
    losses: list[float] = field(default_factory=list)  # one per step, averaged over ranks
    step: int = 0
    device: str = "cpu"
    stopped: str | None = None  # why the run ended before config.steps: "time budget" or "stop requested"


# --------------------------------------------------------------------------------------------------------
# loss and EMA


def diffusion_loss(
    model,
    x0: torch.Tensor,
    schedule,
    labels: torch.Tensor | None = None,
    p_uncond: float = 0.0,
    generator: torch.Generator | None = None,
    min_snr_gamma: float = 0.0,
    flow_time: str = "logit_normal",
) -> torch.Tensor:
    """L = mean ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t, y)‖², t ~ U{0..T−1}; y → null class w.p. ``p_uncond``.

    A v-predicting model (``models.VPrediction``) is trained on its own target instead:
    L = mean ‖v − v_θ‖², v = √ᾱ_t ε − √(1−ᾱ_t) x_0 (Salimans & Ho 2022); the same draws of t, ε and labels.

    With ``min_snr_gamma`` = γ > 0 each sample's squared error is weighted by min(SNR_t, γ)/SNR_t for ε and
    min(SNR_t, γ)/(SNR_t + 1) for v, SNR_t = ᾱ_t/(1−ᾱ_t) (Min-SNR-γ, Hang et al. 2023): both are the x_0-error
    weight min(SNR_t, γ), so the low-noise steps, whose ε error says little about x_0, stop dominating.

    A flow model (``models.FlowVelocity``) is trained by :func:`flow_matching_loss` (``schedule`` unused).
    """
    from .models import FlowVelocity, VPrediction

    if isinstance(unwrap_model(model), FlowVelocity):
        if check_float("min_snr_gamma", min_snr_gamma, low=0.0) > 0:
            fail("min_snr_gamma", min_snr_gamma, "Min-SNR weighting is for ε- and v-models; use 0 for a flow "
                 "model")  # fmt: skip
        return flow_matching_loss(model, x0, labels, p_uncond, generator, flow_time)
    check_image_batch("x0", x0)
    p_uncond = check_float("p_uncond", p_uncond, low=0.0, high=1.0)
    gamma = check_float("min_snr_gamma", min_snr_gamma, low=0.0)
    batch, dev = x0.shape[0], (generator.device if generator is not None else x0.device)
    t = torch.randint(0, schedule.T, (batch,), generator=generator, device=dev).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype).to(x0.device)
    labels = drop_labels(model, labels, p_uncond, generator)
    x_t = schedule.q_sample(x0, t, noise)
    predicts_v = isinstance(unwrap_model(model), VPrediction)
    kwargs = {"predict": "v"} if predicts_v else {}
    out = model(x_t, t, labels=labels, **kwargs) if labels is not None else model(x_t, t, **kwargs)
    target = noise
    if predicts_v:
        alpha, sigma = (
            schedule.gather(c, t, x0) for c in (schedule.alpha_bar.sqrt(), (1.0 - schedule.alpha_bar).sqrt())
        )
        target = alpha * noise - sigma * x0
    if gamma == 0.0:
        return F.mse_loss(out.float(), target.float())
    alpha_bar = schedule.alpha_bar.to(x0.device)[t]
    snr = alpha_bar / (1.0 - alpha_bar)
    weight = (snr.clamp(max=gamma) / (snr + 1.0 if predicts_v else snr)).float()
    return (weight * (out.float() - target.float()).pow(2).flatten(1).mean(dim=1)).mean()


def flow_time_samples(
    batch: int, flow_time: str = "logit_normal", generator=None, device=None
) -> torch.Tensor:
    """t (batch,) in (0, 1): ``"logit_normal"`` t = sigmoid(n), n ~ N(0, 1); ``"uniform"`` t ~ U(0, 1)."""
    check_choice("flow_time", flow_time, FLOW_TIMES)
    dev = generator.device if generator is not None else device
    if flow_time == "uniform":
        t = torch.rand(batch, generator=generator, device=dev)
    else:
        t = torch.sigmoid(torch.randn(batch, generator=generator, device=dev))
    return t.to(device) if device is not None else t


def flow_matching_loss(
    model,
    x0: torch.Tensor,
    labels: torch.Tensor | None = None,
    p_uncond: float = 0.0,
    generator: torch.Generator | None = None,
    flow_time: str = "logit_normal",
) -> torch.Tensor:
    """L = mean ‖(ε − x₀) − u_θ((1 − t) x₀ + t ε, t, y)‖², y → null class w.p. ``p_uncond`` (conditional
    flow matching on the linear path, Lipman et al. 2023; Liu et al. 2023).

    The target ε − x₀ is the velocity of one path from x₀ to ε; its minimiser is their average over the
    paths through x_t, the marginal velocity E[ε − x₀ | x_t], which is what the sampler integrates.
    t is drawn from ``flow_time``: by default the logit-normal sigmoid(N(0, 1)) of Stable Diffusion 3
    (Esser et al. 2024), which puts most of the training on middle times, where the best velocity depends
    most on which x₀ is likely; at the ends it is simple: u* = −x_t at t = 0 and x_t − E[x₀] at t = 1.
    ``"uniform"`` draws t ~ U(0, 1).
    """
    check_image_batch("x0", x0)
    p_uncond = check_float("p_uncond", p_uncond, low=0.0, high=1.0)
    batch, dev = x0.shape[0], (generator.device if generator is not None else x0.device)
    t = flow_time_samples(batch, flow_time, generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype).to(x0.device)
    labels = drop_labels(model, labels, p_uncond, generator)
    tt = t.reshape(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    x_t = (1.0 - tt) * x0 + tt * noise
    out = model(x_t, t, labels=labels) if labels is not None else model(x_t, t)
    return F.mse_loss(out.float(), (noise - x0).float())


def drop_labels(
    model, labels: torch.Tensor | None, p_uncond: float, generator: torch.Generator | None = None
) -> torch.Tensor | None:
    """Label dropout for classifier-free guidance: each label becomes the null class K (the model's
    ``num_classes``) with probability ``p_uncond``, one uniform draw per label from ``generator``."""
    if p_uncond == 0:
        return labels
    if labels is None:
        fail("p_uncond", p_uncond, "label dropout needs labels; use p_uncond=0 for unconditional training")
    num_classes = getattr(unwrap_model(model), "num_classes", None)
    if num_classes is None:
        fail("p_uncond", p_uncond, "the model is unconditional (num_classes=None); use p_uncond=0")
    dev = generator.device if generator is not None else labels.device
    drop = (torch.rand(labels.shape[0], generator=generator, device=dev) < p_uncond).to(labels.device)
    return torch.where(drop, torch.full_like(labels, num_classes), labels)


class EMA:
    """Exponential moving average of a model's weights, kept in ``self.model`` (eval mode, no grads).

    After each optimizer step:  θ_ema ← d θ_ema + (1 − d) θ.  With ``warmup`` the decay ramps up as
    d_n = min(decay, (1 + n) / (10 + n)) for the n-th update, so early EMA weights are not stuck at init.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.decay = check_float("decay", decay, low=0.0, high=1.0)
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(unwrap_model(model)).eval().requires_grad_(False)

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        model = unwrap_model(model)
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "model": self.model.state_dict()}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.warmup, self.num_updates = state["decay"], state["warmup"], state["num_updates"]
        self.model.load_state_dict(state["model"])


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


# --------------------------------------------------------------------------------------------------------
# distributed helpers


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_info() -> DistInfo:
    """Rank and world size of the running process group (rank 0 of 1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def init_distributed(device: str | torch.device = "auto") -> DistInfo:
    """Under ``torchrun`` (WORLD_SIZE > 1) start the process group once: NCCL on CUDA, gloo otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dev = resolve_device(device)
        if dev.type == "mps":
            fail("device", str(device), "multi-process training supports CUDA (NCCL) or CPU (gloo), not MPS")
        if dev.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return distributed_info()


def training_device(device: str | torch.device, info: DistInfo) -> torch.device:
    dev = resolve_device(device)
    if dev.type == "cuda" and info.world_size > 1:
        return torch.device("cuda", info.local_rank)
    return dev


def stream_seed(seed: int, rank: int, stream: int) -> int:
    """An independent 64-bit seed per (run seed, rank, stream), via numpy's SeedSequence."""
    return int(np.random.SeedSequence([seed, rank, stream]).generate_state(1, dtype=np.uint64)[0])


def _mean_over_ranks(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.world_size > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= info.world_size
    return values


# --------------------------------------------------------------------------------------------------------
# the trainer


def check_training_data(images, labels, num_classes: int | None) -> None:
    check_image_batch("images", images)
    if labels is None:
        return
    check_labels(labels, images.shape[0], num_classes)


def lr_at(step: int, config: TrainConfig, time_fraction: float = 0.0) -> float:
    """Linear warm-up over ``warmup_steps`` (lr·(step+1)/warmup), then constant ``lr``, or with
    ``lr_decay="cosine"`` lr · (0.1 + 0.9 · ½(1 + cos(π p))), p = (step − warmup)/(steps − warmup).

    ``time_fraction`` (the share of a time budget spent) moves the decay on when it is ahead of the steps:
    p = max(p, time_fraction), so a run cut by its budget on a slow machine still ends at lr/10."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_decay == "cosine":
        p = max((step - config.warmup_steps) / max(1, config.steps - config.warmup_steps), time_fraction)
        return config.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(p, 1.0))))
    return config.lr


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    step: int,
    config: TrainConfig,
    what: str,
) -> float:
    """One single-process update at lr_at(step): zero the gradients, backpropagate ``loss``, clip the
    gradient norm to ``config.grad_clip`` (when > 0), step. Returns the loss; a non-finite one raises
    :class:`NonFiniteLossError` naming ``what`` before any weight changes."""
    value = loss.item()
    if not math.isfinite(value):
        raise NonFiniteLossError(f"{what} loss is {value} at step {step}: lower lr")
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, config)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return value


def _resolve_flag(value: bool | str, device: torch.device) -> bool:
    return device.type == "cuda" if value == "auto" else bool(value)


def train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    schedule,
    config: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    *,
    time_budget: float | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_log: Callable[[int, list[float], nn.Module], None] | None = None,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor | None, torch.Generator], torch.Tensor]
    | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train an ε-model on ``images`` (N, …) [with ``labels`` (N,)] with ``diffusion_loss``, or with
    ``loss_fn(model, x0, labels, generator)`` (e.g. :class:`~diffusion_course.distillation.DistillationLoss`).
    ``desc`` labels the progress bar.

    With ``out_dir`` the resume state (weights, EMA, optimizer, step, losses, RNG states of every rank) is
    written to ``out_dir/train_state.pt`` every ``checkpoint_every`` steps and at the end; ``resume=True``
    continues from it (or starts fresh when there is none). The model is trained in place.

    The run ends early, after a whole step, when ``time_budget`` seconds of wall clock have passed since the
    call or when ``should_stop()`` returns True (all ranks stop together); the resume state is then written
    as at the end, so ``resume=True`` continues exactly where it stopped, and ``TrainResult.stopped`` says
    why. With a budget, a cosine learning-rate decay ends at whichever comes first, the last step or the
    end of the budget (``lr_at``'s ``time_fraction``). ``on_log(step, losses, ema_model)`` is called every
    ``log_every`` steps (e.g. for a live plot).
    """
    if not isinstance(config, TrainConfig):
        fail("config", type(config).__name__, "expected a TrainConfig")
    num_classes = getattr(model, "num_classes", None)
    check_training_data(images, labels, num_classes)
    if labels is not None and num_classes is None:
        fail("labels", labels, "the model is unconditional (num_classes=None); pass labels=None")
    if config.p_uncond > 0 and (labels is None or num_classes is None):
        fail("p_uncond", config.p_uncond, "label dropout needs a conditional model and labels")
    if resume and out_dir is None:
        fail("resume", resume, "resuming needs out_dir (the folder holding train_state.pt)")
    if time_budget is not None:
        time_budget = check_float("time_budget", time_budget, low=0.0)
    for name, fn in (("should_stop", should_stop), ("on_log", on_log), ("loss_fn", loss_fn)):
        if fn is not None and not callable(fn):
            fail(name, fn, "expected a function (or None)")
    started = time.perf_counter()

    info = init_distributed(config.device)
    device = training_device(config.device, info)
    use_bf16 = _resolve_flag(config.bf16, device)
    channels_last = _resolve_flag(config.channels_last, device) and images.ndim == 4
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    model.to(device=device, memory_format=memory_format)
    images = images.to(device)
    labels = labels.to(device) if labels is not None else None
    data_gen = torch.Generator().manual_seed(stream_seed(config.seed, info.rank, 0))
    noise_gen = torch.Generator(device=device).manual_seed(stream_seed(config.seed, info.rank, 1))
    torch.manual_seed(stream_seed(config.seed, info.rank, 2))

    state_path = Path(out_dir) / TRAIN_STATE_FILE if out_dir is not None else None
    state = None
    if resume and state_path.is_file():
        state = load_training_state(state_path)
        _check_resume_compatible(state, config, model, info, state_path)
        model.load_state_dict(state["model"])
    ddp_model = model
    if info.world_size > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    ema = EMA(model, config.ema_decay, warmup=config.ema_warmup)  # after DDP's broadcast of rank 0's weights
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step, losses = 0, []
    if state is not None:
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step, losses = state["step"], list(state["losses"])
        rng = state["rng"][info.rank]
        data_gen.set_state(rng["data"])
        noise_gen.set_state(rng["noise"])
        torch.set_rng_state(rng["torch"])
        if device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], device)

    def save_state():
        rng = {"data": data_gen.get_state(), "noise": noise_gen.get_state(), "torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}  # fmt: skip
        all_rng = [rng]
        if info.world_size > 1:
            all_rng = [None] * info.world_size
            dist.all_gather_object(all_rng, rng)
        if info.is_main:
            state = {"version": 1, "step": step, "losses": losses, "config": config.to_dict(),
                     "model_config": dict(getattr(model, "config", {})),
                     "world_size": info.world_size, "model": model.state_dict(), "ema": ema.state_dict(),
                     "optimizer": optimizer.state_dict(), "rng": all_rng}  # fmt: skip
            save_training_state(state_path, state)
        if info.world_size > 1:
            dist.barrier()  # no rank may look for the state file (e.g. to resume) before it is complete

    bar = tqdm(total=config.steps, initial=step, disable=not (progress and info.is_main), desc=desc)
    pending: list[torch.Tensor] = []  # per-step losses still on the device (copied in groups: fewer syncs)

    def flush_losses():
        values = _mean_over_ranks(torch.stack(pending).float(), info).tolist()
        first = step - len(values)
        for i, value in enumerate(values):
            if not np.isfinite(value):
                bar.close()
                raise NonFiniteLossError(
                    f"training loss is {value} at step {first + i} (lr={lr_at(first + i, config):.3g}): "
                    "lower lr, turn on grad_clip, or check the data and model for NaN/inf"
                )
        losses.extend(values)
        pending.clear()
        bar.update(len(values))
        bar.set_postfix(loss=f"{np.mean(values):.4f}")

    def stop_reason() -> str | None:
        reason = None
        if time_budget is not None and time.perf_counter() - started >= time_budget:
            reason = "time budget"
        elif should_stop is not None and should_stop():
            reason = "stop requested"
        if info.world_size > 1:  # every rank must leave the loop at the same step
            codes = torch.tensor([("time budget", "stop requested", None).index(reason)], device=device)
            dist.all_reduce(codes, op=dist.ReduceOp.MIN)
            reason = ("time budget", "stop requested", None)[int(codes)]
        return reason

    def budget_spent() -> float:
        """The share of the time budget used so far (the same on every rank), for the cosine decay."""
        if not time_budget or config.lr_decay != "cosine":
            return 0.0
        spent = (time.perf_counter() - started) / time_budget
        if info.world_size > 1:  # every rank must take the same learning rate
            shared = torch.tensor([spent], device=device)
            dist.all_reduce(shared, op=dist.ReduceOp.MAX)
            spent = float(shared)
        return spent

    stopped = None
    ddp_model.train()
    while step < config.steps:
        idx = torch.randint(0, images.shape[0], (config.batch_size,), generator=data_gen).to(device)
        x0 = images[idx].contiguous(memory_format=memory_format)
        y = labels[idx] if labels is not None else None
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config, budget_spent())
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            if loss_fn is None:
                loss = diffusion_loss(
                    ddp_model,
                    x0,
                    schedule,
                    y,
                    config.p_uncond,
                    noise_gen,
                    min_snr_gamma=config.min_snr_gamma,
                    flow_time=config.flow_time,
                )
            else:
                loss = loss_fn(ddp_model, x0, y, noise_gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        ema.update(model)
        pending.append(loss.detach())
        step += 1
        save_now = state_path is not None and (
            step == config.steps or (config.checkpoint_every and step % config.checkpoint_every == 0)
        )
        logged = save_now or step % config.log_every == 0 or step == config.steps
        if logged:
            flush_losses()  # never write a state whose loss was not checked
        if save_now:
            save_state()
        if logged and on_log is not None and info.is_main:
            on_log(step, losses, ema.model)
        if step < config.steps and (time_budget is not None or should_stop is not None):
            stopped = stop_reason()
            if stopped is not None:
                if pending:
                    flush_losses()
                if state_path is not None and not save_now:
                    save_state()
                break
    if pending:
        flush_losses()
    bar.close()
    model.eval()
    return TrainResult(model=model, ema_model=ema.model, losses=losses, step=step, device=str(device),
                       stopped=stopped)  # fmt: skip


def _check_resume_compatible(
    state: dict, config: TrainConfig, model: nn.Module, info: DistInfo, path
) -> None:
    if state.get("model_config") != dict(getattr(model, "config", {})):
        fail(
            "model.config",
            getattr(model, "config", None),
            f"{path} holds a model with {state.get('model_config')}",
        )
    if state.get("world_size") != info.world_size:
        fail(
            "world_size",
            info.world_size,
            f"{path} was written by a run with {state.get('world_size')} processes",
        )
    saved, defaults = state.get("config", {}), TrainConfig().to_dict()
    for name, value in config.to_dict().items():
        if name not in RESUMABLE_CHANGES and saved.get(name, defaults[name]) != value:
            fail(f"config.{name}", value, f"resuming {path} needs the saved run's value {saved.get(name)!r}")
    if state["step"] > config.steps:
        fail("config.steps", config.steps, f"{path} is already at step {state['step']}")


__all__ = [
    "EMA",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "diffusion_loss",
    "flow_matching_loss",
    "flow_time_samples",
    "distributed_info",
    "init_distributed",
    "train",
]
