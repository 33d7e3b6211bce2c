"""Cost of a classifier-free-guided sampling step against an unguided one (target: ≤ 2.1× at batch 8, CPU).

    .venv/bin/python benchmarks/bench_guidance.py [--batches 1 8 64] [--rounds 7] [--repeats 5] [--threads N]

Model: the shipped ``mnist-cond`` UNet when ``data/checkpoints/mnist-cond.safetensors`` exists, otherwise the
same architecture built from the ``mnist-cond`` run config (the cost does not depend on the weights). Each
variant is one DDIM step at t = 500 → 450 on a batch of B images:

* ``unguided``: ε = model(x_t, t, labels), then the DDIM step;
* ``cfg``: ε̃ = CFG(model, 3)(x_t, t, labels) (one model call on 2B), then the DDIM step;
* ``two calls``: ε_c and ε_u from two model calls on B, combined with ``guided_eps``, then the DDIM step.

The variants are interleaved inside each round (so a load change on a shared machine hits all of them); a
round's time per variant is the median of ``repeats`` calls, and the reported time is the median over
rounds. Results go to stdout as a Markdown table, for docs/benchmarks/guidance.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from diffusion_course.checkpoints import load_checkpoint
from diffusion_course.configs import get_config
from diffusion_course.sampling import CFG, ddim_step, guided_eps
from diffusion_course.schedules import linear_schedule

from machine import describe, load_average

ROOT = Path(__file__).resolve().parents[1]


def load_model():
    if (ROOT / "data" / "checkpoints" / "mnist-cond.safetensors").is_file():
        return load_checkpoint("mnist-cond", device="cpu").model, "shipped mnist-cond checkpoint"
    return get_config("mnist-cond").build_model().eval(), "mnist-cond architecture, untrained weights"


def variants(model, batch: int):
    schedule = linear_schedule(1000)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=g)
    t = torch.full((batch,), 500)
    labels = torch.arange(batch) % 10
    null = torch.full_like(labels, model.num_classes)
    ab_t, ab_prev = float(schedule.alpha_bar[500]), float(schedule.alpha_bar[450])
    cfg = CFG(model, 3.0)

    def unguided():
        return ddim_step(x, model(x, t, labels=labels), ab_t, ab_prev)[0]

    def guided():
        return ddim_step(x, cfg(x, t, labels), ab_t, ab_prev)[0]

    def two_calls():
        eps = guided_eps(model(x, t, labels=labels), model(x, t, labels=null), 3.0)
        return ddim_step(x, eps, ab_t, ab_prev)[0]

    return {"unguided": unguided, "cfg": guided, "two calls": two_calls}


@torch.no_grad()
def measure(fns: dict, rounds: int, repeats: int) -> dict[str, float]:
    for fn in fns.values():  # warm-up
        fn()
    per_round: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            per_round[name].append(statistics.median(times))
    return {name: statistics.median(values) for name, values in per_round.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, source = load_model()
    print(f"model: {source}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"machine: {describe()}")
    print(f"load average before: {load_average()}")
    print()
    print("| batch | unguided step (ms) | CFG step, one 2B call (ms) | ratio | two B calls (ms) | ratio |")
    print("|---|---|---|---|---|---|")
    for batch in args.batches:
        t = measure(variants(model, batch), args.rounds, args.repeats)
        ms = {k: 1000 * v for k, v in t.items()}
        print(
            f"| {batch} | {ms['unguided']:.1f} | {ms['cfg']:.1f} | {t['cfg'] / t['unguided']:.2f}× "
            f"| {ms['two calls']:.1f} | {t['two calls'] / t['unguided']:.2f}× |"
        )
    print()
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
