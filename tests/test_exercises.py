"""The exercises: checks by id that keep the answer out of sight, graded hints, predictions, and every notebook's
exercises against their worked solutions and against plausible wrong versions."""

import pytest
import torch

from rlhf_edu.exercises import Case, Exercise, Prediction, check, check_function, exercise, hint, passed, predict
from rlhf_edu.exercises.checks import REGISTRY, close, equal, module_of, register
from tests.exercise_tools import NOTEBOOK_DIR, exercise_ids, solution, verdict, wrong_versions

CHAPTERS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
FUNCTION_EXERCISES = [i for path in CHAPTERS for i in exercise_ids(path, "check_function")]
VALUE_EXERCISES = [i for path in CHAPTERS for i in exercise_ids(path, "check")]


def _double(x: torch.Tensor) -> torch.Tensor:
    return 2 * x


@pytest.fixture(scope="module", autouse=True)
def toy_exercises():
    """Three exercises of a chapter "99" that no notebook has, to test the machinery on."""
    register(
        Exercise(
            "99.1",
            success="ln 9",
            hints=("a nudge", "eq:bradterryrm: σ(Δ) = 0.9"),
            expected=lambda: 2.1972245773,
            compare=close(1e-4),
        ),
        Exercise(
            "99.2",
            success="twice",
            hints=("a nudge", "the equation"),
            reference=_double,
            cases=lambda: [
                Case("a positive row", (torch.ones(2, 3),)),
                Case("a padded row: 0 at the padding", (torch.tensor([[1.0, 0.0]]),)),
            ],
        ),
        Exercise(
            "99.3",
            success="more than double",
            hints=("a nudge", "the equation"),
            expected=lambda: 2.6,
            compare=close(1e-3),
            prediction=Prediction(
                ("less", "double", "more"),
                lambda ratio: "more" if ratio > 2 else "less",
                "the KL grows faster than 1/β",
            ),
        ),
    )
    yield
    for i in ("99.1", "99.2", "99.3"):
        REGISTRY.pop(i)


def test_a_value_check_prints_its_verdict_and_returns_it(capsys):
    assert check("99.1", 2.19722) is True
    assert check("99.1", 2.0) is False
    assert check("99.1", None) is False
    assert capsys.readouterr().out.splitlines() == [
        "✅ ln 9",
        "❌ not yet: that is not it. Run hint() for a hint.",
        "❌ not yet: `answer` is still None: fill it in. Run hint() for a hint.",
    ]


def test_an_answer_of_the_wrong_kind_is_told_not_raised(capsys):
    assert check("99.1", "ln 9") is False
    assert "where a number or a tensor is wanted" in capsys.readouterr().out


def test_hints_come_one_at_a_time_and_only_when_asked(capsys):
    check("99.1", 0.0)
    assert "nudge" not in capsys.readouterr().out
    hint()
    hint()
    hint()
    assert capsys.readouterr().out.splitlines() == [
        "💡 hint 1 of 2: a nudge",
        "💡 hint 2 of 2: eq:bradterryrm: σ(Δ) = 0.9",
        "💡 no more hints for 99.1: its worked solution is in notebooks/solutions/, notebook 99",
    ]


def test_a_function_check_names_the_first_failing_case_and_never_the_reference_output(capsys):
    assert check_function("99.2", _double) is True
    assert capsys.readouterr().out == "✅ all 2 cases match: twice\n"
    assert check_function("99.2", lambda x: 2 * x + (x == 0)) is False  # right but at the padding
    out = capsys.readouterr().out
    assert (
        "on a padded row: 0 at the padding (case 2 of 2), your result differs from the library's, first at "
        "index [0, 1]" in out
    )
    assert "tensor" not in out and "2." not in out


@pytest.mark.parametrize(
    "function, words",
    [
        (lambda x: x.sum(), "has shape (), where (2, 3) is wanted"),
        (lambda x: x / 0 * 0, "holds NaN or inf"),
        (lambda x: x[5], "raised IndexError"),
        (lambda x: "two", "where a number or a tensor is wanted"),
    ],
)
def test_a_function_check_says_what_went_wrong(capsys, function, words):
    assert check_function("99.2", function) is False
    assert words in capsys.readouterr().out


def test_an_unwritten_function_is_told_so(capsys):
    def my_function(x):
        raise NotImplementedError

    assert check_function("99.2", my_function) is False
    assert "still raises NotImplementedError" in capsys.readouterr().out


def test_the_readers_function_cannot_change_the_inputs_the_reference_sees():
    def in_place(x):
        return x.mul_(2)

    assert verdict("99.2", in_place)[0]


