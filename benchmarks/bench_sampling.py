"""Sampling benchmarks on the shipped MNIST model; results go to docs/benchmarks/sampling.md.

1. **Sampler overhead**: DDIM (η = 0 and η = 1) with S steps at batch 8 against the same S bare model calls
   (same inputs, no sampler arithmetic), on the CPU, and the same samplers around a constant ε-model (the
   sampler's own arithmetic, measured directly). Target: ≤ 1.05×.
2. **DDIM-50 vs DDPM-1000**: FD (course classifier features, against the 500 held-out digits) of ``--samples``
   samples from the same x_T and labels. Target: DDIM-50's FD within 10 % of DDPM-1000's.
3. **The η ordering of DDIM Table 1** at ≤ 50 steps: FD for η ∈ {0, 0.2, 0.5, 1} × S ∈ {10, 20, 50} from the
   same x_T; target: η = 0 best in every column.

Usage (the whole run takes about an hour of CPU time with 500 samples)::

    .venv/bin/python benchmarks/bench_sampling.py --samples 500 --out /tmp/sampling.json

The script prints a Markdown report and writes the raw numbers as JSON; the report in
docs/benchmarks/sampling.md is that output plus notes on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from diffusion_course import make_schedule
from diffusion_course.checkpoints import load_checkpoint
from diffusion_course.data import load_mnist
from diffusion_course.experiments import eta_steps_table
from diffusion_course.metrics import classifier_features, frechet_distance, label_accuracy
from diffusion_course.sampling import ddim_sample, ddpm_sample, timesteps

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
    ts = timesteps(schedule.T, steps)
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


def sample_in_chunks(fn, x_T, labels, chunk: int, generator=None):
    out = []
    for lo in range(0, x_T.shape[0], chunk):
        out.append(fn(x_T[lo : lo + chunk], labels[lo : lo + chunk], generator))
    return torch.cat(out)


def quality(model, schedule, classifier, n, chunk, ddpm_steps=1000, seed=12345, noise_seed=0) -> dict:
    real, _ = load_mnist("heldout")
    train, _ = load_mnist("train")
    real_features = classifier_features(classifier, real)
    # the training split is sorted by label: every k-th digit is a class-balanced subset of n real digits
    floor = frechet_distance(classifier_features(classifier, train[:: len(train) // n][:n]), real_features)
    x_T = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(n) % 10
    accuracies = []

    def fd(samples):
        accuracies.append(label_accuracy(classifier, samples, labels))
        return frechet_distance(classifier_features(classifier, samples), real_features)

    start = time.perf_counter()
    table = eta_steps_table(
        model, x_T, schedule, [0.0, 0.2, 0.5, 1.0], [10, 20, 50], fd, labels=labels, batch_size=chunk,
        metric_name=f"FD ({n} samples)", progress=True,
    )  # fmt: skip
    table_seconds = time.perf_counter() - start

    ddpm_ts = timesteps(schedule.T, ddpm_steps)
    ddpm = lambda x, y, g: ddpm_sample(model, x, schedule, ddpm_ts, labels=y, generator=g, progress=True)  # noqa: E731
    start = time.perf_counter()
    samples = sample_in_chunks(ddpm, x_T, labels, chunk, torch.Generator().manual_seed(noise_seed))
    ddpm_seconds = time.perf_counter() - start
    ddpm_fd = fd(samples)
    ddim50 = table.value(0.0, 50)
    return {
        "samples": n,
        "seed": seed,
        "noise_seed": noise_seed,
        "fd_floor_train_vs_heldout": floor,
        "table": {
            "etas": table.etas,
            "steps": table.steps,
            "fd": table.values.tolist(),
            "accuracy": torch.tensor(accuracies[:-1]).view(len(table.etas), len(table.steps)).tolist(),
            "seconds_per_sample": table.seconds.tolist(),
            "text": table.format(),
        },
        "table_wall_s": table_seconds,
        "ddpm_steps": ddpm_steps,
        "ddpm1000": {"fd": ddpm_fd, "accuracy": accuracies[-1], "seconds_per_sample": ddpm_seconds / n},
        "ddim50": {"fd": ddim50, "accuracy": accuracies[2], "seconds_per_sample": table.seconds[0, 2].item()},
        "ddim50_vs_ddpm1000_relative": (ddim50 - ddpm_fd) / ddpm_fd,
        "eta0_best_per_column": [
            bool(table.values[0, j] == table.values[:, j].min()) for j in range(len(table.steps))
        ],
        "monotone_in_eta_per_column": [
            bool((table.values[1:, j] > table.values[:-1, j]).all()) for j in range(len(table.steps))
        ],
    }


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
    q = results.get("quality")
    if q:
        t = q["table"]
        lines += [
            "",
            f"### Quality ({q['samples']} samples, x_T seed {q['seed']}, DDPM noise seed {q['noise_seed']}; "
            "FD against the 500 held-out digits; floor = FD of "
            f"{q['samples']} class-balanced training digits against them: "
            f"{q['fd_floor_train_vs_heldout']:.2f})",
            "",
            "| sampler | FD | label accuracy | s per sample |",
            "|---|---|---|---|",
            f"| DDPM-{q['ddpm_steps']} | {q['ddpm1000']['fd']:.2f} | {q['ddpm1000']['accuracy']:.3f} | "
            f"{q['ddpm1000']['seconds_per_sample']:.4f} |",
            f"| DDIM-50 (η=0) | {q['ddim50']['fd']:.2f} | {q['ddim50']['accuracy']:.3f} | "
            f"{q['ddim50']['seconds_per_sample']:.4f} |",
            "",
            f"DDIM-50 vs DDPM-{q['ddpm_steps']}: {100 * q['ddim50_vs_ddpm1000_relative']:+.1f} % FD; "
            f"measured speed-up "
            f"{q['ddpm1000']['seconds_per_sample'] / q['ddim50']['seconds_per_sample']:.1f}×.",
            "",
            "| η \\ steps | " + " | ".join(str(s) for s in t["steps"]) + " |",
            "|---|" + "---|" * len(t["steps"]),
        ]
        for eta, fds, accs in zip(t["etas"], t["fd"], t["accuracy"]):
            cells = " | ".join(f"{f:.2f} ({a:.3f})" for f, a in zip(fds, accs))
            lines.append(f"| {eta:g} | {cells} |")
        lines += [
            "",
            "FD (label accuracy). η = 0 best per column: "
            + ", ".join(f"S={s}: {b}" for s, b in zip(t["steps"], q["eta0_best_per_column"]))
            + "; FD increasing with η per column: "
            + ", ".join(f"S={s}: {b}" for s, b in zip(t["steps"], q["monotone_in_eta_per_column"]))
            + ".",
        ]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500, help="samples for the FD comparisons")
    parser.add_argument("--chunk", type=int, default=250, help="sampling batch size for the FD runs")
    parser.add_argument("--overhead-batch", type=int, default=8)
    parser.add_argument("--overhead-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--ddpm-steps", type=int, default=1000, help="DDPM steps (1000 = all; fewer: smoke test)"
    )
    parser.add_argument("--seed", type=int, default=12345, help="seed of x_T for the FD runs")
    parser.add_argument("--noise-seed", type=int, default=0, help="seed of DDPM's fresh noise")
    parser.add_argument("--skip-quality", action="store_true", help="only the overhead measurement")
    parser.add_argument("--out", default=None, help="write the raw results as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, info = load_checkpoint("mnist-cond", device="cpu")
    classifier, _ = load_checkpoint("mnist-classifier", device="cpu")
    schedule = make_schedule(info["schedule"]["name"], info["schedule"]["T"])
    results = {"machine": machine(), "checkpoint_step": info.get("step")}
    results["overhead"] = overhead(model, schedule, args.overhead_batch, args.overhead_steps, args.repeats)
    if not args.skip_quality:
        results["quality"] = quality(
            model, schedule, classifier, args.samples, args.chunk, args.ddpm_steps, args.seed, args.noise_seed
        )
    results["load_average_end"] = load_average()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    print(report(results))


if __name__ == "__main__":
    main()
