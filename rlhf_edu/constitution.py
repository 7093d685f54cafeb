"""Constitutional AI: critique an answer against written principles, then revise it, as Bai et al. do (chapter 13).

In the supervised stage of Constitutional AI (Bai et al., 2022), a model's answer y is critiqued against a principle
(a critique request such as "identify ways the response is harmful ...") and rewritten (a revision request); the
model is then fine-tuned on the revisions. Bai et al. draw one principle at random for each round and may repeat
rounds. Here every principle is applied once, in a fixed order, over a constitution of principles p_1 … p_K:

    y⁽⁰⁾ = y,    y⁽ᵏ⁾ = revise_k(x, y⁽ᵏ⁻¹⁾) if critique_k(x, y⁽ᵏ⁻¹⁾) else y⁽ᵏ⁻¹⁾,    SFT on (x, y⁽ᴷ⁾).

In the paper both steps are the model itself, prompted with the principle. Here they are rules in the world's terms,
so a reader can see exactly what each principle asks for and what it cannot see:

- :class:`Principle`: a name, the principle as written, ``critique(prompt, completion) -> bool`` (True when the
  answer breaks it) and ``revise(prompt, completion) -> str`` (an answer that keeps it, or the answer unchanged
  where it need not or cannot be fixed).
- :data:`CONSTITUTION`: four principles, applied in order: answer the sum that was asked, name the subject, never
  repeat a word, be brief.
- :func:`critique`, :func:`revise` for one answer, :func:`critiques`, :func:`revise_all` for a batch.
- :func:`principle_report`: what the revisions did to each gold component and to each principle's breaches.

The rules read an answer as the world does (:func:`~rlhf_edu.core.world.normalize_text`) and may consult the
world's parser (:func:`~rlhf_edu.core.world.parse_prompt`: a prompt's family, subject and, for a sum, its total)
and its word lists; they never read the gold reward. A principle is a *proxy* written by people: it sees some of
what the gold reward pays for (a right sum, the subject named, no repeats, brevity) and is blind to the rest
(a describe answer's facts, a review's tone), which is what :func:`principle_report` lets a notebook show.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .core.stats import mean_and_stderr
from .core.validation import check_same_length, check_texts
from .core.world import (
    ATTRIBUTES,
    FUNCTION_WORDS,
    GOLD_WEIGHTS,
    NEGATIVE,
    NUMBERS,
    POSITIVE,
    SUM_FAMILIES,
    ParsedPrompt,
    World,
    message_text,
    normalize_text,
    parse_prompt,
)

BRIEF_WORDS = 7  # "be brief": at most this many words (the world's TARGET_WORDS, the principle's own constant)
ADJECTIVES = frozenset(ATTRIBUTES + POSITIVE + NEGATIVE)  # what a review or a description says about its subject
_NOT_CONTENT = frozenset(FUNCTION_WORDS + NUMBERS)  # the world's notion: "6 plus 6 is 12" repeats no word
_NOT_JOINABLE = frozenset(FUNCTION_WORDS)  # an "and" after one of these dangles: "is and", "and and"
_ENDS_A_JOIN = _NOT_JOINABLE - {"the"}  # ... and so does one before these ("and is"), though "and the cat" joins


@dataclass(frozen=True)
class Principle:
    """One principle of a constitution: its ``name``, its ``text`` as written, and the two rules that apply it.

    ``critique(prompt, completion)`` is True when the answer breaks the principle. ``revise(prompt, completion)``
    returns an answer that keeps it, or the answer unchanged where it need not (the principle holds) or cannot
    (e.g. an empty review has no subject to name) be fixed. ``component`` names the gold component the principle
    stands in for, for reports only: the rules themselves never read the gold reward.
    """

    name: str
    text: str
    critique: Callable[[str, str], bool]
    revise: Callable[[str, str], str]
    component: str | None = None

    def __post_init__(self) -> None:
        for attribute in ("name", "text"):
            value = getattr(self, attribute)
            if not isinstance(value, str):
                raise TypeError(f"{attribute} must be a string, got {value!r} ({type(value).__name__})")
            if not value.strip():
                raise ValueError(
                    f"{attribute} is empty: write the principle, e.g. Principle('be_brief', 'be brief', ...)"
                )
        for attribute in ("critique", "revise"):
            rule = getattr(self, attribute)
            if not callable(rule):
                raise TypeError(f"{attribute} must be a function of (prompt, completion), got {rule!r}")
        if self.component is not None and self.component not in GOLD_WEIGHTS:
            raise ValueError(f"unknown component {self.component!r}: use one of {', '.join(GOLD_WEIGHTS)} or None")


# --- reading an answer ---------------------------------------------------------------------------------------------
def _read(prompt: str, completion: str) -> tuple[ParsedPrompt, list[str]]:
    """The prompt as the world's parser reads it (a non-world prompt is refused there) and the answer's words."""
    return parse_prompt(prompt), normalize_text(message_text(completion, "completion")).split()


def _unchanged(completion: str) -> str:
    return message_text(completion, "completion")


def _is_sum(parsed: ParsedPrompt) -> bool:
    return parsed.family in SUM_FAMILIES


def _numbers(words: list[str]) -> list[str]:
    return [w for w in words if w in NUMBERS]


def _statement(parsed: ParsedPrompt, result: int | str | None) -> str:
    """The asked sum stated: "3 plus 5 is 8" ("3 plus 5 plus 4 is 12"), or just "3 plus 5" when there is no result."""
    operands = " plus ".join(parsed.subject)
    return operands if result is None else f"{operands} is {result}"


# --- answer the sum that was asked ---------------------------------------------------------------------------------
def wrong_sum(prompt: str, completion: str) -> bool:
    """A sum prompt whose answer states no number, or whose last number is not the parser's total."""
    parsed, words = _read(prompt, completion)
    numbers = _numbers(words)
    return _is_sum(parsed) and (not numbers or int(numbers[-1]) != parsed.answer)


