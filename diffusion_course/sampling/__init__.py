"""Samplers: timestep grids, DDPM, DDIM (η, inversion) and the shared loop (see docs/SAMPLING.md)."""

from .common import (
    NonFiniteError,
    Trajectory,
    call_eps_model,
    check_labels,
    check_sampler_inputs,
    draw_noise,
    eps_from_x0,
    predict_x0,
    sample_loop,
)
from .ddim import (
    ddim_direction_variance,
    ddim_invert,
    ddim_reconstruction_error,
    ddim_sample,
    ddim_sigma,
    ddim_step,
)
from .ddpm import VARIANCES, ddpm_posterior, ddpm_sample, ddpm_step
from .guidance import CFG, CONVENTIONS, guided_eps, rescale_guided_eps, to_s
from .timesteps import STRATEGIES, timesteps, validate_timesteps, visits_last

__all__ = [
    "CFG",
    "CONVENTIONS",
    "NonFiniteError",
    "STRATEGIES",
    "Trajectory",
    "VARIANCES",
    "call_eps_model",
    "check_labels",
    "check_sampler_inputs",
    "ddim_direction_variance",
    "ddim_invert",
    "ddim_reconstruction_error",
    "ddim_sample",
    "ddim_sigma",
    "ddim_step",
    "ddpm_posterior",
    "ddpm_sample",
    "ddpm_step",
    "draw_noise",
    "eps_from_x0",
    "guided_eps",
    "predict_x0",
    "rescale_guided_eps",
    "sample_loop",
    "timesteps",
    "to_s",
    "validate_timesteps",
    "visits_last",
]
