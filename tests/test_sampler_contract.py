"""The contract every registered sampler keeps; a sampler added with ``@sampler`` is covered by this file."""

import inspect

import pytest
import torch

from diffusion_course.sampling import CFG, SAMPLERS, get_sampler, run_sampler, timestep_grid
from diffusion_course.schedules import make_schedule
from tests.golden.sampler_cases import ElementwiseEps

NAMES = sorted(SAMPLERS)
SHARED = ("generator", "labels", "return_trajectory", "progress")
LABELS = torch.tensor([0, 1, 2, 0])


class Counter:
    """Counts the rows the wrapped ε-model evaluates (a CFG call evaluates 2B rows)."""

    def __init__(self, model):
        self.model, self.rows, self.num_classes = model, 0, getattr(model, "num_classes", None)

    def __call__(self, x, t, labels=None):
        self.rows += x.shape[0]
        return self.model(x, t, labels=labels)


def x_T(seed=0):
    return torch.randn(4, 1, 5, 5, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", NAMES)
def test_the_registry_describes_the_function(name):
    spec = get_sampler(name)
    params = inspect.signature(spec.fn).parameters
    assert list(params)[:4] == ["eps_model", "x_T", "schedule", "timesteps"]
    for option in (*spec.options, *SHARED):
        assert params[option].kind is inspect.Parameter.KEYWORD_ONLY, option
    assert spec.summary and spec.fn.__doc__.strip().startswith(spec.summary)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_samples(name):
    schedule = make_schedule("linear", T=100)
    model = ElementwiseEps()

    def run(seed):
        return run_sampler(name, model, x_T(), schedule, 8, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(3), run(3))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("steps", [1, 2, 7])
def test_trajectory_length_and_counted_nfe(name, steps):
    schedule = make_schedule("cosine", T=100)
    counter = Counter(ElementwiseEps())
    out, traj = run_sampler(name, counter, x_T(), schedule, steps, return_trajectory=True)
    assert torch.equal(traj.timesteps, timestep_grid(100, steps))
    assert len(traj) == steps and len(traj.xs) == steps + 1 and len(traj.x0_preds) == steps
    assert torch.equal(traj.xs[0], x_T()) and traj.xs[-1] is out
    assert counter.rows == 4 * get_sampler(name).nfe(steps)


@pytest.mark.parametrize("name", NAMES)
def test_labels_and_guidance(name):
    schedule = make_schedule("linear", T=100)
    model = ElementwiseEps()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain = run_sampler(name, model, x_T(), schedule, 6, generator=g())
    labelled = run_sampler(name, model, x_T(), schedule, 6, generator=g(), labels=LABELS)
    other = run_sampler(name, model, x_T(), schedule, 6, generator=g(), labels=(LABELS + 1) % 3)
    assert not torch.equal(plain, labelled) and not torch.equal(labelled, other)
    counter = Counter(CFG(model, 3.0))
    guided = run_sampler(name, counter, x_T(), schedule, 6, generator=g(), labels=LABELS)
    assert torch.isfinite(guided).all() and not torch.allclose(guided, labelled)
    assert counter.rows == 4 * get_sampler(name).nfe(6)  # one CFG call per evaluation, on a batch of 2B
    # s = 1 is the conditional model itself
    unit = run_sampler(name, CFG(model, 1.0), x_T(), schedule, 6, generator=g(), labels=LABELS)
    torch.testing.assert_close(unit, labelled, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="^labels.*class indices must lie in 0..2"):
        run_sampler(name, model, x_T(), schedule, 6, labels=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="^labels=.*expected shape \\(4,\\)"):
        run_sampler(name, model, x_T(), schedule, 6, labels=torch.tensor([0, 1]))


@pytest.mark.parametrize("name", NAMES)
def test_bad_options_are_refused_naming_the_sampler(name):
    schedule = make_schedule("linear", T=100)
    with pytest.raises(ValueError, match=f"^bogus=1 is not allowed: sampler '{name}' takes the options"):
        run_sampler(name, ElementwiseEps(), x_T(), schedule, 4, bogus=1)
    foreign = next(
        o for spec in SAMPLERS.values() for o in spec.options if o not in get_sampler(name).options
    )
    with pytest.raises(ValueError, match=f"^{foreign}=.*sampler '{name}'"):
        run_sampler(name, ElementwiseEps(), x_T(), schedule, 4, **{foreign: 1})
    with pytest.raises(ValueError, match="^sampler='nope'.*known samplers are"):
        run_sampler("nope", ElementwiseEps(), x_T(), schedule, 4)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
def test_no_nan_at_one_step_and_at_every_step(name, schedule_name):
    schedule = make_schedule(schedule_name, T=1000)
    for steps in (1, 1000):
        out = run_sampler(
            name, ElementwiseEps(), x_T(), schedule, steps, generator=torch.Generator().manual_seed(0)
        )
        assert torch.isfinite(out).all(), (name, schedule_name, steps)
