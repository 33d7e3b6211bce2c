r"""Sampling a checkpoint and scoring the samples: the code behind ``python -m diffusion_course sample`` and
``evaluate``, written as plain functions so notebooks call exactly what the command line runs.

* :func:`generate_samples` draws ``n`` samples of a loaded checkpoint with a named sampler
  (``diffusion_course.sampling.registry.SAMPLERS``: ddpm, ddim, dpmpp2m, euler, heun). x_T and the
  sampler's noise come from one CPU ``torch.Generator`` seeded with ``seed``, so the same seed gives the same
  samples on any device. A conditional model gets ``labels`` (default: 0, 1, …, K−1, 0, 1, … in turn) and
  classifier-free guidance with scale s,

      ε̃ = ε_u + s (ε_c − ε_u)          (``CFG(model, s, convention="s")``),

  where s = 1 (the default) is the plain conditional model: it is run alone, one evaluation per step.
* :func:`evaluate_samples` scores them. Images (N, 1, 28, 28):

      FD = ‖μ_s − μ_r‖² + tr Σ_s + tr Σ_r − 2 tr (Σ_s^{1/2} Σ_r Σ_s^{1/2})^{1/2}

  between Gaussians fitted to the shipped ``mnist-classifier``'s 128 penultimate features (``features()``)
  of the samples and of the **500 held-out MNIST digits** (``load_mnist("heldout")``, 50 per class; neither
  the diffusion models nor the classifier trained on them). This is FID's formula on the course
  classifier's features, **not Inception FID**; it is biased upwards at small n, so compare FDs measured
  with the same n only. Samples are scored as the sampler returns them (no clamping).
  ``label_accuracy`` is the fraction of samples the classifier assigns to the label they were drawn with.
  2-D points: the sliced 2-Wasserstein distance (256 projections, ``metrics.sliced_w2``) to n fresh points
  of ``oracle.toy_mixture()`` drawn with the fixed seed :data:`REFERENCE_SEED`.
* :func:`evaluate_checkpoint` does both for a checkpoint name or path and returns the dict that
  ``evaluate --json`` prints. ``nfe`` is counted, not computed: :class:`EvalCounter` counts the rows the
  network evaluates, so ``nfe`` = rows / n is exact per sample (N per N-step DDIM/DDPM/Euler/DPM-Solver++
  run, 2N − 1 for Heun, twice that under guidance, where ``CFG`` runs the network on a batch of 2B).
"""

from __future__ import annotations

import math
import time
from functools import lru_cache

import torch
from torch import nn

from ._checks import check_float, check_int, fail
from .checkpoints import load_checkpoint
from .metrics import classifier_features, sliced_w2
from .profiles import resolve_device
from .sampling.guidance import CFG
from .sampling.registry import SAMPLERS, run_sampler
from .sampling.timesteps import STRATEGIES
from .schedules import make_schedule

CLASSIFIER = "mnist-classifier"
FD_REFERENCE = "heldout"  # the MNIST split the FD compares with (fixed: FDs are comparable across runs)
REFERENCE_SEED = 2024  # seed of the toy-mixture reference points (independent of the sampling seed)
POINT_DATA = ("toy-mixture", "toy-mixture-labelled")


class EvalCounter:
    """An ε-model wrapper that counts the rows (samples × calls) the wrapped model evaluates.

    ``counter.rows / n`` after sampling n samples is the number of function evaluations per sample.
    ``num_classes`` is the wrapped model's, so samplers and ``CFG`` treat the wrapper like the model.
    """

    def __init__(self, model):
        self.model = model
        self.num_classes = getattr(model, "num_classes", None)
        self.rows = 0

    def __call__(self, x_t: torch.Tensor, t, labels: torch.Tensor | None = None) -> torch.Tensor:
        self.rows += int(x_t.shape[0])
        return self.model(x_t, t) if labels is None else self.model(x_t, t, labels=labels)


def sample_shape(info: dict) -> tuple[int, ...]:
    """The shape of one sample of the checkpoint's model: (dim,) for the 2-D MLP, (C, H, W) for images."""
    kind, config = info["model"]["kind"], info["model"]["config"]
    if kind == "mlp":
        return (int(config["dim"]),)
    if kind in ("unet", "tiny_unet"):
        size = int(config.get("image_size", 28))
        return (int(config.get("in_channels", 1)), size, size)
    fail("checkpoint", info.get("name"), f"a {kind} model is not a diffusion ε-model; nothing to sample")


