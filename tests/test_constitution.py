import inspect

import pytest

from rlhf_edu import constitution as ca
from rlhf_edu.core.runtime import numpy_rng
from rlhf_edu.core.world import VOCAB, World, gold_components_one, unknown_words

SUM, SUBJECT, REPEAT, BRIEF = ca.CONSTITUTION
TARGETS = {p.name: p.component for p in ca.CONSTITUTION}  # the gold component each principle stands in for
ALL_KEPT = {p.name: False for p in ca.CONSTITUTION}


def random_answers(n: int = 600, seed: int = 0) -> tuple[list[str], list[str]]:
    """Prompts of every family with the world's demonstrations and strings of random world words (some empty)."""
    world, rng = World(seed=0), numpy_rng(seed)
    prompts = world.prompts(n // 2) + world.prompts(n // 4, family="multi_step") + world.prompts(n // 4)
    answers = []
    for i, prompt in enumerate(prompts):
        if i < n // 2 and i % 2 == 0:
            answers.append(world.demonstration(prompt, rng))
        elif n // 2 <= i < 3 * n // 4 and i % 2 == 0:
            answers.append(world.multi_step_demonstration(prompt, ("direct", "steps")[i % 4 // 2]))
        else:
            answers.append(" ".join(rng.choice(VOCAB, size=rng.integers(0, 13))))
    return prompts, answers


def fixable(prompt: str, answer: str, name: str) -> bool:
    """Every principle can be kept, except naming the subject of an empty review or description."""
    return not (name == SUBJECT.name and not answer.split() and not prompt.startswith("add"))


# --- each principle by hand ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "prompt, answer, broken, revised",
    [
        ("add 3 and 5", "3 plus 5 is 9", True, "3 plus 5 is 8"),
        ("add 3 and 5", "3 plus 5 is 8", False, "3 plus 5 is 8"),
        ("add 3 and 5", "3 plus 5 is 9 and 7", True, "3 plus 5 is 9 and 8"),  # the last number is the answer
        ("add 3 and 5", "the pizza is tasty", True, "3 plus 5 is 8"),  # no number stated
        ("add 3 and 5", "", True, "3 plus 5 is 8"),
        ("add 3 and 5", "5 plus 3", True, "3 plus 5 is 8"),  # replacing the 3 would lose an operand
        ("add 3 and 3", "3 plus 3", True, "3 plus 3 is 6"),
        ("add 3 and 5 and 4", "3 plus 5 plus 4 is 11", True, "3 plus 5 plus 4 is 12"),
        ("add 3 and 5 and 4", "the cat", True, "3 plus 5 plus 4 is 12"),
        ("review the pizza", "3 plus 5 is 9", False, "3 plus 5 is 9"),  # not a sum: never broken
    ],
)
def test_answer_the_sum(prompt, answer, broken, revised):
    assert SUM.critique(prompt, answer) is broken
    assert SUM.revise(prompt, answer) == revised


@pytest.mark.parametrize(
    "prompt, answer, broken, revised",
    [
        ("review the pizza", "it is tasty", True, "the pizza is tasty"),  # the opening clause is replaced
        ("review the pizza", "i think the cafe is great", True, "the pizza is great"),
        ("review the pizza", "tasty and fresh", True, "the pizza is tasty and fresh"),  # no clause: prepended
        ("describe the cat", "the cat is small", False, "the cat is small"),
        ("review the pizza", "", True, ""),  # nothing said: nothing to name the subject of
        ("add 3 and 5", "3 plus 4 is 8", True, "3 plus 5 is 8"),  # the asked sum, with the answer's result
        ("add 3 and 5", "the answer is 9", True, "3 plus 5 is 9"),  # the result is not this rule's business
        ("add 3 and 5", "the pizza is tasty", True, "3 plus 5"),
        ("add 3 and 5 and 4", "3 plus 5 is 8 . 8 plus 3 is 12", True, "3 plus 5 plus 4 is 12"),
    ],
)
def test_name_the_subject(prompt, answer, broken, revised):
    assert SUBJECT.critique(prompt, answer) is broken
    assert SUBJECT.revise(prompt, answer) == revised


@pytest.mark.parametrize(
    "answer, broken, revised",
    [
        ("the pizza is tasty and tasty", True, "the pizza is tasty"),
        ("the pizza is tasty and tasty and fresh", True, "the pizza is tasty and fresh"),
        ("the pizza is pizza and great", True, "the pizza is great"),  # not "is and great"
        ("really tasty and really fun", True, "really tasty and fun"),  # this "and" still joins two words
        ("tasty tasty and fresh", True, "tasty and fresh"),
        ("tasty and and tasty", True, "tasty"),
        ("the pizza is great and fun", False, "the pizza is great and fun"),
        ("the pizza is great and the pizza is fun", True, "the pizza is great and fun"),  # the clause's opening too
        ("the pizza is tasty . the pizza is tasty", True, "the pizza is tasty ."),
        ("i think it is tasty and i think it is fun", True, "i think it is tasty and fun"),
        ("the pizza is 6 and 6 and the pizza", True, "the pizza is 6 and 6"),  # numbers repeat nothing
    ],
)
def test_never_repeat_a_word(answer, broken, revised):
    assert REPEAT.critique("review the pizza", answer) is broken
    assert REPEAT.revise("review the pizza", answer) == revised


def test_numbers_and_function_words_are_not_repeats():
    assert not REPEAT.critique("add 6 and 6", "6 plus 6 is 12")
    assert not REPEAT.critique("review the pizza", "the pizza is great and the soup is good and fun")


@pytest.mark.parametrize(
    "prompt, answer, broken, revised",
    [
        ("add 3 and 5", "i think 3 plus 5 is 8 and that is that", True, "3 plus 5 is 8"),
        ("add 3 and 5", "3 plus 5 is 9 so i think it is 9", True, "3 plus 5 is 9"),  # keeps the answer's result
        ("add 3 and 5 and 4", "3 plus 5 is 8 . 8 plus 4 is 12", True, "3 plus 5 plus 4 is 12"),
        ("describe the cat", "i think the cat is small and grey and lovely", True, "the cat is small grey and lovely"),
        ("review the pizza", "i think really the pizza is very tasty and fun", True, "the pizza is tasty and fun"),
        ("review the pizza", "i think we people say it was the pizza", True, "the pizza is i think and we"),
        ("review the pizza", "the the pizza is is is and and", True, "the pizza"),
        ("review the pizza", "the pizza is great fresh and fun", False, "the pizza is great fresh and fun"),  # 7 words
    ],
)
def test_be_brief(prompt, answer, broken, revised):
    assert BRIEF.critique(prompt, answer) is broken
    assert BRIEF.revise(prompt, answer) == revised
    assert len(BRIEF.revise(prompt, answer).split()) <= ca.BRIEF_WORDS == 7
    assert "7" in BRIEF.text


def test_the_constitution_in_order():
    broken = ca.critique("review the pizza", "it is tasty and tasty")
    assert broken == {**ALL_KEPT, SUBJECT.name: True, REPEAT.name: True}
    assert ca.revise("review the pizza", "it is tasty and tasty") == "the pizza is tasty"
    assert ca.revise("add 3 and 5", "3 plus 5 is 9") == "3 plus 5 is 8"
    assert ca.revise("add 3 and 5", "i think 5 plus 4 is 9 and 9 is good") == "3 plus 5 is 8"
    revised = ca.revise("describe the cat", "it is small and small and grey and lovely")
    assert revised == "the cat is small grey and lovely"


def test_order_matters():
    """Naming the subject can take an answer past seven words, so brevity has to come after it."""
    prompt, answer = "review the pizza", "it was tasty and fresh and great"
    assert ca.revise(prompt, answer) == "the pizza is tasty fresh and great"
    reversed_order = ca.revise(prompt, answer, ca.CONSTITUTION[::-1])
    assert ca.critique(prompt, reversed_order)[BRIEF.name], reversed_order


def test_an_answer_that_breaks_nothing_comes_back_as_given():
    assert ca.revise("review the pizza", "The Pizza is tasty.") == "The Pizza is tasty."
    assert ca.critique("review the pizza", "The Pizza is tasty.") == ALL_KEPT


def test_the_rules_never_read_the_gold_reward():
    for principle in ca.CONSTITUTION:
        for rule in (principle.critique, principle.revise):
            assert "gold" not in inspect.getsource(rule), f"{principle.name}: {rule.__name__} reads the gold reward"


# --- properties over many answers ----------------------------------------------------------------------------------
def test_revised_answers_keep_every_principle_they_can():
    prompts, answers = random_answers()
    revised = ca.revise_all(prompts, answers)
    broken_after = ca.critiques(prompts, revised)
    for name, broken in broken_after.items():
        stuck = [(p, a, r) for p, a, r, b in zip(prompts, answers, revised, broken) if b and fixable(p, a, name)]
        assert not stuck, f"{name} still broken after revision: {stuck[:3]}"
    assert broken_after[SUBJECT.name].sum() > 0, "the sample should hold an empty review, the one unfixable case"
    shares = {name: broken.mean() for name, broken in ca.critiques(prompts, answers).items()}
    assert min(shares.values()) > 0.05, f"the sample should break every principle often: {shares}"


def test_revised_answers_hold_only_world_words_and_are_final():
    prompts, answers = random_answers()
    revised = ca.revise_all(prompts, answers)
    assert all(unknown_words(r) == [] for r in revised)
    assert ca.revise_all(prompts, revised) == revised, "a second revision must change nothing"


def test_each_revision_never_lowers_the_component_it_targets():
    prompts, answers = random_answers()
    for principle in ca.CONSTITUTION:
        component = TARGETS[principle.name]
        for prompt, answer in zip(prompts, answers):
            if component == "correctness" and not prompt.startswith("add"):
                continue  # a principle about sums: a description's facts are not its business
            revised = principle.revise(prompt, answer)
            before, after = gold_components_one(prompt, answer), gold_components_one(prompt, revised)
            assert after[component] >= before[component], (principle.name, prompt, answer, revised)


def test_the_whole_constitution_never_lowers_a_targeted_component():
    prompts, answers = random_answers()
    for prompt, answer, revised in zip(prompts, answers, ca.revise_all(prompts, answers)):
        before, after = gold_components_one(prompt, answer), gold_components_one(prompt, revised)
        for component in ("relevance", "repetition", "concision") + (("correctness",) * prompt.startswith("add")):
            assert after[component] >= before[component], (component, prompt, answer, revised)


def test_critiques_are_boolean_arrays_per_principle():
    prompts, answers = ["add 3 and 5", "review the pizza"], ["3 plus 5 is 9", "the pizza is tasty"]
    broken = ca.critiques(prompts, answers)
    assert list(broken) == [p.name for p in ca.CONSTITUTION]
    assert broken[SUM.name].dtype == bool and broken[SUM.name].tolist() == [True, False]
    assert all(broken.shape == (0,) for broken in ca.critiques([], []).values())
    assert ca.revise_all(iter(["add 3 and 5"]), iter(["9"])) == ["3 plus 5 is 8"], "a generator is read once"


def test_principle_report_reads_the_gold_reward_before_and_after():
    prompts = ["add 3 and 5", "review the pizza", "review the soup"]
    answers = ["3 plus 5 is 9", "it is tasty", "the soup is great"]
    revised = ca.revise_all(prompts, answers)
    report = ca.principle_report(World(seed=0), prompts, answers, revised)
    assert report["gold/correctness"]["before"] == 0 and report["gold/correctness"]["after"] == pytest.approx(1 / 3)
    assert report["gold/relevance"]["change"] == pytest.approx(1 / 3)
    assert report[f"broken/{SUM.name}"] == pytest.approx({"before": 1 / 3, "after": 0, "change": -1 / 3,
                                                          "change_se": 1 / 3})  # fmt: skip
    assert set(report) == {f"gold/{k}" for k in gold_components_one("add 1 and 2", "")} | {"gold/reward"} | {
        f"broken/{p.name}" for p in ca.CONSTITUTION
    }


# --- bad input -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("empty", [(), []])
def test_an_empty_constitution_is_refused(empty):
    with pytest.raises(ValueError, match=r"constitution is empty .*pass at least one Principle, e.g\. constitution"):
        ca.revise("add 3 and 5", "3 plus 5 is 9", empty)
    with pytest.raises(ValueError, match="constitution is empty"):
        ca.critiques(["add 3 and 5"], ["8"], empty)


def test_a_constitution_of_something_else_is_refused():
    with pytest.raises(TypeError, match=r"constitution\[1\] must be a Principle, got 'be brief' \(str\)"):
        ca.critique("add 3 and 5", "8", (SUM, "be brief"))
    with pytest.raises(TypeError, match="must be a tuple of Principles"):
        ca.revise("add 3 and 5", "8", SUM)
    with pytest.raises(ValueError, match="its own name"):
        ca.revise("add 3 and 5", "8", (SUM, SUM))
    with pytest.raises(TypeError, match="critique must be a function"):
        ca.Principle("sum", "answer the sum", "wrong_sum", ca.right_sum)
    with pytest.raises(ValueError, match="name is empty"):
        ca.Principle(" ", "answer the sum", ca.wrong_sum, ca.right_sum)


def test_principle_report_refuses_what_it_cannot_measure():
    with pytest.raises(TypeError, match="world must be a World"):
        ca.principle_report("world", ["add 3 and 5", "add 1 and 2"], ["8", "3"], ["8", "3"])
    with pytest.raises(ValueError, match="standard errors need at least 2"):
        ca.principle_report(World(), ["add 3 and 5"], ["9"], ["8"])


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="got 2 prompts but 1 completions"):
        ca.revise_all(["add 3 and 5", "review the pizza"], ["8"])
    with pytest.raises(ValueError, match="got 1 prompts but 2 completions"):
        ca.critiques(["add 3 and 5"], ["8", "9"])
    with pytest.raises(ValueError, match="got 2 prompts but 1 after"):
        ca.principle_report(World(), ["add 3 and 5", "add 1 and 2"], ["8", "3"], ["8"])


def test_a_prompt_outside_the_world_is_refused_by_the_parser():
    with pytest.raises(ValueError, match="is not a world prompt"):
        ca.revise("write a poem", "the pizza is tasty")
    with pytest.raises(ValueError, match="is not a world prompt"):
        ca.critiques(["add 3 and 5", "write a poem"], ["8", "ok"])
