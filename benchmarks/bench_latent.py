"""Sampling time per image: mnist-latent (DDIM on 4×7×7 latents, then decode) against mnist-cond (DDIM on
28×28 pixels) at equal steps; target ≤ 0.5×. Also one U-Net forward at equal width on both input sizes.

    .venv/bin/python benchmarks/bench_latent.py [--steps 10 50] [--n 100] [--rounds 5] [--threads N]

Each round samples ``n`` images with each model (``generate_samples``, the code ``evaluate`` runs, decoding
included), the two interleaved so that a load change hits both; the table gives the median over rounds and,
in brackets, the lowest and highest round. The shipped checkpoints are used when present; otherwise the
architectures of their run configs with untrained weights (the cost does not depend on the weights).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from diffusion_course.checkpoints import Checkpoint, list_checkpoints, load_checkpoint
from diffusion_course.configs import UNET_LATENT, get_config
from diffusion_course.generation import generate_samples
from diffusion_course.models import UNet

from machine import describe, load_average


def checkpoint(name: str) -> tuple[Checkpoint, str]:
    if name in list_checkpoints():
        return load_checkpoint(name, device="cpu"), f"shipped {name}"
    run = get_config(name)
    autoencoder = get_config("mnist-vae").build_model().eval() if run.data == "mnist-latent" else None
    model = run.build_model().eval()
    built = Checkpoint(model, run.make_schedule(), {"name": name, "model": {"kind": run.model_kind,
                       "config": model.config}}, 10, autoencoder)  # fmt: skip
    return built, f"{name} architecture, untrained weights"


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


@torch.no_grad()
def forward_at_equal_width(rounds: int, batch: int = 100) -> dict[str, list[float]]:
    """One forward of the latent model's U-Net (64 channels, one level) on 1×28×28 and on 4×7×7 inputs."""
    nets = {
        "1×28×28": (UNet(**{**UNET_LATENT, "in_channels": 1, "image_size": 28}).eval(), (1, 28, 28)),
        "4×7×7": (UNet(**UNET_LATENT).eval(), (4, 7, 7)),
    }
    t, labels = torch.full((batch,), 500), torch.arange(batch) % 10
    inputs = {k: torch.randn(batch, *shape) for k, (_, shape) in nets.items()}
    out: dict[str, list[float]] = {k: [] for k in nets}
    for _ in range(rounds + 1):
        for k, (net, _) in nets.items():
            out[k].append(timed(net, inputs[k], t, labels))
    return {k: v[1:] for k, v in out.items()}  # the first round warms up


def show(values: list[float], scale: float = 1000.0, digits: int = 1) -> str:
    median, low, high = (scale * v for v in (statistics.median(values), min(values), max(values)))
    return f"{median:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--forward-batch", type=int, default=100, help="batch of the equal-width forward")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = dict(checkpoint(name) for name in ("mnist-cond", "mnist-latent"))
    pixel, latent = models
    print(f"models: {', '.join(models.values())}")
    print(f"machine: {describe()}")
    print(f"load average before: {load_average()}")
    print()
    print(f"Sampling {args.n} images, DDIM, median [min, max] of {args.rounds} rounds, ms per image:")
    print()
    print("| steps | mnist-cond (pixels) | mnist-latent (latents + decode) | ratio latent / pixel |")
    print("|---|---|---|---|")
    for steps in args.steps:
        times: dict[Checkpoint, list[float]] = {pixel: [], latent: []}
        for _ in range(args.rounds + 1):
            for ckpt in times:
                times[ckpt].append(timed(generate_samples, ckpt, "ddim", steps, n=args.n, seed=0))
        per_image = {k: [s / args.n for s in v[1:]] for k, v in times.items()}
        ratios = [a / b for a, b in zip(per_image[latent], per_image[pixel], strict=True)]
        print(f"| {steps} | {show(per_image[pixel])} | {show(per_image[latent])} | {show(ratios, 1.0, 2)} |")
    print()
    forward = forward_at_equal_width(args.rounds, args.forward_batch)
    ratio = [a / b for a, b in zip(forward["4×7×7"], forward["1×28×28"], strict=True)]
    print(f"One forward of the same U-Net (64 channels, one level, batch {args.forward_batch}), ms:")
    print()
    print("| input 1×28×28 | input 4×7×7 | ratio |")
    print("|---|---|---|")
    print(f"| {show(forward['1×28×28'])} | {show(forward['4×7×7'])} | {show(ratio, 1.0, 3)} |")
    print()
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
