r"""Scoring samples: the code behind ``python -m diffusion_course evaluate``, written as plain functions so
notebooks call exactly what the command line runs (drawing the samples is :mod:`diffusion_course.generation`).

* :func:`evaluate_samples` scores a batch of samples. Images (N, 1, 28, 28):

      FD = ‖μ_s − μ_r‖² + tr Σ_s + tr Σ_r − 2 tr (Σ_s^{1/2} Σ_r Σ_s^{1/2})^{1/2}

  between Gaussians fitted to the shipped ``mnist-classifier``'s 128 penultimate features (``features()``)
  of the samples and of the **500 held-out MNIST digits** (``load_mnist("heldout")``, 50 per class; neither
  the diffusion models nor the classifier trained on them). This is FID's formula on the course
  classifier's features, **not Inception FID**; it is biased upwards at small n, so compare FDs measured
  with the same n only. Samples are scored as the sampler returns them (no clamping).
  ``label_accuracy`` is the fraction of samples the classifier assigns to the label they were drawn with.
  2-D points: the sliced 2-Wasserstein distance (256 projections, ``metrics.sliced_w2``) to n fresh points
  of ``oracle.toy_mixture()`` drawn with the fixed seed :data:`REFERENCE_SEED`.
* :func:`evaluate_checkpoint` draws the samples of a checkpoint (name, path or loaded
  :class:`~diffusion_course.checkpoints.Checkpoint`) with
  :func:`~diffusion_course.generation.generate_samples`, scores them and returns the dict that
  ``evaluate --json`` prints. ``nfe`` is counted, not computed: an
  :class:`~diffusion_course.generation.EvalCounter` counts the rows the network evaluates, so
  ``nfe`` = rows / n is exact per sample.
"""

from __future__ import annotations

import math
import os
import time
from functools import lru_cache

import torch
from torch import nn

from ._checks import check_int, fail
from .checkpoints import Checkpoint, load_checkpoint
from .generation import EvalCounter, generate_samples, model_device, model_num_classes, sample_shape
from .metrics import sliced_w2
from .models.flow import is_velocity_model
from .profiles import resolve_device
from .sampling.registry import FLOW_SAMPLERS

CLASSIFIER = "mnist-classifier"
FD_REFERENCE = "heldout"  # the MNIST split the FD compares with (fixed: FDs are comparable across runs)
REFERENCE_SEED = 2024  # seed of the toy-mixture reference points (independent of the sampling seed)
POINT_DATA = ("toy-mixture", "toy-mixture-labelled")


@lru_cache(maxsize=4)
def _classifier(device: str) -> nn.Module:
    return load_checkpoint(CLASSIFIER, device=device).model.eval().requires_grad_(False)


def load_classifier(device: str | torch.device = "cpu") -> nn.Module:
    """The shipped ``mnist-classifier`` (eval mode, no grads), loaded once per device and cached."""
    return _classifier(str(resolve_device(device)))


def toy_reference(n: int) -> torch.Tensor:
    """n points of ``oracle.toy_mixture()`` drawn with the fixed seed ``REFERENCE_SEED``."""
    from .oracle import toy_mixture

    return toy_mixture().sample(n, generator=torch.Generator().manual_seed(REFERENCE_SEED))


