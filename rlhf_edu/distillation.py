"""Synthetic data and distillation: a student learns from a teacher's samples or its distributions (chapter 15).

The chapter's questions, each on the toy world with its hidden gold reward:

1. **What passes from teacher to student?** Three kinds (:data:`KINDS`), compared at an equal
   budget of completion tokens that pass through the teacher (:class:`DistillationConfig`'s
   ``teacher_tokens``):

   - ``"sequence"``: the teacher writes answers and the student is SFT'd on them (chapter 9's
     :func:`~rlhf_edu.instruction_tuning.sft_step_loss`). Only text passes, so any teacher serves;
   - ``"token"``: the same answers, plus the teacher's whole next-token distribution at each of
     their positions, matched by the forward KL (:func:`forward_kl_loss`, Hinton et al. 2015);
   - ``"on_policy"``: the student writes the answers and the teacher grades every token of them
     with its distribution, matched by the reverse KL (:func:`reverse_kl_loss`; Agarwal et al.'s
     GKD with λ = 1, β = 1). :func:`sampled_reverse_kl` is the one-sample estimate of it that
     recipes use as a per-token negative reward.

   In TRL 1.16, ``sequence`` is ``SFTTrainer`` on a dataset of the teacher's answers; ``token`` is the
   experimental ``GKDTrainer`` with ``lmbda=0, beta=0`` on such a dataset (or with ``seq_kd=True``, which
   samples the teacher afresh at each step); ``on_policy`` is ``GKDTrainer`` with ``lmbda=1, beta=1``, or
   ``DistillationTrainer`` with ``beta=1``. Their losses compare temperature-1 distributions only with
   ``temperature=1.0`` (``GKDConfig``'s default is 0.9).
   :func:`train_distillation` trains any of them.
2. **A smaller student.** :func:`smaller_student` copies a model with fewer of its layers, as
   DistilBERT started its student from every other layer of BERT.
3. **A model trained on its own outputs.** :func:`self_training` repeats sample → SFT for a number
   of generations and measures the gold reward and the answers' :func:`diversity` after each, with a
   share of real demonstrations mixed in or not.
4. **Quality against quantity.** :func:`filter_by` keeps the answers a verifier or a judge passed,
   as an SFT dataset.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .core.collate import pad_batch
from .core.logprobs import check_batch, check_language_model, position_ids_from_mask
from .core.rollouts import Rollout, sample_rollouts
from .core.runtime import MAX_NEW_TOKENS, SCORING_BATCH_SIZE, numpy_rng, torch_generator
from .core.stats import masked_mean, mean_and_stderr
from .core.training import Batch, History, Trainer, TrainingConfig, make_loader, train
from .core.validation import check_causal_lm, check_choice, check_int, check_number, check_same_length, check_texts
from .core.world import World
from .instruction_tuning import encode_example, sft_step_loss
from .regularization import exact_token_kl, kl_estimate

KINDS = ("sequence", "token", "on_policy")  # what passes from teacher to student: text, distributions, grades


# --- the per-token losses ---------------------------------------------------------------------------------------------
def _check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> None:
    if student_logits.dim() != 3 or teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"student_logits {tuple(student_logits.shape)} and teacher_logits {tuple(teacher_logits.shape)} must "
            "share one (B, T, V) shape: score the same tokens with two models of one vocabulary"
        )
    if mask.shape != student_logits.shape[:2]:
        raise ValueError(
            f"mask {tuple(mask.shape)} must be (B, T) = {tuple(student_logits.shape[:2])}: one entry per position"
        )


def forward_kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-level distillation: KL(p_T ‖ p_S) at each position, averaged over each example's masked tokens; (B,).

        D_KL(p_T ‖ p_S) = Σ_v p_T(v) [log p_T(v) − log p_S(v)]

    with p = softmax(logits) over the vocabulary (B, T, V). It is the cross-entropy to the
    teacher's distribution minus the teacher's entropy, a constant for the student: Hinton et
    al.'s soft targets at temperature 1, or SFT with the one-hot next token replaced by the
    teacher's whole distribution (GKD's β = 0). It is mass-covering: the student pays wherever
    the teacher has mass and it has none. Used on the teacher's own samples.
    """
    _check_logits(student_logits, teacher_logits, mask)
    kl = exact_token_kl(teacher_logits, student_logits, mask)  # (B, T) Σ_v p_T (log p_T − log p_S)
    return masked_mean(kl, mask.to(kl.dtype), dim=1)


