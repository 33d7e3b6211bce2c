"""Samplers: timestep grids, DDPM, DDIM (η, inversion), fast solvers, UniPC, the reverse SDE and
predictor–corrector, the flow ODE samplers, guidance and the registry.

The names imported here are the package's sampling API. See docs/SAMPLING.md.
"""

from .common import NonFiniteError, Trajectory, eps_from_x0, predict_x0
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
from .flow import check_flow_times, flow_time_grid, run_flow_sampler
from .guidance import CFG, CONVENTIONS, guided_eps, rescale_guided_eps, to_s
from .registry import FLOW_SAMPLERS, SAMPLERS, get_sampler, nfe, run_sampler, sampler
from .sde import pc_sample, sde_sample
from .solvers import (
    dpmpp_2m_coefficients,
    dpmpp_2m_sample,
    dpmpp_first_order_step,
    euler_sample,
    euler_step,
    half_log_snr,
    heun_sample,
    midpoint_sample,
    vp_sigma,
)
from .timesteps import STRATEGIES, timestep_grid, validate_timesteps, visits_last
from .unipc import unipc_correct, unipc_predict, unipc_sample, unipc_weights
