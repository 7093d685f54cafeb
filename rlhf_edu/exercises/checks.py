"""The machinery of the exercises: a verdict by id, function checks case by case, predictions, graded hints.

An exercise is declared once, in its notebook's module (``ch07.py`` for notebook 07's "07.k", ``trl.py`` for the
TRL notebook's "trl.k"), with what a notebook must not show: its expected value or reference function, its test
inputs and its tolerance. A notebook shows only the question, the reader's cell and one call; ``check`` and
``check_function`` print ✅ or ❌, and ``hint()`` gives the last exercise's hints one at a time, so a saved notebook
(whose exercises are unanswered) shows neither.
"""

from __future__ import annotations

import copy
import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

REGISTRY: dict[str, Exercise] = {}  # id -> exercise, filled as each chapter's module is imported
_STATE: dict[str, Any] = {"last": None, "hints_given": {}, "predictions": {}, "passed": set()}


@dataclass(frozen=True)
class Case:
    """One input of a function exercise, and what it tests in words ("on a padded row ...")."""

    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Prediction:
    """A predict-then-run exercise: the choices, and which one the expected answer makes true, with why."""

    choices: tuple[str, ...]
    outcome: Callable[[Any], str]  # expected answer -> the right choice
    why: str  # told after the check, whatever the prediction was


@dataclass(frozen=True)
class Exercise:
    """One exercise: its id ("07.1"), the text a right answer earns, and two hints (a nudge, then the equation).

    A value exercise has ``expected`` (computed from the library when the check runs) and ``compare(answer,
    expected)``, which says what is wrong in words, or None. A function exercise has ``reference`` (the library's
    function) and ``cases``.
    """

    id: str
    success: str
    hints: tuple[str, str]
    expected: Callable[[], Any] | None = None
    compare: Callable[[Any, Any], str | None] | None = None
    reference: Callable | None = None
    cases: Callable[[], Sequence[Case]] | None = None
    prediction: Prediction | None = None

    def __post_init__(self) -> None:
        value, function = self.expected is not None, self.reference is not None
        if value == function or function != (self.cases is not None) or value != (self.compare is not None):
            raise ValueError(f"exercise {self.id}: give expected and compare, or reference and cases")


def register(*exercises: Exercise) -> None:
    """Add exercises to the registry; an id is declared once."""
    for exercise in exercises:
        if exercise.id in REGISTRY:
            raise ValueError(f"exercise {exercise.id} is declared twice")
        REGISTRY[exercise.id] = exercise


NAMED_NOTEBOOKS = {"trl": "the TRL notebook"}  # id prefixes that are not a chapter number, and their notebooks


def notebook_of(prefix: str) -> str:
    """The notebook an id prefix names, in words: "notebook 07" for "07", "the TRL notebook" for "trl"."""
    return NAMED_NOTEBOOKS.get(prefix, f"notebook {prefix}")


def module_of(prefix: str) -> str | None:
    """The module declaring an id prefix's exercises: ``…ch07`` for "07", ``…ch04b`` for "04b", ``…trl`` for "trl"."""
    if prefix in NAMED_NOTEBOOKS:
        return f"{__package__}.{prefix}"
    return f"{__package__}.ch{prefix}" if prefix[:1].isdigit() else None


def exercise(exercise_id: str) -> Exercise:
    """The exercise with this id ("07.1" is notebook 07's first, "trl.1" the TRL notebook's), loaded on first use."""
    if not isinstance(exercise_id, str) or "." not in exercise_id:
        raise TypeError(f'exercise_id must be a string such as "07.1", got {exercise_id!r}')
    if exercise_id in REGISTRY:
        return REGISTRY[exercise_id]
    prefix = exercise_id.split(".")[0]
    module = module_of(prefix)
    if module is None:
        names = ", ".join(f'"{name}"' for name in NAMED_NOTEBOOKS)
        raise ValueError(f'no exercise {exercise_id!r}: an id starts with a chapter\'s number ("07.1") or {names}')
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise  # the module is there, but something it imports is not
        # no such module: reported below, with the ids there are
    if exercise_id not in REGISTRY:
        known = ", ".join(sorted(i for i in REGISTRY if i.startswith(f"{prefix}."))) or "none"
        raise ValueError(f"no exercise {exercise_id!r}: {notebook_of(prefix)}'s exercises are {known}")
    return REGISTRY[exercise_id]


# ----------------------------------------------------------------------------------------------------------- verdicts
def check(exercise_id: str, answer: Any) -> bool:
    """Check a value ``answer`` against exercise ``exercise_id``'s expected value; print and return the verdict."""
    ex = _begin(exercise_id)
    if ex.expected is None:
        raise TypeError(f"exercise {exercise_id} asks for a function: check it with check_function({exercise_id!r}, f)")
    if answer is None:
        return _fail("`answer` is still None: fill it in")
    expected = ex.expected()
    problem = ex.compare(answer, expected)
    return _pass(ex, expected) if problem is None else _fail(problem)


def check_function(exercise_id: str, function: Callable) -> bool:
    """Run ``function`` against the library's on every case of exercise ``exercise_id``; print ✅, or the first failure.

    The failure names the case in words and what went wrong, never the library's output.
    """
    ex = _begin(exercise_id)
    if ex.reference is None:
        raise TypeError(f"exercise {exercise_id} asks for a value: check it with check({exercise_id!r}, answer)")
    if not callable(function):
        raise TypeError(f"function must be your function itself (its name, no parentheses), got {function!r:.60}")
    cases = list(ex.cases())
    for number, case in enumerate(cases, 1):
        problem = _case_problem(function, ex.reference, case)
        if problem == "not written":
            return _fail("your function still raises NotImplementedError: write its body")
        if problem is not None:
            return _fail(f"on {case.name} (case {number} of {len(cases)}), {problem}")
    return _pass(ex, None, f"all {len(cases)} cases match: ")