def checkpoint_schedule(info: dict):
    """The checkpoint's noise schedule (its JSON records the name and T)."""
    schedule = info.get("schedule")
    if not schedule:
        fail("checkpoint", info.get("name"), "it records no noise schedule (not a diffusion checkpoint)")
    return make_schedule(schedule["name"], int(schedule["T"]))


def model_num_classes(model) -> int | None:
    """K for a class-conditional model (labels 0..K−1, null class K), None for an unconditional one."""
    return getattr(model, "num_classes", None)


def sample_labels(model, n: int, labels=None) -> torch.Tensor | None:
    """The labels to sample with: None for an unconditional model; for a conditional one ``labels`` as given
    (an int k → every sample k; a LongTensor (n,)), by default 0, 1, …, K−1, 0, 1, … in turn.
    """
    num_classes = model_num_classes(model)
    if num_classes is None:
        if labels is not None:
            fail("label", labels if not isinstance(labels, torch.Tensor) else "tensor",
                 "the model is unconditional (num_classes=None); sample it without labels")  # fmt: skip
        return None
    if labels is None:
        return torch.arange(n) % num_classes
    if isinstance(labels, int) and not isinstance(labels, bool):
        check_int("label", labels, low=0, high=num_classes - 1)
        return torch.full((n,), labels, dtype=torch.long)
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.shape != (n,):
        fail("labels", labels, f"expected an int in 0..{num_classes - 1} or a LongTensor of shape ({n},)")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        fail("labels", labels, f"class labels lie in 0..{num_classes - 1}")
    return labels.long().cpu()


def guided_model(model, guidance: float | None):
    """The ε-model to sample with: ``model`` for s = 1 (or None), else ``CFG(model, s, convention="s")``."""
    num_classes = model_num_classes(model)
    if guidance is None:
        return model
    s = check_float("guidance", guidance)
    if num_classes is None:
        fail("guidance", guidance, "the model is unconditional (num_classes=None); guidance needs a "
             "class-conditional model with a null class")  # fmt: skip
    return model if s == 1.0 else CFG(model, s, convention="s")


def _model_device(model) -> torch.device:
    inner = getattr(model, "model", model)
    param = next(iter(inner.parameters()), None) if isinstance(inner, nn.Module) else None
    return param.device if param is not None else torch.device("cpu")


def check_sampling_options(sampler: str, steps: int, T: int, eta, strategy) -> None:
    """One readable ValueError per bad option, before any work is done."""
    if sampler not in SAMPLERS:
        fail("sampler", sampler, f"known samplers are {', '.join(sorted(SAMPLERS))}")
    check_int("steps", steps, low=1, high=T)
    if eta is not None:
        if sampler != "ddim":
            fail("eta", eta, f"η is an option of the ddim sampler only, not of {sampler!r}")
        check_float("eta", eta, low=0.0)
    if isinstance(strategy, str) and strategy not in STRATEGIES:
        fail("strategy", strategy, f"known strategies are {', '.join(STRATEGIES)}")


