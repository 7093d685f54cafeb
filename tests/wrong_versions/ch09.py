"""Plausible wrong answers to notebook 09's function exercise, each with the case its check must name."""

from tests.exercise_tools import WrongVersion


def _mask(tokenizer, example, assistant_turns="all", end=True, role=False, every_turn=False, prompt_answers=False):
    """A completion mask walked token by token, with one of a student's mistakes switched on.

    end: the closing <|end|> is in the loss; role: so is <|assistant|>; every_turn: "last" is read as "all";
    prompt_answers: a prompt/completion row trains on the answers inside its prompt too.
    """
    last = assistant_turns == "last" and not every_turn
    if "messages" not in example:
        messages, last = example["prompt"] + example["completion"], last or not prompt_answers
    else:
        messages = example["messages"]
    tokens = tokenizer.convert_ids_to_tokens(tokenizer.apply_chat_template(messages)["input_ids"])
    mask, inside = [], False
    for token in tokens:
        if token == "<|assistant|>":
            inside = True
            mask.append(int(role))
        elif token == "<|end|>" and inside:
            inside = False
            mask.append(int(end))
        else:
            mask.append(int(inside))
    if last:
        start = max(i for i, token in enumerate(tokens) if token == "<|assistant|>")
        mask = [0] * start + mask[start:]
    return mask


WRONG = {
    "09.4": [
        WrongVersion(  # a mask off by one at the end: the model never learns to stop
            "the answer without its <|end|>",
            lambda tokenizer, example, assistant_turns="all": _mask(tokenizer, example, assistant_turns, end=False),
            "a one-turn prompt/completion row (the answer and its <|end|>)",
        ),
        WrongVersion(  # a mask off by one at the start: the role token, which the prompt already holds
            "the <|assistant|> token in the loss",
            lambda tokenizer, example, assistant_turns="all": _mask(tokenizer, example, assistant_turns, role=True),
            "a one-turn prompt/completion row (the answer and its <|end|>)",
        ),
        WrongVersion(  # assistant_turns accepted and never used
            "every turn when the last is asked for",
            lambda tokenizer, example, assistant_turns="all": _mask(
                tokenizer, example, assistant_turns, every_turn=True
            ),
            'the same two-turn conversation, the final turn only (assistant_turns="last")',
        ),
        WrongVersion(  # the prompt's earlier answer trained on, as in a messages row
            "a prompt's earlier answers in the loss",
            lambda tokenizer, example, assistant_turns="all": _mask(
                tokenizer, example, assistant_turns, prompt_answers=True
            ),
            "a prompt/completion row whose prompt holds an earlier answer (only the completion is in the loss)",
        ),
    ],
}
