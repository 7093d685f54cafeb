"""Preference data from the world: two sampled answers per prompt, labelled by the world's annotator.

This is the toy version of the book's ~100k preference pairs: sample two
completions per prompt from a policy (usually the SFT model), ask the
Bradley-Terry annotator which one it prefers, and keep the hidden gold rewards
of both, so every later analysis can compare against the truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .collate import check_length, encode_prompt_completion, pad_batch
from .rollouts import generate_completions
from .runtime import MAX_NEW_TOKENS
from .training import TrainingConfig, make_loader
from .validation import check_int, check_number
from .world import World, message_text

PAIR_COLUMNS = ("prompt", "chosen", "rejected")


def build_preference_dataset(
    world: World,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    n: int | None = None,
    split: str = "train",
    seed: int = 0,
    temperature: float = 1.0,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> Dataset:
    """A TRL-format ``prompt``/``chosen``/``rejected`` dataset (conversational), with the gold rewards.

    Columns: ``prompt``, ``chosen``, ``rejected`` (message lists, as TRL expects),
    ``gold_chosen`` and ``gold_rejected`` (the hidden gold reward of each), and
    ``p_chosen`` (the annotator's probability of this label). Pairs whose two
    answers are identical, or where either answer is empty or was cut at
    ``max_new_tokens`` before the model closed its turn, are dropped. So the dataset
    can hold fewer than ``n`` rows.
    """
    n = world.preset.num_preference if n is None else check_int(n, "n")
    check_number(
        temperature,
        "temperature",
        low=0,
        low_open=True,
        fix="two answers per prompt must differ, and greedy decoding (0) gives the same one twice",
    )
    prompts = world.prompts(n, split=split)
    samples_a, finished_a = generate_completions(
        model, tokenizer, prompts, max_new_tokens, temperature, seed=seed, return_finished=True
    )
    samples_b, finished_b = generate_completions(
        model, tokenizer, prompts, max_new_tokens, temperature, seed=seed + 1, return_finished=True
    )
    # An answer cut at max_new_tokens never closed its turn: encoding it as a finished answer would
    # teach the reward model and DPO a turn ending the policy never produced.
    keep = [
        i
        for i in range(n)
        if samples_a[i] != samples_b[i]
        and samples_a[i].strip()
        and samples_b[i].strip()
        and finished_a[i]
        and finished_b[i]
    ]
    if not keep:
        raise ValueError(
            f"none of the {n} pairs carries a preference (two identical, empty or unfinished answers): "
            "sample at a higher temperature or with more max_new_tokens, or from a model that closes "
            "its turn (an instruction-tuned one)"
        )
    prompts = [prompts[i] for i in keep]
    samples_a, samples_b = [samples_a[i] for i in keep], [samples_b[i] for i in keep]
    labels = world.label_pairs(prompts, samples_a, samples_b, rng=seed)  # 1 where a is preferred
    a_preferred = np.array(labels, dtype=bool)  # pragma: no mutate (np.where reads 0/1 labels as bools alike)
    chosen = np.where(a_preferred, samples_a, samples_b).tolist()
    rejected = np.where(a_preferred, samples_b, samples_a).tolist()
    p_a = world.preference_probability(prompts, samples_a, samples_b)
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": p}] for p in prompts],
            "chosen": [[{"role": "assistant", "content": c}] for c in chosen],
            "rejected": [[{"role": "assistant", "content": r}] for r in rejected],
            "gold_chosen": world.gold_reward(prompts, chosen),
            "gold_rejected": world.gold_reward(prompts, rejected),
            "p_chosen": np.where(a_preferred, p_a, 1 - p_a).tolist(),
        }
    )


def check_pair_columns(dataset: Dataset) -> None:
    """Raise ValueError unless ``dataset`` has the ``prompt``, ``chosen`` and ``rejected`` columns of pairs."""
    missing = [name for name in PAIR_COLUMNS if name not in dataset.column_names]
    if missing:
        raise ValueError(
            f"the dataset has no {', '.join(missing)} column (it has {', '.join(dataset.column_names)}): "
            "preference pairs need prompt, chosen and rejected columns, as build_preference_dataset makes them"
        )


def check_numeric_columns(dataset: Dataset) -> None:
    """Refuse extra columns that look numeric but are stored as text, and reference log-probs given for one side only.

    Numeric columns (a ``margin``, ``ref_chosen_logps``, gold rewards) travel with each
    pair; text columns are ignored, so ``margin="5.0"`` would otherwise vanish silently.
    """
    for name in set(dataset.column_names) - set(PAIR_COLUMNS):
        value = dataset[0][name]
        if isinstance(value, str) and _looks_numeric(value):
            raise TypeError(
                f"column {name!r} holds numbers as text ({value!r}): cast it, e.g. "
                f"dataset.cast_column({name!r}, datasets.Value('float64'))"
            )
    present = {"ref_chosen_logps", "ref_rejected_logps"} & set(dataset.column_names)
    if len(present) == 1:
        (name,) = present
        raise ValueError(
            f"the dataset has {name} but not its partner: give both ref_chosen_logps and "
            "ref_rejected_logps (precompute_ref_logps adds both), or neither"
        )


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def pair_texts(dataset: Dataset) -> tuple[list[str], list[str], list[str]]:
    """The ``prompt``, ``chosen`` and ``rejected`` columns as plain strings, as the world's methods take them.

    A conversational column (message lists) gives each row's last message: the user's turn of a prompt, the answer.
    """
    check_pair_columns(dataset)
    return tuple([message_text(value) for value in dataset[column]] for column in PAIR_COLUMNS)


def encode_pairs(tokenizer: PreTrainedTokenizerBase, dataset: Dataset, max_length: int | None = None) -> list[dict]:
    """Each pair as ``{"chosen": row, "rejected": row}`` of ids and completion masks, plus its numeric columns.

    Numeric columns travel with their pair (a Llama 2 ``margin``, TRL's ``ref_chosen_logps``
    and ``ref_rejected_logps``, the gold rewards), so a trainer reads them from the batch.
    Both answers share the prompt, so the reward model and DPO see identical contexts.
    """
    check_pair_columns(dataset)
    if len(dataset) == 0:
        raise ValueError("the preference dataset is empty: build one with build_preference_dataset")
    check_numeric_columns(dataset)
    pairs = []
    for i, example in enumerate(dataset):
        if message_text(example["chosen"]) == message_text(example["rejected"]):
            raise ValueError(
                f"pair {i} has the same chosen and rejected answer ({message_text(example['chosen'])!r}): "
                "it carries no preference; drop it"
            )
        pair = {
            side: encode_prompt_completion(tokenizer, example["prompt"], example[side])
            for side in ("chosen", "rejected")
        }
        pair |= {k: float(v) for k, v in example.items() if k not in PAIR_COLUMNS and isinstance(v, (int, float))}
        pairs.append(pair)
    if max_length is not None:
        check_length([pair[side] for pair in pairs for side in ("chosen", "rejected")], max_length)
    return pairs


def collate_pairs(pairs: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """The B chosen rows, then the B rejected rows, in one right-padded (2B, T) batch: one forward pass scores both.

    Each pair's numeric fields become (B,) tensors under their own names.
    """
    batch = pad_batch([pair["chosen"] for pair in pairs] + [pair["rejected"] for pair in pairs], pad_token_id)
    for key in pairs[0].keys() - {"chosen", "rejected"}:
        batch[key] = torch.tensor([pair[key] for pair in pairs])  # (B,)
    return batch


def pair_length(pair: dict) -> int:
    """The token count of a pair's longer answer: what the pair pads to in a :func:`collate_pairs` batch."""
    return max(len(pair[side]["input_ids"]) for side in ("chosen", "rejected"))


def pair_loader(pairs: Sequence[dict], pad_token_id: int, config: TrainingConfig) -> DataLoader:
    """Batches of encoded pairs for training, chosen rows then rejected rows (:func:`collate_pairs`).

    With ``config.group_by_length`` (a field of the reward model's and DPO's configs)
    each batch holds pairs of similar :func:`pair_length`, so it pads only to its own
    longest answer; otherwise the batches are random.
    """
    group = getattr(config, "group_by_length", False)  # pragma: no mutate (None turns grouping off, as False does)
    return make_loader(
        pairs,
        partial(collate_pairs, pad_token_id=pad_token_id),
        config,
        group_by_length=group,
        length=pair_length if group else None,
    )
