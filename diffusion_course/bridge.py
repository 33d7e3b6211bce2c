r"""Driving a course ε-model with diffusers' schedulers, and the settings under which they agree with ours.

diffusers is an optional extra (``pip install "diffusion-course[diffusers]"``); only its scheduler classes and
its ``AutoencoderKL`` class are used, offline (no hub downloads). Importing this module never imports
diffusers; the functions that need it raise ImportError with the install command when it is missing.
:func:`check_diffusers_installed` is the guard of notebook 10: a message for a learner without diffusers, an
error under CI (``CI=true``).

The driver :func:`run_diffusers_scheduler` is the loop of a diffusers pipeline, with the ε-model in place of
the UNet:

    scheduler.set_timesteps(S)
    x = x_T · scheduler.init_noise_sigma                  (1 for DDPM/DDIM/DPM-Solver; σ_max-ish for Euler)
    for t in scheduler.timesteps:
        ε = eps_model(scheduler.scale_model_input(x, t), t)   (scaling: x/√(σ²+1) for Euler, identity else)
        x = scheduler.step(ε, t, x, generator=…).prev_sample

:func:`diffusers_config_from` builds a scheduler config from a :class:`NoiseSchedule` with every option set
so that diffusers' definitions equal the course's (see docs/DIFFUSERS.md for the table):

    num_train_timesteps = T,  trained_betas = schedule.betas,  prediction_type = "epsilon",
    timestep_spacing = "trailing",  clip_sample = False,  thresholding = False,  set_alpha_to_one = True,
    variance_type = "fixed_small" (σ² = β̃),  algorithm_type = "dpmsolver++",  solver_order = 2,
    lower_order_final = True,  final_sigmas_type = "zero",  steps_offset = 0.

Where the definitions still differ (documented, with numbers, in notebook 10 and docs/DIFFUSERS.md):

* DDIM's "previous" timestep is ``t − T // S`` (:func:`diffusers_ddim_prev_timestep`), not the next grid
  point: equal only on grids with a constant stride T // S ("leading", and "trailing" when S divides T).
* "leading" never visits T−1; ``set_alpha_to_one=False`` ends at ᾱ_0 instead of 1; ``clip_sample`` defaults
  to True in DDPM and DDIM; DPM-Solver's final step depends on ``lower_order_final``/``final_sigmas_type``;
  Euler starts from x_T · σ_max where x_T/√ᾱ_(T−1) = x_T · √(σ_max² + 1) is the exact start.
* diffusers stores β and ᾱ in float32 (``trained_betas`` is cast), and DPM-Solver and Euler compute their
  steps in float32: agreement is to float32 rounding (≈ 1e-6 relative), never bitwise.

For latent diffusion, :func:`autoencoder_kl_config` gives the ``diffusers.AutoencoderKL`` config closest to a
course :class:`~diffusion_course.models.Autoencoder` (same channels, latent shape and ``scaling_factor``) and
says in words why the two networks still differ, so that weights cannot be copied one-to-one.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
from collections.abc import Mapping

import torch

from ._checks import check_image_batch, check_int, fail
from .models.autoencoder import Autoencoder
from .sampling.common import call_eps_model, model_labels, progress_bar
from .sampling.registry import SAMPLERS
from .schedules import NoiseSchedule

INSTALL_HINT = 'pip install "diffusers>=0.27" (the course\'s optional extra: pip install -e ".[diffusers]")'

# Our sampler names → diffusers' scheduler classes (a fact of each sampler, declared where it is registered).
SCHEDULER_CLASSES = {name: spec.diffusers for name, spec in SAMPLERS.items() if spec.diffusers}

# diffusers' timestep_spacing values that are also course strategies (sampling.timesteps).
SPACINGS = ("linspace", "leading", "trailing")


def diffusers_available() -> bool:
    """Whether ``import diffusers`` works here."""
    try:
        importlib.import_module("diffusers")
    except ImportError:
        return False
    return True


def require_diffusers():
    """The diffusers module, or ImportError naming the install command."""
    try:
        return importlib.import_module("diffusers")
    except ImportError as err:
        raise ImportError(f"this needs diffusers, which is not installed: {INSTALL_HINT}") from err


def running_in_ci(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``environ`` (default ``os.environ``) says this is a CI run: ``CI`` set to "true" or "1"."""
    environ = os.environ if environ is None else environ
    return str(environ.get("CI", "")).strip().lower() in ("true", "1")


