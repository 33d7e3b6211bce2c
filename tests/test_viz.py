"""viz: the pictures carry the right pixels and curves, headless (Agg), and bad input raises ValueError."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from diffusion_course import viz  # noqa: E402
from diffusion_course.schedules import cosine_schedule, linear_schedule, make_schedule  # noqa: E402


def test_image_grid_maps_range_and_places_tiles():
    images = torch.full((3, 1, 4, 5), -1.0)
    images[1] = 1.0
    images[2] = 3.0  # outside [−1, 1]: clipped on the picture
    grid = viz.image_grid(images, nrow=2, padding=1)
    assert grid.shape == (1 + 2 * (4 + 1), 1 + 2 * (5 + 1))
    assert grid[1:5, 1:6].max() == 0.0  # image 0, black
    assert grid[1:5, 7:12].min() == 1.0  # image 1 (row 0, column 1), white
    assert grid[6:10, 1:6].min() == 1.0  # image 2 (row 1, column 0), clipped to white
    assert grid[0].min() == 1.0  # padding is white
    rgb = viz.image_grid(torch.zeros(2, 3, 4, 4))
    assert rgb.shape[-1] == 3 and np.allclose(rgb[2:6, 2:6], 0.5)
    assert viz.image_grid(torch.zeros(6, 7), padding=0).shape == (6, 7)  # a single (H, W) image


@pytest.mark.parametrize(
    "bad", [np.zeros((2, 1, 4, 4)), torch.zeros(2, 2, 4, 4), torch.zeros(2, 1, 4, 4, dtype=torch.long)]
)
def test_image_grid_rejects_bad_images(bad):
    with pytest.raises(ValueError, match="images"):
        viz.image_grid(bad)


def test_show_images_returns_a_closed_figure_with_the_grid_and_labels():
    images = torch.linspace(-1, 1, 4 * 28 * 28).reshape(4, 1, 28, 28)
    fig = viz.show_images(images, nrow=4, title="four", labels=["t=0", "t=1", "t=2", "t=3"])
    assert isinstance(fig, Figure) and not plt.get_fignums()  # closed in pyplot, still drawable
    ax = fig.axes[0]
    assert ax.get_title() == "four"
    assert np.array_equal(ax.images[0].get_array(), viz.image_grid(images, nrow=4))
    assert [t.get_text() for t in ax.texts] == ["t=0", "t=1", "t=2", "t=3"]
    with pytest.raises(ValueError, match="labels"):
        viz.show_images(images, labels=["only one"])


def test_show_images_draws_into_a_given_axes():
    fig, axes = plt.subplots(1, 2)
    returned = viz.show_images(torch.zeros(2, 1, 8, 8), ax=axes[1])
    assert returned is fig and len(axes[1].images) == 1 and not axes[0].images
    assert plt.fignum_exists(fig.number)  # the caller's figure is left open
    plt.close(fig)


def test_plot_schedules_draws_one_curve_per_schedule():
    schedules = [linear_schedule(1000), cosine_schedule(1000)]
    fig = viz.plot_schedules(schedules, quantity="alpha_bar")
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["linear", "cosine"]
    assert np.allclose(lines[0].get_ydata(), schedules[0].alpha_bar.numpy())
    snr = viz.plot_schedules({"zero": make_schedule("linear", zero_terminal_snr=True)}, quantity="snr")
    ax = snr.axes[0]
    assert ax.get_yscale() == "log"
    assert len(ax.get_lines()[0].get_xdata()) == 999  # SNR = 0 at t = 999 cannot sit on a log axis
    with pytest.raises(ValueError, match="quantity"):
        viz.plot_schedules(schedules, quantity="beta")
    with pytest.raises(ValueError, match="schedules"):
        viz.plot_schedules(["linear"])


def test_histogram_vs_normal_has_unit_area_and_the_normal_density():
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0)) * 3  # some values beyond ±4
    fig = viz.histogram_vs_normal(x, bins=40)
    ax = fig.axes[0]
    heights = np.array([p.get_height() for p in ax.patches])
    assert heights.sum() * (8.0 / 40) == pytest.approx(1.0)
    curve = ax.get_lines()[0]
    assert curve.get_ydata().max() == pytest.approx(1 / np.sqrt(2 * np.pi), rel=1e-3)
    with pytest.raises(ValueError, match="x"):
        viz.histogram_vs_normal(torch.tensor([float("nan")]))


def test_animate_returns_an_html_player_with_every_frame():
    frames = [torch.full((2, 1, 8, 8), v) for v in (-1.0, 0.0, 1.0)]
    html = viz.animate(frames, interval=50, titles=["a", "b", "c"])
    assert "<script" in html.data and html.data.count("data:image/png;base64") == 3
    assert not plt.get_fignums()
    assert viz.animate(torch.zeros(2, 1, 1, 4, 4)).data.count("data:image/png;base64") == 2
    with pytest.raises(ValueError, match="titles"):
        viz.animate(frames, titles=["a"])
    with pytest.raises(ValueError, match="frames"):
        viz.animate([])
