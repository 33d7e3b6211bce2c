"""Checkers for learner code that say in words what is wrong.

A checker runs the learner's function on fixed inputs, compares the result with the package's reference and,
when they differ, tries a list of known wrong variants: if the learner's output matches one, the message tied
to that variant names the likely mistake. Writing a checker for a new exercise is one call::

    def check_alpha_bar(fn) -> Feedback:
        return check_function(
            fn,
            name="alpha_bar",
            cases=[Case({"betas": linear_schedule(1000).betas})],
            reference=lambda betas: torch.cumprod(1 - betas, dim=0),
            diagnoses=[(lambda betas: 1 - betas, "You returned α_t: ᾱ_t is their running product.")],
        )

The learner's function is called positionally with the values of ``Case.inputs`` in order, so its
parameters may have other names. Nothing the learner writes can crash the notebook: every outcome,
``NotImplementedError`` ("not attempted yet") included, comes back as a :class:`Feedback`.
"""

from __future__ import annotations

import html
import math
import re
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._checks import check_float, fail

NOT_ATTEMPTED = (
    "write your code in the cell above (in place of `raise NotImplementedError(...)`), run that cell, "
    "then run this check again."
)

_SYMBOL = {"passed": "✓", "failed": "✗", "not attempted yet": "○"}
_COLOR = {"passed": "#1a7f37", "failed": "#cf222e", "not attempted yet": "#6e7781"}
_BACKGROUND = {"passed": "#dafbe1", "failed": "#ffebe9", "not attempted yet": "#f6f8fa"}


@dataclass(frozen=True)
class Feedback:
    """The verdict of a checker: ``passed``, a ``message`` in words, and whether the learner ``attempted`` it.

    Prints as one line of text (``✓``/``✗``/``○``) and renders as a coloured box in Jupyter.
    """

    passed: bool
    message: str
    attempted: bool = True
    name: str = ""

    @property
    def status(self) -> str:
        """``"passed"``, ``"failed"`` or ``"not attempted yet"``."""
        if not self.attempted:
            return "not attempted yet"
        return "passed" if self.passed else "failed"

    def __str__(self) -> str:
        label = f"{self.name}: " if self.name else ""
        return f"{_SYMBOL[self.status]} {label}{self.status} — {self.message}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        status = self.status
        title = html.escape(f"{self.name}: {status}" if self.name else status)
        # `code` spans in messages become <code>; everything else is escaped text
        body = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(self.message))
        return (
            f'<div style="border-left:4px solid {_COLOR[status]};background:{_BACKGROUND[status]};'
            f'padding:6px 10px;margin:4px 0;font-family:sans-serif">'
            f'<b style="color:{_COLOR[status]}">{_SYMBOL[status]} {title}</b><br>{body}</div>'
        )


@dataclass(frozen=True)
class Case:
    """One fixed input: ``inputs`` maps parameter names to values, passed to the functions in this order.

    ``label`` is how messages name this input; by default it is built from the inputs.
    """

    inputs: dict[str, Any]
    label: str = ""

    def describe(self) -> str:
        if self.label:
            return self.label
        return ", ".join(f"{name} = {describe_value(value)}" for name, value in self.inputs.items())


@dataclass(frozen=True)
class Diagnosis:
    """A known mistake and the sentence to show when the learner made it.

    Either ``variant`` (a wrong implementation with the learner's signature: it matches when its output
    equals the learner's) or ``when`` (a test ``when(output, expected, case) -> bool`` on the learner's
    output, for mistakes no single function reproduces, such as drawing fresh noise).
    """

    message: str
    variant: Callable[..., Any] | None = None
    when: Callable[[torch.Tensor, torch.Tensor, Case], bool] | None = None

    def __post_init__(self):
        if (self.variant is None) == (self.when is None):
            fail("Diagnosis", self.message, "give exactly one of variant= or when=")


