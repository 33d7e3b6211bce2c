"""Samplers: timestep grids, DDPM, DDIM (η, inversion), fast solvers, UniPC and the shared loop.

See docs/SAMPLING.md.
"""

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
from .fitted_grid import FittedGrid, fit_timesteps, grid_loss
from .guidance import CFG, CONVENTIONS, guided_eps, rescale_guided_eps, to_s
from .solvers import (
    dpmpp_2m_coefficients,
    dpmpp_2m_sample,
    dpmpp_2m_step,
    dpmpp_first_order_step,
    euler_sample,
    euler_step,
    half_log_snr,
    heun_sample,
    heun_step,
    solver_nfe,
    vp_sigma,
)
from .timesteps import STRATEGIES, timestep_grid, validate_timesteps, visits_last
from .unipc import unipc_correct, unipc_predict, unipc_sample, unipc_weights

__all__ = [
    "CFG",
    "CONVENTIONS",
    "NonFiniteError",
    "STRATEGIES",
    "FittedGrid",
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
    "dpmpp_2m_coefficients",
    "dpmpp_2m_sample",
    "dpmpp_2m_step",
    "dpmpp_first_order_step",
    "draw_noise",
    "eps_from_x0",
    "euler_sample",
    "euler_step",
    "fit_timesteps",
    "grid_loss",
    "guided_eps",
    "half_log_snr",
    "heun_sample",
    "heun_step",
    "predict_x0",
    "rescale_guided_eps",
    "sample_loop",
    "solver_nfe",
    "timestep_grid",
    "to_s",
    "unipc_correct",
    "unipc_predict",
    "unipc_sample",
    "unipc_weights",
    "validate_timesteps",
    "visits_last",
    "vp_sigma",
]
