"""Time to quality of a training config: label accuracy and KID, with intervals, against wall-clock seconds.

    python benchmarks/bench_time_to_quality.py --config mnist-cond-fast --budget 600 --at 200 400
    python benchmarks/bench_time_to_quality.py --config mnist-cond-fast --set batch_size=32 lr=0.001

Trains the config from scratch in this process for at most ``--budget`` seconds, keeps a copy of the EMA
weights when each ``--at`` time has passed (at the next logged step), then, after training, scores every
copy with DDIM-50 on ``--n`` samples (seed 0, labels 0..9 in turn, no guidance) through the course's
``Scorer``: label accuracy (Wilson interval), KID (standard error) and FD (bootstrap interval). Run it alone
on the machine: the wall clock is the measurement. Prints a markdown table with the load average before
and after and writes the rows to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from diffusion_course.checkpoints import Checkpoint
from diffusion_course.configs import CONFIGS, get_config
from diffusion_course.generation import generate_samples
from diffusion_course.scoring import Scorer
from diffusion_course.training import train

from machine import describe, load_average


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help=f"one of: {', '.join(CONFIGS)}")
    p.add_argument("--budget", type=float, default=600.0, help="training wall clock in seconds (default 600)")
    p.add_argument("--at", type=float, nargs="+", default=[150, 300, 450, 600], help="snapshot times (s)")
    p.add_argument("--n", type=int, default=500, help="samples per snapshot (default 500)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override TrainConfig fields")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--out", type=Path, help="write the rows here (JSON)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = get_config(args.config)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    run = run.with_train(**overrides)
    images, labels = run.load_data()
    model, schedule = run.build_model(), run.make_schedule()
    load_before = load_average()
    started = time.perf_counter()
    pending = sorted(args.at)
    snapshots = []  # (seconds, step, EMA weights)

    def on_log(step, losses, ema_model):
        elapsed = time.perf_counter() - started
        while pending and elapsed >= pending[0]:
            pending.pop(0)
            snapshots.append((elapsed, step, copy.deepcopy(ema_model.state_dict())))

    result = train(model, images, labels, schedule, run.train, progress=False, time_budget=args.budget,
                   on_log=on_log)  # fmt: skip
    seconds = time.perf_counter() - started
    snapshots.append((seconds, result.step, copy.deepcopy(result.ema_model.state_dict())))
    load_after = load_average()

    scorer = Scorer()
    info = {"name": run.name, "model": {"kind": run.model_kind, "config": run.model_config}}
    rows = []
    for elapsed, step, weights in snapshots:
        ema = copy.deepcopy(result.ema_model)
        ema.load_state_dict(weights)
        checkpoint = Checkpoint(ema.eval(), schedule, info, getattr(ema, "num_classes", None))
        samples, sample_labels = generate_samples(checkpoint, "ddim", args.steps, n=args.n, seed=0)
        scores = scorer.score(samples, sample_labels)
        estimates = {e.name: {"value": e.value, "low": e.low, "high": e.high} for e in scores}
        rows.append({"seconds": round(elapsed, 1), "step": step, "images": step * run.train.batch_size,
                     **estimates})  # fmt: skip
        print(f"{elapsed:7.0f} s  step {step:6d}  {scores}", file=sys.stderr)

    print(f"\n{describe()}; load average {load_before} before, {load_after} after training")
    print(f"config {run.name}: {run.train.to_dict()}\n")
    print(f"| seconds | steps | images | label accuracy (DDIM-{args.steps}, n = {args.n}) | KID | FD |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        cells = [f"{row[k]['value']:.3g} [{row[k]['low']:.3g}, {row[k]['high']:.3g}]" for k in
                 ("label accuracy", "KID", "FD")]  # fmt: skip
        print(f"| {row['seconds']:.0f} | {row['step']} | {row['images']} | " + " | ".join(cells) + " |")
    if args.out:
        command = "python benchmarks/bench_time_to_quality.py " + " ".join(argv or sys.argv[1:])
        record = {"config": run.name, "train": run.train.to_dict(), "budget": args.budget, "rows": rows,
                  "machine": describe(), "load_before": load_before, "load_after": load_after,
                  "command": command}  # fmt: skip
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
