"""The diffusers guard of notebook 10 (a message for a learner, an error under CI) and the clipping options
under which diffusers' DDIM and DDPM equal the course's ``clip_x0=True``.

The guard is run with a fake environment and a fake import state; the clipping tests need diffusers, and,
like the notebook, fail instead of skipping when it is missing under CI.
"""

import ast
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from diffusion_course import linear_schedule
from diffusion_course.bridge import INSTALL_HINT, check_diffusers_installed, running_in_ci
from diffusion_course.oracle import GaussianMixtureOracle, toy_mixture
from diffusion_course.sampling import ddim_sample, ddpm_sample, timestep_grid

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "10_diffusers_bridge.py"


@pytest.fixture
def no_diffusers(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` raise ImportError


@pytest.fixture
def fake_diffusers(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", types.ModuleType("diffusers"))


@pytest.mark.parametrize("value", ["true", "TRUE", "1", " true "])
def test_ci_is_recognised(value):
    assert running_in_ci({"CI": value})


@pytest.mark.parametrize(
    "environ", [{}, {"CI": ""}, {"CI": "false"}, {"CI": "0"}, {"GITHUB_ACTIONS": "true"}]
)
def test_no_ci(environ):
    assert not running_in_ci(environ)


def test_learner_without_diffusers_gets_a_message_and_false(no_diffusers, capsys):
    assert check_diffusers_installed({}) is False
    out = capsys.readouterr().out
    assert "diffusers is not installed" in out and "skip" in out and INSTALL_HINT in out


def test_ci_without_diffusers_fails_with_the_install_command(no_diffusers, capsys):
    with pytest.raises(ImportError) as err:
        check_diffusers_installed({"CI": "true"})
    message = str(err.value)
    assert "CI=true" in message and "not skip" in message and INSTALL_HINT in message
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("environ", [{}, {"CI": "true"}])
def test_installed_diffusers_passes_silently(fake_diffusers, capsys, environ):
    assert check_diffusers_installed(environ) is True
    assert capsys.readouterr().out == ""


def test_this_run_has_diffusers_where_ci_demands_it():
    """Under CI=true the bridge tests and notebook 10 must run: a missing diffusers fails here too."""
    assert check_diffusers_installed(os.environ) in (True, False)  # raises under CI without diffusers


def test_notebook_10_decides_with_the_guard():
    """The notebook's flag comes from check_diffusers_installed, not from a check that only skips."""
    tree = ast.parse(NOTEBOOK.read_text())
    flags = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", None) == "HAVE_DIFFUSERS" for t in node.targets)
    ]
    assert len(flags) == 1
    call = flags[0]
    assert isinstance(call, ast.Call) and getattr(call.func, "id", None) == "check_diffusers_installed"
    called = {
        node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and hasattr(node.func, "id")
    }
    assert "diffusers_available" not in called and "importorskip" not in NOTEBOOK.read_text()


# --- clipping: course clip_x0=True against diffusers' options ------------------------------------------


def _need_diffusers():
    if not check_diffusers_installed():  # raises under CI
        pytest.skip("diffusers is not installed")


def _toy(n=256):
    schedule = linear_schedule(1000)
    oracle = GaussianMixtureOracle(toy_mixture(), schedule)
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    return schedule, oracle, x_T


def test_ddim_clip_x0_is_clip_sample_with_use_clipped_model_output():
    _need_diffusers()
    from diffusion_course.bridge import make_diffusers_scheduler, run_diffusers_scheduler

    schedule, oracle, x_T = _toy()
    ours = ddim_sample(oracle, x_T, schedule, timestep_grid(1000, 10), clip_x0=True)
    assert (
        ours - ddim_sample(oracle, x_T, schedule, timestep_grid(1000, 10))
    ).abs().max() > 1e-2  # clipping acts
    gap = {}
    for use_clipped in (True, False):
        scheduler = make_diffusers_scheduler("ddim", schedule, clip_sample=True, clip_sample_range=1.0)
        theirs = run_diffusers_scheduler(
            scheduler, oracle, x_T, steps=10, use_clipped_model_output=use_clipped
        )
        gap[use_clipped] = (theirs.double() - ours.double()).abs().max().item()
    assert gap[True] < 2e-5, gap
    assert gap[False] > 1e-2, gap
    # η = 1 with the same seed: the same correspondence
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    ours = ddim_sample(oracle, x_T, schedule, timestep_grid(1000, 10), clip_x0=True, eta=1.0, generator=g())
    scheduler = make_diffusers_scheduler("ddim", schedule, clip_sample=True)
    theirs = run_diffusers_scheduler(
        scheduler, oracle, x_T, generator=g(), steps=10, eta=1.0, use_clipped_model_output=True
    )
    assert (theirs - ours).abs().max() < 2e-5


def test_ddpm_clip_x0_is_clip_sample():
    _need_diffusers()
    from diffusion_course.bridge import (
        make_diffusers_scheduler,
        run_diffusers_scheduler,
        use_float64_alpha_bar,
    )

    schedule, oracle, x_T = _toy()
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    grid = timestep_grid(1000, 50)
    ours = ddpm_sample(oracle, x_T.double(), schedule, grid, clip_x0=True, generator=g())
    plain = ddpm_sample(oracle, x_T.double(), schedule, grid, generator=g())
    assert (ours - plain).abs().max() > 1e-2  # clipping acts
    scheduler = use_float64_alpha_bar(make_diffusers_scheduler("ddpm", schedule, clip_sample=True), schedule)
    theirs = run_diffusers_scheduler(scheduler, oracle, x_T.double(), generator=g(), steps=50)
    assert (theirs - ours).abs().max() < 1e-9
