r"""Checkers for notebook 07 (classifier-free guidance).

* ``check_guided_eps(fn)``: ``fn(eps_cond, eps_uncond, s) -> eps`` with ε̃ = ε_u + s (ε_c − ε_u);
* ``check_batched_guidance(fn)``: ``fn(model, x_t, t, labels, s) -> eps``, the same ε̃ from ONE call of
  ``model`` on the 2B batch ``[x_t; x_t]``, ``[t; t]``, ``[labels; K·1]`` (K = ``model.num_classes``, the
  null class);
* ``check_label_dropout(fn)``: ``fn(labels, u, p_uncond, num_classes) -> labels`` with label i replaced by
  the null class K where the uniform draw u_i < p_uncond (the trainer's rule, ``training.diffusion_loss``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..sampling.guidance import CFG, guided_eps
from .core import Case, Feedback, check_function

# ---------------------------------------------------------------- ε̃ = ε_u + s (ε_c − ε_u)


def _guided_eps_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    cases = []
    for s, shape in [(3.0, (4, 1, 6, 6)), (7.5, (2, 3, 5, 5)), (0.0, (3, 1, 4, 4))]:
        c, u = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        cases.append(Case({"eps_cond": c, "eps_uncond": u, "s": s}, label=f"ε's of shape {shape}, s = {s}"))
    return cases


def check_guided_eps(fn) -> Feedback:
    """Check ``fn(eps_cond, eps_uncond, s) -> eps``: ε̃ = ε_u + s (ε_c − ε_u) (course convention s)."""
    return check_function(
        fn,
        name="guided_eps",
        cases=_guided_eps_cases,
        reference=lambda c, u, s: guided_eps(c, u, s),
        diagnoses=[
            (
                lambda c, u, s: c + s * (u - c),
                "The two predictions are swapped: you computed ε_c + s(ε_u − ε_c), which pushes *away* from "
                "the class. Start from the unconditional ε_u and move towards the conditional one: "
                "ε_u + s(ε_c − ε_u).",
            ),
            (
                lambda c, u, s: (1 + s) * c - s * u,
                "You used Ho & Salimans' form (1 + w)ε_c − wε_u with w = s: that is the scale s + 1. "
                "In the course convention s itself multiplies the difference: ε_u + s(ε_c − ε_u) "
                "(= s ε_c − (s − 1) ε_u, so w = s − 1).",
            ),
            (
                lambda c, u, s: (s - 1) * c - (s - 2) * u,
                "Your result is guidance with scale s − 1: you turned s into Ho & Salimans' w = s − 1 and "
                "then used it as s. With s given, ε̃ = ε_u + s(ε_c − ε_u).",
            ),
            (
                lambda c, u, s: s * c,
                "You returned s·ε_c: the scale multiplies the whole difference (ε_c − ε_u), not ε_c alone "
                "(`eps_uncond + s * eps_cond - eps_uncond` is missing the parentheses).",
            ),
            (
                lambda c, u, s: s * u + (c - u),
                "The scale sits on the wrong term: you scaled ε_u and added the plain difference. "
                "ε̃ = ε_u + s(ε_c − ε_u): s multiplies the difference (ε_c − ε_u).",
            ),
            (
                lambda c, u, s: s * (c - u),
                "You returned only the guidance direction s(ε_c − ε_u): add it to the unconditional "
                "prediction ε_u.",
            ),
            (
                lambda c, u, s: u + s * (c + u),
                "Sign error: the guidance direction is the difference ε_c − ε_u, not the sum.",
            ),
            (lambda c, u, s: c, "You returned ε_c unchanged: that is guidance with s = 1 only."),
            (lambda c, u, s: u, "You returned ε_u unchanged: that is the unconditional model (s = 0)."),
        ],
    )


# ---------------------------------------------------------------- one batched call on 2B


class ToyClassModel(nn.Module):
    """A small conditional ε-model for checking guidance code: ε = tanh(a_y · x + b_y · t/100 + c_y).

    One (a, b, c) per class 0..K−1 and a different one for the null class K; refuses labels outside 0..K,
    a ``t`` that does not have one entry per row of ``x`` and ``labels=None``. ``calls`` and ``batch_sizes``
    record how it was called.
    """

    def __init__(self, num_classes: int = 10, seed: int = 0):
        super().__init__()
        self.num_classes = num_classes
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("params", torch.randn(num_classes + 1, 3, generator=g))
        self.calls, self.batch_sizes = 0, []

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        self.calls += 1
        self.batch_sizes.append(int(x.shape[0]))
        if labels is None:
            raise ValueError("labels=None: pass the labels explicitly (the null class is model.num_classes)")
        if not isinstance(t, torch.Tensor) or t.shape != (x.shape[0],):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"t has shape {shape} but x has {x.shape[0]} rows: give one t per row")
        if labels.shape != (x.shape[0],):
            raise ValueError(f"labels have shape {tuple(labels.shape)} but x has {x.shape[0]} rows")
        if labels.is_floating_point() or int(labels.min()) < 0 or int(labels.max()) > self.num_classes:
            raise ValueError(f"labels must be integers in 0..{self.num_classes} (the null class)")
        a, b, c = self.params[labels.long()].unbind(1)
        shape = (-1,) + (1,) * (x.ndim - 1)
        return torch.tanh(a.view(shape) * x + (b * t / 100).view(shape) + c.view(shape)).to(x.dtype)


def _batched_cases() -> list[Case]:
    g = torch.Generator().manual_seed(1)
    model = ToyClassModel(num_classes=10)
    x = torch.randn(4, 1, 6, 6, generator=g)
    inputs = {
        "model": model,
        "x_t": x,
        "t": torch.tensor([10, 500, 999, 0]),
        "labels": torch.tensor([3, 0, 9, 5]),
    }
    return [
        Case({**inputs, "s": 3.0}, label="a toy model with 10 classes, x_t of shape (4, 1, 6, 6), s = 3"),
        Case({**inputs, "s": 7.5}, label="the same with s = 7.5"),
    ]


def _with_null(model, x, t, labels, s, null):
    cond = model(x, t, labels=labels)
    uncond = model(x, t, labels=torch.full_like(labels, null))
    return guided_eps(cond, uncond, s)


def _swapped_halves(model, x, t, labels, s):
    cond = model(x, t, labels=labels)
    uncond = model(x, t, labels=torch.full_like(labels, model.num_classes))
    return guided_eps(uncond, cond, s)


def check_batched_guidance(fn) -> Feedback:
    """Check ``fn(model, x_t, t, labels, s) -> eps``: ε̃ = ε_u + s(ε_c − ε_u) from ONE call on the 2B batch."""
    result = check_function(
        fn,
        name="batched guidance",
        cases=_batched_cases,
        reference=lambda model, x, t, labels, s: CFG(model, s)(x, t, labels),
        diagnoses=[
            (
                lambda model, x, t, labels, s: _with_null(model, x, t, labels, s, model.num_classes - 1),
                "Your unconditional half used label num_classes − 1 (here 9, a real digit). The null class "
                "is index `model.num_classes` (here 10): the embedding has num_classes + 1 rows.",
            ),
            (
                lambda model, x, t, labels, s: _with_null(model, x, t, labels, s, 0),
                "Your unconditional half used label 0 (a real class). The null class is index "
                "`model.num_classes`.",
            ),
            (
                lambda model, x, t, labels, s: guided_eps(
                    model(x, t, labels=torch.full_like(labels, model.num_classes)),
                    model(x, t, labels=labels),
                    s,
                ),
                "The halves are swapped: the first B rows of the output are the conditional predictions "
                "(you concatenated [labels; null]), the last B the unconditional ones.",
            ),
            (
                lambda model, x, t, labels, s: model(x, t, labels=labels),
                "You returned the conditional prediction ε_c (no guidance): combine both halves as "
                "ε_u + s(ε_c − ε_u).",
            ),
            (
                lambda model, x, t, labels, s: model(x, t, labels=torch.full_like(labels, model.num_classes)),
                "You returned the unconditional prediction ε_u: combine both halves as ε_u + s(ε_c − ε_u).",
            ),
            (
                lambda model, x, t, labels, s: CFG(model, s, convention="w")(x, t, labels),
                "You used (1 + s)ε_c − sε_u, Ho & Salimans' form with w = s: the course's s multiplies the "
                "difference, ε_u + s(ε_c − ε_u).",
            ),
        ],
        error_hints=[
            ("give one t per row", "Hint: repeat the timesteps too: `torch.cat([t, t])`."),
            ("labels have shape", "Hint: the labels for the 2B batch are `torch.cat([labels, null])`."),
            ("labels=None", "Hint: build the null labels with `torch.full_like(labels, model.num_classes)`."),
        ],
    )
    if not result.passed:
        return result
    # Right values: now check that they came from one call on 2B rows.
    case = _batched_cases()[0]
    model = ToyClassModel(num_classes=10)
    inputs = {**case.inputs, "model": model}
    try:
        fn(*inputs.values())
    except Exception as error:  # the same code passed above; report rather than crash
        return Feedback(
            False, f"A second run raised {type(error).__name__}: {error}.", name="batched guidance"
        )
    batch = case.inputs["x_t"].shape[0]
    if model.batch_sizes != [2 * batch]:
        calls = ", ".join(map(str, model.batch_sizes)) or "none"
        return Feedback(
            False,
            f"The values are right, but the model was called {model.calls} time(s) on batches of {calls} "
            "rows. "
            f"Guidance should cost ONE call on 2B = {2 * batch} rows: concatenate [x_t; x_t], [t; t] and "
            "[labels; null], call the model once, then split the output into its two halves.",
            name="batched guidance",
        )
    return result


# ---------------------------------------------------------------- label dropout during training


def _dropout_cases() -> list[Case]:
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 10, (12,), generator=g)
    u = torch.rand(12, generator=g)
    return [
        Case(
            {"labels": labels, "u": u, "p_uncond": 0.3, "num_classes": 10}, label="12 labels, p_uncond = 0.3"
        ),
        Case({"labels": labels, "u": u, "p_uncond": 0.0, "num_classes": 10}, label="p_uncond = 0"),
        Case(
            {"labels": labels[:5], "u": u[:5], "p_uncond": 1.0, "num_classes": 4}, label="p_uncond = 1, K = 4"
        ),
    ]


def _dropout(labels, u, p, K, null=None, keep_below=False):
    drop = u >= p if keep_below else u < p
    return torch.where(drop, torch.full_like(labels, K if null is None else null), labels)


def check_label_dropout(fn) -> Feedback:
    """Check ``fn(labels, u, p_uncond, num_classes) -> labels``: label → null class K where u < p_uncond."""
    return check_function(
        fn,
        name="label dropout",
        cases=_dropout_cases,
        reference=lambda labels, u, p, K: _dropout(labels, u, p, K),
        diagnoses=[
            (
                lambda labels, u, p, K: _dropout(labels, u, p, K, keep_below=True),
                "You dropped the labels where u ≥ p_uncond, i.e. with probability 1 − p_uncond: drop where "
                "u < p_uncond, so p_uncond is the fraction of unconditional examples.",
            ),
            (
                lambda labels, u, p, K: _dropout(labels, u, p, K, null=K - 1),
                "You replaced dropped labels with num_classes − 1, a real class. The null class is the "
                "extra index `num_classes`.",
            ),
            (
                lambda labels, u, p, K: _dropout(labels, u, p, K, null=-1),
                "You replaced dropped labels with −1: the null class is the extra index `num_classes` (an "
                "embedding table cannot look up −1).",
            ),
            (
                lambda labels, u, p, K: _dropout(labels, u, p, K, null=0),
                "You replaced dropped labels with 0, a real class. The null class is index `num_classes`.",
            ),
            (
                lambda labels, u, p, K: torch.full_like(labels, K),
                "You replaced every label by the null class: only those where u < p_uncond.",
            ),
        ],
    )
