r"""UniPC (Zhao et al. 2023): a multistep predictor and a corrector that costs no extra ε-evaluation.

Same frame as DPM-Solver++ (see :mod:`.solvers`): α = √ᾱ, s = √(1−ᾱ), λ = log(α/s), data prediction
x̂₀ = (x − s ε)/α. From the state x at λ_t to λ_n = λ_t + h (h > 0, towards the data), with x̂₀ history
m₀ (at λ_t) and m₁, m₂, … (the earlier steps, at λ_{t,k} = λ_t + r_k h, r_k < 0):

    x_n = (s_n/s_t) x + α_n (1 − e^{−h}) m₀ − α_n B(h) Σ_k a_k D_k,      D_k = (m_k − m₀)/r_k,

with B(h) = e^{−h} − 1 (the "bh2" variant). The weights a solve R a = b, the order conditions
R_{ik} = r_k^{i−1} and b_i = i! φ_{i+1}(−h)/B(h), where φ_1(z) = (e^z − 1)/z and
φ_{i+1}(z) = (φ_i(z) − 1/i!)/z (``unipc_weights``).

* **UniP** (``unipc_predict``) of order p uses the p − 1 earlier predictions; order 1 is the DDIM η = 0 step,
  order 2 (a = ½) is exactly DPM-Solver++(2M): D = m₀ + (m₀ − m₁)/(2r), r = −r₁ = h_before/h.
* **UniC** (``unipc_correct``) takes the step again, one order higher, with m_n, the x̂₀ at the predicted
  point (r = 1); the next predictor reuses that ε, so it is free. After order 1 it is the exponential
  trapezoid x_n = (s_n/s_t) x + α_n (1 − e^{−h}) (m₀ + m_n)/2.

The last step (to ᾱ = 1) is first order, the one before at most second (docs/SAMPLING.md, "Fast solvers, UniPC
and fitted grids"). Deterministic (``generator`` is accepted and unused).
"""

from __future__ import annotations

import math

import torch

from .._checks import check_int, fail
from .common import Loop, _predict_x0
from .registry import sampler
from .solvers import _half_log_snr

MAX_ORDER = 3


def unipc_weights(rks: list[float], h: float, corrector: bool) -> list[float]:
    """Weights a of the differences D_k for one UniP (``corrector=False``) or UniC step.

    ``rks`` are r_k = (λ_k − λ_t)/h of the earlier predictions (most recent first); the corrector appends
    r = 1 for the prediction at the new point. Solves R a = b over the points used (``unipc_weights([], h,
    False)`` is []: order 1 has no differences). With a single point (UniP-2, UniC-1) a = [½].
    """
    if not (isinstance(h, (int, float)) and math.isfinite(h) and h > 0):
        fail("h", h, "expected a finite step in λ > 0")
    points = [float(r) for r in rks] + ([1.0] if corrector else [])
    if not points:
        return []
    if len(points) == 1:  # UniP-2 and UniC-1: a = ½, as in the paper's and diffusers' code
        return [0.5]
    hh = -h
    b, h_phi, factorial = [], math.expm1(hh) / hh - 1.0, 1.0
    for i in range(1, len(points) + 1):
        b.append(h_phi * factorial / math.expm1(hh))
        factorial *= i + 1
        h_phi = h_phi / hh - 1.0 / factorial
    R = torch.tensor([[r ** (i - 1) for r in points] for i in range(1, len(points) + 1)], dtype=torch.float64)
    return torch.linalg.solve(R, torch.tensor(b, dtype=torch.float64)).tolist()


def _update(x, lams, preds, lam_n, alpha_bar_n, alpha_bar_t, weights, extra=None):
    """x_n = (s_n/s_t) x + α_n (1 − e^{−h}) m₀ − α_n B(h) Σ_k a_k D_k (``extra`` = (r, m) of a new point)."""
    lam_t, m0 = lams[0], preds[0]
    s_ratio = math.sqrt((1.0 - alpha_bar_n) / (1.0 - alpha_bar_t))
    alpha_n = math.sqrt(alpha_bar_n)
    h = lam_n - lam_t
    x_n = s_ratio * x + alpha_n * (-math.expm1(-h)) * m0
    points = [((lam - lam_t) / h, m) for lam, m in zip(lams[1:], preds[1:])]
    if extra is not None:
        points.append(extra)
    for a, (r, m) in zip(weights, points):
        x_n = x_n - alpha_n * math.expm1(-h) * a * (m - m0) / r
    return x_n


