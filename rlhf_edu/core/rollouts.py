"""Sampling: the one place every chapter asks a model for answers, keeping what RL needs.

:func:`sample_rollouts` samples y ~ π(· | x) and returns a :class:`Rollout` that keeps
the token ids, the masks, whether each answer was finished, and the log-probability of
every sampled token under the distribution it was drawn from. An RL trainer needs all
of these: the ids to re-score under the current policy, the masks to know which tokens
count, and the sampling log-probs for importance ratios. :func:`generate_completions`
is the same sampler for callers that only want the strings.

Layout of a rollout, exactly as ``generate`` returns it::

    input_ids   <pad> <pad> <bos> <|user|> add 3 and 5 <|end|> <|assistant|> | 3 plus 5 is 8 <|end|> <pad> <pad>
    attention     0     0     1      1      1  1  1  1    1          1       | 1  1   1  1 1    1      0     0
    completion    0     0     0      0      0  0  0  0    0          0       | 1  1   1  1 1    1      0     0
                  \\_______________ prompt, left-padded to W ______________/   \\_____ N completion columns _____/

Every row's completion starts at the same column W, so ``logps[b, t]`` is the log-prob
of row b's t-th new token. This is the layout in which
:func:`rlhf_edu.core.logprobs.token_logprobs` returns its (B, N) log-probs for these
ids, for the whole rollout and for any selection of its rows; positions are counted
over real tokens only, so the left padding changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributions import Categorical
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .collate import Messages, as_messages, check_plain_messages, render_chat
from .logprobs import check_tokenizer_fits
from .runtime import GENERATION_BATCH_SIZE, MAX_NEW_TOKENS, shifted_seed
from .validation import (
    check_causal_lm,
    check_fits_context,
    check_int,
    check_known_words,
    check_number,
    check_texts,
)

TENSOR_FIELDS = ("input_ids", "attention_mask", "completion_mask", "finished", "logps", "entropies")


@dataclass(eq=False)
class Rollout:
    """B sampled answers with their tokens, masks, finished flags and sampling log-probs.

    ``rollout[idx]`` (an int, slice, list or tensor of row indices, or a boolean mask)
    is a Rollout of those rows with the same columns, so minibatches are row slices.
    """

    prompts: list[str]  # (B,) each prompt repeated num_generations times, consecutively
    completions: list[str]  # (B,) decoded, without special tokens
    input_ids: torch.Tensor  # (B, W + N) left-padded prompt, then the completion, padded after it
    attention_mask: torch.Tensor  # (B, W + N) 1 on prompt and completion tokens
    completion_mask: torch.Tensor  # (B, W + N) 1 on completion tokens, the end-of-turn token included
    finished: torch.Tensor  # (B,) bool: True where the model closed its turn within max_new_tokens
    logps: torch.Tensor  # (B, N) log-prob of each sampled token when it was sampled, 0 after the completion
    entropies: torch.Tensor  # (B, N) entropy of the distribution each token was drawn from, 0 after the completion

    @property
    def prompt_width(self) -> int:
        """W, the prompt width: the column where every completion starts."""
        return self.input_ids.shape[1] - self.logps.shape[1]

    @property
    def mask(self) -> torch.Tensor:
        """(B, N) float, 1 where ``logps`` holds a completion token: the mask ``token_logprobs`` returns."""
        return self.completion_mask[:, self.prompt_width :].to(self.logps.dtype)

    def __len__(self) -> int:
        return len(self.prompts)

    def __repr__(self) -> str:
        return (
            f"Rollout({len(self)} rows, {self.logps.shape[1]} completion columns, {int(self.finished.sum())} finished)"
        )

    def __getitem__(self, index: int | slice | Sequence[int] | torch.Tensor) -> Rollout:
        """The rows ``index`` selects, as a Rollout (an int gives a one-row Rollout)."""
        if isinstance(index, torch.Tensor):
            index = index.cpu()
        rows = torch.arange(len(self))[index].reshape(-1)  # (B',) row numbers; an int keeps its row dimension
        texts = {name: [getattr(self, name)[i] for i in rows.tolist()] for name in ("prompts", "completions")}
        on_device = rows.to(self.logps.device)  # pragma: no mutate (a CPU index serves a tensor on any device too)
        tensors = {name: getattr(self, name)[on_device] for name in TENSOR_FIELDS}
        return Rollout(**texts, **tensors)

    def to(self, device: str | torch.device) -> Rollout:
        """The same rollout with its tensors on ``device``."""
        tensors = {name: getattr(self, name).to(device) for name in TENSOR_FIELDS}
        return Rollout(prompts=self.prompts, completions=self.completions, **tensors)


def sample_rollouts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    num_generations: int = 1,
    max_new_tokens: int = MAX_NEW_TOKENS,
    temperature: float = 1.0,
    seed: int | None = None,
    batch_size: int = GENERATION_BATCH_SIZE,
) -> Rollout:
    """Sample ``num_generations`` answers y ~ π(· | x) per user-message prompt x; return them as a :class:`Rollout`.

    Rows are ordered prompt by prompt (prompt 0's answers first), so a (B,) reward
    reshapes to (num_prompts, num_generations) for group baselines. Sampling is pure:
    no top-k or top-p, so the tokens follow softmax(logits / temperature) exactly, and
    ``logps`` holds each sampled token's log-prob under that distribution, and ``entropies``
    that distribution's entropy (TRL's ``entropy`` metric is their mean over tokens).
    ``temperature=0`` is greedy decoding; its ``logps`` are then the plain model's
    log π(y_t | x, y_<t) (temperature 1), which is what re-scoring the tokens gives.

    An answer ends at the first end-of-turn token (``tokenizer.eos_token_id``), which
    is part of the completion (the model learns to stop), or is cut after
    ``max_new_tokens`` tokens with ``finished`` False. A ``seed`` makes the samples
    repeatable without touching the global random state. The model samples in eval
    mode and is handed back in the mode it came in; ``batch_size`` rows go through
    each ``generate`` call. Tensors live on the model's device.
    """
    prompts = check_texts(prompts, "prompts")
    num_generations = check_int(num_generations, "num_generations", fix="ask for at least one answer per prompt")
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", fix=f"the default is {MAX_NEW_TOKENS}")
    temperature = check_number(temperature, "temperature", low=0, fix="use 1.0 to sample from π, 0 for greedy")
    batch_size = check_int(batch_size, "batch_size", fix=f"the default is {GENERATION_BATCH_SIZE}")
    if seed is not None:
        check_int(seed, "seed", low=0, fix="pass a non-negative integer, or None for fresh samples")
    check_causal_lm(model)
    check_tokenizer_fits(model, tokenizer)
    rows = [p for p in prompts for _ in range(num_generations)]  # (B,) prompt 0's answers first
    texts = [render_prompt(tokenizer, p) for p in prompts]
    texts = [text for text in texts for _ in range(num_generations)]  # (B,)
    # pragma: no mutate start, the world's tokenizer adds no special token: the template's text holds them
    longest = max(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    # pragma: no mutate end
    check_fits_context(
        longest + max_new_tokens, model, f"the longest prompt ({longest} tokens) plus max_new_tokens ({max_new_tokens})"
    )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout: the sampled tokens and their logps come from one distribution
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # pragma: no mutate (no GPU)
            if seed is not None:
                torch.manual_seed(shifted_seed(seed))
            parts = [
                _sample_batch(model, tokenizer, texts[i : i + batch_size], max_new_tokens, temperature)
                for i in range(0, len(texts), batch_size)
            ]
    finally:
        model.train(was_training)
    return _join(parts, rows, tokenizer)


def render_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str | Messages) -> str:
    """The chat-formatted text a model continues for ``prompt``, after checking it holds only known, plain words."""
    messages = as_messages(prompt, "user")
    check_plain_messages(tokenizer, messages)
    text = render_chat(
        tokenizer,
        messages,
        add_generation_prompt=True,
        tokenize=False,  # pragma: no mutate (None reads as False too: the template tests its truth)
    )
    ids = tokenizer.encode(text, add_special_tokens=False)  # pragma: no mutate (an added bos or eos is never <unk>)
    if tokenizer.unk_token_id in ids:  # a byte-level tokenizer's unk_token_id, None, is never an id
        for message in messages:
            check_known_words(tokenizer, message["content"], f"the {message['role']} message")
    return text


def generate_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int = MAX_NEW_TOKENS,
    temperature: float = 1.0,
    seed: int | None = None,
    batch_size: int = GENERATION_BATCH_SIZE,
    return_finished: bool = False,
) -> list[str] | tuple[list[str], list[bool]]:
    """The decoded completions of :func:`sample_rollouts`, one per prompt.

    With ``return_finished=True`` it also returns, per completion, whether the model
    closed its turn (emitted the end-of-turn token) within ``max_new_tokens``.
    """
    rollout = sample_rollouts(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        batch_size=batch_size,
    )
    return (rollout.completions, rollout.finished.tolist()) if return_finished else rollout.completions


def _sample_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    max_new_tokens: int,
    temperature: float,
) -> dict[str, torch.Tensor]:
    """One left-padded ``generate`` call: its rows' ids, masks and sampling log-probs, as ``generate`` laid them out."""
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = padding_side
    inputs = inputs.to(next(model.parameters()).device)  # pragma: no mutate (one device in tests: the identity)
    sampling = (
        {
            "do_sample": True,
            "temperature": temperature,
            "top_k": 0,
            "top_p": 1.0,  # pragma: no mutate (top-p at 1 or above keeps every token)
        }
        if temperature > 0
        else {"do_sample": False}
    )
    with torch.no_grad():
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            output_logits=True,
            return_dict_in_generate=True,
            **sampling,
        )
    W = inputs["input_ids"].shape[1]
    y = output.sequences[:, W:]  # (b, N) new tokens; N < max_new_tokens when every row stopped early
    is_eos = y == tokenizer.eos_token_id  # (b, N)
    # A token counts while no end-of-turn token came before it; the first one itself counts.
    completion = (is_eos.long().cumsum(dim=1) - is_eos.long()) == 0  # (b, N)
    tau = temperature if temperature > 0 else 1.0  # greedy: the plain model's log-probs
    logps = torch.stack(
        [-F.cross_entropy(logits.float() / tau, y[:, t], reduction="none") for t, logits in enumerate(output.logits)],
        dim=1,
    )  # (b, N) log softmax(z/τ)[y_t]
    entropies = torch.stack(
        [Categorical(logits=logits.float() / tau).entropy() for logits in output.logits], dim=1
    )  # (b, N) H(softmax(z/τ)): how spread the distribution was that each token came from
    return {
        "input_ids": output.sequences,  # (b, W + N)
        "attention_mask": torch.cat([inputs["attention_mask"], completion.long()], dim=1),  # (b, W + N)
        "completion_mask": torch.cat([torch.zeros_like(inputs["attention_mask"]), completion.long()], dim=1),
        "finished": (is_eos & completion).any(dim=1),  # (b,)
        "logps": logps * completion,  # (b, N)
        "entropies": entropies * completion,  # (b, N)
    }


