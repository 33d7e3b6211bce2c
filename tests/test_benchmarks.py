"""The benchmark scripts run end to end with tiny settings and print their tables (timings are not checked).

Benchmarks are run by hand and their results written down in docs/benchmarks/; this keeps the scripts from
rotting between those runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run_bench(script: str, *args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "logical CPUs" in proc.stdout  # the machine line from benchmarks/machine.py
    return proc.stdout


def test_bench_guidance_prints_one_row_per_batch():
    out = run_bench("bench_guidance.py", "--batches", "1", "2", "--rounds", "1", "--repeats", "1")
    rows = [line for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 2
    assert all(line.count("×") == 2 for line in rows)


def test_bench_training_prints_throughput():
    out = run_bench(
        "bench_training.py", "--models", "tiny-quick", "--batch", "4", "--warmup", "0", "--steps", "1",
        "--rounds", "1",
    )  # fmt: skip
    assert any(line.startswith("| tiny-quick") for line in out.splitlines())


def test_bench_sampling_overhead_and_json(tmp_path):
    out_json = tmp_path / "sampling.json"
    out = run_bench(
        "bench_sampling.py", "--skip-quality", "--overhead-batch", "2", "--overhead-steps", "2",
        "--repeats", "1", "--out", str(out_json),
    )  # fmt: skip
    assert "| DDIM η=1 |" in out
    results = json.loads(out_json.read_text())
    assert results["overhead"]["steps"] == 2 and "quality" not in results


def test_bench_solvers_oracle_part_reports_a_verdict():
    out = run_bench(
        "bench_solvers.py", "--part", "oracle", "--points", "300", "--fit-points", "50", "--fit-sweeps", "1"
    )
    assert "target (≤ 1.10)" in out
    for name in ("ddim", "euler", "heun", "dpmpp2m", "unipc"):
        assert f"| {name} |" in out
    assert "| unipc | fitted | 10 |" in out


def test_bench_latent_prints_both_tables():
    out = run_bench("bench_latent.py", "--steps", "2", "--n", "2", "--rounds", "1", "--forward-batch", "2")
    assert "| 2 |" in out and "ratio latent / pixel" in out
    assert "| input 1×28×28 | input 4×7×7 | ratio |" in out


def test_bench_flow_prints_the_four_samplers():
    out = run_bench("bench_flow.py", "--n", "200")
    assert (
        "| Euler (flow, uniform) |" in out and "| DDIM (VP, trailing) |" in out and "midpoint (flow)" in out
    )