def right_sum(prompt: str, completion: str) -> str:
    """Put the total where the answer's last number stands: "3 plus 5 is 9" → "3 plus 5 is 8".

    When the answer states no number, or its last number is an operand it names no more often than the prompt
    does ("5 plus 3", "3 plus 5 is"), no result was stated yet and replacing that number would lose an operand:
    the answer becomes the statement of the sum, "3 plus 5 is 8".
    """
    if not wrong_sum(prompt, completion):
        return _unchanged(completion)
    parsed, words = _read(prompt, completion)
    positions = [i for i, w in enumerate(words) if w in NUMBERS]
    last = words[positions[-1]] if positions else None
    if last is None or (last in parsed.subject and words.count(last) <= parsed.subject.count(last)):
        return _statement(parsed, parsed.answer)
    words[positions[-1]] = str(parsed.answer)
    return " ".join(words)


# --- name the subject ----------------------------------------------------------------------------------------------
def subject_missing(prompt: str, completion: str) -> bool:
    """The answer leaves out a word of the prompt's subject (the object, the animal, or an operand of a sum)."""
    parsed, words = _read(prompt, completion)
    return not words or any(s not in words for s in parsed.subject)


def name_subject(prompt: str, completion: str) -> str:
    """Name the subject where the answer opens: "it is tasty" → "the pizza is tasty".

    A review or a description gets "the SUBJECT is" in place of its opening clause up to the first "is"
    (prepended when there is no such clause): "the pizza is tasty", not "the pizza is it is tasty". A sum
    becomes the statement of the sum asked, keeping the answer's own result: "3 plus 4 is 8" → "3 plus 5 is 8",
    not a second clause that states two sums ("3 plus 5 is 3 plus 4 is 8"). This rule does not judge the result
    (that is the first principle's job): with no number stated it writes the operands alone, "3 plus 5".
    An empty review or description stays empty: nothing was said, so there is nothing to name the subject of.
    """
    if not subject_missing(prompt, completion):
        return _unchanged(completion)
    parsed, words = _read(prompt, completion)
    if _is_sum(parsed):
        numbers = _numbers(words)
        return _statement(parsed, numbers[-1] if numbers else None)
    if not words:
        return _unchanged(completion)
    rest = words[words.index("is") + 1 :] if "is" in words[:-1] else words
    return " ".join(["the", parsed.subject[0], "is", *rest])


