r"""Reference results: the comparisons the course teaches, run once at a size that can decide them.

A notebook's live run is small (the ``quick`` profile): it shows the method, not a verdict. The verdicts rest
on these tables, made by

    python -m diffusion_course experiment NAME --out data/results/NAME.json [--n N] [--seed S]

and shipped in ``data/results/``. Each file records the command, n, seeds, commit, device, torch, seconds and
load average beside every cell's scores (FD, KID, label accuracy, each with its interval, from
:class:`~diffusion_course.scoring.Scorer`) and the real-digit floor at the same n.

Every cell draws its n samples in chunks of ``chunk`` with the seeds ``seed, seed+1, …`` (labels 0..9 in
turn), so all cells of one table start from the same x_T (common random numbers make the differences between
cells less noisy than each cell alone). Each chunk's count of correctly labelled samples and the sum of its
features are stored, so a test can re-run one chunk of any cell and check that the shipped numbers reproduce
(:func:`reproduce_chunk`): a shipped number is never typed by hand.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ._checks import check_int, fail

RESULTS_DIR = Path(__file__).resolve().parents[1] / "data" / "results"


@dataclass(frozen=True)
class Cell:
    """One sampler configuration: ``row``/``col`` place it in its table; the rest is for generate_samples.
    ``checkpoint`` replaces the experiment's model for this cell (a table that compares models)."""

    row: str
    col: str
    sampler: str = "ddim"
    steps: int = 50
    eta: float | None = None
    strategy: str = "trailing"
    guidance: float | None = None
    options: dict = field(default_factory=dict)
    checkpoint: str | None = None

    def sampling_kwargs(self) -> dict:
        return {"eta": self.eta, "strategy": self.strategy, "guidance": self.guidance, **self.options}


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    cells: tuple[Cell, ...]
    checkpoint: str = "mnist-cond"
    notebook: str = ""


def _eta_steps() -> tuple[Cell, ...]:
    cells = [
        Cell(f"η = {eta:g}", f"S = {s}", "ddim", s, eta=eta) for eta in (0.0, 0.5, 1.0) for s in (10, 20, 50)
    ]
    # DDIM's σ̂ row: the DDPM update with σ² = β of the whole jump, 1 − ᾱ_t / ᾱ_prev
    cells += [
        Cell("σ̂ (σ² = β of the jump)", f"S = {s}", "ddpm", s, options={"variance": "beta"})
        for s in (10, 20, 50)
    ]
    return tuple(cells)


def _strategies() -> tuple[Cell, ...]:
    return tuple(
        Cell(strategy, f"S = {s}", "ddim", s, eta=0.0, strategy=strategy)
        for strategy in ("linspace", "leading", "trailing", "quadratic", "log")
        for s in (10,)
    )


def _solvers() -> tuple[Cell, ...]:
    # Heun costs 2S − 1 evaluations for S steps: 5 and 10 steps are 9 and 19 NFE
    plan = {"ddim": (10, 20), "euler": (10, 20), "dpmpp2m": (10, 20), "unipc": (10, 20), "heun": (5, 10)}
    return tuple(
        Cell(sampler, f"NFE ≈ {nfe}", sampler, s)
        for sampler, steps in plan.items()
        for s, nfe in zip(steps, (10, 20))
    )


def _distillation() -> tuple[Cell, ...]:
    teacher = tuple(Cell("DDIM, mnist-cond (the teacher)", f"NFE = {s}", "ddim", s) for s in (1, 2, 4, 8, 50))
    solver = tuple(Cell("DPM-Solver++(2M), mnist-cond", f"NFE = {s}", "dpmpp2m", s) for s in (2, 4, 8))
    students = tuple(
        Cell("distilled students, DDIM", f"NFE = {s}", "ddim", s, checkpoint=f"mnist-distilled-{s}")
        for s in DISTILLED_STEPS
    )
    return teacher + solver + students


