"""Command line: ``python -m diffusion_course <command>`` (also installed as ``diffusion-course``).

    python -m diffusion_course configs
    python -m diffusion_course train --config mnist-cond --out runs/mnist-cond [--steps N] [--resume]
    python -m diffusion_course sample --checkpoint mnist-cond --sampler ddim --steps 50 --out grid.png
    python -m diffusion_course evaluate --checkpoint mnist-cond --steps 50 --n 500 --json [--repeats R]
    python -m diffusion_course experiment eta-steps --out data/results/eta-steps.json --n 500
    torchrun --nproc_per_node=4 -m diffusion_course train --config mnist-cond-full --out runs/full

``train`` writes ``<out>/<name>.safetensors`` and ``<out>/<name>.json`` (the exact command, seed, wall-clock
seconds, device and metrics are in the JSON) and keeps its resume state in ``<out>/train_state.pt``.
Each command is one ``add_<command>_parser`` function plus one ``run_<command>`` function, plugged into
``build_parser``. ``sample`` and ``evaluate`` take every registered sampler (``--sampler``) and a flag for
each sampler option (``--eta``, ``--variance``, ``--clip-x0``, ``--order``, ``--corrector``, …), both read
from the sampler registry, so a new sampler or option needs no change here.
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoints import load_checkpoint, save_checkpoint
from .classifier_training import classifier_accuracy, train_classifier
from .configs import CONFIGS, get_config
from .latent import train_autoencoder
from .sampling.registry import FLOW_SAMPLERS, SAMPLERS
from .training import NonFiniteLossError, distributed_info, train


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
        "--time-budget", type=float, metavar="SECONDS",
        help="stop after this much wall clock (after a whole step), write the checkpoint; --resume continues",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=int, help="CPU threads for torch (fewer can be faster on a busy machine)"
    )
    p.add_argument(
        "--autoencoder", help="latent runs: the autoencoder checkpoint (name or path) instead of the config's"
    )
    p.add_argument(
        "--teacher",
        help="distillation runs: the teacher checkpoint (name, path or 'mine') instead of the config's",
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
    if run.task == "distillation":
        return _train_distillation(args, run)
    if args.teacher is not None:
        raise ValueError(f"--teacher is for distillation runs; {run.name} is a {run.task} run")
    autoencoder = _latent_autoencoder(run, args.autoencoder)
    images, labels = run.load_data(autoencoder=args.autoencoder)
    model = run.build_model()
    if run.task == "diffusion" and getattr(model, "num_classes", None) is None:
        labels = None  # an unconditional model learns p(x) only
    schedule = run.make_schedule() if run.task == "diffusion" else None
    load_at_start = _load_average()
    started = time.perf_counter()
    if run.task != "diffusion":
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(f"the {run.task} trains in one process; run it without torchrun")
        if args.resume:
            raise ValueError(f"--resume is for diffusion runs; the {run.task} run is short and restarts")
        if args.time_budget is not None:
            raise ValueError(f"--time-budget is for diffusion runs; the {run.task} run is short")
    if run.task == "classifier":
        result = train_classifier(model, images, labels, run.train, progress=not args.quiet)
    elif run.task == "autoencoder":
        kl_weight = run.extra["kl_weight"]
        result = train_autoencoder(model, images, run.train, kl_weight=kl_weight, progress=not args.quiet)
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
            time_budget=args.time_budget,
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
    if run.task == "autoencoder":
        metrics.update(autoencoder_metrics(result.model, run.data))
    extra = {
        "data_size": int(images.shape[0]),
        **({"autoencoder": autoencoder} if autoencoder else {}),
        **({"kl_weight": run.extra["kl_weight"]} if run.task == "autoencoder" else {}),
    }
    path = _save_run(
        args, run, args.name or run.name, result, schedule, metrics, seconds, load_at_start, extra
    )
    shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if v is not None)
    stopped = getattr(result, "stopped", None)
    why = f"; stopped at the time budget of {args.time_budget:g} s, --resume continues" if stopped else ""
    weights = path.with_suffix(".safetensors")
    print(f"wrote {path} and {weights} ({result.step} steps, {seconds:.0f} s, {shown}{why})")
    return 0


def _load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _save_run(args, run, name, result, schedule, metrics, seconds, load_at_start, extra, config=None) -> Path:
    """Write the checkpoint of a run with its provenance: the command, config, seed, seconds, machine and
    the load average at the start and end."""
    info = distributed_info()
    launcher = f"torchrun --nproc_per_node={info.world_size} -m" if info.world_size > 1 else "python -m"
    return save_checkpoint(
        args.out / name,
        result.model,
        result.ema_model,
        config=(config or run.train).to_dict(),
        schedule=schedule,
        data=run.data,
        step=result.step,
        seed=run.train.seed,
        command=f"{launcher} diffusion_course {shlex.join(args.argv)}",
        metrics=metrics,
        extra={
            "run_config": run.name,
            "description": run.description,
            "seconds": round(seconds, 3),
            "device": result.device,
            "world_size": info.world_size,
            "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, "
            f"{torch.get_num_threads()} torch threads",
            "load_average_at_start": load_at_start,
            "load_average_at_end": _load_average(),
            "resumed": bool(args.resume),
            "time_budget": args.time_budget,
            "stopped": getattr(result, "stopped", None),
            **extra,
        },
    )


def _train_distillation(args, run) -> int:
    """``train --config mnist-distill``: the rounds of ``distillation.distill`` from the config's teacher,
    one checkpoint ``<prefix>-<N>`` per round (written as the round ends; ``--resume`` skips the rounds
    whose checkpoint is there and continues the current round from its resume state)."""
    from .checkpoints import read_checkpoint_info
    from .distillation import distill, v_student

    if args.time_budget is not None:
        raise ValueError(
            "--time-budget is for diffusion runs; a distillation run resumes by rounds (--resume)"
        )
    if args.autoencoder is not None:
        raise ValueError(f"--autoencoder is for latent runs; {run.name} distils {run.extra['teacher']}")
    teacher_name = args.teacher or run.extra["teacher"]
    teacher_ckpt = load_checkpoint(teacher_name, device=run.train.device)
    teacher_info = read_checkpoint_info(teacher_name)
    kind = teacher_info["model"]["kind"]
    if kind not in ("unet", "tiny_unet", "v_prediction") or teacher_ckpt.autoencoder is not None:
        what = f"{kind} checkpoint" + (" on latents" if teacher_ckpt.autoencoder is not None else "")
        raise ValueError(
            f"--teacher {teacher_name}: {teacher_info['json_path']} is a {what}; distillation takes a "
            "pixel-space diffusion model (unet, tiny_unet or v_prediction)"
        )
    schedule = teacher_ckpt.schedule
    images, labels = run.load_data()
    rounds, prefix = list(run.extra["rounds"]), run.extra["name_prefix"]
    first_steps = run.extra.get("first_round_steps", run.train.steps)

    def config(n: int):
        return run.train.replace(steps=first_steps) if n == rounds[0] and not args.steps else run.train

    def finished(n: int):
        path = args.out / f"{prefix}-{n}.json"
        return (
            load_checkpoint(path, device=run.train.device).model if args.resume and path.is_file() else None
        )

    load_at_start, total_seconds = _load_average(), 0.0

    def on_round(n: int, result, seconds: float) -> None:
        nonlocal load_at_start, total_seconds
        total_seconds += seconds
        if not distributed_info().is_main:
            return
        teacher = {"name": teacher_info["name"], "safetensors_sha256": teacher_info["safetensors_sha256"]}
        distillation = {
            "rounds": rounds,
            "student_steps": n,
            "teacher_steps": 2 * n,
            "round_steps": config(n).steps,
            "seconds_all_rounds_so_far": round(total_seconds, 1),
        }
        extra = {"data_size": int(images.shape[0]), "teacher": teacher, "distillation": distillation}
        metrics = {"final_loss": float(np.mean(result.losses[-100:]))}
        path = _save_run(args, run, f"{prefix}-{n}", result, schedule, metrics, seconds,
                         load_at_start, extra, config(n))  # fmt: skip
        load_at_start = _load_average()
        loss = metrics["final_loss"]
        print(f"wrote {path} (round {n}: {result.step} steps, {seconds:.0f} s, final loss {loss:.4g})")

    student = v_student(teacher_ckpt.model, schedule)
    distill(teacher_ckpt.model, student, images, labels, schedule, rounds, config, out_dir=args.out,
            resume=args.resume, progress=not args.quiet, on_round=on_round, finished=finished)  # fmt: skip
    return 0


def _latent_autoencoder(run, override: str | None) -> dict | None:
    """For a latent run, what its checkpoint records of the autoencoder: its name and weights' SHA-256
    (``load_checkpoint`` finds it beside the checkpoint or among the shipped ones, and checks the hash)."""
    if run.data != "mnist-latent":
        if override is not None:
            raise ValueError(f"--autoencoder is for latent runs; {run.name} trains on {run.data}")
        return None
    from .checkpoints import read_checkpoint_info

    info = read_checkpoint_info(override or run.extra["autoencoder"])
    if info["model"]["kind"] != "autoencoder":
        raise ValueError(f"--autoencoder {override}: {info['json_path']} is a {info['model']['kind']} "
                         "checkpoint, not an autoencoder")  # fmt: skip
    return {"name": info["name"], "safetensors_sha256": info["safetensors_sha256"]}


def autoencoder_metrics(model, data: str) -> dict:
    """Held-out reconstruction error (mean squared error per pixel) and, for MNIST, the course scores of
    the reconstructions decode(μ(x)) (label accuracy, KID, FD, with intervals)."""
    from .data import load_mnist
    from .evaluation import evaluate_samples
    from .latent import reconstruct

    if data != "mnist-train":
        return {}
    images, labels = load_mnist("heldout")
    recon = reconstruct(model, images)
    scores = evaluate_samples(recon, labels)
    metrics = {"heldout_mse_per_pixel": float((recon - images).pow(2).mean())}
    metrics.update({f"heldout_reconstruction_{k}": v for k, v in scores.items() if k != "reference"})
    return metrics


def sampler_options() -> dict[str, tuple[type, object, list[str]]]:
    """Every option of a registered sampler → (type, default, the samplers that take it), read from the
    registry and the samplers' signatures."""
    options: dict[str, tuple[type, object, list[str]]] = {}
    for spec in SAMPLERS.values():
        params = inspect.signature(spec.fn).parameters
        for option in spec.options:
            default = params[option].default
            options.setdefault(option, (type(default), default, []))[2].append(spec.name)
    return options