def check_function(
    fn: Callable[..., Any],
    *,
    name: str,
    cases: Sequence[Case] | Callable[[], Sequence[Case]],
    reference: Callable[..., Any],
    diagnoses: Sequence[Diagnosis | tuple[Callable[..., Any], str]] = (),
    error_hints: Sequence[tuple[str, str]] = (),
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> Feedback:
    """Run ``fn`` on every case and compare it with ``reference``; the first failing case decides the verdict.

    Per case, in this order: call ``fn`` (``NotImplementedError`` → not attempted; another exception → its
    name, message, the learner's line and the input; a known exception text in ``error_hints`` as
    ``(substring, hint)`` adds the hint); check that the inputs were not modified in place; check the
    output's type; compare with the reference (``|out − ref| ≤ atol + rtol·|ref|``, NaN equal to NaN); on a
    mismatch try the ``diagnoses`` in order (a ``(variant, message)`` pair is a variant diagnosis), then
    report shape, dtype, non-finite values or the largest error and where it is.
    """
    if not callable(fn):
        fail("fn", type(fn).__name__, "pass the function itself, e.g. check_q_sample(q_sample)")
    rtol = check_float("rtol", rtol, low=0.0)
    atol = check_float("atol", atol, low=0.0)
    if callable(cases):
        cases = cases()
    if not cases:
        fail("cases", cases, "a checker needs at least one Case")
    diagnoses = [d if isinstance(d, Diagnosis) else Diagnosis(message=d[1], variant=d[0]) for d in diagnoses]
    fn_name = getattr(fn, "__name__", "<lambda>")
    fn_name = "your function" if fn_name == "<lambda>" else f"`{fn_name}`"
    for case in cases:
        problem = _check_case(fn, fn_name, case, reference, diagnoses, error_hints, rtol, atol)
        if problem is not None:
            attempted = problem is not NOT_ATTEMPTED
            return Feedback(False, problem, attempted=attempted, name=name)
    n = len(cases)
    inputs = "input" if n == 1 else f"{n} inputs"
    subject = _capital(fn_name)
    return Feedback(True, f"{subject} matches the reference on {inputs}. Well done!", name=name)


def _check_case(fn, fn_name, case, reference, diagnoses, error_hints, rtol, atol) -> str | None:
    """What is wrong with ``fn`` on this case (``NOT_ATTEMPTED`` when not written yet), or None."""
    where = f"on the input {case.describe()}"
    subject = _capital(fn_name)
    expected = reference(*_fresh(case))
    learner_inputs = _fresh(case)
    try:
        output = fn(*learner_inputs)
    except NotImplementedError:
        return NOT_ATTEMPTED
    except Exception as error:  # the learner's code may raise anything; report it instead of crashing
        text = f"{subject} raised {type(error).__name__}: {error} {where}.{_learner_line(error)}"
        hints = [hint for pattern, hint in error_hints if pattern in str(error)]
        return " ".join([text, *hints])

    for key, before, after in zip(case.inputs, _fresh(case), learner_inputs):
        if isinstance(before, torch.Tensor) and not _same(before, after):
            return (
                f"{subject} changed its input `{key}` in place (an in-place operation such as `+=` or "
                f"`.mul_()`): compute a new tensor instead."
            )

    problem = _type_problem(output, expected, fn_name)
    if problem:
        return problem
    out, ref = _as_tensor(output), _as_tensor(expected)
    if out.shape == ref.shape and _close(out, ref, rtol, atol):
        if isinstance(expected, torch.Tensor) and output.dtype != expected.dtype:
            return (
                f"The values are right but {fn_name} returned dtype {output.dtype} where {expected.dtype} "
                f"is expected {where}: convert the result with `.to({expected.dtype})`."
            )
        return None

    for diagnosis in diagnoses:
        if _diagnosis_matches(diagnosis, out, ref, case, rtol, atol):
            return diagnosis.message

    if out.shape != ref.shape:
        return f"{subject} returned shape {tuple(out.shape)}, expected {tuple(ref.shape)} {where}."
    bad = ~torch.isfinite(out) & torch.isfinite(ref)
    if bad.any():
        index = _index(bad.nonzero()[0])
        return (
            f"{subject} returned {int(bad.sum())} non-finite value(s) (NaN or inf) where the reference is "
            f"finite, first at index {index}, {where}. Look for a division by zero or the log/sqrt of a "
            f"negative number."
        )
    return _value_message(fn_name, out, ref, where, rtol, atol)


def _fresh(case: Case) -> list[Any]:
    """The case's inputs with tensors cloned, so neither function can change what the other sees."""
    return [v.clone() if isinstance(v, torch.Tensor) else v for v in case.inputs.values()]


def _same(a: torch.Tensor, b: Any) -> bool:
    return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))