def predict(exercise_id: str, prediction: str | None) -> None:
    """Note a prediction for a predict-then-run exercise; its check then says whether it held."""
    ex = _begin(exercise_id)
    if ex.prediction is None:
        raise ValueError(f"exercise {exercise_id} asks for no prediction")
    choices = ", ".join(repr(c) for c in ex.prediction.choices)
    if prediction is None:
        print(f"✍️ predict first: set `prediction` to one of {choices}, then run this cell")
        return
    if prediction not in ex.prediction.choices:
        raise ValueError(f"prediction must be one of {choices}, got {prediction!r}")
    _STATE["predictions"][exercise_id] = prediction
    print(f"noted: you predict {prediction!r}. Now run the cells below.")


def passed(exercise_id: str) -> bool:
    """Whether exercise ``exercise_id`` has passed its check in this session (a later cell may then use the answer)."""
    return exercise_id in _STATE["passed"]


def hint(exercise_id: str | None = None) -> None:
    """Print the next hint of ``exercise_id`` (default: the last exercise checked): a nudge, then the equation."""
    exercise_id = exercise_id or _STATE["last"]
    if exercise_id is None:
        print("💡 run an exercise's check first; hint() then gives its hints one at a time")
        return
    ex = exercise(exercise_id)
    given = _STATE["hints_given"].get(exercise_id, 0)
    if given < len(ex.hints):
        _STATE["hints_given"][exercise_id] = given + 1
        print(f"💡 hint {given + 1} of {len(ex.hints)}: {ex.hints[given]}")
    else:
        where = notebook_of(exercise_id.split(".")[0])
        print(f"💡 no more hints for {exercise_id}: its worked solution is in notebooks/solutions/, {where}")


def _begin(exercise_id: str) -> Exercise:
    ex = exercise(exercise_id)
    _STATE["last"] = exercise_id
    return ex


def _fail(why: str) -> bool:
    print(f"❌ not yet: {why}. Run hint() for a hint.")
    return False


def _pass(ex: Exercise, expected: Any, prefix: str = "") -> bool:
    _STATE["passed"].add(ex.id)
    print(f"✅ {prefix}{ex.success}")
    if ex.prediction is not None:
        predicted, truth = _STATE["predictions"].get(ex.id), ex.prediction.outcome(expected)
        if predicted is None:
            print(f"   (no prediction was noted; the answer is {truth!r}: {ex.prediction.why})")
        elif predicted == truth:
            print(f"   your prediction, {predicted!r}, held: {ex.prediction.why}")
        else:
            print(f"   you predicted {predicted!r}, and it is {truth!r}: {ex.prediction.why}")
    return True


# ------------------------------------------------------------------------------------------------ comparing answers
def close(tol: float = 1e-4) -> Callable[[Any, Any], str | None]:
    """Compare numbers (or tensors, arrays and tuples of them) with the expected, element by element, within ``tol``."""
    return lambda answer, expected: _problem(answer, expected, tol)


def equal(answer: Any, expected: Any) -> str | None:
    """Accept exactly the expected value (a list equals a tuple of the same items); else say that it is not."""
    if isinstance(expected, (list, tuple)):
        same = isinstance(answer, (list, tuple)) and list(answer) == list(expected)
    else:
        same = type(answer) is not bool and answer == expected
    return None if same else "that is not it"


def _case_problem(function: Callable, reference: Callable, case: Case) -> str | None:
    """What is wrong with ``function`` on ``case``, in words, or None; "not written" for a stub."""
    try:
        got = function(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
    except NotImplementedError:
        return "not written"
    except Exception as error:  # the reader's code: any error is reported, not raised
        return f"your function raised {type(error).__name__}: {error}"
    want = reference(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
    problem = _problem(got, want, 1e-5)
    return "your result differs from the library's" if problem == "that is not it" else problem


def _problem(got: Any, want: Any, tol: float) -> str | None:
    """How ``got`` differs from ``want`` in words (its type, shape, finiteness or values), or None if it does not."""
    if isinstance(want, (tuple, list)) and not _is_numeric_sequence(want):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return f"your function returns {_describe(got)}, where {len(want)} values are wanted"
        for i, (g, w) in enumerate(zip(got, want)):
            problem = _problem(g, w, tol)
            if problem is not None:
                return f"in its value number {i + 1}, {problem}"
        return None
    try:
        got_t, want_t = _as_tensor(got), _as_tensor(want)
    except (TypeError, ValueError, RuntimeError):
        return f"your answer is {_describe(got)}, where a number or a tensor is wanted"
    if got_t.shape != want_t.shape:
        return f"your result has shape {tuple(got_t.shape)}, where {tuple(want_t.shape)} is wanted"
    if not torch.isfinite(got_t).all() and torch.isfinite(want_t).all():
        return "your result holds NaN or inf, where every value is finite"
    wrong = ~torch.isclose(got_t, want_t, rtol=tol, atol=tol, equal_nan=True)
    if wrong.any():
        if got_t.numel() == 1:
            return "that is not it"
        where = [int(i) for i in wrong.nonzero()[0]]  # the first entry that differs, never its value
        return f"your result differs from the library's, first at index {where[0] if len(where) == 1 else where}"
    return None


def _is_numeric_sequence(value: Sequence) -> bool:
    return all(isinstance(v, (int, float, bool, np.number)) for v in value)


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64)
    if isinstance(value, (int, float, np.number, np.ndarray, list, tuple)) and not isinstance(value, str):
        return torch.as_tensor(np.asarray(value, dtype=np.float64))
    raise TypeError(type(value).__name__)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}" if not isinstance(value, float) or math.isfinite(value) else "a non-finite float"
