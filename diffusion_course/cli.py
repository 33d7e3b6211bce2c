"""Command line: ``python -m diffusion_course <command>`` (also installed as ``diffusion-course``).

    python -m diffusion_course configs
    python -m diffusion_course train --config mnist-cond --out runs/mnist-cond [--steps N] [--resume]
    torchrun --nproc_per_node=4 -m diffusion_course train --config mnist-cond-full --out runs/full

``train`` writes ``<out>/<name>.safetensors`` and ``<out>/<name>.json`` (the exact command, seed, wall-clock
seconds, device and metrics are in the JSON) and keeps its resume state in ``<out>/train_state.pt``.
Each command is one ``add_<command>_parser`` function plus one ``run_<command>`` function; new commands
(``sample``, ``evaluate``) plug into ``build_parser`` the same way.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoints import save_checkpoint
from .configs import CONFIGS, get_config
from .training import NonFiniteLossError, classifier_accuracy, distributed_info, train, train_classifier


def add_configs_parser(subparsers) -> None:
    p = subparsers.add_parser("configs", help="list the named training configs")
    p.set_defaults(run=run_configs)


def run_configs(args) -> int:
    width = max(map(len, CONFIGS))
    for name, config in CONFIGS.items():
        print(f"{name:<{width}}  {config.description} [{config.expected_time}]")
    return 0


def add_train_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a named config and write its checkpoint")
    p.add_argument("--config", required=True, help=f"one of: {', '.join(CONFIGS)}")
    p.add_argument("--out", required=True, type=Path, help="output folder (checkpoint + resume state)")
    p.add_argument("--name", help="checkpoint file name (default: the config name)")
    p.add_argument("--steps", type=int, help="override the number of optimizer steps")
    p.add_argument("--batch-size", type=int, help="override the batch size (per process)")
    p.add_argument("--seed", type=int, help="override the seed (initial weights, data order, noise)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--resume", action="store_true", help="continue from <out>/train_state.pt if present")
    p.add_argument("--checkpoint-every", type=int, help="steps between resume states (0: only at the end)")
    p.add_argument(
        "--threads", type=int, help="CPU threads for torch (fewer can be faster on a busy machine)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_train)


def run_train(args) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    run = get_config(args.config).with_train(
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        checkpoint_every=args.checkpoint_every,
    )
    images, labels = run.load_data()
    model = run.build_model()
    if run.task == "diffusion" and getattr(model, "num_classes", None) is None:
        labels = None  # an unconditional model learns p(x) only
    schedule = run.make_schedule() if run.task == "diffusion" else None
    started = time.perf_counter()
    if run.task == "classifier":
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("the classifier trains in one process; run it without torchrun")
        if args.resume:
            raise ValueError("--resume is for diffusion runs; the classifier run is short and restarts")
        result = train_classifier(model, images, labels, run.train, progress=not args.quiet)
    else:
        result = train(
            model,
            images,
            labels,
            schedule,
            run.train,
            out_dir=args.out,
            resume=args.resume,
            progress=not args.quiet,
        )
    seconds = time.perf_counter() - started
    info = distributed_info()
    if not info.is_main:
        return 0

    metrics = {"final_loss": float(np.mean(result.losses[-100:])) if result.losses else None}
    if run.task == "classifier":
        metrics["train_accuracy"] = classifier_accuracy(result.model, images, labels)
        if run.data == "mnist-train":
            from .data import load_mnist

            metrics["heldout_accuracy"] = classifier_accuracy(result.model, *load_mnist("heldout"))
    launcher = f"torchrun --nproc_per_node={info.world_size} -m" if info.world_size > 1 else "python -m"
    path = save_checkpoint(
        args.out / (args.name or run.name),
        result.model,
        result.ema_model,
        config=run.train.to_dict(),
        schedule=schedule,
        data=run.data,
        step=result.step,
        seed=run.train.seed,
        command=f"{launcher} diffusion_course {shlex.join(args.argv)}",
        metrics=metrics,
        extra={
            "run_config": run.name,
            "description": run.description,
            "data_size": int(images.shape[0]),
            "seconds": round(seconds, 1),
            "device": result.device,
            "world_size": info.world_size,
            "resumed": bool(args.resume),
        },
    )
    shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if v is not None)
    print(
        f"wrote {path} and {path.with_suffix('.safetensors')} ({result.step} steps, {seconds:.0f} s, {shown})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diffusion_course", description=__doc__.split("\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    add_configs_parser(subparsers)
    add_train_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