def reverse_kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """On-policy distillation: KL(p_S ‖ p_T) at each position, averaged over each example's masked tokens; (B,).

        D_KL(p_S ‖ p_T) = Σ_v p_S(v) [log p_S(v) − log p_T(v)]

    GKD's β = 1. The gradient flows through the student's distribution both as the weights
    p_S(v) and inside the log. It is mode-seeking: the student pays where it puts mass that the
    teacher does not, and nothing for the teacher's modes it leaves out. Used on the student's own
    samples, where the sum over the vocabulary is the exact expectation that
    :func:`sampled_reverse_kl` estimates from the sampled token alone.
    """
    _check_logits(student_logits, teacher_logits, mask)
    kl = exact_token_kl(student_logits, teacher_logits, mask)  # (B, T) Σ_v p_S (log p_S − log p_T)
    return masked_mean(kl, mask.to(kl.dtype), dim=1)


def sampled_reverse_kl(student_logps: torch.Tensor, teacher_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The one-sample reverse KL, log p_S(y_t) − log p_T(y_t) at the sampled tokens, averaged per example; (B,).

    ``student_logps`` and ``teacher_logps`` are (B, T): each model's log-prob of the token that was
    sampled at each position. Per token this is chapter 8's k1 with the teacher as the reference
    (:func:`~rlhf_edu.regularization.kl_estimate`); its negative is the per-token reward of
    on-policy distillation recipes, which need only the teacher's log-prob of the sampled token.
    For y_t ~ p_S its expectation is the reverse KL,

        E_{y_t ~ p_S}[log p_S(y_t) − log p_T(y_t)] = Σ_v p_S(v) [log p_S(v) − log p_T(v)],

    so its mean over samples is :func:`reverse_kl_loss`; a single value can be negative.
    """
    if student_logps.shape != teacher_logps.shape or mask.shape != student_logps.shape:
        raise ValueError(
            f"student_logps {tuple(student_logps.shape)}, teacher_logps {tuple(teacher_logps.shape)} and mask "
            f"{tuple(mask.shape)} must share one (B, T) shape: the log-probs of the same sampled tokens"
        )
    k1 = kl_estimate(student_logps, teacher_logps, "k1")  # (B, T) log p_S(y_t) − log p_T(y_t)
    return masked_mean(k1, mask.to(k1.dtype), dim=1)


def token_mean(per_example: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One number from per-example means, each completion token weighing the same: Σ_i n_i ℓ_i / Σ_i n_i.

    ``n_i`` is the number of masked tokens of row i. It is the per-token mean over the whole
    batch, as :func:`~rlhf_edu.instruction_tuning.sft_loss` and TRL's GKD loss take it, so the
    three kinds weigh their tokens alike.
    """
    if mask.dim() != 2 or mask.shape[0] != per_example.shape[0]:
        raise ValueError(
            f"mask has shape {tuple(mask.shape)} but per_example {tuple(per_example.shape)}: pass the (B, T) "
            "completion mask of the same B rows"
        )
    n = mask.sum(dim=1).to(per_example.dtype)  # (B,)
    return (per_example * n).sum() / n.sum().clamp(min=1)


# --- settings ---------------------------------------------------------------------------------------------------------
@dataclass
class DistillationConfig(TrainingConfig):
    """Settings of :func:`train_distillation`; field names are TRL's (``GKDConfig``) where TRL has one.

    ``kind`` is one of :data:`KINDS`. ``teacher_tokens`` is the budget: the number of completion
    tokens that pass through the teacher, whether it generated them (``sequence``, ``token``),
    scored them (``on_policy``) or both (``token``, counted once). Answers are whole, never cut:
    they are taken in the order sampled while the running total stays within the budget, so a run
    spends at most ``teacher_tokens`` and less than one answer (``max_new_tokens``) short of it.

    ``sequence`` and ``token`` make ``num_epochs`` passes over the teacher's answers, in batches of
    ``batch_size``; ``on_policy`` samples ``batch_size`` fresh answers from the student at every
    step, so it needs ``num_epochs=1``, and a constant learning rate, as its number of steps is
    known only once the budget is spent. ``temperature`` is the sampling temperature of whoever
    writes the answers; the losses compare the models' temperature-1 distributions.
    """

    learning_rate: float = 1e-3
    batch_size: int = 32
    kind: str = "token"
    teacher_tokens: int = 10_000
    max_new_tokens: int = MAX_NEW_TOKENS
    temperature: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.kind, "kind", KINDS)
        self.teacher_tokens = check_int(
            self.teacher_tokens,
            "teacher_tokens",
            fix="the budget of completion tokens the teacher generates or scores, e.g. 10_000",
        )
        self.max_new_tokens = check_int(self.max_new_tokens, "max_new_tokens", fix=f"the default is {MAX_NEW_TOKENS}")
        self.temperature = check_number(
            self.temperature, "temperature", low=0, fix="1.0 samples from the model, 0 is greedy"
        )
        if self.kind == "on_policy" and self.num_epochs != 1:
            raise ValueError(
                f"num_epochs={self.num_epochs} has no meaning for kind='on_policy', which samples fresh answers "
                "at every step until teacher_tokens are spent: set num_epochs=1 and raise teacher_tokens instead"
            )
        if self.kind == "on_policy" and self.lr_scheduler_type != "constant":
            raise ValueError(
                f"lr_scheduler_type={self.lr_scheduler_type!r} needs the number of steps ahead, but kind='on_policy' "
                "knows it only when teacher_tokens are spent (answers vary in length): use 'constant'"
            )