def test_a_prediction_is_noted_then_checked_against_what_happens(capsys):
    predict("99.3", None)
    assert "predict first" in capsys.readouterr().out
    predict("99.3", "double")
    check("99.3", 2.6)
    assert capsys.readouterr().out.splitlines()[-1] == (
        "   you predicted 'double', and it is 'more': the KL grows faster than 1/β"
    )
    predict("99.3", "more")
    check("99.3", 2.6)
    assert "your prediction, 'more', held" in capsys.readouterr().out
    assert passed("99.3")


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: check("99.9", 1), ValueError, "notebook 99's exercises are 99.1, 99.2, 99.3"),
        (lambda: check("trl.9", 1), ValueError, "no exercise 'trl.9': the TRL notebook's exercises are trl.1, trl.2"),
        (lambda: check("xyz.1", 1), ValueError, "no exercise 'xyz.1': an id starts with a chapter's number"),
        (lambda: check(7.1, 1), TypeError, 'a string such as "07.1"'),
        (lambda: check("99.2", 1), TypeError, "check_function('99.2', f)"),
        (lambda: check_function("99.1", abs), TypeError, "check('99.1', answer)"),
        (lambda: check_function("99.2", 2.0), TypeError, "your function itself"),
        (lambda: predict("99.3", "twice"), ValueError, "one of 'less', 'double', 'more'"),
        (lambda: predict("99.1", "more"), ValueError, "asks for no prediction"),
        (lambda: register(exercise("99.1")), ValueError, "declared twice"),
        (lambda: Exercise("99.4", "x", ("a", "b")), ValueError, "expected and compare, or reference and cases"),
    ],
)
def test_a_wrong_call_says_how_to_call(call, error, words):
    with pytest.raises(error, match=None) as raised:
        call()
    assert words in str(raised.value)


def test_an_id_prefix_names_the_module_that_declares_it():
    """A chapter's number names its chNN module; the TRL notebook, which has no chapter, is "trl"."""
    assert module_of("07") == "rlhf_edu.exercises.ch07" and module_of("04b") == "rlhf_edu.exercises.ch04b"
    assert module_of("trl") == "rlhf_edu.exercises.trl" and module_of("xyz") is None
    assert exercise("trl.1").id == "trl.1"


def test_a_list_answer_is_told_where_it_first_differs_and_never_the_expected_values(capsys):
    register(Exercise("99.5", success="the mask", hints=("a", "b"), expected=lambda: [0, 0, 1, 1], compare=close()))
    try:
        assert check("99.5", [0, 0, 1, 0]) is False
        assert capsys.readouterr().out.startswith(
            "❌ not yet: your result differs from the library's, first at index 3."
        )
    finally:
        REGISTRY.pop("99.5")


def test_equal_reads_a_list_as_the_tuple_it_lists():
    assert equal([0, 1, 1], (0, 1, 1)) is None and equal([0, 1], (0, 1, 1)) == equal(3, 4) == "that is not it"
    assert equal(True, 1) == "that is not it"  # a verdict is not a count


@pytest.mark.parametrize("exercise_id", FUNCTION_EXERCISES)
def test_the_worked_solution_passes(exercise_id):
    passed_check, printed = verdict(exercise_id, solution(exercise_id))
    assert passed_check, printed


@pytest.mark.parametrize("exercise_id", FUNCTION_EXERCISES)
def test_every_function_exercise_has_three_wrong_versions(exercise_id):
    assert len(wrong_versions().get(exercise_id, [])) >= 3, (
        f"add three plausible wrong answers to {exercise_id} in tests/wrong_versions/"
    )


@pytest.mark.parametrize(
    "exercise_id, wrong",
    [(i, w) for i, ws in wrong_versions().items() for w in ws],
    ids=lambda value: getattr(value, "mistake", value),
)
def test_a_wrong_version_fails_and_its_message_names_the_case(exercise_id, wrong):
    passed_check, printed = verdict(exercise_id, wrong.function)
    assert not passed_check, f"{exercise_id} accepts a wrong version ({wrong.mistake})"
    assert f"on {wrong.names} (case" in printed, printed


@pytest.mark.parametrize("exercise_id", VALUE_EXERCISES + FUNCTION_EXERCISES)
def test_every_exercise_a_notebook_checks_is_declared_with_two_hints(exercise_id):
    ex = exercise(exercise_id)
    assert len(ex.hints) == 2 and all(len(h) > 10 for h in ex.hints)
    assert any(label in ex.hints[1] for label in ("eq:", "`")), "the second hint names the equation or function"


def test_every_chapter_notebook_has_an_implement_it_exercise():
    lacking = [p.name for p in CHAPTERS if not exercise_ids(p, "check_function")]
    assert not lacking, f"these notebooks have no check_function exercise: {lacking}"
