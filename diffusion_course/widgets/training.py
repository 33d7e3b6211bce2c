"""Train your own (notebook 02): a class-conditional model trained in the kernel's background, watched live,
saved to the learner's folder as ``"mine"`` for the later notebooks.

:class:`BackgroundTraining` runs :func:`~diffusion_course.training.train` in a thread with a time budget and
a stop flag, keeps the losses and a grid of samples (one digit per class, DDIM from the EMA weights every
``refresh_every`` steps), and writes the checkpoint when the run stops; starting again continues the run
from its resume state. :func:`train_your_own_app` puts buttons, a budget slider and two live images on it.
Both are tested headless by driving them with a tiny config and budget.
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch

from .._checks import check_int, fail
from ..checkpoints import MINE, my_checkpoint_path, save_checkpoint
from ..configs import get_config
from ..sampling import ddim_sample, timestep_grid
from ..training import train


class BackgroundTraining:
    """One training run of ``config`` (a name in ``configs.CONFIGS``) in a background thread.

    ``start(budget)`` trains for at most ``budget`` seconds (continuing from ``out_dir``'s resume state if
    there is one), ``stop()`` asks it to end after the current step, ``join()`` waits. While it runs,
    ``losses``, ``step``, ``samples`` (10 digits, labels 0..9, in [−1, 1]) and ``status`` are updated and
    ``on_update()`` is called (from the training thread). When it ends, the checkpoint is at
    ``checkpoint_path`` (``<out_dir>/mine.json``, loadable as ``load_checkpoint("mine")``), or ``error``
    holds what went wrong.
    """

    def __init__(self, config="mnist-cond-fast", out_dir=None, refresh_every: int = 100, on_update=None):
        self.run = get_config(config)
        if self.run.task != "diffusion" or self.run.model_config.get("num_classes") is None:
            fail("config", config, "expected a class-conditional diffusion config (e.g. mnist-cond-fast)")
        self.out_dir = Path(out_dir) if out_dir is not None else my_checkpoint_path().parent
        self.refresh_every = check_int("refresh_every", refresh_every, low=1)
        self.on_update = on_update or (lambda: None)
        self.losses: list[float] = []
        self.step, self.samples, self.status, self.error = 0, None, "not started", None
        self.checkpoint_path: Path | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._x_T = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(0))

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, budget: float) -> None:
        if self.running:
            fail("start", "while running", "the run is already training; stop it first")
        self._stop.clear()
        self.error = None
        self._thread = threading.Thread(target=self._train, args=(float(budget),), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _train(self, budget: float) -> None:
        try:
            run = self.run
            images, labels = run.load_data()
            model, schedule = run.build_model(), run.make_schedule()
            resume = (self.out_dir / "train_state.pt").is_file()
            self.status = f"training ({'continuing' if resume else 'from scratch'}, at most {budget:g} s)"
            self.on_update()
            started = time.perf_counter()

            def on_log(step, losses, ema_model):
                self._log(step, losses, ema_model, schedule)

            result = train(model, images, labels, schedule, run.train, out_dir=self.out_dir, resume=resume,
                           progress=False, time_budget=budget, should_stop=self._stop.is_set,
                           on_log=on_log)  # fmt: skip
            self._log(result.step, result.losses, result.ema_model, schedule, force=True)
            last = result.losses[-100:]
            self.checkpoint_path = save_checkpoint(
                self.out_dir / MINE, result.model, result.ema_model, config=run.train.to_dict(),
                schedule=schedule, data=run.data, step=result.step, seed=run.train.seed,
                command=f"notebook 02: train_your_own_app({run.name!r})",
                metrics={"final_loss": sum(last) / max(1, len(last))},
                extra={"run_config": run.name, "seconds": round(time.perf_counter() - started, 1),
                       "stopped": result.stopped, "device": result.device},
            )  # fmt: skip
            why = {"time budget": "the time budget ran out", "stop requested": "you stopped it"}
            why = why.get(result.stopped, "it reached its last step")
            self.status = (
                f"saved {self.checkpoint_path} at step {result.step} ({why}); start again to continue"
            )
        except Exception as err:  # shown in the app instead of dying silently in the thread
            self.error, self.status = err, f"failed: {type(err).__name__}: {err}"
        self.on_update()

    def _log(self, step, losses, ema_model, schedule, force: bool = False) -> None:
        self.step, self.losses = step, list(losses)
        if force or self.samples is None or step % self.refresh_every < self.run.train.log_every:
            with torch.no_grad():
                grid = timestep_grid(schedule.T, 10)
                self.samples = ddim_sample(ema_model, self._x_T, schedule, grid, labels=torch.arange(10))
        self.on_update()


def png(fig) -> bytes:
    """A closed figure as PNG bytes (for an ``ipywidgets.Image``, safe to set from a thread)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def train_your_own_app(config="mnist-cond-fast", out_dir=None, budget: int = 600, refresh_every: int = 100):
    """Start / stop buttons, a time-budget slider, the live loss curve and sample grid of a
    :class:`BackgroundTraining`; returns ``(widget, training)``."""
    start, stop = widgets.Button(description="Start training"), widgets.Button(description="Stop")
    slider = widgets.IntSlider(value=budget, min=10, max=3600, step=10, description="budget (s)")
    status = widgets.HTML("not started")
    loss_image, sample_image = widgets.Image(format="png"), widgets.Image(format="png")

    def update():
        status.value = f"step {training.step}: {training.status}"
        if training.losses:
            fig, ax = plt.subplots(figsize=(4, 2.5))
            ax.plot(training.losses, lw=0.6)
            ax.set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
            loss_image.value = png(fig)
        if training.samples is not None:
            fig, axes = plt.subplots(1, 10, figsize=(6, 0.9))
            for digit, ax in enumerate(axes):
                ax.imshow(training.samples[digit, 0].clamp(-1, 1), cmap="gray", vmin=-1, vmax=1)
                ax.set_axis_off()
                ax.set_title(str(digit), fontsize=8)
            sample_image.value = png(fig)

    training = BackgroundTraining(config, out_dir, refresh_every, on_update=update)
    start.on_click(lambda _: training.start(slider.value))
    stop.on_click(lambda _: training.stop())
    images = widgets.HBox([loss_image, sample_image])
    box = widgets.VBox([widgets.HBox([start, stop, slider]), status, images])
    return box, training
