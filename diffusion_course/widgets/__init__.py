"""Slider apps for the notebooks (one module per lesson), all built on :mod:`.core`'s testable ``App``.

See :mod:`diffusion_course.widgets.core` for the pattern every app follows.
"""

from .core import App, make_app
from .eta import eta_app
from .flow import flow_vs_vp_app
from .forward import forward_process_app
from .guidance import guidance_app
from .steps import steps_app
from .training import BackgroundTraining, train_your_own_app
from .trajectory import trajectory_app

__all__ = [
    "App",
    "BackgroundTraining",
    "eta_app",
    "flow_vs_vp_app",
    "forward_process_app",
    "guidance_app",
    "make_app",
    "steps_app",
    "train_your_own_app",
    "trajectory_app",
]