def generate_samples(
    model,
    info: dict,
    sampler: str = "ddim",
    steps: int = 50,
    *,
    n: int = 64,
    seed: int = 0,
    eta: float | None = None,
    strategy: str = "trailing",
    guidance: float | None = None,
    labels=None,
    device: str | torch.device | None = None,
    progress: bool = False,
    **options,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Draw ``n`` samples of a checkpoint's model; return ``(samples, labels)`` as CPU float32 / long tensors.

    ``model, info`` come from :func:`~diffusion_course.checkpoints.load_checkpoint` (``info`` gives the
    schedule and the sample shape). ``sampler`` is a name in ``SAMPLERS`` run for ``steps`` steps on the
    ``strategy`` grid; ``eta`` is DDIM's η (ddim only). For a conditional model ``labels`` defaults to 0..K−1
    in turn and ``guidance`` s (default 1: the conditional model alone) gives ε̃ = ε_u + s(ε_c − ε_u);
    an unconditional model takes neither (ValueError). x_T ~ N(0, I) and the sampler's noise come from one
    CPU generator seeded with ``seed``; ``device`` (default: the model's) is where the network runs. Other
    keyword ``options`` go to the sampler (e.g. ``variance="beta"`` for ddpm), which refuses those it lacks.
    """
    n = check_int("n", n, low=1)
    seed = check_int("seed", seed, low=0)
    schedule = checkpoint_schedule(info)
    check_sampling_options(sampler, steps, schedule.T, eta, strategy)
    shape = sample_shape(info)
    eps_model = guided_model(model, guidance)
    labels = sample_labels(model, n, labels)
    device = _model_device(model) if device is None else resolve_device(device)

    generator = torch.Generator().manual_seed(seed)
    x_T = torch.randn((n, *shape), generator=generator).to(device)
    out = run_sampler(
        sampler,
        eps_model,
        x_T,
        schedule,
        steps,
        strategy=strategy,
        generator=generator,
        labels=None if labels is None else labels.to(device),
        progress=progress,
        eta=eta,
        **options,
    )
    return out.detach().to("cpu", torch.float32), labels


# --- scores ------------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _classifier(device: str) -> nn.Module:
    model, _ = load_checkpoint(CLASSIFIER, device=device)
    return model.eval().requires_grad_(False)


def load_classifier(device: str | torch.device = "cpu") -> nn.Module:
    """The shipped ``mnist-classifier`` (eval mode, no grads), loaded once per device and cached."""
    return _classifier(str(resolve_device(device)))


@lru_cache(maxsize=4)
def _reference_features(device: str) -> torch.Tensor:
    from .data import load_mnist

    images, _ = load_mnist(FD_REFERENCE)
    return classifier_features(_classifier(device), images)


def reference_features(device: str | torch.device = "cpu") -> torch.Tensor:
    """Classifier features (float64 CPU, (500, 128)) of the 500 held-out MNIST digits, cached."""
    return _reference_features(str(resolve_device(device))).clone()


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
    checkpoint,
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
) -> dict:
    """Load ``checkpoint`` (name or path), draw ``n`` samples, score them; return the ``evaluate`` record.

    With ``repeats`` = R > 1 the whole evaluation runs for the seeds seed, seed+1, …, seed+R−1: the record is
    the first seed's, plus ``runs`` (each seed's scores) and, for each score, its mean and standard deviation
    over the seeds (``fd_seeds_mean``, ``fd_seeds_std``, …), the spread that the intervals should cover.

    Keys: checkpoint, sampler, steps, strategy, eta, guidance, n, seed, nfe (counted network evaluations
    per sample), seconds (wall-clock sampling time), device, then the scores of :func:`evaluate_samples`
    (``fd`` and, for conditional models, ``label_accuracy`` with labels 0..K−1 in turn; ``sliced_w2`` for
    2-D points).
    """
    repeats = check_int("repeats", repeats, low=1)
    model, info = checkpoint if isinstance(checkpoint, tuple) else load_checkpoint(checkpoint, device)
    if repeats > 1:
        runs = [
            evaluate_checkpoint((model, info), sampler, steps, n=n, seed=seed + r, eta=eta, strategy=strategy,
                                guidance=guidance, device=device, progress=progress)
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
        counter, info, sampler, steps, n=n, seed=seed, eta=eta, strategy=strategy, guidance=guidance,
        device=_model_device(model), progress=progress,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    record = {
        "checkpoint": info.get("name"),
        "sampler": sampler,
        "steps": steps,
        "strategy": strategy,
        "eta": eta,
        "guidance": guidance,
        "n": n,
        "seed": seed,
        "nfe": counter.rows / n if counter.rows % n else counter.rows // n,
        "seconds": round(seconds, 3),
        "device": str(_model_device(model)),
    }
    scores = evaluate_samples(samples, labels, device=_model_device(model))
    record.update({k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
                   for k, v in scores.items()})  # fmt: skip
    return record


__all__ = [
    "CLASSIFIER",
    "EvalCounter",
    "FD_REFERENCE",
    "REFERENCE_SEED",
    "checkpoint_schedule",
    "evaluate_checkpoint",
    "evaluate_samples",
    "generate_samples",
    "guided_model",
    "load_classifier",
    "reference_features",
    "sample_labels",
    "sample_shape",
    "toy_reference",
]