def evaluate_samples(
    samples: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    classifier: nn.Module | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Scores of a batch of samples (see the module docstring), each quality figure with its interval.

    Images (N, C, H, W): ``fd`` (with ``fd_low``/``fd_high``) and ``kid`` (with ``kid_std``) to the held-out
    MNIST digits on ``classifier`` features (default: the shipped ``mnist-classifier`` on ``device``), scored
    by :class:`~diffusion_course.scoring.Scorer`, and, when ``labels`` are given, ``label_accuracy`` with its
    Wilson interval. Points (N, 2): ``sliced_w2`` to N reference points of the toy mixture.
    """
    from .scoring import Scorer

    if not isinstance(samples, torch.Tensor) or not samples.is_floating_point():
        fail("samples", samples, "expected a floating-point tensor of images (N, C, H, W) or points (N, D)")
    if not torch.isfinite(samples).all():
        fail("samples", samples, "contains NaN or inf (the sampler diverged)")
    if samples.ndim == 2:
        check_int("number of samples", samples.shape[0], low=2)
        n = samples.shape[0]
        return {
            "sliced_w2": sliced_w2(samples, toy_reference(n)),
            "reference": f"toy_mixture() sample, n={n}, seed {REFERENCE_SEED}",
        }
    if samples.ndim != 4:
        fail("samples", samples, "expected images (N, C, H, W) or 2-D points (N, D)")
    scorer = _scorer(str(resolve_device(device))) if classifier is None else Scorer(classifier)
    scores = scorer.score(samples, labels)
    record = scores.record()
    record["reference"] = (
        f"MNIST {FD_REFERENCE} split ({scorer.reference.shape[0]} digits), {CLASSIFIER} features"
    )
    return record


@lru_cache(maxsize=4)
def _scorer(device: str):
    from .scoring import Scorer

    return Scorer(_classifier(device), device=device)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike | Checkpoint,
    sampler: str = "ddim",
    steps: int = 50,
    *,
    n: int = 500,
    seed: int = 0,
    eta: float | None = None,
    strategy: str = "trailing",
    guidance: float | None = None,
    device: str | torch.device = "auto",
    progress: bool = False,
    repeats: int = 1,
    **options,
) -> dict:
    """Draw ``n`` samples of ``checkpoint`` (a name, a path, or a loaded ``Checkpoint``), score them; return
    the ``evaluate`` record. ``device`` is where a name or path is loaded; a ``Checkpoint`` stays on its own.

    With ``repeats`` = R > 1 the whole evaluation runs for the seeds seed, seed+1, …, seed+R−1: the record is
    the first seed's, plus ``runs`` (each seed's scores) and, for each score, its mean and standard deviation
    over the seeds (``fd_seeds_mean``, ``fd_seeds_std``, …), the spread that the intervals should cover.

    Other keyword ``options`` go to the sampler (``variance="beta"`` for ddpm, ``order=3`` for unipc, …).

    Keys: checkpoint, sampler, steps, strategy, eta, options (the other sampler options that were set),
    guidance, n, seed, nfe (counted network evaluations
    per sample), seconds (wall-clock sampling time), device, then the scores of :func:`evaluate_samples`
    (``fd`` and, for conditional models, ``label_accuracy`` with labels 0..K−1 in turn; ``sliced_w2`` for
    2-D points).
    """
    repeats = check_int("repeats", repeats, low=1)
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint, device)
    info, model = checkpoint.info, checkpoint.model
    if repeats > 1:
        runs = [
            evaluate_checkpoint(checkpoint, sampler, steps, n=n, seed=seed + r, eta=eta, strategy=strategy,
                                guidance=guidance, device=device, progress=progress, **options)
            for r in range(repeats)
        ]  # fmt: skip
        record = dict(runs[0], repeats=repeats, runs=runs)
        for key, value in runs[0].items():
            if key.endswith(("_low", "_high", "_std")) or not isinstance(value, float) or key == "seconds":
                continue
            values = torch.tensor([r[key] for r in runs], dtype=torch.float64)
            record[f"{key}_seeds_mean"] = round(float(values.mean()), 6)
            record[f"{key}_seeds_std"] = round(float(values.std()), 6)
        return record
    if len(sample_shape(info)) == 1 and info.get("data") not in POINT_DATA:
        fail("checkpoint", info.get("name"), f"2-D models are scored against the toy mixture; trained on "
             f"{info.get('data')!r}, not one of {', '.join(POINT_DATA)}")  # fmt: skip
    conditional = model_num_classes(model) is not None
    if conditional and guidance is None:
        guidance = 1.0
    counter = EvalCounter(model)
    start = time.perf_counter()
    samples, labels = generate_samples(
        checkpoint, sampler, steps, n=n, seed=seed, eta=eta, strategy=strategy, guidance=guidance,
        eps_model=counter, device=model_device(model), progress=progress, **options,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    record = {
        "checkpoint": info.get("name"),
        "sampler": sampler,
        "steps": steps,
        # a flow sampler walks flow_time_grid, not a timestep strategy
        "strategy": None if is_velocity_model(model) and sampler in FLOW_SAMPLERS else strategy,
        "eta": eta,
        "options": {k: v for k, v in options.items() if v is not None},
        "guidance": guidance,
        "n": n,
        "seed": seed,
        "nfe": counter.rows / n if counter.rows % n else counter.rows // n,
        "seconds": round(seconds, 3),
        "device": str(model_device(model)),
    }
    scores = evaluate_samples(samples, labels, device=model_device(model))
    record.update({k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
                   for k, v in scores.items()})  # fmt: skip
    return record


__all__ = [
    "CLASSIFIER",
    "FD_REFERENCE",
    "REFERENCE_SEED",
    "evaluate_checkpoint",
    "evaluate_samples",
    "load_classifier",
    "toy_reference",
]
