"""Slider app for notebook 11: one sampler name, one NFE budget, two ODEs (the flow path and the VP path)."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch

from .._checks import check_choice, check_image_batch, check_int
from ..sampling.flow import run_flow_sampler
from ..sampling.registry import FLOW_SAMPLERS, get_sampler, run_sampler
from .core import App, make_app


def flow_vs_vp_app(
    velocity_model,
    eps_model,
    schedule,
    x_1: torch.Tensor,
    *,
    nfe: int = 10,
    sampler: str = "euler",
    max_nfe: int = 40,
    shown: int = 60,
    reference_steps: int = 500,
) -> App:
    """The sampler ``sampler`` with ``nfe`` evaluations on the flow ODE of ``velocity_model`` and on the VP
    ODE of ``eps_model`` (same 2-D start x_1, same number of steps: ``steps_within(nfe)``).

    Left and middle: ``shown`` trajectories of each, with their endpoints. Right: the mean distance of each
    endpoint to its own ODE solved with ``reference_steps`` midpoint steps, against NFE, the current budget
    marked. ``last_state`` holds the steps, both errors and both endpoint sets. Results are cached.
    """
    x_1 = check_image_batch("x_1", x_1, ndim=2)
    sampler = check_choice("sampler", sampler, sorted(FLOW_SAMPLERS))
    max_nfe = check_int("max_nfe", max_nfe, low=2)
    nfe = check_int("nfe", nfe, low=1, high=max_nfe)
    shown = min(check_int("shown", shown, low=1), x_1.shape[0])
    reference_steps = check_int("reference_steps", reference_steps, low=1, high=schedule.T)
    exact = {
        "flow": run_flow_sampler("midpoint", velocity_model, x_1, reference_steps),
        "VP": run_sampler("midpoint", eps_model, x_1, schedule, reference_steps),
    }
    cache: dict[tuple[str, int], dict] = {}

    def run(name: str, steps: int) -> dict:
        if (name, steps) not in cache:
            flow, flow_path = run_flow_sampler(name, velocity_model, x_1, steps, return_trajectory=True)
            vp, vp_path = run_sampler(name, eps_model, x_1, schedule, steps, return_trajectory=True)
            cache[name, steps] = {
                "flow": flow, "VP": vp,
                "flow_path": torch.stack(flow_path.xs), "VP_path": torch.stack(vp_path.xs),
                "flow_error": float((flow - exact["flow"]).norm(dim=1).mean()),
                "VP_error": float((vp - exact["VP"]).norm(dim=1).mean()),
            }  # fmt: skip
        return cache[name, steps]

    def draw(nfe: int, sampler: str):
        spec = get_sampler(sampler, path="flow")
        steps = spec.steps_within(nfe)
        result = run(sampler, steps)
        fig, axes = plt.subplots(1, 3, figsize=(12.0, 3.6))
        for ax, path in zip(axes[:2], ("flow", "VP")):
            xs = result[f"{path}_path"][:, :shown].double()
            ax.plot(xs[:, :, 0].numpy(), xs[:, :, 1].numpy(), color="tab:blue", lw=0.6, alpha=0.5)
            ax.plot(xs[-1, :, 0].numpy(), xs[-1, :, 1].numpy(), ".", color="tab:red", ms=3)
            ax.set_title(
                f"{path}: {sampler}, {steps} steps, mean error {result[f'{path}_error']:.3f}", fontsize=9
            )
            ax.set_aspect("equal")
            ax.grid(alpha=0.3)
        budgets = [b for b in (2, 4, 6, 10, 20, 40) if b <= max_nfe and spec.nfe_of_steps(1) <= b]
        for path, color in (("flow", "tab:blue"), ("VP", "tab:orange")):
            errors = [run(sampler, spec.steps_within(b))[f"{path}_error"] for b in budgets]
            axes[2].loglog(budgets, errors, "o-", color=color, label=path)
        axes[2].axvline(nfe, color="0.5", ls="--", lw=1)
        axes[2].set_xlabel("NFE")
        axes[2].set_ylabel("mean ‖x₀ − x₀(exact ODE)‖")
        axes[2].legend(fontsize=8)
        axes[2].grid(alpha=0.3, which="both")
        fig.tight_layout()
        plt.close(fig)
        state = {
            "nfe": nfe, "sampler": sampler, "steps": steps, "used_nfe": spec.nfe(steps),
            "flow_error": result["flow_error"], "VP_error": result["VP_error"],
            "flow": result["flow"].numpy(), "VP": result["VP"].numpy(),
        }  # fmt: skip
        return fig, state

    controls = {
        "nfe": widgets.IntSlider(value=nfe, min=1, max=max_nfe, description="NFE", continuous_update=False),
        "sampler": widgets.Dropdown(options=sorted(FLOW_SAMPLERS), value=sampler, description="sampler"),
    }
    return make_app(controls, draw, title="One sampler, two ODEs: the straight flow path against the VP path")


__all__ = ["flow_vs_vp_app"]
