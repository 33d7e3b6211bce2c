"""What the benchmark scripts print about the machine they ran on (one place for all of them)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages ("n/a" where the OS has none): a shared machine shows here."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except (OSError, AttributeError):
        return "n/a"


def describe() -> str:
    """One line: architecture, CPU, logical CPUs, torch version and threads, Python."""
    return (
        f"{platform.machine()}, {cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads, Python {platform.python_version()}"
    )