def _flow() -> tuple[Cell, ...]:
    first = tuple(
        Cell(row, f"NFE = {n}", sampler, n, checkpoint=name)
        for row, sampler, name in (
            ("mnist-cond, DDIM (= Euler in σ)", "ddim", "mnist-cond"),
            ("mnist-flow, Euler", "euler", "mnist-flow"),
        )
        for n in FLOW_NFE
    )
    second = tuple(  # midpoint costs 2 evaluations per step
        Cell(row, f"NFE = {n}", "midpoint", n // 2, checkpoint=name)
        for row, name in (("mnist-cond, midpoint (σ)", "mnist-cond"), ("mnist-flow, midpoint", "mnist-flow"))
        for n in FLOW_NFE[1:]
    )
    seeds = tuple(  # the same two runs with training seed 1: does the ranking survive a new training draw?
        Cell(row, f"NFE = {n}", sampler, n, checkpoint=name)
        for row, sampler, name in (
            ("mnist-cond seed 1, DDIM", "ddim", "mnist-cond-seed1"),
            ("mnist-flow seed 1, Euler", "euler", "mnist-flow-seed1"),
        )
        for n in FLOW_NFE
    )
    return first + second + seeds


FLOW_NFE = (5, 10, 20, 50)
DISTILLED_STEPS = (1, 2, 4, 8)  # the shipped students, mnist-distilled-S, each sampled with its own S steps

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "eta-steps",
            "DDIM η × steps on mnist-cond, with DDIM's σ̂ row (strided DDPM, σ² = β of the jump)",
            _eta_steps(),
            notebook="05_eta, 06_step_skipping",
        ),
        Experiment(
            "strategies",
            "DDIM (η = 0) at 10 steps on each timestep grid",
            _strategies(),
            notebook="06_step_skipping",
        ),
        Experiment(
            "ddim-vs-ddpm",
            "DDIM-50 (η = 0) against DDPM-1000 (σ² = β̃): is DDIM-50 within 10 % of DDPM-1000?",
            (Cell("DDIM", "S = 50", "ddim", 50, eta=0.0), Cell("DDPM", "S = 1000", "ddpm", 1000)),
            notebook="04_ddim_derivation, 06_step_skipping",
        ),
        Experiment(
            "solvers",
            "samplers at about 10 and 20 network evaluations per sample",
            _solvers(),
            notebook="08_fast_solvers",
        ),
        Experiment(
            "latent-vs-pixel",
            "mnist-latent (DDIM on mnist-vae's 4×7×7 latents, decoded) against mnist-cond (DDIM on pixels)",
            tuple(
                Cell(row, f"S = {s}", "ddim", s, checkpoint=name)
                for row, name in (
                    ("pixels (mnist-cond)", "mnist-cond"),
                    ("latents (mnist-latent)", "mnist-latent"),
                )
                for s in (10, 20, 50)
            ),
            checkpoint="mnist-latent",
            notebook="13_latent_diffusion",
        ),
        Experiment(
            "distillation",
            "progressive distillation: the students of mnist-cond at the step count each was trained for, "
            "against the teacher's DDIM and DPM-Solver++(2M) at the same NFE",
            _distillation(),
            notebook="12_distillation",
        ),
        Experiment(
            "flow",
            "mnist-flow (flow matching, sampled on its own ODE) against mnist-cond (ε, DDIM's ODE): the same "
            "U-Net and training budget, first- and second-order samplers at equal NFE, and both runs again "
            "with training seed 1",
            _flow(),
            checkpoint="mnist-flow",
            notebook="11_flow_matching",
        ),
        Experiment(
            "guidance",
            "classifier-free guidance scale s at DDIM-20 (s = 1: the conditional model alone)",
            tuple(Cell(f"s = {s:g}", "S = 20", "ddim", 20, guidance=s) for s in (1.0, 2.0, 3.0, 5.0, 10.0)),
            notebook="07_classifier_free_guidance",
        ),
    )
}


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        fail("experiment", name, f"known experiments are {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def _checkpoint_names(experiment: Experiment) -> list[str]:
    return list(
        dict.fromkeys([experiment.checkpoint, *(c.checkpoint for c in experiment.cells if c.checkpoint)])
    )


def _chunk(checkpoint, cell: Cell, seed: int, size: int, scorer):
    from .generation import generate_samples

    samples, labels = generate_samples(
        checkpoint, cell.sampler, cell.steps, n=size, seed=seed, **cell.sampling_kwargs()
    )
    feats = scorer.features(samples)
    correct = int((scorer.predictions(samples) == labels).sum())
    return feats, correct


def run_experiment(
    name: str, n: int = 500, seed: int = 0, chunk: int = 100, progress: bool = True, command: str = ""
) -> dict:
    """Run every cell of experiment ``name`` on ``n`` samples; return the results record (see the module)."""
    from .checkpoints import load_checkpoint
    from .evaluation import load_classifier
    from .scoring import Scorer

    experiment = get_experiment(name)
    chunk = check_int("chunk", chunk, low=10)
    n = check_int("n", n, low=chunk)
    if n % chunk:
        fail("n", n, f"must be a multiple of chunk={chunk}")
    seed = check_int("seed", seed, low=0)
    checkpoints = {name: load_checkpoint(name) for name in _checkpoint_names(experiment)}
    scorer = Scorer(load_classifier("cpu"))
    started = time.perf_counter()
    cells = []
    for i, cell in enumerate(experiment.cells):
        cell_start = time.perf_counter()
        feats, chunks = [], []
        for k in range(n // chunk):
            f, correct = _chunk(
                checkpoints[cell.checkpoint or experiment.checkpoint], cell, seed + k, chunk, scorer
            )
            feats.append(f)
            chunks.append({"seed": seed + k, "n": chunk, "correct": correct, "feature_sum": float(f.sum())})
        feats = torch.cat(feats)
        scores = scorer.score_features(feats, sum(c["correct"] for c in chunks))
        record = {**asdict(cell), **scores.record(), "seconds": round(time.perf_counter() - cell_start, 1)}
        record["chunks"] = chunks
        cells.append(record)
        if progress:
            print(f"[{i + 1}/{len(experiment.cells)}] {cell.row}, {cell.col}: {scores}", flush=True)
    return {
        "experiment": name,
        "description": experiment.description,
        "notebook": experiment.notebook,
        "checkpoint": experiment.checkpoint,
        "checkpoint_sha256": checkpoints[experiment.checkpoint].info.get("safetensors_sha256"),
        **(
            {"checkpoints_sha256": {k: c.info.get("safetensors_sha256") for k, c in checkpoints.items()}}
            if len(checkpoints) > 1
            else {}
        ),  # fmt: skip
        "command": command or f"python -m diffusion_course experiment {name} --n {n} --seed {seed}",
        "n": n,
        "seed": seed,
        "chunk": chunk,
        "scorer": "mnist-classifier features vs the 500 held-out digits; FD bootstrap 95 %, KID ±1.96 s.e., "
        "label accuracy Wilson 95 %",
        "floor": scorer.floor(n).record(),
        "cells": cells,
        **provenance(time.perf_counter() - started),
    }


def provenance(seconds: float) -> dict:
    """Commit, device, torch, threads, seconds and the load average, for a results file."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=RESULTS_DIR.parent,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "commit": commit,
        "device": f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "seconds": round(seconds, 1),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d"),
    }


def write_results(record: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return path


def load_results(name: str, folder: str | Path | None = None) -> dict:
    """The shipped results of experiment ``name`` (``data/results/NAME.json``)."""
    path = Path(folder or RESULTS_DIR) / f"{name}.json"
    if not path.exists():
        command = f"python -m diffusion_course experiment {name} --out {path}"
        fail("experiment", name, f"no results file {path}; make it with: {command}")
    return json.loads(path.read_text())


def cell_of(results: dict, row: str, col: str) -> dict:
    for cell in results["cells"]:
        if cell["row"] == row and cell["col"] == col:
            return cell
    fail("cell", (row, col), f"not in {results['experiment']}: rows/cols are "
         f"{sorted({(c['row'], c['col']) for c in results['cells']})}")  # fmt: skip


def estimate(results: dict, row: str, col: str, metric: str = "fd"):
    """The :class:`~diffusion_course.scoring.Estimate` of one cell's ``metric``: fd, kid or label_accuracy."""
    from .scoring import Estimate

    cell = cell_of(results, row, col) if row != "floor" else results["floor"]
    names = {"fd": ("FD", True), "kid": ("KID", True), "label_accuracy": ("label accuracy", False)}
    if metric not in names:
        fail("metric", metric, f"one of {', '.join(names)}")
    label, lower = names[metric]
    return Estimate(
        label, cell[metric], cell[f"{metric}_low"], cell[f"{metric}_high"], results["n"], lower, "shipped"
    )


def format_table(results: dict, metric: str = "fd") -> str:
    """The table as text: rows × cols of ``metric`` with its interval, and the real-digit floor."""
    rows = list(dict.fromkeys(c["row"] for c in results["cells"]))
    cols = list(dict.fromkeys(c["col"] for c in results["cells"]))
    fmt = "{:.3f}" if metric == "label_accuracy" else "{:.1f}"

    def show(cell):
        if cell is None:
            return "—"
        low, high = cell[metric + "_low"], cell[metric + "_high"]
        return f"{fmt.format(cell[metric])} [{fmt.format(low)}, {fmt.format(high)}]"

    by_key = {(c["row"], c["col"]): c for c in results["cells"]}
    width = max(len(r) for r in rows + ["floor (real digits)"])
    lines = [f"{results['experiment']}: {metric}, n = {results['n']} per cell (shipped reference results)"]
    lines.append(" | ".join([" " * width] + [f"{c:^24}" for c in cols]))
    for r in rows:
        lines.append(" | ".join([f"{r:<{width}}"] + [f"{show(by_key.get((r, c))):^24}" for c in cols]))
    lines.append(f"{'floor (real digits)':<{width}} | {show(results['floor'])}")
    return "\n".join(lines)


def markdown_report(folder: str | Path | None = None) -> str:
    """docs/benchmarks/reference.md: each experiment's shipped tables (FD, KID, label accuracy, intervals),
    its provenance, and the verdict of :func:`~diffusion_course.scoring.compare` for each pair of cells that
    shares a column. Written by ``scripts/write_results_doc.py``; a test keeps the page equal to the files.
    """
    from .scoring import compare

    folder = Path(folder or RESULTS_DIR)
    out = [
        "# Reference results",
        "",
        "Generated by `python scripts/write_results_doc.py` from the files in `data/results/`; do not edit",
        "by hand. Each cell: value [95 % interval]. FD: bootstrap over the samples; KID: ±1.96 standard",
        "errors over 10 disjoint subsets (KID is large in absolute terms because the classifier's features",
        "are large; compare it only within a table); label accuracy: Wilson. The floor row is real training",
        "digits at the same n. A ranking is stated only where the intervals separate",
        "(`diffusion_course.scoring.compare`).",
        "",
    ]
    for name, experiment in EXPERIMENTS.items():
        out += [
            f"## {name}",
            "",
            experiment.description.rstrip("?") + ("?" if "?" in experiment.description else "."),
            "",
        ]
        path = folder / f"{name}.json"
        if not path.exists():
            out += [
                f"Not run yet: `python -m diffusion_course experiment {name} --out data/results/{name}.json`",
                "",
            ]
            continue
        results = json.loads(path.read_text())
        seconds, load = results["seconds"], results["load_average_at_end"]
        out += [
            f"`{results['command']}` — n = {results['n']} per cell, chunks of {results['chunk']} with seeds "
            f"{results['seed']}…, commit {results['commit']}, {results['device']}, torch {results['torch']}, "
            f"{results['threads']} threads, {seconds:.0f} s, load average at the end {load}, "
            f"{results['date']}.",
            "",
        ]
        for metric in ("fd", "kid", "label_accuracy"):
            out += ["```", format_table(results, metric), "```", ""]
        verdicts = []
        cells = results["cells"]
        shared = any(a["col"] == b["col"] for i, a in enumerate(cells) for b in cells[i + 1 :])
        for i, a in enumerate(cells):
            for b in cells[i + 1 :]:
                if shared and a["col"] != b["col"]:
                    continue  # compare within a column; a table with no shared column compares all pairs
                for metric in ("fd", "label_accuracy"):
                    ea, eb = (estimate(results, c["row"], c["col"], metric) for c in (a, b))
                    c = compare(ea, eb)
                    what = {"A better": f"{a['row']} better", "B better": f"{b['row']} better"}
                    more = f" (n ≈ {c.n_to_separate} would separate them)" if c.n_to_separate else ""
                    verdict = what.get(c.verdict, c.verdict) + more
                    verdicts.append(
                        f"| {a['row']}, {a['col']} | {b['row']}, {b['col']} | {ea.name} | {verdict} |"
                    )
        if verdicts:
            out += ["| A | B | metric | verdict |", "|---|---|---|---|", *verdicts, ""]
    return "\n".join(out).rstrip() + "\n"


def reproduce_chunk(results: dict, cell_index: int = 0, chunk_index: int = 0) -> dict:
    """Re-run one chunk of one shipped cell and return its ``correct`` count and ``feature_sum``.

    The test suite compares them with the stored chunk: equal count, feature sum to 1e-4 relative.
    """
    from .checkpoints import load_checkpoint
    from .evaluation import load_classifier
    from .scoring import Scorer

    cell_index = check_int("cell_index", cell_index, low=0, high=len(results["cells"]) - 1)
    stored = results["cells"][cell_index]
    chunk_index = check_int("chunk_index", chunk_index, low=0, high=len(stored["chunks"]) - 1)
    cell = Cell(**{k: stored[k] for k in Cell.__dataclass_fields__ if k in stored})
    checkpoint = load_checkpoint(cell.checkpoint or results["checkpoint"])
    c = stored["chunks"][chunk_index]
    feats, correct = _chunk(checkpoint, cell, c["seed"], c["n"], Scorer(load_classifier("cpu")))
    return {"seed": c["seed"], "n": c["n"], "correct": correct, "feature_sum": float(feats.sum())}


__all__ = [
    "EXPERIMENTS",
    "Cell",
    "Experiment",
    "cell_of",
    "estimate",
    "format_table",
    "get_experiment",
    "load_results",
    "markdown_report",
    "reproduce_chunk",
    "run_experiment",
    "write_results",
]