def _chosen_options(args) -> dict:
    chosen = {o: getattr(args, o) for o in sampler_options() if getattr(args, o) is not None}
    return chosen if getattr(args, "shift", None) is None else {**chosen, "shift": args.shift}


def _add_sampling_arguments(p, n_default: int) -> None:
    """Flags shared by ``sample`` and ``evaluate`` (the logic lives in diffusion_course.generation and
    diffusion_course.evaluation)."""
    p.add_argument(
        "--checkpoint", required=True, help="a shipped name (e.g. mnist-cond) or a checkpoint path"
    )
    p.add_argument("--sampler", default="ddim", help=f"one of {', '.join(sorted(SAMPLERS))} (default ddim); "
                   f"a flow model takes {', '.join(sorted(FLOW_SAMPLERS))}")  # fmt: skip
    p.add_argument("--steps", type=int, default=50, help="sampling steps, 1..T (default 50)")
    for option, (kind, default, users) in sampler_options().items():
        flag = "--" + option.replace("_", "-")
        what = f"option of {', '.join(users)} (default {default})"
        if kind is bool:
            p.add_argument(flag, dest=option, action=argparse.BooleanOptionalAction, default=None, help=what)
        else:
            p.add_argument(flag, dest=option, type=kind, help=what)
    p.add_argument("--strategy", default="trailing", help="timestep grid (default trailing)")
    p.add_argument(
        "--shift", type=float, help="flow models: time shift s, t ↦ s t / (1 + (s − 1) t) (default 1)"
    )
    p.add_argument(
        "--guidance", type=float, help="CFG scale s in ε_u + s(ε_c − ε_u); conditional models, default 1"
    )
    p.add_argument("--n", type=int, default=n_default, help=f"number of samples (default {n_default})")
    p.add_argument("--seed", type=int, default=0, help="seed of x_T and the sampler noise (default 0)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_sample_parser(subparsers) -> None:
    p = subparsers.add_parser("sample", help="sample a checkpoint and write an image grid (PNG)")
    _add_sampling_arguments(p, n_default=64)
    p.add_argument(
        "--label", type=int, help="class of every sample (conditional models; default 0..9 in turn)"
    )
    p.add_argument("--out", required=True, type=Path, help="output PNG")
    p.add_argument("--nrow", type=int, help="images per row (default 10 with labels 0..9 in turn, else 8)")
    p.set_defaults(run=run_sample)


def run_sample(args) -> int:
    from .generation import generate_samples, sample_labels

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(args.checkpoint, device=args.device)
    name = checkpoint.info["name"]
    labels = sample_labels(checkpoint.model, args.n, args.label) if args.label is not None else None
    started = time.perf_counter()
    images, labels = generate_samples(
        checkpoint, args.sampler, args.steps, n=args.n, seed=args.seed, strategy=args.strategy,
        guidance=args.guidance, labels=labels, progress=not args.quiet, **_chosen_options(args),
    )  # fmt: skip
    seconds = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if images.ndim == 2:  # 2-D points: a scatter plot instead of a grid
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(images[:, 0], images[:, 1], s=3, alpha=0.5)
        ax.set_aspect("equal")
        ax.set_title(f"{name}: {args.sampler}, {args.steps} steps, n={args.n}")
        fig.savefig(args.out, dpi=100)
        plt.close(fig)
    else:
        from torchvision.utils import save_image

        cycling = checkpoint.classes is not None and args.label is None
        nrow = args.nrow or (checkpoint.classes if cycling else 8)
        save_image(((images + 1) / 2).clamp(0, 1), args.out, nrow=nrow, padding=2)
    what = f"{args.n} samples of {name}, {args.sampler} {args.steps} steps"
    print(f"wrote {args.out} ({what}, {seconds:.1f} s)")
    return 0


def add_evaluate_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="sample a checkpoint and score it (FD, label accuracy, sliced W2)"
    )
    _add_sampling_arguments(p, n_default=500)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object (the last line)")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run for seeds seed..seed+R−1 and report the spread (default 1)",
    )
    p.set_defaults(run=run_evaluate)


