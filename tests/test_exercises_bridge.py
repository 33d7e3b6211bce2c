"""Checkers of notebook 10: diffusers' DDIM previous-timestep rule and a DDIMScheduler config."""

import pytest
import torch

import diffusion_course.exercises.bridge as ex
from diffusion_course.exercises.bridge import check_ddim_config, check_ddim_prev_timestep


def not_written(*args):
    raise NotImplementedError("Exercise 1: write your code here")


# ---------------------------------------------------------------- t − T // S


def prev_solution(t, T, steps):
    return t - T // steps


def test_prev_solution_passes():
    result = check_ddim_prev_timestep(prev_solution)
    assert result.passed, result
    assert not check_ddim_prev_timestep(not_written).attempted


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda t, T, S: t - T / S, ["as a float", "T // S"]),
        (lambda t, T, S: t - round(T / S), ["rounded"]),
        (lambda t, T, S: max(t - T // S, 0), ["clamped the result at 0"]),
        (lambda t, T, S: t - T // S - 1, ["Off by one"]),
        (lambda t, T, S: t - (T - 1) // (S - 1), ["linspace"]),
        (lambda t, T, S: t + T // S, ["Wrong direction"]),
        (lambda t, T, S: t - S, ["number of steps S"]),
        (lambda t, T, S: t - 1, ["DDPM"]),
        (lambda t, T, S: t - T // S + 7, ["largest error"]),
        (lambda t, T, S: None, ["returned None"]),
    ],
)
def test_prev_mistakes_are_named(fn, words):
    result = check_ddim_prev_timestep(fn)
    assert not result.passed and result.attempted
    for word in words:
        assert word in str(result), (word, str(result))


# ---------------------------------------------------------------- DDIMScheduler config


def config_solution(schedule):
    return {
        "num_train_timesteps": schedule.T,
        "trained_betas": schedule.betas.tolist(),
        "prediction_type": "epsilon",
        "clip_sample": False,
        "set_alpha_to_one": True,
        "timestep_spacing": "trailing",
    }


def with_changes(**changes):
    drop = [k for k, v in changes.items() if v is ...]

    def fn(schedule):
        config = {**config_solution(schedule), **changes}
        for k in drop:
            config.pop(k)
        return config

    return fn


@pytest.fixture(params=[True, False], ids=["with-diffusers", "without-diffusers"])
def diffusers_state(request, monkeypatch):
    if request.param:
        pytest.importorskip("diffusers")
    else:
        monkeypatch.setattr(ex, "diffusers_available", lambda: False)
    return request.param


def test_config_solution_passes(diffusers_state):
    result = check_ddim_config(config_solution)
    assert result.passed, result
    assert ("Built and run with diffusers" in str(result)) == diffusers_state
    # a tensor or numpy array of betas is fine too
    assert check_ddim_config(lambda s: {**config_solution(s), "trained_betas": s.betas.numpy()}).passed


def test_config_not_attempted_and_errors():
    assert not check_ddim_config(not_written).attempted
    result = check_ddim_config(lambda s: {"num_train_timesteps": s.T_max})
    assert "AttributeError" in str(result) and "T_max" in str(result)


@pytest.mark.parametrize(
    "fn, words",
    [
        (with_changes(set_alpha_to_one=False), ["set_alpha_to_one=False", "ᾱ_0"]),
        (with_changes(clip_sample=...), ["clip_sample is True", "default"]),
        (with_changes(clip_sample=True), ["clip_sample is True"]),
        (with_changes(timestep_spacing=...), ["'leading'", "never visits T − 1"]),
        (with_changes(timestep_spacing="linspace"), ["t − T // S"]),
        (with_changes(trained_betas=...), ["Without `trained_betas`", "beta_schedule"]),
        (lambda s: {**config_solution(s), "trained_betas": s.alpha_bar.tolist()}, ["You passed ᾱ_t"]),
        (lambda s: {**config_solution(s), "trained_betas": s.alphas.tolist()}, ["α_t = 1 − β_t"]),
        (lambda s: {**config_solution(s), "trained_betas": s.betas[:-1].tolist()}, ["entries"]),
        (with_changes(num_train_timesteps=1000), ["num_train_timesteps = 1000", "T = 100"]),
        (with_changes(num_train_timesteps=...), ["num_train_timesteps = 1000"]),
        (with_changes(prediction_type="v_prediction"), ["'epsilon'"]),
        (with_changes(thresholding=True), ["thresholding"]),
        (with_changes(steps_offset=1), ["steps_offset"]),
        (with_changes(variance_type="fixed_small"), ["no option 'variance_type'"]),
        (with_changes(rescale_betas_zero_snr=True), ["rescale_betas_zero_snr"]),
        (lambda s: None, ["returned None"]),
        (lambda s: [("clip_sample", False)], ["return a dict"]),
    ],
)
def test_config_mistakes_are_named(fn, words):
    result = check_ddim_config(fn)
    assert not result.passed and result.attempted
    for word in words:
        assert word in str(result), (word, str(result))


def test_config_that_diffusers_rejects_is_reported():
    pytest.importorskip("diffusers")
    result = check_ddim_config(with_changes(trained_betas=torch.zeros(3, 3).tolist()))
    assert not result.passed  # the shape check catches it before diffusers
    assert "entries" in str(result)
