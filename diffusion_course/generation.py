r"""Sampling a checkpoint: the code behind ``python -m diffusion_course sample``, written as plain functions
so notebooks call exactly what the command line runs.

:func:`generate_samples` draws ``n`` samples of a loaded :class:`~diffusion_course.checkpoints.Checkpoint`
with a sampler named in the registry (``diffusion_course.sampling.SAMPLERS``) on the schedule the model was
trained with. x_T and the sampler's noise come from one CPU ``torch.Generator`` seeded with ``seed``, so the
same seed gives the same samples on any device. A conditional model gets
``labels`` (default: 0, 1, …, K−1, 0, 1, … in turn) and classifier-free guidance with scale s,

    ε̃ = ε_u + s (ε_c − ε_u)          (``CFG(model, s, convention="s")``),

where s = 1 (the default) is the plain conditional model: it is run alone, one evaluation per step.
:class:`EvalCounter` counts the rows the network evaluates, so rows / n is the exact number of function
evaluations per sample: the registry's ``nfe(steps)`` for the sampler, twice that under guidance, where
``CFG`` runs the network on a batch of 2B.
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_float, check_int, check_labels, fail
from .checkpoints import Checkpoint
from .models.flow import FlowAsEps, is_velocity_model
from .profiles import resolve_device
from .sampling.flow import run_flow_sampler
from .sampling.guidance import CFG
from .sampling.registry import FLOW_SAMPLERS, get_sampler, run_sampler
from .sampling.timesteps import STRATEGIES
from .schedules import flow_matching_schedule

FLOW_CHAIN_T = 1000  # the steps of the VP chain on which the VP samplers run a flow model


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
    if kind in ("v_prediction", "flow"):  # the config is the inner network's, plus the wrapper's own keys
        kind = config["net"]
    if kind == "mlp":
        return (int(config["dim"]),)
    if kind in ("unet", "tiny_unet"):
        size = int(config.get("image_size", 28))
        return (int(config.get("in_channels", 1)), size, size)
    fail("checkpoint", info.get("name"), f"a {kind} model is not a diffusion ε-model; nothing to sample")


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
    return check_labels(labels, n, num_classes, device="cpu", note=" (or one int for every sample)")


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


def model_device(model) -> torch.device:
    """The device of the model's parameters (of the model inside a wrapper such as :class:`EvalCounter`)."""
    inner = getattr(model, "model", model)
    param = next(iter(inner.parameters()), None) if isinstance(inner, nn.Module) else None
    return param.device if param is not None else torch.device("cpu")


def check_sampling_options(sampler: str, steps: int, T: int, eta, strategy, **options) -> None:
    """One readable ValueError per bad option, before any work is done (the options a sampler takes come
    from the registry)."""
    get_sampler(sampler).check_options({"eta": eta, **options})
    check_int("steps", steps, low=1, high=T)
    if eta is not None:
        check_float("eta", eta, low=0.0)
    if isinstance(strategy, str) and strategy not in STRATEGIES:
        fail("strategy", strategy, f"known strategies are {', '.join(STRATEGIES)}")