def check_diffusers_installed(environ: Mapping[str, str] | None = None) -> bool:
    """Whether diffusers imports here: notebook 10 (and tests/test_bridge_guard.py) decide with it whether to
    compare.

    A learner without diffusers gets False and a printed message with the install command (the comparison
    cells then say that they skip). Under CI (:func:`running_in_ci` on ``environ``) a missing diffusers raises
    ImportError instead: CI installs the extra, and a comparison that silently skips there would hide a
    broken install.
    """
    if diffusers_available():
        return True
    if running_in_ci(environ):
        raise ImportError(
            "diffusers is not installed, but CI is set (CI=true): the diffusers comparisons must run in CI, "
            f"not skip. Install it: {INSTALL_HINT}"
        )
    print(f"diffusers is not installed: the comparison cells will skip. To run them: {INSTALL_HINT}")
    return False


def diffusers_config_from(schedule: NoiseSchedule, **overrides) -> dict:
    """A diffusers scheduler config under which diffusers' definitions agree with the course's.

    Holds the options of all four schedulers (DDPM, DDIM, DPM-Solver multistep, Euler); each class takes the
    ones it knows (:func:`make_diffusers_scheduler` filters them). ``overrides`` replace entries, e.g.
    ``timestep_spacing="linspace"`` or ``clip_sample=True`` to reproduce a difference.
    """
    if not isinstance(schedule, NoiseSchedule):
        fail("schedule", type(schedule).__name__, "expected a NoiseSchedule (see diffusion_course.schedules)")
    config = {
        "num_train_timesteps": schedule.T,
        "trained_betas": schedule.betas.tolist(),  # diffusers casts them to float32
        "prediction_type": "epsilon",
        "timestep_spacing": "trailing",  # the course default; "leading" (DDPM/DDIM's default) skips T−1
        "steps_offset": 0,
        "rescale_betas_zero_snr": False,
        # DDPM and DDIM
        "clip_sample": False,  # default True: x̂₀ clamped to [−1, 1] at every step
        "thresholding": False,
        # DDIM
        "set_alpha_to_one": True,  # ᾱ after the last step = 1 (False: ᾱ_0)
        # DDPM
        "variance_type": "fixed_small",  # σ² = β̃ ("fixed_large": σ² = β)
        # DPM-Solver multistep
        "algorithm_type": "dpmsolver++",
        "solver_order": 2,
        "solver_type": "midpoint",
        "lower_order_final": True,
        "euler_at_final": False,
        "final_sigmas_type": "zero",  # the last step goes to σ = 0 (ᾱ = 1); "sigma_min" stops at ᾱ_0
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "use_lu_lambdas": False,
        "lambda_min_clipped": -math.inf,
        # Euler
        "interpolation_type": "linear",
        "timestep_type": "discrete",
    }
    config.update(overrides)
    return config


def make_diffusers_scheduler(kind: str, schedule: NoiseSchedule, **overrides):
    """The diffusers scheduler for ``kind`` ("ddpm", "ddim", "dpmpp2m", "euler", or a diffusers class name)
    built from :func:`diffusers_config_from` (``schedule``, ``overrides``).

    An override the class does not take raises ValueError (a misspelt option would otherwise be ignored).
    """
    diffusers = require_diffusers()
    name = SCHEDULER_CLASSES.get(kind, kind)
    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    if cls is None:
        fail(
            "kind", kind, f"choose one of {', '.join(map(repr, SCHEDULER_CLASSES))} or a diffusers class name"
        )
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        fail(
            "overrides", unknown, f"{name} takes none of these; its options are {', '.join(sorted(accepted))}"
        )
    config = diffusers_config_from(schedule, **overrides)
    return cls(**{k: v for k, v in config.items() if k in accepted})


def use_float64_alpha_bar(scheduler, schedule: NoiseSchedule):
    """Replace a DDPM/DDIM scheduler's float32 ᾱ table by ``schedule.alpha_bar`` (float64), in place.

    For comparisons only: diffusers casts ``trained_betas`` to float32, and DDPM then recomputes
    β_t = 1 − ᾱ_t/ᾱ_(t−1) from float32 ᾱ, which loses about three digits of the smallest β (≈ 1e-4). With the
    float64 table both schedulers equal the course's samplers to float64 rounding. DPM-Solver and Euler keep
    float32 σ tables and compute their steps in float32, so they are refused. Returns the scheduler.
    """
    name = type(scheduler).__name__
    if name not in ("DDPMScheduler", "DDIMScheduler"):
        fail(
            "scheduler", name, "only DDPMScheduler and DDIMScheduler read ᾱ from alphas_cumprod at each step"
        )
    if not isinstance(schedule, NoiseSchedule) or schedule.T != int(scheduler.config.num_train_timesteps):
        fail("schedule", schedule, f"expected the NoiseSchedule the scheduler was built from (T = "
             f"{scheduler.config.num_train_timesteps})")  # fmt: skip
    ab = schedule.alpha_bar.clone()
    scheduler.alphas_cumprod = ab
    if name == "DDIMScheduler":
        one = bool(scheduler.config.set_alpha_to_one)
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64) if one else ab[0].clone()
    else:
        scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    return scheduler