# --- never repeat a word -------------------------------------------------------------------------------------------
def repeats_a_word(prompt: str, completion: str) -> bool:
    """A content word (not a function word, not a number) occurs more than once: "tasty and tasty"."""
    _, words = _read(prompt, completion)
    content = [w for w in words if w not in _NOT_CONTENT]
    return len(set(content)) < len(content)


def drop_repeats(prompt: str, completion: str) -> str:
    """Keep each content word's first occurrence; the little words that served only a cut one go with it.

    A repeated subject takes its clause's "the" and "is" along: "the pizza is great and the pizza is fun" →
    "the pizza is great and fun". A word left with nothing to join goes too: "the pizza is tasty and tasty" →
    "the pizza is tasty", "the pizza is pizza and great" → "the pizza is great" (not "is and great"), while
    "really tasty and really fun" → "really tasty and fun" keeps its "and". Only words next to a cut are
    touched: what the answer already said stays as it was.
    """
    if not repeats_a_word(prompt, completion):
        return _unchanged(completion)
    _, words = _read(prompt, completion)
    return " ".join(word for word, _ in _drop_dangling(_cut_repeats(words)))


def _cut_repeats(words: list[str]) -> list[list]:
    """The words that stay, each as [word, touched]: touched when a cut word stood right next to it.

    A repeat is cut with a "the" just before it and an "is" just after it, the opening of a clause it was the
    subject of ("... and the pizza is fun").
    """
    seen: set[str] = set()
    cut = [False] * len(words)
    for i, word in enumerate(words):
        if word not in _NOT_CONTENT and word in seen:
            cut[i] = True
            if i > 0 and words[i - 1] == "the":
                cut[i - 1] = True
            if i + 1 < len(words) and words[i + 1] == "is":
                cut[i + 1] = True
        seen.add(word)
    near_a_cut = [(i > 0 and cut[i - 1]) or (i + 1 < len(words) and cut[i + 1]) for i in range(len(words))]
    return [[word, near_a_cut[i]] for i, word in enumerate(words) if not cut[i]]


def _dangles(word: str, before: str | None, after: str | None) -> bool:
    """Whether a joining word has lost what it joins: "the" its noun, "." its sentence, "and" or "is" a side."""
    if word == "the":
        return after is None or after in _NOT_JOINABLE
    if word == ".":
        return before is None or before in _NOT_JOINABLE
    if word == "and":
        return before is None or before in _NOT_JOINABLE or after is None or after in _ENDS_A_JOIN
    if word == "is":  # "is and" loses its "and", not its verb
        return before is None or before in _NOT_JOINABLE or after is None or after in ("is", ".")
    return False


def _drop_dangling(items: list[list]) -> list[list]:
    """Remove each touched joining word that :func:`_dangles`; its neighbours count as touched in turn."""
    j = 0
    while j < len(items):
        word, touched = items[j]
        before = items[j - 1][0] if j > 0 else None
        after = items[j + 1][0] if j + 1 < len(items) else None
        if touched and _dangles(word, before, after):
            del items[j]
            for k in (j - 1, j):
                if 0 <= k < len(items):
                    items[k][1] = True
            j = max(j - 1, 0)
            continue
        j += 1
    return items


# --- be brief ------------------------------------------------------------------------------------------------------
def too_long(prompt: str, completion: str) -> bool:
    """More than :data:`BRIEF_WORDS` (7) words, counted as the world counts them ("." is a word)."""
    _, words = _read(prompt, completion)
    return len(words) > BRIEF_WORDS


