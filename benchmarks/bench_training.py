"""Training throughput (images per second) of the course's ε-models, for docs/benchmarks/training.md.

    .venv/bin/python benchmarks/bench_training.py [--batch 128] [--warmup 2] [--steps 3] [--rounds 3]
                                                  [--models tiny-quick tiny-full unet-quick unet-full]
                                                  [--device auto] [--threads N]

One training step is what ``training.train`` does per step: ``diffusion_loss`` on a batch of MNIST digits
(with labels and label dropout p_uncond = 0.1 for the conditional UNets), backward, gradient-norm clipping,
AdamW, the EMA update; bf16 autocast and channels-last on CUDA as in the trainer. Models:

* ``tiny-quick``: ``TinyUNet(base_channels=8, time_dim=32)``, the one notebook 02 trains live;
* ``tiny-full``: ``TinyUNet()`` at its defaults (32 channels, time_dim 128);
* ``unet-quick``: the ``mnist-cond`` run's UNet (≈0.69M parameters, the shipped model);
* ``unet-full``: the ``mnist-cond-full`` run's UNet (≈6.5M parameters, dropout 0.1).

Per model: ``warmup`` steps untimed, then ``rounds`` timed windows of ``steps`` steps each; the reported
throughput is the median over windows of batch × steps / seconds (CUDA is synchronised at window edges).
"Images per CPU-second" divides by this process's CPU time instead: on a shared CPU it is closer to what an
idle machine gives than the wall-clock rate (on CUDA it means little). Prints a Markdown table, the machine
and the load average before and after (a shared machine shows it).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from diffusion_course.configs import get_config
from diffusion_course.data import load_mnist
from diffusion_course.models import TinyUNet, count_parameters
from diffusion_course.profiles import resolve_device
from diffusion_course.schedules import linear_schedule
from diffusion_course.training import EMA, diffusion_loss

from machine import describe, load_average

MODELS = {
    "tiny-quick": ("TinyUNet, 8 channels (notebook 02)", lambda: TinyUNet(base_channels=8, time_dim=32)),
    "tiny-full": ("TinyUNet, 32 channels (defaults)", lambda: TinyUNet()),
    "unet-quick": ("UNet of mnist-cond (shipped)", lambda: get_config("mnist-cond").build_model()),
    "unet-full": ("UNet of mnist-cond-full", lambda: get_config("mnist-cond-full").build_model()),
}


def make_step(model: nn.Module, images, labels, batch: int, device: torch.device):
    """A closure running one trainer step on a fresh random batch."""
    schedule = linear_schedule(1000)
    cuda = device.type == "cuda"
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    model.to(device=device, memory_format=memory_format).train()
    conditional = getattr(model, "num_classes", None) is not None
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ema = EMA(model, 0.999)
    images, labels = images.to(device), labels.to(device)
    data_gen = torch.Generator().manual_seed(0)
    noise_gen = torch.Generator(device=device).manual_seed(1)

    def step():
        idx = torch.randint(0, images.shape[0], (batch,), generator=data_gen).to(device)
        x0 = images[idx].contiguous(memory_format=memory_format)
        y = labels[idx] if conditional else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = diffusion_loss(model, x0, schedule, y, 0.1 if conditional else 0.0, generator=noise_gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        ema.update(model)

    return step


def measure(step, device: torch.device, batch: int, warmup: int, steps: int, rounds: int):
    """Images per wall-clock second and per CPU second (this process, all threads) of each timed window."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    rates, cpu_rates = [], []
    for _ in range(rounds):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        sync()
        rates.append(batch * steps / (time.perf_counter() - start))
        cpu_rates.append(batch * steps / (time.process_time() - cpu_start))
    return rates, cpu_rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed window")
    parser.add_argument("--rounds", type=int, default=3, help="timed windows per model (median reported)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    images, labels = load_mnist("train")

    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"device: {device}{gpu}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"machine: {describe()}")
    print(
        f"batch {args.batch}; {args.warmup} warm-up steps, then {args.rounds} windows of {args.steps} steps"
    )
    print(f"load average before: {load_average()}")
    print()
    print("| model | parameters | images/s (median) | windows | s per step | images per CPU-second |")
    print("|---|---|---|---|---|---|")
    for key in args.models:
        label, build = MODELS[key]
        torch.manual_seed(0)
        model = build()
        step = make_step(model, images, labels, args.batch, device)
        rates, cpu_rates = measure(step, device, args.batch, args.warmup, args.steps, args.rounds)
        median = statistics.median(rates)
        shown = ", ".join(f"{r:.0f}" for r in rates)
        print(
            f"| {key}: {label} | {count_parameters(model):,} | {median:.0f} | {shown} "
            f"| {args.batch / median:.2f} | {statistics.median(cpu_rates):.0f} |",
            flush=True,
        )
    print()
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