def run_evaluate(args) -> int:
    import json

    from .evaluation import evaluate_checkpoint

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    record = evaluate_checkpoint(
        args.checkpoint, args.sampler, args.steps, n=args.n, seed=args.seed, strategy=args.strategy,
        guidance=args.guidance, device=args.device, progress=not args.quiet, repeats=args.repeats,
        **_chosen_options(args),
    )  # fmt: skip
    if args.json:
        print(json.dumps(record))
    else:
        for key, value in record.items():
            print(f"{key}: {value}")
    return 0


def add_experiment_parser(subparsers) -> None:
    from .reference_results import EXPERIMENTS

    p = subparsers.add_parser(
        "experiment", help="run a reference comparison and write its results file (JSON)"
    )
    p.add_argument("name", help=f"one of: {', '.join(EXPERIMENTS)}")
    p.add_argument("--out", required=True, type=Path, help="results file, e.g. data/results/NAME.json")
    p.add_argument("--n", type=int, default=500, help="samples per cell, a multiple of --chunk (default 500)")
    p.add_argument(
        "--seed", type=int, default=0, help="first chunk's seed; chunk k uses seed + k (default 0)"
    )
    p.add_argument("--chunk", type=int, default=100, help="samples per chunk (default 100)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--quiet", action="store_true", help="no line per cell")
    p.set_defaults(run=run_experiment)


def run_experiment(args) -> int:
    from .reference_results import run_experiment as run
    from .reference_results import write_results

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    command = f"python -m diffusion_course {shlex.join(args.argv)}"
    record = run(
        args.name, n=args.n, seed=args.seed, chunk=args.chunk, progress=not args.quiet, command=command
    )
    print(
        f"wrote {write_results(record, args.out)} ({len(record['cells'])} cells, {record['seconds']:.0f} s)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diffusion_course", description=__doc__.split("\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    add_configs_parser(subparsers)
    add_train_parser(subparsers)
    add_sample_parser(subparsers)
    add_evaluate_parser(subparsers)
    add_experiment_parser(subparsers)
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
