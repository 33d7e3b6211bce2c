r"""Checkers for notebook 10 (diffusers' schedulers driving a course ε-model).

* ``check_ddim_prev_timestep(fn)``: ``fn(t, T, steps) -> int``, diffusers' DDIMScheduler rule for the
  "previous" timestep, t − T // S (negative after the last step);
* ``check_ddim_config(fn)``: ``fn(schedule) -> dict``, keyword arguments for ``DDIMScheduler(**config)``
  under which diffusers' DDIM (η = 0) equals the course's ``ddim_sample`` on the "trailing" grid. The dict is
  checked against DDIMScheduler's defaults (written out below, so the check works without diffusers); with
  diffusers installed the checker also builds the scheduler and samples the 2-D oracle with it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..bridge import diffusers_available, diffusers_ddim_prev_timestep
from ..schedules import NoiseSchedule, cosine_schedule, linear_schedule
from .core import NOT_ATTEMPTED, Case, Feedback, _learner_line, check_function

# ---------------------------------------------------------------- t − T // S


def _prev_cases() -> list[Case]:
    cases = [(999, 1000, 10), (966, 1000, 30), (999, 1000, 600), (99, 1000, 10), (5, 20, 3)]
    return [Case({"t": t, "T": T, "steps": S}, label=f"t = {t}, T = {T}, steps = {S}") for t, T, S in cases]


def check_ddim_prev_timestep(fn) -> Feedback:
    """Check ``fn(t, T, steps)`` = t − T // steps (diffusers' DDIMScheduler, any t, may be negative)."""
    return check_function(
        fn,
        name="ddim_prev_timestep",
        cases=_prev_cases,
        reference=diffusers_ddim_prev_timestep,
        diagnoses=[
            (
                lambda t, T, S: t - T / S,
                "You subtracted T / S as a float (e.g. 999 − 1000/30 = 965.67). diffusers uses integer "
                "division: `T // S`, so its timesteps stay integers.",
            ),
            (
                lambda t, T, S: t - round(T / S),
                "You rounded T / S; diffusers floors it with `T // S` (T = 1000, S = 600: 1000 // 600 = 1).",
            ),
            (
                lambda t, T, S: max(t - T // S, 0),
                "You clamped the result at 0. diffusers lets it go negative after the last step and then "
                "uses its `final_alpha_cumprod` (1 with set_alpha_to_one=True) instead of an index.",
            ),
            (
                lambda t, T, S: max(t - T // S, -1),
                "You clamped the result at −1. diffusers keeps t − T // S (e.g. 5 − 20 // 3 = −1, but "
                "99 − 100 = −1 and 5 − 6 = −1 … any negative value means 'after the last step').",
            ),
            (
                lambda t, T, S: t - T // S - 1,
                "Off by one: diffusers subtracts exactly T // S from t.",
            ),
            (
                lambda t, T, S: t - (T - 1) // (S - 1) if S > 1 else t - T,
                "You used the stride of the 'linspace' grid, (T − 1) // (S − 1). diffusers' DDIM subtracts "
                "T // S whatever the spacing: that mismatch is exactly why its 'linspace' steps do not land "
                "on the next grid point.",
            ),
            (
                lambda t, T, S: t + T // S,
                "Wrong direction: sampling goes from noisy (large t) to clean (small t), so the previous "
                "timestep is t − T // S.",
            ),
            (
                lambda t, T, S: t - S,
                "You subtracted the number of steps S; the stride is T // S (T = 1000, S = 10: 100).",
            ),
            (
                lambda t, T, S: t - 1,
                "t − 1 is DDPM's previous step on all T steps; with S sampling steps diffusers' DDIM "
                "subtracts T // S.",
            ),
        ],
        atol=0.0,
        rtol=0.0,
    )


# ---------------------------------------------------------------- a DDIMScheduler config from a schedule

# DDIMScheduler's defaults (diffusers ≥ 0.27); tests compare them with the installed version's signature.
DDIM_DEFAULTS = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "clip_sample": True,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "prediction_type": "epsilon",
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "clip_sample_range": 1.0,
    "sample_max_value": 1.0,
    "timestep_spacing": "leading",
    "rescale_betas_zero_snr": False,
}


def _config_schedules() -> list[NoiseSchedule]:
    return [cosine_schedule(1000), linear_schedule(100)]


def check_ddim_config(fn) -> Feedback:
    """Check ``fn(schedule) -> dict`` of DDIMScheduler keyword arguments that make diffusers' DDIM (η = 0)
    equal to the course's DDIM on the "trailing" grid (see the module docstring)."""
    name = "ddim_config"
    for schedule in _config_schedules():
        where = f"for the {schedule.name} schedule with T = {schedule.T}"
        try:
            config = fn(schedule)
        except NotImplementedError:
            return Feedback(False, NOT_ATTEMPTED, attempted=False, name=name)
        except Exception as error:  # the learner's code may raise anything
            message = f"Your function raised {type(error).__name__}: {error} {where}.{_learner_line(error)}"
            return Feedback(False, message, name=name)
        problem = _config_problem(config, schedule, where)
        if problem:
            return Feedback(False, problem, name=name)
    message = "Your config makes diffusers' DDIM follow the course's definitions on both schedules."
    if diffusers_available():
        problem = _run_config(fn)
        if problem:
            return Feedback(False, problem, name=name)
        message += " Built and run with diffusers: it matches ddim_sample to float32 rounding. Well done!"
    else:
        message += (
            " (diffusers is not installed, so it was checked against DDIMScheduler's defaults.) Well done!"
        )
    return Feedback(True, message, name=name)


def _config_problem(config, schedule: NoiseSchedule, where: str) -> str | None:
    if config is None:
        return "Your function returned None: did you forget the `return` statement?"
    if not isinstance(config, dict):
        return f"Your function returned a {type(config).__name__}; return a dict of keyword arguments."
    unknown = sorted(k for k in config if k not in DDIM_DEFAULTS)
    if unknown:
        return (
            f"DDIMScheduler has no option {unknown[0]!r} (its options: {', '.join(DDIM_DEFAULTS)}); "
            "remove it: an unknown keyword raises TypeError."
        )
    eff = {**DDIM_DEFAULTS, **config}
    if eff["trained_betas"] is None:
        return (
            f"Without `trained_betas` DDIMScheduler rebuilds β from beta_schedule={eff['beta_schedule']!r} "
            f"(beta_start={eff['beta_start']}, beta_end={eff['beta_end']}, T={eff['num_train_timesteps']}), "
            f"which is not this schedule {where}. Pass the schedule's own β's: "
            "`trained_betas=schedule.betas.tolist()`."
        )
    try:
        betas = np.asarray(
            eff["trained_betas"].tolist()
            if isinstance(eff["trained_betas"], torch.Tensor)
            else eff["trained_betas"],
            dtype=np.float64,
        ).reshape(-1)
    except (TypeError, ValueError):
        return "`trained_betas` should be a list (or array) of the T numbers β_t."
    target = schedule.betas.numpy()
    if betas.shape != target.shape:
        return f"`trained_betas` has {betas.size} entries; the schedule has T = {schedule.T} {where}."
    if not np.allclose(betas, target, rtol=1e-6, atol=0):
        if np.allclose(betas, schedule.alpha_bar.numpy(), rtol=1e-6):
            return "You passed ᾱ_t as `trained_betas`; diffusers wants the β_t (`schedule.betas`)."
        if np.allclose(betas, schedule.alphas.numpy(), rtol=1e-6):
            return "You passed α_t = 1 − β_t as `trained_betas`; diffusers wants the β_t (`schedule.betas`)."
        return f"`trained_betas` is not `schedule.betas` {where}."
    if eff["num_train_timesteps"] != schedule.T:
        return (
            f"num_train_timesteps = {eff['num_train_timesteps']} but the schedule has T = {schedule.T} "
            f"{where}: set `num_train_timesteps=schedule.T` (the default is 1000)."
        )
    if eff["prediction_type"] != "epsilon":
        return f"prediction_type={eff['prediction_type']!r}: the course models predict ε, use 'epsilon'."
    if eff["clip_sample"]:
        return (
            "clip_sample is True (DDIMScheduler's default): diffusers would clamp x̂₀ to [−1, 1] at every "
            "step, which the course's ddim_sample does not do. Set `clip_sample=False`."
        )
    if eff["thresholding"]:
        return "thresholding=True rescales x̂₀ at every step (dynamic thresholding); set it to False."
    if not eff["set_alpha_to_one"]:
        return (
            "set_alpha_to_one=False makes the last step end at ᾱ_0 (≈ 0.9999 for the linear schedule) "
            "instead of ᾱ = 1, so the output keeps √(1 − ᾱ_0) of noise. Set `set_alpha_to_one=True`."
        )
    spacing = eff["timestep_spacing"]
    if spacing != "trailing":
        why = {
            "leading": "the default 'leading' grid (900, 800, …, 0 for S = 10) never visits T − 1",
            "linspace": "with 'linspace' diffusers' previous timestep t − T // S is not the next grid point",
        }.get(spacing, f"{spacing!r} is not one of diffusers' spacings")
        return f"timestep_spacing={spacing!r}: {why}. Use `timestep_spacing='trailing'`."
    if eff["steps_offset"] != 0:
        return f"steps_offset={eff['steps_offset']} shifts every timestep; leave it at 0."
    if eff["rescale_betas_zero_snr"]:
        return "rescale_betas_zero_snr=True changes the schedule (ᾱ_(T−1) = 0); leave it False."
    return None


def _run_config(fn) -> str | None:
    """Build DDIMScheduler(**fn(schedule)) and compare 10 steps on the oracle with ddim_sample."""
    import diffusers

    from ..bridge import run_diffusers_scheduler
    from ..oracle import GaussianMixtureOracle, toy_mixture
    from ..sampling import ddim_sample
    from ..sampling.timesteps import timestep_grid

    schedule = linear_schedule(1000)
    try:
        scheduler = diffusers.DDIMScheduler(**fn(schedule))
    except Exception as error:
        return f"DDIMScheduler(**config) raised {type(error).__name__}: {error}"
    oracle = GaussianMixtureOracle(toy_mixture(), schedule)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    ours = ddim_sample(oracle, x_T, schedule, timestep_grid(schedule.T, 10, "trailing"))
    theirs = run_diffusers_scheduler(scheduler, oracle, x_T, steps=10)
    error = float((ours - theirs).abs().max())
    if not math.isfinite(error) or error > 1e-4:
        return f"Built with diffusers, your config's DDIM differs from ddim_sample by up to {error:.3g}."
    return None