def generate_samples(
    checkpoint: Checkpoint,
    sampler: str = "ddim",
    steps: int = 50,
    *,
    n: int = 64,
    seed: int = 0,
    eta: float | None = None,
    strategy: str = "trailing",
    guidance: float | None = None,
    labels=None,
    eps_model=None,
    device: str | torch.device | None = None,
    progress: bool = False,
    decode: bool = True,
    **options,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Draw ``n`` samples of a checkpoint's model; return ``(samples, labels)`` as CPU float32 / long tensors.

    ``checkpoint`` comes from :func:`~diffusion_course.checkpoints.load_checkpoint`: it gives the model, the
    schedule and the sample shape. ``eps_model`` runs in place of ``checkpoint.model`` when given (an
    :class:`EvalCounter` around it, a compiled copy, or an exact ε such as the oracle of the same data and
    schedule); its ``num_classes`` decides labels and guidance. ``sampler`` is a name in ``SAMPLERS`` run for
    ``steps`` steps on the ``strategy`` grid; ``eta`` is DDIM's η (ddim only). For a conditional model
    ``labels`` defaults to 0..K−1 in turn and ``guidance`` s (default 1: the conditional model alone) gives
    ε̃ = ε_u + s(ε_c − ε_u); an unconditional model takes neither (ValueError). x_T ~ N(0, I) and the sampler's
    noise come from one CPU generator seeded with ``seed``; ``device`` (default: the model's) is where the
    network runs. Other keyword ``options`` go to the sampler (e.g. ``variance="beta"`` for ddpm), which
    refuses those it lacks. A latent model's samples are decoded to pixels, x = decode(z̃₀ / s), unless
    ``decode=False`` (then the scaled latents z̃₀ come back).

    A flow model (``FlowVelocity``) has no schedule: ``sampler`` names a flow sampler (euler, heun, midpoint;
    ``FLOW_SAMPLERS``) run for ``steps`` steps of ``flow_time_grid`` from x_1 ~ N(0, I), with the option
    ``shift`` (default 1); guidance is u = u_∅ + s(u_c − u_∅). Any other sampler runs the flow model as an
    ε-model (``FlowAsEps``) on its own VP chain, ``flow_matching_schedule(1000)``, with eta and strategy as
    for any ε-model.
    """
    if not isinstance(checkpoint, Checkpoint):
        fail("checkpoint", type(checkpoint).__name__, "expected a Checkpoint from load_checkpoint")
    n = check_int("n", n, low=1)
    seed = check_int("seed", seed, low=0)
    schedule = checkpoint.schedule
    flow_model = is_velocity_model(checkpoint.model)
    on_flow_ode = flow_model and sampler in FLOW_SAMPLERS
    if on_flow_ode:
        if eta is not None or strategy != "trailing":
            name, value = ("eta", eta) if eta is not None else ("strategy", strategy)
            fail(name, value, f"the flow sampler {sampler!r} walks flow_time_grid (its option: shift); the "
                 "VP samplers (ddim, …) take eta and strategy on a flow model too")  # fmt: skip
        shift = check_float("shift", options.pop("shift", 1.0), low=0.0, low_open=True)
        get_sampler(sampler, path="flow").check_options(options)
        check_int("steps", steps, low=1)
    elif flow_model:  # a VP sampler on the flow's own VP chain (FlowAsEps)
        schedule = flow_matching_schedule(FLOW_CHAIN_T)
        check_sampling_options(sampler, steps, schedule.T, eta, strategy, **options)
    elif schedule is None:
        fail(
            "checkpoint",
            checkpoint.info.get("name"),
            "it records no noise schedule (not a diffusion checkpoint)",
        )
    else:
        check_sampling_options(sampler, steps, schedule.T, eta, strategy, **options)
    shape = sample_shape(checkpoint.info)
    model = checkpoint.model if eps_model is None else eps_model
    as_sampled = FlowAsEps(model, schedule) if flow_model and not on_flow_ode else model
    guided = guided_model(as_sampled, guidance)
    labels = sample_labels(model, n, labels)
    device = model_device(model) if device is None else resolve_device(device)

    generator = torch.Generator().manual_seed(seed)
    x_T = torch.randn((n, *shape), generator=generator).to(device)
    if on_flow_ode:
        flow_labels = None if labels is None else labels.to(device)
        out = run_flow_sampler(sampler, guided, x_T, steps, labels=flow_labels, shift=shift,
                               generator=generator, progress=progress)  # fmt: skip
        return out.detach().to("cpu", torch.float32), labels
    out = run_sampler(
        sampler,
        guided,
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
    if decode and checkpoint.autoencoder is not None:
        from .latent import decode_latents

        out = decode_latents(checkpoint.autoencoder, out)
    return out.detach().to("cpu", torch.float32), labels


__all__ = [
    "EvalCounter",
    "check_sampling_options",
    "generate_samples",
    "guided_model",
    "model_device",
    "model_num_classes",
    "sample_labels",
    "sample_shape",
]
