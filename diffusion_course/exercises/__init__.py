"""Exercise checkers: run the learner's function on fixed inputs and name the likely mistake.

The framework is in :mod:`.core`; one module per notebook holds that notebook's ``check_*`` functions.
"""

from .core import NOT_ATTEMPTED, Case, Diagnosis, Feedback, check_function, describe_value
from .forward import check_alpha_bar, check_q_sample, check_snr

__all__ = [
    "NOT_ATTEMPTED",
    "Case",
    "Diagnosis",
    "Feedback",
    "check_alpha_bar",
    "check_function",
    "check_q_sample",
    "check_snr",
    "describe_value",
]