def diffusers_ddim_prev_timestep(t: int, T: int, steps: int) -> int:
    """diffusers' DDIMScheduler "previous" timestep: t − T // S (negative means "after the last step").

    It is the next grid point only when the grid has the constant stride T // S: always for "leading",
    for "trailing" when S divides T, for "linspace" only when S = T.
    """
    T = check_int("T", T, low=1)
    steps = check_int("steps", steps, low=1, high=T)
    t = check_int("t", t, low=0, high=T - 1)
    return t - T // steps


def ddim_landing_points(grid, T: int) -> list[tuple[int, int, int]]:
    """For a descending grid of S steps: (t, where diffusers' DDIM lands, the next grid point) per step.

    "Next grid point" is −1 after the last step (ᾱ = 1); diffusers' landing point is negative there too
    (any negative value means its final ᾱ, 1 with ``set_alpha_to_one``).
    """
    ts = [int(v) for v in (grid.tolist() if isinstance(grid, torch.Tensor) else grid)]
    out = []
    for i, t in enumerate(ts):
        nxt = ts[i + 1] if i + 1 < len(ts) else -1
        land = diffusers_ddim_prev_timestep(t, T, len(ts))
        out.append((t, max(land, -1), nxt))
    return out


def run_diffusers_scheduler(
    scheduler,
    eps_model,
    x_T: torch.Tensor,
    labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    *,
    steps: int | None = None,
    timesteps=None,
    scale_initial: bool = True,
    return_timesteps: bool = False,
    progress: bool = False,
    **step_kwargs,
):
    """Sample with a diffusers ``scheduler`` and a course ``eps_model``, as a diffusers pipeline does.

    ``steps`` (default: all T) or a custom descending ``timesteps`` list (DDPM, DPM-Solver, Euler) goes to
    ``scheduler.set_timesteps`` (always called, which also resets a multistep scheduler's memory).
    ``scale_initial``: multiply x_T by ``scheduler.init_noise_sigma`` as pipelines do; False uses x_T as given
    (already in the scheduler's frame). ``generator`` goes to every ``scheduler.step`` (the stochastic
    schedulers draw their z from it, in step order, like the course samplers), ``step_kwargs`` too (e.g.
    ``eta=1.0`` for DDIM). The model is called with integer indices: a fractional timestep (Euler with
    "linspace" when (T−1)/(S−1) is not an integer) raises ValueError. Runs under ``torch.no_grad()``.

    Returns x_0, or (x_0, timesteps visited as a LongTensor) with ``return_timesteps``.
    """
    require_diffusers()
    x = check_image_batch("x_T", x_T)
    if not torch.isfinite(x).all():
        fail("x_T", x, "contains NaN or inf")
    T = int(scheduler.config.num_train_timesteps)
    if timesteps is not None:
        if steps is not None:
            fail("steps", steps, "give either steps or timesteps, not both")
        ts = [int(v) for v in (timesteps.tolist() if isinstance(timesteps, torch.Tensor) else timesteps)]
        try:
            scheduler.set_timesteps(timesteps=ts, device=x.device)
        except TypeError:
            fail("timesteps", ts, f"{type(scheduler).__name__} takes no custom timesteps; pass steps=")
    else:
        steps = T if steps is None else check_int("steps", steps, low=1, high=T)
        scheduler.set_timesteps(steps, device=x.device)
    visited = _integer_timesteps(scheduler.timesteps, T)
    labels = model_labels(eps_model, labels, x.shape[0], x.device)
    accepts = inspect.signature(scheduler.step).parameters
    if generator is not None and "generator" in accepts:
        step_kwargs = {**step_kwargs, "generator": generator}
    if scale_initial:
        x = x * scheduler.init_noise_sigma
    with torch.no_grad():
        for i in progress_bar(range(len(visited)), progress, type(scheduler).__name__):
            t = scheduler.timesteps[i]
            model_input = scheduler.scale_model_input(x, t)
            eps = call_eps_model(eps_model, model_input, visited[i], labels=labels, step=i)
            x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
    return (x, torch.tensor(visited, dtype=torch.long)) if return_timesteps else x