def cut_to_brief(prompt: str, completion: str) -> str:
    """Cut to what matters, in at most :data:`BRIEF_WORDS` words, each used once.

    A sum keeps its statement with the answer's own result (its last number): "i think 3 plus 5 is 8 and that is
    that" → "3 plus 5 is 8"; a three-number sum's worked steps become "3 plus 5 plus 4 is 12". A review or a
    description keeps "the SUBJECT is" and its first three adjectives (:data:`ADJECTIVES`; failing those, its
    first other words): "i think the cat is small and grey and lovely" → "the cat is small grey and lovely".
    """
    if not too_long(prompt, completion):
        return _unchanged(completion)
    parsed, words = _read(prompt, completion)
    if _is_sum(parsed):
        numbers = _numbers(words)
        return _statement(parsed, numbers[-1] if numbers else None)
    subject = parsed.subject[0]
    others = list(dict.fromkeys(w for w in words if w not in _NOT_JOINABLE and w != subject))
    said = ([w for w in others if w in ADJECTIVES] or others)[:3]
    if not said:
        return f"the {subject}"
    joined = said[0] if len(said) == 1 else " ".join(said[:-1]) + f" and {said[-1]}"
    return f"the {subject} is {joined}"


CONSTITUTION = (
    Principle("answer_the_sum", "answer the sum that was asked", wrong_sum, right_sum, "correctness"),
    Principle("name_the_subject", "name the subject", subject_missing, name_subject, "relevance"),
    Principle("never_repeat", "never repeat a word", repeats_a_word, drop_repeats, "repetition"),
    Principle("be_brief", f"be brief: at most {BRIEF_WORDS} words", too_long, cut_to_brief, "concision"),
)
"""The world's constitution, applied in this order, because a revision for one principle can break another.

1. The sum comes first: with no result stated it rewrites the whole answer, so every later rule must see that.
   Replacing a number changes neither the length nor a content word.
2. The subject next: it can add words ("the pizza is" in front of "tasty") and cut an opening clause, but adds no
   repeat (the subject was missing) and keeps a sum's result.
3. Repeats then: dropping them shortens the answer, so brevity cuts less of what was said; the first occurrence
   stays, so the subject and every number stay.
4. Brevity last: it is the only rule that needs the final length, which naming the subject can raise ("it was
   tasty and fresh and great" is 7 words, "the pizza is it was tasty and fresh and great" 10); its cut keeps the
   statement or the subject and uses each word once, so it breaks none of the rules before it.

Applied in reverse, "it was tasty and fresh and great" for "review the pizza" would end 10 words long.
"""


# --- applying a constitution ---------------------------------------------------------------------------------------
def _check_constitution(constitution: Sequence[Principle]) -> tuple[Principle, ...]:
    if isinstance(constitution, Principle) or not isinstance(constitution, Sequence) or isinstance(constitution, str):
        raise TypeError(
            f"constitution must be a tuple of Principles, got {constitution!r}: e.g. (principle,) or CONSTITUTION"
        )
    if not constitution:
        raise ValueError(
            f"constitution is empty (got {constitution!r}): pass at least one Principle, e.g. constitution.CONSTITUTION"
        )
    for i, principle in enumerate(constitution):
        if not isinstance(principle, Principle):
            raise TypeError(
                f"constitution[{i}] must be a Principle, got {principle!r} ({type(principle).__name__}): "
                "build one with Principle(name, text, critique, revise), or take it from CONSTITUTION"
            )
    names = [p.name for p in constitution]
    if len(set(names)) < len(names):
        raise ValueError(f"constitution names {names}: give each principle its own name, the key of its critique")
    return tuple(constitution)


def critique(prompt: str, completion: str, constitution: Sequence[Principle] = CONSTITUTION) -> dict[str, bool]:
    """Which principles the answer breaks: ``{name: critique_k(x, y)}``, each read on the answer as it is."""
    principles = _check_constitution(constitution)
    text = message_text(completion, "completion")
    return {p.name: bool(p.critique(prompt, text)) for p in principles}


