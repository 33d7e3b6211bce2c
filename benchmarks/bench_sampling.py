"""Sampling benchmarks on the shipped MNIST model; results go to docs/benchmarks/sampling.md.

1. **Sampler overhead**: DDIM (η = 0 and η = 1) with S steps at batch 8 against the same S bare model calls
   (same inputs, no sampler arithmetic), on the CPU, and the same samplers around a constant ε-model (the
   sampler's own arithmetic, measured directly). Target: ≤ 1.05×.
The quality comparisons that used to be measured here (DDIM-50 vs DDPM-1000, the η × steps table) need
intervals and large n; they are reference experiments now, with provenance and a verdict per pair::

    .venv/bin/python -m diffusion_course experiment eta-steps --out data/results/eta-steps.json --n 500
    .venv/bin/python -m diffusion_course experiment ddim-vs-ddpm --out data/results/ddim-vs-ddpm.json --n 500

Usage::

    .venv/bin/python benchmarks/bench_sampling.py --repeats 21 --out /tmp/sampling.json

The script prints a Markdown report and writes the raw numbers as JSON; the report in
docs/benchmarks/sampling.md is that output plus notes on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from diffusion_course.checkpoints import load_checkpoint
from diffusion_course.sampling import ddim_sample, timestep_grid

from machine import describe, load_average


def machine() -> dict:
    return {"description": describe(), "load_average_start": load_average()}


@torch.no_grad()
def bare_calls(model, x, ts, labels) -> None:
    """The model calls a sampler makes, without the sampler: one ε per listed t on the same x."""
    for t in ts.tolist():
        model(x, torch.full((x.shape[0],), t, dtype=torch.long), labels=labels)


def overhead(model, schedule, batch: int, steps: int, repeats: int) -> dict:
    """Median and minimum wall-clock time of each variant over ``repeats`` interleaved rounds.

    Besides the full samplers and the bare model calls, the samplers run once more with a constant ε-model
    (no network): that time is the sampler's own arithmetic, the overhead itself, measured directly instead
    of as a small difference of two large noisy times.
    """
    x_T = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(12345))
    labels = torch.arange(batch) % 10
    ts = timestep_grid(schedule.T, steps)
    eps_const = torch.randn(x_T.shape, generator=torch.Generator().manual_seed(2))

    def constant_eps(x, t, labels=None):
        return eps_const

    def ddim(eps_model, eta):
        generator = torch.Generator().manual_seed(1)
        return lambda: ddim_sample(eps_model, x_T, schedule, ts, eta=eta, labels=labels, generator=generator)

    variants = {
        "bare model calls": lambda: bare_calls(model, x_T, ts, labels),
        "DDIM η=0": ddim(model, 0.0),
        "DDIM η=1": ddim(model, 1.0),
        "DDIM η=0, constant ε (sampler alone)": ddim(constant_eps, 0.0),
        "DDIM η=1, constant ε (sampler alone)": ddim(constant_eps, 1.0),
    }
    times = {name: [] for name in variants}
    for fn in variants.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in variants.items():  # interleaved, so a busy spell hits every variant alike
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    bare = times["bare model calls"]
    out = {"batch": batch, "steps": steps, "repeats": repeats, "seconds": times}
    for name, ts_ in times.items():
        out[name] = {
            "median_s": statistics.median(ts_),
            "min_s": min(ts_),
            "ratio_median": statistics.median(ts_) / statistics.median(bare),
            "ratio_min": min(ts_) / min(bare),
        }
    for eta in ("0", "1"):
        alone = out[f"DDIM η={eta}, constant ε (sampler alone)"]["median_s"]
        out[f"overhead_eta{eta}"] = 1 + alone / statistics.median(bare)
    return out


def report(results: dict) -> str:
    m, o = results["machine"], results["overhead"]
    lines = [
        f"Machine: {m['description']}; load average at start {m['load_average_start']}, "
        f"at end {results['load_average_end']}.",
        "",
        f"### Sampler overhead (batch {o['batch']}, {o['steps']} steps, {o['repeats']} interleaved rounds)",
        "",
        "| variant | median s | min s | median / bare | min / bare |",
        "|---|---|---|---|---|",
    ]
    for name in o["seconds"]:
        r = o[name]
        lines.append(
            f"| {name} | {r['median_s']:.4f} | {r['min_s']:.4f} | {r['ratio_median']:.3f} "
            f"| {r['ratio_min']:.3f} |"
        )
    lines += [
        "",
        f"Overhead = 1 + (sampler alone) / (bare model calls), medians: η=0 {o['overhead_eta0']:.4f}×, "
        f"η=1 {o['overhead_eta1']:.4f}× (target ≤ 1.05×).",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overhead-batch", type=int, default=8)
    parser.add_argument("--overhead-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--skip-quality",
        action="store_true",
        help="ignored: quality is an experiment now",
    )
    parser.add_argument("--out", default=None, help="write the raw results as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    checkpoint = load_checkpoint("mnist-cond", device="cpu")
    results = {"machine": machine(), "checkpoint_step": checkpoint.info.get("step")}
    results["overhead"] = overhead(
        checkpoint.model, checkpoint.schedule, args.overhead_batch, args.overhead_steps, args.repeats
    )
    results["load_average_end"] = load_average()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    print(report(results))


if __name__ == "__main__":
    main()