def _type_problem(output: Any, expected: Any, fn_name: str) -> str | None:
    subject = _capital(fn_name)
    if output is None:
        return f"{subject} returned None: did you forget the `return` statement?"
    if isinstance(expected, torch.Tensor):
        if isinstance(output, np.ndarray):
            return (
                f"{subject} returned a numpy array; return a torch.Tensor (stay in torch, or wrap the "
                f"result with `torch.as_tensor(...)`)."
            )
        if not isinstance(output, torch.Tensor):
            return f"{subject} returned a {type(output).__name__}, expected a torch.Tensor."
        if expected.is_floating_point() and not output.is_floating_point():
            return f"{subject} returned integers (dtype {output.dtype}), expected a {expected.dtype} tensor."
        return None
    if isinstance(output, (int, float, np.number)) or (
        isinstance(output, torch.Tensor) and output.numel() == 1
    ):
        return None
    return f"{subject} returned a {type(output).__name__}, expected a number."


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(value, dtype=np.float64))


def _close(out: torch.Tensor, ref: torch.Tensor, rtol: float, atol: float) -> bool:
    return bool(torch.allclose(out, ref, rtol=rtol, atol=atol, equal_nan=True))


def _diagnosis_matches(diagnosis: Diagnosis, out, ref, case: Case, rtol: float, atol: float) -> bool:
    try:
        if diagnosis.when is not None:
            return bool(diagnosis.when(out, ref, case))
        wrong = diagnosis.variant(*_fresh(case))
    except Exception:  # a variant that cannot run on this input simply does not match
        return False
    if wrong is None:
        return False
    wrong = _as_tensor(wrong)
    return wrong.shape == out.shape and _close(out, wrong, rtol, atol)


def _value_message(fn_name: str, out: torch.Tensor, ref: torch.Tensor, where: str, rtol, atol) -> str:
    subject = _capital(fn_name)
    both_inf = torch.isinf(out) & torch.isinf(ref) & (out == ref)
    error = torch.where(both_inf, torch.zeros_like(out), (out - ref).abs()).nan_to_num(nan=math.inf)
    wrong = error > atol + rtol * ref.abs().nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    flat = int(error.reshape(-1).argmax())
    index = _index(torch.tensor(np.unravel_index(flat, tuple(out.shape))) if out.ndim else torch.tensor([]))
    got, want, largest = out.reshape(-1)[flat].item(), ref.reshape(-1)[flat].item(), error.max().item()
    return (
        f"{subject} does not match the reference {where}: {int(wrong.sum())} of {out.numel()} values "
        f"differ; the largest error is {largest:.3g} at index {index}, where you returned {got:.6g} and the "
        f"reference is {want:.6g}."
    )


def _index(index: torch.Tensor) -> str:
    values = [int(i) for i in index.tolist()]
    return "(" + ", ".join(map(str, values)) + ("," if len(values) == 1 else "") + ")"


def _learner_line(error: BaseException) -> str:
    """`` Line N: `code`.`` for the innermost frame that is the learner's, not torch's or this package's."""
    package = str(Path(__file__).resolve().parents[1])
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        filename = frame.filename or ""
        if "site-packages" in filename or filename.startswith(package) or filename == __file__:
            continue
        line = (frame.line or "").strip()
        return f" Line {frame.lineno}: `{line}`." if line else f" Line {frame.lineno}."
    return ""


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def describe_value(value: Any) -> str:
    """A short description of an input for messages: small integer tensors show their values."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point() and value.numel() <= 8:
            return f"tensor({value.tolist()})"
        dtype = str(value.dtype).replace("torch.", "")
        return f"a {dtype} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
