"""Preference data from the world: two sampled answers per prompt, labelled by the world's annotator.

This is the toy version of the book's ~100k preference pairs: sample two
completions per prompt from a policy (usually the SFT model), ask the
Bradley-Terry annotator which one it prefers, and keep the hidden gold rewards
of both, so every later analysis can compare against the truth.

The preference models themselves live here too, as plain functions on rewards: the
Bradley-Terry probability and loss, and Plackett-Luce's for rankings. Chapter 7 trains
reward models with them, and chapter 6 fits its feature-based reward models with them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
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


# --- the Bradley-Terry and Plackett-Luce models: plain functions on rewards --------------------------
def check_reward_pairs(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> None:
    for name, rewards in (("chosen_rewards", chosen_rewards), ("rejected_rewards", rejected_rewards)):
        if not isinstance(rewards, torch.Tensor):
            raise TypeError(
                f"{name} must be a tensor, got {type(rewards).__name__}: wrap it, torch.tensor({name}), "
                "with one reward per pair"
            )
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(
            f"chosen_rewards {tuple(chosen_rewards.shape)} and rejected_rewards {tuple(rejected_rewards.shape)} "
            "differ in shape: pass one chosen and one rejected reward per pair"
        )


def check_scored_pairs(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> None:
    """Like :func:`check_reward_pairs`, and refuse no pairs at all: an accuracy of nothing is not a number."""
    check_reward_pairs(chosen_rewards, rejected_rewards)
    if chosen_rewards.numel() == 0:
        raise ValueError("chosen_rewards is empty: an accuracy needs at least one scored pair")


def preference_probability(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """P(y_c ≻ y_r | x) = σ(r_c − r_r), the Bradley-Terry model (eq:bradterry_unbounded, eq:bradterryrm).

    Returns one probability per pair, shaped like the inputs.
    """
    check_reward_pairs(chosen_rewards, rejected_rewards)
    return torch.sigmoid(chosen_rewards - rejected_rewards)


def bradley_terry_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin: torch.Tensor | float | None = None
) -> torch.Tensor:
    """−log σ(r_c − r_r − m) per pair (eq:rewardmodeling1; with a margin m, Llama 2's eq:rewardmodelingmargin).

    The margin asks the chosen answer to win by at least m before the loss lets go;
    it is a float for every pair or a tensor with one value per pair. ``logsigmoid``
    keeps the loss finite at any gap, where ``log(sigmoid(-200))`` would be log 0.
    Returns one loss per pair.
    """
    check_reward_pairs(chosen_rewards, rejected_rewards)
    gaps = chosen_rewards - rejected_rewards
    if margin is not None:
        gaps = gaps - margin
    return -F.logsigmoid(gaps)


def check_rankings(rewards: torch.Tensor) -> None:
    """Raise ValueError unless ``rewards`` is (B, K) with K >= 2: one ranked list of answers per row."""
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(
            f"rewards has shape {tuple(rewards.shape)}: pass (B, K) rewards with K >= 2 answers per prompt, "
            "each row sorted from most to least preferred"
        )


def plackett_luce_loss(rewards: torch.Tensor) -> torch.Tensor:
    """−log P(ranking) under Plackett-Luce (eq:kwise_rm), for (B, K) rewards sorted best → worst: (B,).

    P(ranking) = Π_k exp(r_k) / Σ_{j ≥ k} exp(r_j): the best answer is picked from all
    K, then the best of the rest, and so on. With K = 2 it is the Bradley-Terry loss.
    """
    check_rankings(rewards)
    # log Σ_{j ≥ k} exp(r_j) for every k at once: a running log-sum-exp from the worst end
    log_normalizers = rewards.flip(1).logcumsumexp(dim=1).flip(1)  # (B, K)
    return (log_normalizers - rewards).sum(dim=1)  # (B,)


def pairwise_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> float:
    """Share of pairs the reward model ranks the way they were labelled (r_c > r_r; a tie counts as wrong)."""
    check_scored_pairs(chosen_rewards, rejected_rewards)
    return (chosen_rewards > rejected_rewards).float().mean().item()


def expected_accuracy(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, p_chosen: torch.Tensor | Sequence[float]
) -> float:
    """The reward model's accuracy averaged over fresh draws of the annotator's noisy labels.

    A pair labelled with probability ``p_chosen`` agrees with a model that ranks it
    the labelled way with probability p_chosen, and the other way with 1 − p_chosen.
    Averaging those instead of 0/1 hits takes the label noise out of the estimate;
    ranking by the gold reward itself gives :meth:`World.bayes_accuracy`, the ceiling.
    """
    check_scored_pairs(chosen_rewards, rejected_rewards)
    p_chosen = torch.as_tensor(p_chosen, dtype=torch.float64)  # (N,)
    if p_chosen.shape != chosen_rewards.shape:  # a length-1 p_chosen would broadcast over every pair
        raise ValueError(
            f"p_chosen has shape {tuple(p_chosen.shape)} but the rewards {tuple(chosen_rewards.shape)}: "
            "pass one labelling probability per pair (the dataset's p_chosen column)"
        )
    return torch.where(chosen_rewards > rejected_rewards, p_chosen, 1 - p_chosen).mean().item()


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
    p_a = world.preference_probability(prompts, samples_a, samples_b)
    return pair_dataset(prompts, samples_a, samples_b, labels, p_a, gold=world.gold_reward)


def pair_dataset(
    prompts: Sequence[str],
    samples_a: Sequence[str],
    samples_b: Sequence[str],
    labels: Sequence[int],
    p_a: Sequence[float],
    gold: Callable[[list[str], list[str]], list[float]],
) -> Dataset:
    """Labelled answer pairs as a TRL-format dataset: ``a`` is chosen where its label is 1, else ``b``.

    ``p_a`` is the labeller's P(a ≻ b) and ``gold(prompts, completions)`` the world's gold reward; the columns
    are :func:`build_preference_dataset`'s.
    """
    a_preferred = np.array(labels, dtype=bool)  # pragma: no mutate (np.where reads 0/1 labels as bools alike)
    chosen = np.where(a_preferred, samples_a, samples_b).tolist()
    rejected = np.where(a_preferred, samples_b, samples_a).tolist()
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": p}] for p in prompts],
            "chosen": [[{"role": "assistant", "content": c}] for c in chosen],
            "rejected": [[{"role": "assistant", "content": r}] for r in rejected],
            "gold_chosen": gold(list(prompts), chosen),
            "gold_rejected": gold(list(prompts), rejected),
            "p_chosen": np.where(a_preferred, p_a, 1 - np.asarray(p_a)).tolist(),
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