def unipc_predict(x, lams, preds, alpha_bar_t, alpha_bar_n, order):
    """UniP of ``order``: from x at λ_t = ``lams[0]`` (ᾱ_t) to ᾱ_n, with x̂₀ predictions ``preds`` (most
    recent first; ``order`` of them are used). To ᾱ_n = 1 it returns m₀ (first order, h = ∞)."""
    order = _check_step(lams, preds, order, alpha_bar_t, alpha_bar_n, final_ok=True)
    return _unipc(x, lams, preds, alpha_bar_t, alpha_bar_n, order)


def unipc_correct(x, lams, preds, alpha_bar_t, alpha_bar_n, pred_n, order):
    """UniC after a UniP of ``order``: the same step from x again, with the x̂₀ ``pred_n`` evaluated at the
    predicted point joining the ``order`` predictions (order + 1 in all)."""
    order = _check_step(lams, preds, order, alpha_bar_t, alpha_bar_n, final_ok=False)
    return _unipc(x, lams, preds, alpha_bar_t, alpha_bar_n, order, pred_n)


def _unipc(x, lams, preds, ab_t, ab_n, order, pred_n=None):
    """UniP (``pred_n`` None) or UniC of ``order`` for the step ᾱ_t → ᾱ_n, without checks."""
    if ab_n >= 1.0:
        return preds[0]
    lam_n = _half_log_snr(ab_n)
    h = lam_n - lams[0]
    weights = unipc_weights([(lam - lams[0]) / h for lam in lams[1:order]], h, corrector=pred_n is not None)
    extra = None if pred_n is None else (1.0, pred_n)
    return _update(x, lams[:order], preds[:order], lam_n, ab_n, ab_t, weights, extra)


def _check_step(lams, preds, order, alpha_bar_t, alpha_bar_n, final_ok: bool) -> int:
    order = check_int("order", order, low=1, high=MAX_ORDER)
    if len(preds) < order or len(lams) < order:
        fail("preds", len(preds), f"order {order} needs {order} x̂₀ predictions and their λ")
    if alpha_bar_n >= 1.0:
        if not final_ok:
            fail("alpha_bar_n", alpha_bar_n, "must be < 1: the corrector needs ε at the new point")
    elif not _half_log_snr(alpha_bar_n) - lams[0] > 0:
        fail("alpha_bar_n", alpha_bar_n, f"must be > alpha_bar_t={alpha_bar_t} (a step towards the data)")
    return order


@sampler("unipc", options=("order", "corrector"))
@torch.no_grad()
def unipc_sample(eps_model, x_T, schedule, timesteps, *, order=2, corrector=True, generator=None,
                 labels=None, return_trajectory=False, progress=False):  # fmt: skip
    """UniPC of ``order`` (1–3; default 2, the DPM-Solver++(2M) predictor) from x_T over the descending
    ``timesteps``: one ε-evaluation per step. ``corrector=False`` gives the bare UniP multistep method.

    Returns x_0 or (x_0, Trajectory). With the corrector, ``xs[i + 1]`` is the predictor's output: the
    corrector moves it once ε there is known, before the next step.
    """
    order = check_int("order", order, low=1, high=MAX_ORDER)
    if not isinstance(corrector, bool):
        fail("corrector", corrector, "expected True or False")
    loop = Loop(eps_model, x_T, schedule, timesteps, labels, return_trajectory, progress, f"UniPC-{order}")
    x, lams, preds = loop.x_T, [], []
    x_before = ab_before = p = None
    for i, t, _, ab_t, ab_prev in loop:
        pred = _predict_x0(x, loop.eps(x, t, i), ab_t)
        # (at the last listed t the corrected x would be discarded: the final step returns x̂₀ = m₀)
        if corrector and x_before is not None and ab_prev < 1.0:
            x = _unipc(x_before, lams, preds, ab_before, ab_t, p, pred_n=pred)
        lams, preds = [_half_log_snr(ab_t), *lams][:MAX_ORDER], [pred, *preds][:MAX_ORDER]
        # the history allows this much; the last step (to ᾱ = 1) is order 1, the one before at most 2
        p = min(order, len(preds), len(loop.steps) - i)
        x_before, ab_before = x, ab_t
        x = _unipc(x, lams, preds, ab_t, ab_prev, p)
        loop.record(x, pred)
    return loop.result(x)
