"""Flow ODE against VP ODE on the exact 2-D mixture: sampler error against NFE, with 95 % intervals.

For each NFE budget: the mean distance from each endpoint to the same start's endpoint under its own ODE
solved with 400 midpoint steps (the exact ε of the VP chain; the exact velocity of the straight path), for
the first-order samplers (DDIM = Euler in σ on the VP chain's trailing grid, Euler on the flow's uniform grid)
and the second-order ones (midpoint on both). The numbers are about the samplers alone: both models are exact.

    .venv/bin/python benchmarks/bench_flow.py [--n 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import torch

from diffusion_course.oracle import GaussianMixtureOracle, toy_mixture
from diffusion_course.parameterizations import MixtureVelocity
from diffusion_course.sampling import run_flow_sampler, run_sampler
from diffusion_course.schedules import linear_schedule
from diffusion_course.scoring import mean_distance

from machine import describe, load_average

BUDGETS = (4, 10, 20, 50)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="starts x_1 (default 10,000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    mixture, schedule = toy_mixture(), linear_schedule(1000)
    eps, velocity = GaussianMixtureOracle(mixture, schedule), MixtureVelocity(mixture)
    x_1 = torch.randn(args.n, 2, generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64)
    exact = {"VP": run_sampler("midpoint", eps, x_1, schedule, 400),
             "flow": run_flow_sampler("midpoint", velocity, x_1, 400)}  # fmt: skip
    rows = {
        "DDIM (VP, trailing)": ("VP", lambda b: run_sampler("ddim", eps, x_1, schedule, b, eta=0.0)),
        "Euler (flow, uniform)": ("flow", lambda b: run_flow_sampler("euler", velocity, x_1, b)),
        "midpoint (VP, σ)": ("VP", lambda b: run_sampler("midpoint", eps, x_1, schedule, b // 2)),
        "midpoint (flow)": ("flow", lambda b: run_flow_sampler("midpoint", velocity, x_1, b // 2)),
    }
    print(f"machine: {describe()}")
    print(f"load average before: {load_average()}")
    print(f"n = {args.n} starts, seed {args.seed}; mean ‖x₀ − x₀(exact ODE)‖ ± 95 % half-width")
    print("| sampler | " + " | ".join(f"NFE {b}" for b in BUDGETS) + " |")
    print("|---|" + "---|" * len(BUDGETS))
    for name, (path, run) in rows.items():
        cells = []
        for b in BUDGETS:
            error = mean_distance(run(b), exact[path])
            cells.append(f"{error.value:.4f} ± {error.half_width:.4f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"{time.perf_counter() - started:.1f} s; load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
