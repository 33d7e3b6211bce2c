"""The trajectory scrubber and animation frames, headless: the slider moves through the recorded steps."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from diffusion_course import viz, widgets  # noqa: E402
from diffusion_course.sampling import Trajectory, ddim_sample  # noqa: E402
from diffusion_course.schedules import linear_schedule  # noqa: E402
from diffusion_course.widgets.trajectory import side_by_side, trajectory_frames  # noqa: E402


@pytest.fixture(scope="module")
def run():
    """A 5-step DDIM run (5 images of 1×6×6) with the exact ε of the one-point distribution at x0."""
    schedule = linear_schedule(100)
    x0 = torch.linspace(-1, 1, 36).reshape(1, 1, 6, 6).expand(5, 1, 6, 6).contiguous()

    def eps_model(x, t):
        ab = schedule.alpha_bar.to(x.dtype)[t].reshape(-1, 1, 1, 1)
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt()

    x_T = torch.randn(5, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    ts = torch.tensor([99, 80, 50, 20, 5])
    out, traj = ddim_sample(eps_model, x_T, schedule, ts, return_trajectory=True)
    return schedule, x0, out, traj


def test_the_slider_walks_the_recorded_steps(run):
    schedule, x0, out, traj = run
    app = widgets.trajectory_app(traj, step=0, max_images=3, schedule=schedule)
    assert app.renders == 1 and app.last_state["step"] == 0 and app.last_state["t"] == 99
    np.testing.assert_array_equal(app.last_state["x_t"], traj.xs[0][:3].numpy())
    np.testing.assert_array_equal(app.last_state["x0_pred"], traj.x0_preds[0][:3].numpy())
    for i, t in enumerate(traj.timesteps.tolist()):
        app.controls["step"].value = i
        assert app.last_state["t"] == t
        np.testing.assert_array_equal(app.last_state["x_t"], traj.xs[i][:3].numpy())
        # the exact ε predicts the data point at every step, while x_t is noisy until the end
        np.testing.assert_allclose(app.last_state["x0_pred"], x0[:3].numpy(), atol=1e-4)
    assert app.renders == 1 + len(traj) - 1  # step 0 was already shown: setting it again is no change
    stds = []
    for i in range(len(traj)):
        app.controls["step"].value = i
        stds.append(app.last_state["x_t_std"])
    assert stds[0] > stds[-1]  # the noise shrinks along the trajectory
    app.controls["step"].value = len(traj)  # one past the last step: the output
    assert app.last_state["t"] is None
    np.testing.assert_array_equal(app.last_state["x_t"], out[:3].numpy())
    assert app.controls["step"].max == len(traj) and app.last_figure is not None


def test_app_rejects_what_is_not_an_image_trajectory(run):
    _, _, _, traj = run
    with pytest.raises(ValueError, match="trajectory"):
        widgets.trajectory_app("not a trajectory")
    with pytest.raises(ValueError, match="trajectory"):
        widgets.trajectory_app(Trajectory(timesteps=torch.tensor([3])))
    points = Trajectory(timesteps=torch.tensor([1]), xs=[torch.zeros(4, 2)] * 2, x0_preds=[torch.zeros(4, 2)])
    with pytest.raises(ValueError, match="image batches"):
        widgets.trajectory_app(points)
    with pytest.raises(ValueError, match="step"):
        widgets.trajectory_app(traj, step=len(traj) + 1)


def test_side_by_side_puts_the_two_grids_next_to_each_other():
    left, right = -torch.ones(4, 1, 6, 6), torch.zeros(4, 1, 6, 6)
    both = side_by_side(left, right, nrow=2, gap=3)
    grid_w = 2 * 6 + 3 * 2  # two tiles and three paddings
    assert both.shape == (3, 2 * 6 + 3 * 2, 2 * grid_w + 3)  # make_grid gives 3 channels for grey images
    assert both[:, 2:8, 2:8].eq(-1).all() and both[:, 2:8, grid_w + 3 + 2 : grid_w + 3 + 8].eq(0).all()
    assert both[:, :, grid_w : grid_w + 3].eq(1).all()  # the white gap
    with pytest.raises(ValueError, match="right"):
        side_by_side(left, right[:2])


def test_trajectory_frames_pick_evenly_spaced_steps_and_end_on_the_output(run):
    _, _, out, traj = run
    frames, titles = trajectory_frames(traj, frames=3, max_images=2, nrow=2)
    assert len(frames) == len(titles) == 4
    assert [t.split(":")[0] for t in titles[:3]] == ["t = 99", "t = 50", "t = 5"]
    assert "output" in titles[-1]
    torch.testing.assert_close(frames[1], side_by_side(traj.xs[2][:2], traj.x0_preds[2][:2], 2))
    torch.testing.assert_close(frames[-1], side_by_side(out[:2], out[:2], 2))
    html = viz.animate(frames, titles=titles, nrow=1)
    assert "<script" in html.data or "animation" in html.data.lower()
    one, _ = trajectory_frames(traj, frames=1)
    assert len(one) == 2