def make_flow_scheduler(shift: float = 1.0):
    """diffusers' ``FlowMatchEulerDiscreteScheduler`` (T = 1000, time ``shift``; no dynamic shifting)."""
    require_diffusers()
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift, use_dynamic_shifting=False)


def run_diffusers_flow_scheduler(
    scheduler, velocity_model, x_1: torch.Tensor, labels=None, *, steps: int | None = None, sigmas=None,
    progress: bool = False,
):  # fmt: skip
    """Sample a course velocity model with diffusers' ``FlowMatchEulerDiscreteScheduler``, as the SD3 pipeline
    does: ``set_timesteps(steps)`` or ``set_timesteps(sigmas=…)``, then for each timestep τ (= 1000 σ)

        u = velocity_model(x, τ / 1000),   x = scheduler.step(u, τ, x).prev_sample   (x + (σ_next − σ) u)

    Its default grid is σ = linspace(1, 1/1000, S) then 0 (after ``shift``), not our uniform 1, 1 − 1/S, …, 0
    (:func:`~diffusion_course.sampling.flow.flow_time_grid`); given our grid without its final 0 as ``sigmas``
    it is our flow Euler sampler, to float32 rounding (the scheduler steps in float32). Returns
    (x_0, the σ grid it used, float64, with the final 0)."""
    require_diffusers()
    x = check_image_batch("x_1", x_1)
    if (steps is None) == (sigmas is None):
        fail("steps", steps, "give either steps or sigmas (a descending grid without its final 0)")
    if sigmas is not None:
        values = sigmas.tolist() if isinstance(sigmas, torch.Tensor) else list(sigmas)
        scheduler.set_timesteps(sigmas=values, device=x.device)
    else:
        scheduler.set_timesteps(check_int("steps", steps, low=1), device=x.device)
    labels = model_labels(velocity_model, labels, x.shape[0], x.device)
    T = float(scheduler.config.num_train_timesteps)
    with torch.no_grad():
        for tau in progress_bar(scheduler.timesteps, progress, type(scheduler).__name__):
            t = (tau / T).expand(x.shape[0]).float()
            u = velocity_model(x, t) if labels is None else velocity_model(x, t, labels=labels)
            x = scheduler.step(u, tau, x).prev_sample
    return x, scheduler.sigmas.detach().cpu().double()


def _integer_timesteps(ts: torch.Tensor, T: int) -> list[int]:
    values = ts.detach().cpu().double().tolist()
    out = []
    for v in values:
        if v != round(v):
            fail(
                "scheduler.timesteps",
                [round(u, 3) for u in values[:6]],
                f"holds the fractional timestep {v:.4g}; a course ε-model takes integer indices: use "
                "timestep_spacing='trailing' or 'leading', or a step count with (T−1)/(S−1) an integer",
            )
        if not 0 <= v <= T - 1:
            fail("scheduler.timesteps", v, f"every timestep must lie in 0..{T - 1}")
        out.append(int(round(v)))
    return out