def check_same_vocabulary(
    teacher: PreTrainedModel, student: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    """Refuse a teacher and a student whose next-token distributions are over different vocabularies.

    A per-token loss compares p_T(v) with p_S(v) token id by token id, so both output layers must
    have one row per id of one tokenizer. Then each must fit ``tokenizer``.
    """
    check_causal_lm(teacher, "teacher")
    check_causal_lm(student, "student")
    sizes = {
        name: model.get_output_embeddings().weight.shape[0]
        for name, model in (("teacher", teacher), ("student", student))
    }
    if sizes["teacher"] != sizes["student"] or teacher.config.vocab_size != student.config.vocab_size:
        raise ValueError(
            f"the teacher's vocabulary has {sizes['teacher']} tokens and the student's {sizes['student']}, so "
            "their next-token distributions cannot be compared token by token: distil between models that share "
            "the world tokenizer; sequence-level distillation needs only text (kind='sequence', or train_sft on "
            "the teacher's answers)"
        )
    check_language_model(teacher, tokenizer, "teacher")
    check_language_model(student, tokenizer, "student")


# --- answers as training rows, and the teacher's distributions --------------------------------------------------------
def rollout_rows(rollout: Rollout) -> list[dict]:
    """Each sampled answer as an encoded SFT row (chapter 9's format), with its prompt and completion texts.

    ``input_ids`` are the prompt's and the answer's tokens with the padding dropped, and
    ``completion_mask`` is 1 on the answer's. They are the tokens sampled, not re-tokenized
    text: an answer cut at ``max_new_tokens`` stays unclosed.
    """
    real = rollout.attention_mask.bool().cpu()  # (B, W + N)
    ids, completion = rollout.input_ids.cpu(), rollout.completion_mask.cpu()
    return [
        {
            "input_ids": ids[i][real[i]].tolist(),
            "completion_mask": completion[i][real[i]].tolist(),
            "prompt": p,
            "completion": c,
        }
        for i, (p, c) in enumerate(zip(rollout.prompts, rollout.completions))
    ]


def completion_token_logits(model: PreTrainedModel, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits that predict each completion token of a padded batch, (B, L, V), and their mask, (B, L).

    The positions are the ones :func:`~rlhf_edu.core.logprobs.token_logprobs` reads:
    ``logits[b, j]`` predicts ``input_ids[b, s + 1 + j]``. A per-token distillation loss needs the
    whole distribution at each position, not only the log-prob of the token there.
    """
    input_ids, attention_mask, completion_mask = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    check_batch(input_ids, attention_mask, completion_mask)
    start = max(int(completion_mask.float().argmax(dim=1).min()) - 1, 0)  # predicts the earliest completion token
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        logits_to_keep=input_ids.shape[1] - start,
    ).logits[:, :-1]  # (B, L, V)
    return logits, completion_mask[:, start + 1 :].float()  # (B, L, V), (B, L)


@torch.no_grad()
def teacher_distributions(teacher: PreTrainedModel, batch: Batch) -> torch.Tensor:
    """log p_T(· | x, y_<t) at every completion token of ``batch``, row after row: (Σ_i n_i, V), no grad, eval mode."""
    device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    try:
        logits, mask = completion_token_logits(teacher, {name: tensor.to(device) for name, tensor in batch.items()})
    finally:
        teacher.train(was_training)
    return torch.log_softmax(logits.float(), dim=-1)[mask.bool()]  # (Σ_i n_i, V)


def with_teacher_logps(
    teacher: PreTrainedModel, rows: Sequence[dict], pad_token_id: int, batch_size: int = SCORING_BATCH_SIZE
) -> list[dict]:
    """``rows`` with ``teacher_logps`` added: the teacher's distribution at each completion token, (n_i, V), on the CPU.

    Computed once, ahead of training, so no step of the token kind runs the teacher.
    """
    scored = []
    for s in range(0, len(rows), batch_size):
        part = rows[s : s + batch_size]
        per_row = (
            teacher_distributions(teacher, pad_batch(part, pad_token_id))
            .cpu()
            .split([sum(row["completion_mask"]) for row in part])
        )  # (n_i, V) each
        scored += [{**row, "teacher_logps": logps} for row, logps in zip(part, per_row)]
    return scored


def pad_with_teacher(rows: Sequence[dict], pad_token_id: int) -> Batch:
    """:func:`~rlhf_edu.core.collate.pad_batch`, plus the rows' ``teacher_logps`` one after another, (Σ_i n_i, V)."""
    batch = pad_batch(rows, pad_token_id)
    if "teacher_logps" in rows[0]:
        batch["teacher_logps"] = torch.cat([row["teacher_logps"] for row in rows])
    return batch


def per_token_step_loss(
    student: PreTrainedModel, batch: Batch, kl: Callable[..., torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """``kl`` (:func:`forward_kl_loss` or :func:`reverse_kl_loss`) of the student to the batch's teacher log-probs."""
    logits, mask = completion_token_logits(student, batch)  # (B, L, V), (B, L)
    log_p_T = torch.zeros(logits.shape, dtype=batch["teacher_logps"].dtype, device=logits.device)  # (B, L, V)
    log_p_T[mask.bool()] = batch["teacher_logps"]  # row after row, as stored; the other positions are masked
    return token_mean(kl(logits, log_p_T, mask), mask), {}


# --- the budget -------------------------------------------------------------------------------------------------------
def _prompt_batches(prompts: list[str], config: DistillationConfig) -> Iterator[list[str]]:
    """``batch_size`` prompts at a time, in a seeded random order, round and round."""
    order = torch.randperm(len(prompts), generator=torch_generator(config.seed)).tolist()
    for k in range(math.ceil(config.teacher_tokens / config.batch_size) + 1):  # every answer has at least one token
        yield [prompts[order[(k * config.batch_size + i) % len(prompts)]] for i in range(config.batch_size)]


def rows_within(rollout: Rollout, budget: int) -> int:
    """How many of the rollout's answers, in order, fit in ``budget`` completion tokens: the longest such prefix."""
    lengths = rollout.mask.sum(dim=1)  # (B,) completion tokens, the end-of-turn token included
    return int((lengths.cumsum(dim=0) <= budget).sum())


def _sample(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], config: DistillationConfig, k: int
) -> Rollout:
    seed = config.seed * 100_003 + k  # batch k's own seed
    return sample_rollouts(model, tokenizer, prompts, 1, config.max_new_tokens, config.temperature, seed=seed)


def _over_budget(config: DistillationConfig) -> ValueError:
    return ValueError(
        f"teacher_tokens={config.teacher_tokens} is spent before the first answer fits: raise it to a few answers "
        f"at least (answers run up to max_new_tokens={config.max_new_tokens} tokens)"
    )


def teacher_samples(
    teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], config: DistillationConfig
) -> list[dict]:
    """The teacher's answers as :func:`rollout_rows`, ``batch_size`` prompts at a time until the budget is spent.

    Their completion tokens add up to at most ``config.teacher_tokens``, and less than one answer short of it.
    """
    prompts = check_texts(prompts, "prompts")
    rows, spent = [], 0
    for k, batch in enumerate(_prompt_batches(prompts, config)):
        rollout = _sample(teacher, tokenizer, batch, config, k)
        n = rows_within(rollout, config.teacher_tokens - spent)
        rows += rollout_rows(rollout[:n])
        spent += int(rollout.mask[:n].sum())
        if n < len(rollout) or spent == config.teacher_tokens:  # the next answer would overrun the budget
            break
    if not rows:
        raise _over_budget(config)
    return rows


# --- the trainers -----------------------------------------------------------------------------------------------------
def train_distillation(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    config: DistillationConfig,
) -> History:
    """Distil ``teacher`` into ``student`` on ``prompts`` with ``config.kind``; return the :class:`History`.

    ``sequence`` SFTs the student on the teacher's answers (:func:`teacher_samples`);
    ``token`` matches the teacher's distributions along the same answers, computed once ahead of
    training, with :func:`forward_kl_loss`; ``on_policy`` matches them along the student's own
    answers with :func:`reverse_kl_loss` (:func:`train_on_policy`). Every step logs
    ``teacher_tokens``, the completion tokens spent so far: all of them from the first step for
    the two offline kinds, a growing count for ``on_policy``. The student is trained in place.
    """
    if config.kind != "sequence":
        check_same_vocabulary(teacher, student, tokenizer)
    check_language_model(teacher, tokenizer, "teacher")
    check_language_model(student, tokenizer, "student")
    if student is teacher:
        raise ValueError("student and teacher are one model: distil into a copy, e.g. smaller_student(teacher, 2)")
    prompts = check_texts(prompts, "prompts")
    if config.kind == "on_policy":
        return train_on_policy(student, teacher, tokenizer, prompts, config)
    rows = teacher_samples(teacher, tokenizer, prompts, config)
    if config.kind == "token":
        rows = with_teacher_logps(teacher, rows, tokenizer.pad_token_id)
        return _train_offline(student, tokenizer, rows, partial(per_token_step_loss, kl=forward_kl_loss), config)
    return _train_offline(student, tokenizer, rows, sft_step_loss, config)


def _train_offline(
    student: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict],
    step_loss: Callable[[PreTrainedModel, Batch], tuple[torch.Tensor, dict[str, float]]],
    config: DistillationConfig,
) -> History:
    """``num_epochs`` passes of ``step_loss(student, batch)`` over the teacher's rows, logging the budget spent."""
    spent = sum(sum(row["completion_mask"]) for row in rows)
    loader = make_loader(rows, partial(pad_with_teacher, pad_token_id=tokenizer.pad_token_id), config)

    def loss_fn(batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        loss, metrics = step_loss(student, batch)
        return loss, {**metrics, "teacher_tokens": spent}

    return train(student, loss_fn, loader, config, desc=f"distillation ({config.kind})")


def train_on_policy(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    config: DistillationConfig,
) -> History:
    """On-policy distillation: each step, the student answers, the teacher scores, and the student takes a step.

    The student samples ``batch_size`` answers (eval mode, no grad), the teacher's full
    distributions along them are computed (no grad), and the loss is :func:`reverse_kl_loss` on
    the student's logits with the gradient. It stops when the next answer would take the
    teacher's scored tokens past ``teacher_tokens``; the last batch may be smaller. Logs
    ``teacher_tokens`` (cumulative), ``entropy`` and ``completions/mean_length`` of the student's answers.
    """
    trainer, spent = None, 0
    try:
        for k, prompt_batch in enumerate(_prompt_batches(prompts, config)):
            rollout = _sample(student, tokenizer, prompt_batch, config, k)
            n = rows_within(rollout, config.teacher_tokens - spent)
            if n == 0:
                break
            batch = pad_batch(rollout_rows(rollout[:n]), tokenizer.pad_token_id)
            batch["teacher_logps"] = teacher_distributions(teacher, batch)  # (Σ_i n_i, V)
            spent += int(rollout.mask[:n].sum())
            metrics = {
                "teacher_tokens": spent,
                "entropy": masked_mean(rollout.entropies[:n], rollout.mask[:n]).item(),
                "completions/mean_length": rollout.mask[:n].sum(dim=1).mean().item(),
            }
            if trainer is None:  # its warm-up is planned from the first batch's length
                trainer = Trainer(student, config, math.ceil(config.teacher_tokens / spent), "distillation (on_policy)")
            _plan(trainer, k + 1 + math.ceil((config.teacher_tokens - spent) * (k + 1) / spent))  # done + left
            trainer.step(partial(per_token_step_loss, student, kl=reverse_kl_loss), batch, **metrics)
            if n < len(rollout) or spent == config.teacher_tokens:
                break
    finally:
        if trainer is not None:
            _plan(trainer, len(trainer.history.steps))
            trainer.close()
    if trainer is None:
        raise _over_budget(config)
    return trainer.history


def _plan(trainer: Trainer, steps: int) -> None:
    """Set the steps the progress bar expects: on-policy steps are known only as the budget is spent."""
    trainer.total_steps = trainer.progress.total = steps
    trainer.progress.refresh()


# --- a smaller student ------------------------------------------------------------------------------------------------
def kept_layers(num_hidden_layers: int, num_layers: int) -> list[int]:
    """The layers a ``num_layers``-layer copy keeps of ``num_hidden_layers``: ⌊i · L / k⌋ for i = 0 … k − 1.

    Evenly spread over the depth, the first one included: for k = L / 2 it is every other layer
    (0, 2, 4, …), DistilBERT's choice.
    """
    check_int(num_layers, "num_layers", fix=f"keep between 1 and {num_hidden_layers} of the {num_hidden_layers} layers")
    if num_layers > num_hidden_layers:
        raise ValueError(
            f"num_layers must be at most the {num_hidden_layers} layers there are, got {num_layers}: "
            "a copy cannot keep a layer twice"
        )
    return [i * num_hidden_layers // num_layers for i in range(num_layers)]


def smaller_student(model: PreTrainedModel, num_layers: int) -> PreTrainedModel:
    """A copy of ``model`` with ``num_layers`` of its decoder layers (:func:`kept_layers`), in eval mode.

    Built from the model's own config with ``num_hidden_layers`` changed, then loaded with the
    kept layers' weights, the embeddings, the final norm and the output layer. Layers spread over
    the depth rather than the first k: each layer adds its output to one residual stream, so a
    layer still reads roughly what it was trained on when the one before it is gone, and the copy
    keeps part of every stage of the computation instead of only its beginning. DistilBERT started
    its student from every other layer of BERT in the same way. The copy shares no weight with ``model``.
    """
    check_causal_lm(model)
    L = model.config.num_hidden_layers
    check_int(num_layers, "num_layers", fix=f"keep between 1 and {L - 1} of the model's {L} layers")
    if num_layers >= L:
        raise ValueError(
            f"num_layers must be < the model's {L} layers to make it smaller, got {num_layers}: keep 1 to {L - 1} "
            "(copy.deepcopy makes a same-sized copy)"
        )
    kept = kept_layers(L, num_layers)
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = num_layers
    if getattr(config, "layer_types", None) is not None:  # e.g. Qwen2's per-layer attention kinds
        config.layer_types = [config.layer_types[i] for i in kept]
    with torch.random.fork_rng(devices=[]):  # the fresh weights are all overwritten: leave the global RNG alone
        student = type(model)(config)
    student.load_state_dict(_renumbered(model.state_dict(), _decoder_layers(model), kept))
    student.generation_config = copy.deepcopy(model.generation_config)
    parameter = next(model.parameters())
    return student.to(device=parameter.device, dtype=parameter.dtype).eval()


def _decoder_layers(model: PreTrainedModel) -> str:
    """The name of the model's decoder layers: ``model.layers`` (Llama, Qwen2) or ``transformer.h`` (GPT-2)."""
    L = model.config.num_hidden_layers
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) == L]
    if len(names) != 1:
        raise TypeError(f"cannot tell which of {type(model).__name__}'s module lists holds its {L} layers: {names}")
    return names[0]


def _renumbered(state: Mapping[str, torch.Tensor], layers: str, kept: list[int]) -> dict[str, torch.Tensor]:
    """``state`` with only the ``kept`` layers, renumbered 0 … k − 1; every other weight as it is."""
    pattern = re.compile(rf"{re.escape(layers)}\.(\d+)\.(.*)")
    renumbered = {}
    for key, value in state.items():
        match = pattern.fullmatch(key)
        if match is None:
            renumbered[key] = value
        elif int(match[1]) in kept:
            renumbered[f"{layers}.{kept.index(int(match[1]))}.{match[2]}"] = value
    return renumbered


# --- a model trained on its own outputs -------------------------------------------------------------------------------
def diversity(rollout: Rollout, num_generations: int) -> dict[str, float | list[int]]:
    """How varied a rollout's answers are: ``distinct_answers``, ``entropy`` and ``distinct_per_prompt``.

    ``distinct_per_prompt`` is each prompt's number of different answers (as text) among the
    ``num_generations`` sampled for it, from 1 (always the same) to ``num_generations``, and
    ``distinct_answers`` its mean over prompts.
    ``entropy`` is the mean over every completion token of the entropy of the distribution it was
    sampled from (TRL's ``entropy``), ``rollout.entropies`` under its mask.
    """
    k = check_int(num_generations, "num_generations", fix="the number of answers sampled per prompt")
    if len(rollout) % k or any(
        rollout.prompts[i + j] != rollout.prompts[i] for i in range(0, len(rollout), k) for j in range(k)
    ):
        raise ValueError(
            f"the rollout's {len(rollout)} rows are not groups of num_generations={k} answers to one prompt: pass "
            "the num_generations it was sampled with (sample_rollouts orders rows prompt by prompt)"
        )
    distinct = [len(set(rollout.completions[i : i + k])) for i in range(0, len(rollout), k)]  # (M,)
    return {
        "distinct_answers": sum(distinct) / len(distinct),
        "entropy": masked_mean(rollout.entropies, rollout.mask).item(),
        "distinct_per_prompt": distinct,
    }


def self_training(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    prompts: Sequence[str],
    generations: int,
    real_share: float = 0.0,
    num_samples: int = 4,
    config: TrainingConfig | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[dict[str, float]]:
    """Train a copy of ``model`` on its own answers, ``generations`` times over; one record per generation.

    Each generation samples ``num_samples`` answers per prompt (at ``temperature``) from the
    current copy, measures them, and SFTs the copy in place on them (``config``, by default one
    epoch at a learning rate of 1e-3), so the next generation starts from this one's weights.
    A share ``real_share`` of the training rows, drawn at random, is replaced by the world's
    demonstrations to the same prompts. ``model`` itself is left as it was.

    Record g (0 = ``model`` as given, then one after each generation's training) holds
    ``generation``, ``gold`` and ``gold_stderr`` (the mean gold reward of its answers and its
    standard error), ``gold_per_prompt`` (each prompt's mean, so two generations or two runs on the
    same prompts compare prompt by prompt), ``real_rows`` (demonstrations in the data it is about to
    train on; 0 in the last) and :func:`diversity`'s ``distinct_answers``, ``entropy`` and
    ``distinct_per_prompt``.
    """
    prompts = check_texts(prompts, "prompts")
    generations = check_int(generations, "generations", fix="the number of sample → train rounds, e.g. 5")
    real_share = check_number(
        real_share, "real_share", low=0, high=1, fix="the share of real demonstrations in each round's data, in [0, 1]"
    )
    num_samples = check_int(num_samples, "num_samples", fix="answers sampled per prompt, e.g. 4")
    config = config or TrainingConfig(learning_rate=1e-3, progress=False)
    check_language_model(model, tokenizer)
    rng = numpy_rng(seed)
    current = copy.deepcopy(model)
    records = []
    for g in range(generations + 1):
        rollout = sample_rollouts(current, tokenizer, prompts, num_samples, max_new_tokens, temperature, seed=seed + g)
        golds = np.array(world.gold_reward(rollout.prompts, rollout.completions))  # (M · num_samples,)
        gold, gold_stderr = mean_and_stderr(golds)
        real = rng.choice(len(rollout), size=round(real_share * len(rollout)), replace=False) if g < generations else []
        gold_per_prompt = golds.reshape(len(prompts), num_samples).mean(axis=1).tolist()  # (M,)
        records.append(
            {"generation": g, "gold": gold, "gold_stderr": gold_stderr, "gold_per_prompt": gold_per_prompt}
            | {"real_rows": len(real)}
            | diversity(rollout, num_samples)
        )
        if g < generations:
            rows = _with_demonstrations(rollout_rows(rollout), real, world, tokenizer, rng)
            loader = make_loader(rows, partial(pad_batch, pad_token_id=tokenizer.pad_token_id), config)
            train(current, partial(sft_step_loss, current), loader, config, desc=f"self-training {g + 1}")
    return records


def _with_demonstrations(
    rows: list[dict], real: np.ndarray, world: World, tokenizer: PreTrainedTokenizerBase, rng: np.random.Generator
) -> list[dict]:
    """``rows`` with the rows numbered ``real`` replaced by the world's demonstration to the same prompt."""
    rows = list(rows)
    for i in sorted(int(i) for i in real):
        prompt = rows[i]["prompt"]
        rows[i] = encode_example(tokenizer, {"prompt": prompt, "completion": world.demonstration(prompt, rng)})
    return rows


# --- quality against quantity -----------------------------------------------------------------------------------------
def filter_by(prompts: Sequence[str], completions: Sequence[str], keep: Sequence[bool]) -> list[dict[str, str]]:
    """The (prompt, completion) pairs that ``keep`` passes, as SFT rows in TRL's prompt/completion format.

    ``keep`` is one verdict per pair, e.g. ``[r == 1.0 for r in world.verifiable_reward(prompts,
    completions)]``: fewer rows, each of them right. The rows are ready for
    :func:`~rlhf_edu.instruction_tuning.train_sft`.
    """
    check_same_length(prompts, completions, "prompts", "completions")
    check_same_length(prompts, keep, "prompts", "keep verdicts")
    if any(not isinstance(k, (bool, np.bool_)) for k in keep):
        raise TypeError("keep must hold one True or False per pair, e.g. [r == 1.0 for r in rewards]")
    rows = [{"prompt": p, "completion": c} for p, c, k in zip(prompts, completions, keep) if k]
    if not rows:
        raise ValueError(f"keep passes none of the {len(prompts)} pairs: there is nothing to train on; sample more")
    return rows