def revise(prompt: str, completion: str, constitution: Sequence[Principle] = CONSTITUTION) -> str:
    """y⁽ᵏ⁾ = revise_k(x, y⁽ᵏ⁻¹⁾) where critique_k(x, y⁽ᵏ⁻¹⁾), in the constitution's order; y⁽ᴷ⁾ is returned.

    Each principle reads the answer as the principles before it left it. An answer that breaks none comes back
    as it was given; a revised one comes back in the world's normal form (lower case, "." as a word).
    """
    principles = _check_constitution(constitution)
    text = message_text(completion, "completion")
    for principle in principles:
        if principle.critique(prompt, text):
            text = principle.revise(prompt, text)
    return text


def critiques(
    prompts: Sequence[str], completions: Sequence[str], constitution: Sequence[Principle] = CONSTITUTION
) -> dict[str, np.ndarray]:
    """Which answers break each principle: ``{name: (N,) bool}``; ``.mean()`` of one is its share broken."""
    principles = _check_constitution(constitution)
    prompts, completions = _check_pairs(prompts, completions)
    rows = [critique(p, c, principles) for p, c in zip(prompts, completions)]
    return {p.name: np.array([row[p.name] for row in rows], dtype=bool) for p in principles}


def revise_all(
    prompts: Sequence[str], completions: Sequence[str], constitution: Sequence[Principle] = CONSTITUTION
) -> list[str]:
    """:func:`revise` on each (prompt, answer): the revised answers an SFT stage trains on, one per answer."""
    principles = _check_constitution(constitution)
    prompts, completions = _check_pairs(prompts, completions)
    return [revise(p, c, principles) for p, c in zip(prompts, completions)]


def _check_pairs(prompts: Sequence[str], completions: Sequence[str], name: str = "completions") -> tuple[list, list]:
    """Both as lists (a generator is read once), one answer per prompt."""
    prompts = check_texts(prompts, "prompts", allow_empty=True)
    completions = check_texts(completions, name, allow_empty=True)
    check_same_length(prompts, completions, "prompts", name)
    return prompts, completions


# --- what the revisions did ----------------------------------------------------------------------------------------
def principle_report(
    world: World,
    prompts: Sequence[str],
    before: Sequence[str],
    after: Sequence[str],
    constitution: Sequence[Principle] = CONSTITUTION,
) -> dict[str, dict[str, float]]:
    """What revision did, row by row: each gold component, the gold reward, and each principle's share broken.

    Rows ``"gold/<component>"`` (``world.gold_components``), ``"gold/reward"`` (g(x, y) = Σ_k w_k · c_k(x, y))
    and ``"broken/<principle>"`` (the share of answers that break it), each with the mean ``before`` and ``after``
    revision, their ``change`` (after − before) and ``change_se``, the paired standard error of that change (the
    same prompts serve both sides). ``pandas.DataFrame(report).T`` is the table.

    This function reads the gold reward, which the principles never do: it measures what the revisions did,
    including to what no principle looks at (a description's facts, a review's tone); it revises nothing.
    """
    if not isinstance(world, World):
        raise TypeError(f"world must be a World, got {type(world).__name__}: e.g. World(seed=0)")
    principles = _check_constitution(constitution)
    prompts, before = _check_pairs(prompts, before, "before")
    prompts, after = _check_pairs(prompts, after, "after")
    if len(prompts) < 2:
        raise ValueError(f"prompts holds {len(prompts)} prompt(s): the standard errors need at least 2, so pass more")
    gold_before, gold_after = world.gold_components(prompts, before), world.gold_components(prompts, after)
    rows = {f"gold/{k}": _paired(gold_before[k], gold_after[k]) for k in GOLD_WEIGHTS}
    rows["gold/reward"] = _paired(world.gold_reward(prompts, before), world.gold_reward(prompts, after))
    broken_before, broken_after = critiques(prompts, before, principles), critiques(prompts, after, principles)
    rows.update({f"broken/{p.name}": _paired(broken_before[p.name], broken_after[p.name]) for p in principles})
    return rows


def _paired(before: Sequence[float], after: Sequence[float]) -> dict[str, float]:
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)  # (N,) each
    change, change_se = mean_and_stderr(after - before)
    return {"before": float(before.mean()), "after": float(after.mean()), "change": change, "change_se": change_se}