def autoencoder_kl_config(autoencoder: Autoencoder) -> tuple[dict, list[str]]:
    """The keyword config of the ``diffusers.AutoencoderKL`` closest to ``autoencoder``, and in words what
    still differs between the two networks.

    What maps: three resolutions (``block_out_channels`` = (c, 2c, 2c) for ``base_channels`` = c, one
    ``DownEncoderBlock2D``/``UpDecoderBlock2D`` each, so two factor-2 downsamplings: H×W → H/4 × W/4),
    ``layers_per_block`` = 1 (our one residual block per resolution in the encoder), the residual block itself
    (GroupNorm, SiLU, 3×3 conv, twice, plus the skip; no time input, no dropout), GroupNorm groups, SiLU, no
    attention (``mid_block_add_attention=False``), no 1×1 quant convs (``use_quant_conv=False``,
    ``use_post_quant_conv=False``), and the posterior: both encoders end in GroupNorm, SiLU and a 3×3 conv to
    2·``latent_channels`` "moments", split into (μ, log σ²) along the channels with log σ² clamped to
    [−30, 20]. ``scaling_factor`` is copied; in both libraries it is applied outside the model (diffusers'
    pipelines multiply ``latent_dist.sample()`` by it and divide before ``decode``; the course encodes μ,
    ``latent_dist.mode()`` in diffusers). ``encode(x).latent_dist.mean``/``.logvar`` play the part of our
    ``encode(x)`` pair, and ``decode(z).sample`` that of our ``decode(z)``.

    The switches are only set where the installed diffusers' ``AutoencoderKL`` takes them (otherwise the
    layer they remove is named among the differences). Needs diffusers (ImportError with the install command
    otherwise). Returns ``(config, differences)``: ``AutoencoderKL(**config)`` builds, and ``differences`` is
    a list of sentences.
    """
    if not isinstance(autoencoder, Autoencoder):
        fail("autoencoder", type(autoencoder).__name__, "expected a course Autoencoder (models.Autoencoder)")
    diffusers = require_diffusers()
    accepted = set(inspect.signature(diffusers.AutoencoderKL.__init__).parameters) - {"self"}
    ours = autoencoder.config
    c1, c2 = ours["base_channels"], 2 * ours["base_channels"]
    size = ours["image_size"]
    config = {
        "in_channels": ours["in_channels"],
        "out_channels": ours["in_channels"],
        "down_block_types": ("DownEncoderBlock2D",) * 3,
        "up_block_types": ("UpDecoderBlock2D",) * 3,
        "block_out_channels": (c1, c2, c2),
        "layers_per_block": 1,
        "act_fn": "silu",
        "latent_channels": ours["latent_channels"],
        "norm_num_groups": ours["groups"],
        "sample_size": size,
        "scaling_factor": float(autoencoder.scaling_factor),
    }
    differences = []
    switches = {
        "mid_block_add_attention": "its mid-blocks also hold a self-attention layer, which ours has none of",
        "use_quant_conv": "its encoder output goes through an extra 1×1 convolution (quant_conv)",
        "use_post_quant_conv": "its decoder input goes through an extra 1×1 convolution (post_quant_conv)",
    }
    for switch, layer in switches.items():
        if switch in accepted:
            config[switch] = False
        else:
            differences.append(f"This diffusers version has no `{switch}` switch: {layer}.")
    sizes = f"{size}×{size} → {size // 2}×{size // 2} → {size // 4}×{size // 4}"
    differences += [
        f"Downsampling ({sizes}): diffusers pads only the right and bottom edge by one pixel and "
        "then applies a 3×3 stride-2 convolution without padding; ours pads one pixel on every side "
        "(padding=1). The sizes agree, but each output pixel sees input rows and columns 2i…2i+2 instead "
        "of 2i−1…2i+1: the same kernel gives a feature map shifted by one input pixel.",
        f"Where the channels change in the encoder: our first stride-2 convolution goes from {c1} to {c2} "
        f"channels; diffusers' downsampling convolutions keep the channel count ({c1}→{c1}, {c2}→{c2}) and "
        f"the first residual block at {size // 2}×{size // 2} changes it ({c1}→{c2}), with a 1×1 shortcut "
        "convolution on its skip path that ours has no counterpart for.",
        f"Mid-blocks: diffusers' encoder and decoder each have a mid-block of two residual blocks at "
        f"{size // 4}×{size // 4} (mid_block_add_attention=False removes only the attention between them); "
        "ours has none, so diffusers has four residual blocks more.",
        "Decoder depth: diffusers' decoder has layers_per_block + 1 = 2 residual blocks per resolution (6, "
        "besides the mid-block), ours 1 (3); with the mid-block, diffusers runs 4 residual blocks at "
        f"{size // 4}×{size // 4} before its first upsampling where ours runs 1. layers_per_block = 0 would "
        "not help: it also removes the encoder's residual blocks.",
        f"Where the channels change in the decoder: our second upsampling convolution (nearest ×2, then 3×3 "
        f"conv) goes from {c2} to {c1} channels; diffusers' upsampling convolutions keep {c2}, and the first "
        f"residual block at {size}×{size} changes it to {c1}, with a 1×1 shortcut convolution.",
        "GroupNorm epsilon: diffusers uses 1e-6 in every GroupNorm, ours PyTorch's default 1e-5, so even "
        "layers with copied weights give slightly different outputs.",
        "Parameter names and order: ours are positions in two nn.Sequential (encoder.0, "
        "encoder.1.block.0, …, decoder.…), diffusers' are named modules (encoder.conv_in, "
        "encoder.down_blocks.0.resnets.0.norm1, …, encoder.mid_block.…, decoder.up_blocks.…): a state "
        "dict does not load into the other, and because of the differences above no renaming map can make "
        "the two compute the same function.",
    ]
    return config, differences