def _join(parts: list[dict[str, torch.Tensor]], prompts: list[str], tokenizer: PreTrainedTokenizerBase) -> Rollout:
    """One Rollout from per-call parts: each part padded on the left of its prompts and the right of its completions."""
    N = max(part["logps"].shape[1] for part in parts)
    W = max(part["input_ids"].shape[1] - part["logps"].shape[1] for part in parts)
    for part in parts:
        n = part["logps"].shape[1]
        p = part["input_ids"].shape[1] - n
        for name, value in (("input_ids", tokenizer.pad_token_id), ("attention_mask", 0), ("completion_mask", 0)):
            part[name] = F.pad(part[name], (W - p, N - n), value=value)  # (b, W + N)
        for name in ("logps", "entropies"):
            part[name] = F.pad(part[name], (0, N - n))  # (b, N)
    joined = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
    completion_ids = [ids[mask.bool()].tolist() for ids, mask in zip(joined["input_ids"], joined["completion_mask"])]
    completions = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Rollout(prompts=prompts, completions=completions, **joined)


RewardFn = Callable[[list[str], list[str]], Sequence[float]]  # any scorer: gold reward, verifier, reward model


def rollout_rewards(reward_fn: RewardFn, rollout: Rollout) -> torch.Tensor:
    """``reward_fn`` on a rollout's prompts and completions, checked: a (B,) float tensor, one score per row."""
    scores = list(reward_fn(rollout.prompts, rollout.completions))
    if len(scores) != len(rollout):
        raise ValueError(f"reward_fn returned {len(scores)} scores for {len(rollout)} completions: return one each")
    rewards = torch.as_tensor(scores, dtype=torch.float32)  # (B,)
    bad = (~torch.isfinite(rewards)).nonzero().flatten().tolist()
    if bad:
        i = bad[0]
        raise ValueError(
            f"reward_fn returned {rewards[i].item()} for prompt {rollout.prompts[i]!r} "
            f"(completion {rollout.completions[i]!r}): every score must be a finite number"
        )
    return rewards
