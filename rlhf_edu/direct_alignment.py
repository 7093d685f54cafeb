"""Direct alignment: optimise the policy straight from preference pairs, with no reward model (chapter 12).

DPO starts from the closed-form optimum of chapter 4's KL-regularised objective,
π*(y|x) ∝ π_ref(y|x) · exp(r(x, y) / β) (``eq:dpo_opt_policy``), and turns it
around: the reward a policy implies is its log-ratio to the reference,

    r(x, y) = β · log π(y|x) / π_ref(y|x)                            (eq:dpo_reward)

Put that reward into the Bradley-Terry likelihood of the preference labels, and
the log-partition cancels out of every pair, leaving a loss on log-probabilities
alone:

    L_DPO = −E[ log σ(β · h) ],  h = log π(y_c)/π_ref(y_c) − log π(y_r)/π_ref(y_r)   (eq:dpo_core)

This module holds

- the losses, plain functions on log-prob tensors: :func:`dpo_loss` (DPO, cDPO,
  IPO, hinge and robust DPO), :func:`simpo_loss`, :func:`implicit_reward`, and
  :func:`chosen_nll_loss`, the NLL regularizer of chapter 8 (eq:dpo_nll);
- :func:`train_tabular_dpo`, DPO on a K-armed bandit, where the closed form of
  chapter 4 can be checked exactly;
- :func:`train_dpo`, the trainer for a language model: reference log-probs are
  computed once, before training, so only one model sits in memory while it trains;
- :func:`train_and_evaluate`, one run per config, each judged by
  :func:`rlhf_edu.core.evaluation.evaluate_policy` (gold reward against KL measured on
  samples, with each sample's term of the KL kept for its standard error), for the
  reward–KL frontier, and the chapter's plots.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .core.collate import check_length
from .core.evaluation import PolicyEvaluation, evaluate_policy
from .core.logprobs import batch_sequence_logprobs, check_language_model, sequence_logprobs
from .core.preferences import encode_pairs, pair_loader
from .core.runtime import SCORING_BATCH_SIZE, numpy_rng
from .core.scoring import score_rows
from .core.stats import mean_and_stderr, running_mean
from .core.training import Batch, History, TrainingConfig, train
from .core.validation import check_choice, check_flag, check_int, check_number, context_length
from .core.world import World
from .objective import kl_regularized_optimum

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust")  # what dpo_loss computes
TRAINER_LOSS_TYPES = (*LOSS_TYPES, "simpo")  # what train_dpo accepts: the DPO family plus reference-free SimPO
_SMOOTHED = ("sigmoid", "robust")  # the losses that model label noise


# --- losses ---------------------------------------------------------------------------------------------
def check_loss_arguments(
    beta: float,
    label_smoothing: float = 0.0,
    loss_type: str = "sigmoid",
    logps: Sequence[torch.Tensor] = (),
    valid: Sequence[str] = LOSS_TYPES,
) -> None:
    """Raise a ValueError or TypeError that says what is wrong with a preference loss's inputs, and how to fix it."""
    check_number(beta, "beta", low=0, low_open=True, fix="it is the KL penalty's weight (try 0.1)")
    check_choice(loss_type, "loss_type", valid)
    check_number(label_smoothing, "label_smoothing", fix="the assumed share of flipped labels, e.g. 0.1")
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(
            f"label_smoothing must be in [0, 0.5), got {label_smoothing}: it is the assumed share "
            "of flipped labels, and at 0.5 the labels carry no information"
        )
    if label_smoothing > 0 and loss_type not in _SMOOTHED:
        raise ValueError(
            f"label_smoothing applies to loss_type {' or '.join(map(repr, _SMOOTHED))} only: "
            f"set it to 0 for {loss_type!r}"
        )
    for tensor in logps:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(
                f"log-probs must be torch tensors (e.g. from sequence_logprobs), got {type(tensor).__name__}"
            )
    shapes = {tuple(t.shape) for t in logps}
    if len(shapes) > 1:
        raise ValueError(f"log-prob tensors have different shapes {sorted(shapes)}: pass one value per pair to each")


def implicit_reward(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """The reward a policy implies, r = β · (log π(y|x) − log π_ref(y|x)) (``eq:dpo_reward``), same shape as the input.

    It equals the true reward up to a per-prompt constant β·log Z(x) (``eq:dpo_reward_full``),
    which cancels whenever two completions of the same prompt are compared.
    """
    check_loss_arguments(beta, logps=(policy_logps, ref_logps))
    return beta * (policy_logps - ref_logps)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO-family losses and the detached implicit rewards: ``(losses, chosen_rewards, rejected_rewards)``.

    With h = log π(y_c)/π_ref(y_c) − log π(y_r)/π_ref(y_r) and ε = ``label_smoothing``:

    - ``"sigmoid"``: −(1−ε)·log σ(βh) − ε·log σ(−βh): DPO's ``eq:dpo_core`` at ε = 0,
      conservative DPO (cDPO, labels flipped with probability ε) above 0;
    - ``"hinge"``: relu(1 − βh), SLiC's hinge;
    - ``"ipo"``: (h − 1/(2β))², IPO (Azar et al.), which regresses h to a finite target
      instead of pushing it to infinity on deterministic labels;
    - ``"robust"``: [−(1−ε)·log σ(βh) + ε·log σ(−βh)] / (1−2ε), an unbiased estimate of the
      clean-label loss under label noise ε (Chowdhury et al.).

    How hard a pair pulls, −∂loss/∂(βh): σ(−βh) for DPO; σ(−βh) − ε for cDPO, zero at
    βh = log((1−ε)/ε) and pushing back past it; σ(−βh) + ε/(1−2ε) for robust DPO, never
    below ε/(1−2ε), so its loss falls without bound as βh grows and goes below zero.

    Every tensor holds one value per pair, (B,). The function uses whatever log-probs
    it is given: the DPO paper sums token log-probs (the true log π(y|x), what
    :func:`~rlhf_edu.core.logprobs.sequence_logprobs` returns by default), while IPO as TRL
    implements it and SimPO use the per-token mean (``average=True``).
    """
    logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    check_loss_arguments(beta, label_smoothing, loss_type, logps)
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)  # (B,)
    eps = label_smoothing
    if loss_type == "sigmoid":
        losses = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)  # (B,)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)  # (B,)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2  # (B,)
    else:
        losses = (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)  # (B,)
    chosen_rewards = implicit_reward(policy_chosen_logps, ref_chosen_logps, beta).detach()  # (B,)
    rejected_rewards = implicit_reward(policy_rejected_logps, ref_rejected_logps, beta).detach()  # (B,)
    return losses, chosen_rewards, rejected_rewards


def chosen_nll_loss(chosen_logps: torch.Tensor, chosen_lengths: torch.Tensor) -> torch.Tensor:
    """The length-normalised NLL of each chosen answer, −log π(y_c|x) / |y_c|; (B,).

    It is the term that eq:dpo_nll adds to DPO's loss with weight α (eq:dpo_nll_expanded,
    Pang et al.'s iterative RPO; TRL's ``rpo_alpha``): DPO alone only asks the chosen answer
    to beat the rejected one, and can lower both; this keeps the chosen answer likely in
    absolute terms. ``chosen_logps`` are summed log-probs, ``chosen_lengths`` their token counts.
    """
    if chosen_logps.shape != chosen_lengths.shape:
        raise ValueError(
            f"chosen_logps {tuple(chosen_logps.shape)} and chosen_lengths "
            f"{tuple(chosen_lengths.shape)} must have one shape: pass one value per pair to each"
        )
    if (chosen_lengths < 1).any():  # a per-token NLL of no tokens is 0/0
        raise ValueError(
            f"chosen_lengths holds {chosen_lengths.min().item()}: every chosen answer has at least one token"
        )
    return -chosen_logps / chosen_lengths


def simpo_loss(
    policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor, beta: float = 2.0, gamma: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO's per-pair loss −log σ(β·(ȳ_c − ȳ_r) − γ) and its detached rewards β·ȳ (Meng et al.).

    ȳ is the *per-token mean* log-prob of a completion (pass
    ``sequence_logprobs(..., average=True)``): the length normalisation stops the
    reward from favouring long answers, and no reference model is needed. γ is a target
    margin: a pair keeps pulling hard until β·(ȳ_c − ȳ_r) exceeds γ.
    Returns ``(losses, chosen_rewards, rejected_rewards)``, each (B,).
    """
    check_loss_arguments(beta, logps=(policy_chosen_logps, policy_rejected_logps))
    check_number(gamma, "gamma", fix="SimPO's target margin γ, e.g. 0.5")
    margin = beta * (policy_chosen_logps - policy_rejected_logps) - gamma  # (B,)
    return -F.logsigmoid(margin), beta * policy_chosen_logps.detach(), beta * policy_rejected_logps.detach()


# --- tabular DPO: the chapter-4 bandit ---------------------------------------------------------------
@dataclass
class TabularDPOResult:
    """A softmax policy over K arms trained with :func:`dpo_loss`, beside the closed-form optimum."""

    beta: float
    ref_probs: np.ndarray  # (K,) π_ref
    rewards: np.ndarray  # (K,) the reward behind the preference labels
    probs: np.ndarray  # (K,) the policy DPO learned
    optimum: np.ndarray  # (K,) π* ∝ π_ref · exp(r / β)
    distance: list[float]  # total-variation distance to π* after each step

    def plot(
        self, ax: plt.Axes | None = None
    ) -> plt.Figure:  # pragma: no mutate block, a picture: what it shows is tested as values, its styling is not
        """Bars of π_ref, the DPO policy and π* side by side, one group per arm."""
        ax = ax or plt.subplots(figsize=(5, 2.8))[1]
        arms = np.arange(len(self.probs))
        bars = {"π_ref": self.ref_probs, "DPO": self.probs, "π* (closed form)": self.optimum}
        for i, (label, probs) in enumerate(bars.items()):
            ax.bar(arms + (i - 1) * 0.27, probs, width=0.27, label=label)
        ax.set(
            xticks=arms,
            xlabel="arm",
            ylabel="probability",
            title=f"β = {self.beta:g}: TV(DPO, π*) = {self.distance[-1]:.3f}",
        )
        ax.legend(fontsize=8)
        return ax.figure


def bandit_preferences(
    ref_probs: np.ndarray, rewards: np.ndarray, num_pairs: int, rng: np.random.Generator, tau: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """``(chosen, rejected)`` arm indices: pairs drawn from π_ref × π_ref, labelled by Bradley-Terry.

    P(i ≻ j) = σ((r_i − r_j) / τ) (``eq:bradley_terry_dpo`` with temperature τ); pairs of
    an arm with itself carry no preference and are dropped.
    """
    first, second = rng.choice(len(ref_probs), size=(2, num_pairs), p=ref_probs)
    first, second = first[first != second], second[first != second]
    first_wins = rng.random(len(first)) < 1 / (1 + np.exp(-(rewards[first] - rewards[second]) / tau))
    return np.where(first_wins, first, second), np.where(first_wins, second, first)


def train_tabular_dpo(
    ref_probs: Sequence[float],
    rewards: Sequence[float],
    beta: float,
    num_pairs: int = 20_000,
    num_steps: int = 300,
    learning_rate: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    tau: float = 1.0,
    seed: int = 0,
) -> TabularDPOResult:
    """Fit a softmax policy over K arms with :func:`dpo_loss` on sampled preference pairs; compare with π*.

    The policy starts at π_ref and takes full-batch Adam steps on its K logits. It lands on
    chapter 4's π* ∝ π_ref·exp(r/β) (``eq:dpo_opt_policy``) when

    - the labels follow Bradley-Terry with temperature ``tau`` = 1, so their log-odds are the
      reward gaps r_i − r_j themselves (with τ ≠ 1 DPO finds the optimum for r/τ instead);
    - the pairs connect every arm (here they are drawn from π_ref × π_ref, so all pairs of
      arms with π_ref > 0 appear): rewards are only identifiable up to a constant, through
      the pairs that are compared;
    - there are enough pairs: the fitted gaps carry sampling noise that shrinks as 1/√n.

    Other ``loss_type`` values optimise other objectives and land elsewhere (IPO, for one).
    Returns a :class:`TabularDPOResult`.
    """
    check_loss_arguments(beta, label_smoothing, loss_type)
    num_pairs = check_int(num_pairs, "num_pairs", fix="the number of sampled preference pairs, e.g. 20000")
    num_steps = check_int(num_steps, "num_steps", fix="the number of Adam steps, e.g. 300")
    check_number(learning_rate, "learning_rate", low=0, low_open=True, fix="Adam's step size, e.g. 0.1")
    check_number(tau, "tau", low=0, low_open=True, fix="the annotator's noise temperature; 1 makes DPO land on π*")
    ref_probs, rewards = np.asarray(ref_probs, dtype=float), np.asarray(rewards, dtype=float)
    if ref_probs.shape != rewards.shape or ref_probs.ndim != 1:
        raise ValueError(f"ref_probs {ref_probs.shape} and rewards {rewards.shape} must be 1-D, one entry per arm")
    if (ref_probs <= 0).any() or not np.isclose(ref_probs.sum(), 1):
        raise ValueError("ref_probs must be positive and sum to 1: DPO can never move an arm π_ref gives 0")
    sampling_probs = ref_probs / ref_probs.sum()  # float32 sums to 1 only to float32 precision; NumPy asks more
    chosen, rejected = bandit_preferences(sampling_probs, rewards, num_pairs, numpy_rng(seed), tau)
    # A pair's loss depends only on its two arms: score each distinct (chosen, rejected) once, weighted by its count.
    (chosen, rejected), counts = np.unique(np.stack([chosen, rejected]), axis=1, return_counts=True)
    weights = torch.tensor(counts / counts.sum())  # (m,) share of the pairs
    ref_logps = torch.tensor(np.log(ref_probs))  # (K,)
    pi_star = kl_regularized_optimum(ref_probs, rewards, beta)  # (K,) a tensor, float64 as its inputs are
    optimum = np.asarray(pi_star, dtype=float)  # pragma: no mutate (pi_star is float64 already)
    logits = ref_logps.clone().requires_grad_()  # start at the reference, as DPO starts from the SFT model
    optimizer = torch.optim.Adam([logits], lr=learning_rate)
    distance = []
    for _ in range(num_steps):
        logps = logits.log_softmax(dim=0)  # (K,)
        losses, _, _ = dpo_loss(
            logps[chosen], logps[rejected], ref_logps[chosen], ref_logps[rejected], beta, loss_type, label_smoothing
        )  # (m,)
        optimizer.zero_grad()
        (weights * losses).sum().backward()  # the mean loss over all pairs
        optimizer.step()
        probs = logits.detach().softmax(dim=0).numpy()
        distance.append(0.5 * float(np.abs(probs - optimum).sum()))
    return TabularDPOResult(beta, ref_probs, rewards, probs, optimum, distance)


# --- DPO on a language model -------------------------------------------------------------------------
@dataclass
class DPOConfig(TrainingConfig):
    """DPO settings, named as TRL's ``DPOConfig`` names them (``beta``, ``loss_type``, ``rpo_alpha``, ...).

    ``loss_type`` is one of :data:`TRAINER_LOSS_TYPES`: a :func:`dpo_loss` type on summed
    log-probs, or ``"simpo"`` (:func:`simpo_loss` on per-token means, no reference model;
    set ``beta`` near 2 for it). ``rpo_alpha`` = α adds α × :func:`chosen_nll_loss` to each
    pair's loss (eq:dpo_nll); None leaves it out. ``group_by_length`` batches pairs of similar length
    together (:func:`~rlhf_edu.core.preferences.pair_loader`), which cuts the compute spent on padding.
    """

    learning_rate: float = 5e-4
    batch_size: int = 32
    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    simpo_gamma: float = 0.5
    rpo_alpha: float | None = None
    group_by_length: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_loss_arguments(self.beta, self.label_smoothing, self.loss_type, valid=TRAINER_LOSS_TYPES)
        check_number(self.simpo_gamma, "simpo_gamma", low=0, fix="SimPO's target margin γ/β, e.g. 0.5")
        check_flag(self.group_by_length, "group_by_length")
        if self.rpo_alpha is not None:
            check_number(
                self.rpo_alpha,
                "rpo_alpha",
                low=0,
                fix="the weight α of the chosen answers' NLL (the RPO paper uses 1.0), or None for none",
            )


def reference_logprobs(
    model: PreTrainedModel, pairs: Sequence[dict], pad_token_id: int, batch_size: int = SCORING_BATCH_SIZE
) -> tuple[list[float], list[float]]:
    """log π_ref(y_c|x) and log π_ref(y_r|x) of every pair from :func:`~rlhf_edu.core.preferences.encode_pairs`.

    One no-grad pass over all answers (:func:`~rlhf_edu.core.scoring.score_rows`), batched
    by length so little is padding; on a GPU a bigger ``batch_size`` pays.
    """
    rows = [pair[side] for pair in pairs for side in ("chosen", "rejected")]  # chosen, rejected, chosen, ...
    logps = score_rows(model, rows, pad_token_id, batch_sequence_logprobs, batch_size)  # (2N,)
    return logps[0::2].tolist(), logps[1::2].tolist()


def with_reference_logprobs(ref_model: PreTrainedModel, pairs: Sequence[dict], pad_token_id: int) -> list[dict]:
    """The encoded pairs with TRL's ``ref_chosen_logps``/``ref_rejected_logps`` added, from one pass of ``ref_model``.

    Returns new pair dicts (the given ones are left as they are); :func:`collate_pairs`
    stacks the two values into each batch.
    """
    ref_chosen, ref_rejected = reference_logprobs(ref_model, pairs, pad_token_id)
    return [
        pair | {"ref_chosen_logps": chosen, "ref_rejected_logps": rejected}
        for pair, chosen, rejected in zip(pairs, ref_chosen, ref_rejected)
    ]


def precompute_ref_logps(
    ref_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    max_length: int | None = None,
    batch_size: int = SCORING_BATCH_SIZE,
) -> Dataset:
    """The dataset with TRL's ``ref_chosen_logps`` and ``ref_rejected_logps`` columns added.

    :func:`train_dpo` uses these columns when present, so several runs on the same data
    (a β sweep) share one reference pass.
    """
    check_language_model(ref_model, tokenizer, "ref_model")
    pairs = encode_pairs(tokenizer, dataset, context_length(ref_model, max_length))
    ref_chosen, ref_rejected = reference_logprobs(ref_model, pairs, tokenizer.pad_token_id, batch_size)
    return dataset.add_column("ref_chosen_logps", ref_chosen).add_column("ref_rejected_logps", ref_rejected)


def dpo_metrics(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
) -> dict[str, float]:
    """TRL's metrics of a batch of pairs, each a mean over the batch, from (B,) log-probs and implicit rewards.

    ``rewards/accuracies`` is the share of pairs whose chosen answer gets the larger
    implicit reward, ``rewards/margins`` the mean r_c − r_r, and ``logps/chosen``,
    ``logps/rejected`` the mean log π(y|x) of each side.
    """
    return {
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
        "logps/chosen": chosen_logps.detach().mean().item(),
        "logps/rejected": rejected_logps.detach().mean().item(),
    }


def dpo_batch_loss(policy: PreTrainedModel, config: DPOConfig, batch: Batch) -> tuple[torch.Tensor, dict]:
    """Mean loss of one batch of pairs and :func:`dpo_metrics`; chosen and rejected share one forward pass.

    With ``config.rpo_alpha`` set, the mean adds α × the mean :func:`chosen_nll_loss`, logged
    as TRL's ``nll_loss``. It is normalised per answer, as eq:dpo_nll_expanded writes it; TRL
    divides the batch's summed chosen NLL by its total chosen tokens instead, which weighs
    long answers more when lengths differ.
    """
    simpo = config.loss_type == "simpo"
    logps = sequence_logprobs(
        policy, batch["input_ids"], batch["attention_mask"], batch["completion_mask"], average=simpo
    )  # (2B,)
    chosen_logps, rejected_logps = logps.chunk(2)  # (B,) each
    if simpo:
        losses, chosen_rewards, rejected_rewards = simpo_loss(
            chosen_logps, rejected_logps, config.beta, config.simpo_gamma
        )
    else:
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            chosen_logps,
            rejected_logps,
            batch["ref_chosen_logps"],
            batch["ref_rejected_logps"],
            config.beta,
            config.loss_type,
            config.label_smoothing,
        )
    loss, metrics = losses.mean(), dpo_metrics(chosen_logps, rejected_logps, chosen_rewards, rejected_rewards)
    if config.rpo_alpha is None:
        return loss, metrics
    lengths = batch["completion_mask"].sum(dim=1).chunk(2)[0]  # (B,) tokens of each chosen answer
    nll = (-chosen_logps if simpo else chosen_nll_loss(chosen_logps, lengths)).mean()  # SimPO's logps are means
    return loss + config.rpo_alpha * nll, metrics | {"nll_loss": nll.item()}


def as_pairs(tokenizer: PreTrainedTokenizerBase, dataset: Dataset | Sequence[dict], max_length: int) -> list[dict]:
    """``dataset`` encoded by :func:`~rlhf_edu.core.preferences.encode_pairs`, or as it is if it is encoded already.

    Either way, pairs with an answer longer than ``max_length`` tokens are refused.
    """
    if isinstance(dataset, Dataset):
        return encode_pairs(tokenizer, dataset, max_length)
    pairs = list(dataset)
    if not pairs or not all(isinstance(pair.get("chosen"), dict) for pair in pairs):
        raise TypeError(
            "pass a datasets.Dataset with prompt, chosen and rejected columns, or the non-empty list "
            "that encode_pairs(tokenizer, dataset) returns"
        )
    check_length([pair[side] for pair in pairs for side in ("chosen", "rejected")], max_length)
    return pairs


def train_dpo(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset | Sequence[dict],
    config: DPOConfig,
    ref_model: PreTrainedModel | None = None,
) -> History:
    """Train ``policy`` on preference pairs with the loss of ``config.loss_type``; return the :class:`History`.

    ``dataset`` holds TRL's ``prompt``/``chosen``/``rejected`` columns, or is already encoded
    (:func:`as_pairs`), so that several runs encode it once. Reference log-probs
    come from its ``ref_chosen_logps``/``ref_rejected_logps`` columns if it has them, else
    from one no-grad pass of ``ref_model`` (or, when it is None, of the policy itself before
    its first step) over the data, before training. They travel with the encoded pairs and
    are reused every epoch, so no second model is run or needed while the policy trains.
    SimPO needs no reference at all.

    Logs TRL's ``rewards/chosen``, ``rewards/rejected``, ``rewards/accuracies``,
    ``rewards/margins``, ``logps/chosen`` and ``logps/rejected`` every step, and ``nll_loss``
    when ``config.rpo_alpha`` is set.
    """
    check_language_model(policy, tokenizer, "policy")
    if ref_model is not None:
        check_language_model(ref_model, tokenizer, "ref_model")
    pairs = as_pairs(tokenizer, dataset, context_length(policy, config.max_length))
    if config.loss_type != "simpo" and "ref_chosen_logps" not in pairs[0]:
        pairs = with_reference_logprobs(ref_model or policy, pairs, tokenizer.pad_token_id)
    loader = pair_loader(pairs, tokenizer.pad_token_id, config)
    return train(policy, partial(dpo_batch_loss, policy, config), loader, config, desc=f"DPO ({config.loss_type})")


# --- the β sweep: one run per config, each evaluated against the SFT model ------------------------
@dataclass
class Run:
    """One DPO run: its config, its evaluation against the SFT reference, and its training history."""

    config: DPOConfig
    evaluation: PolicyEvaluation
    history: History


def train_and_evaluate(
    sft_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    configs: Sequence[DPOConfig],
    world: World,
    prompts: Sequence[str],
    seed: int = 0,
) -> list[Run]:
    """Train a fresh copy of ``sft_model`` with each config; evaluate each on ``prompts`` against the SFT model.

    The pairs are encoded once, and their reference log-probs computed once (unless the
    dataset has them already), for every run. With configs that differ only in β,
    plotting each run's gold reward against its KL draws the reward–KL frontier of the
    DPO paper's figure. Every run is sampled with ``seed`` and keeps its KL's terms
    (``evaluation.log_ratios``), so two runs can be compared sample by sample.
    """
    pairs = encode_pairs(tokenizer, dataset)
    if "ref_chosen_logps" not in pairs[0]:
        pairs = with_reference_logprobs(sft_model, pairs, tokenizer.pad_token_id)
    runs = []
    for config in configs:
        policy = copy.deepcopy(sft_model)
        history = train_dpo(policy, tokenizer, pairs, config)
        runs.append(Run(config, evaluate_policy(policy, sft_model, tokenizer, world, prompts, seed), history))
    return runs


# --- plots ----------------------------------------------------------------------------------------------
def plot_displacement(
    history: History, beta: float, smooth: int = 5, axes: Sequence[plt.Axes] | None = None
) -> plt.Figure:  # pragma: no mutate block, a picture: what it shows is tested as values, its styling is not
    """DPO's displacement: how log π(y_c) and log π(y_r) move against the margin they open, over training.

    Each step's implicit rewards divided by β are the mean change of log π since the start,
    log π(y) − log π_ref(y), over that step's batch (running mean over ``smooth`` steps).
    Left: both against the step, with the margin. Right: both against the margin.
    """
    chosen = running_mean(np.array(history["rewards/chosen"]) / beta, smooth)
    rejected = running_mean(np.array(history["rewards/rejected"]) / beta, smooth)
    margin = chosen - rejected
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    over_steps, against_margin = axes
    over_steps.plot(chosen, label="chosen  Δ log π(y_c)", color="tab:green")
    over_steps.plot(rejected, label="rejected  Δ log π(y_r)", color="tab:red")
    over_steps.plot(margin, label="margin h", color="black", linestyle="--")
    over_steps.set(xlabel="step", ylabel="nats since the start", title="log-probs over training")
    against_margin.plot(margin, chosen, color="tab:green", label="chosen")
    against_margin.plot(margin, rejected, color="tab:red", label="rejected")
    against_margin.set(xlabel="margin h (nats)", ylabel="Δ log π (nats)", title="against the margin")
    for ax in axes:
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.legend(fontsize=8)
    axes[0].figure.tight_layout()
    return axes[0].figure


def evaluation_stderrs(evaluation: PolicyEvaluation) -> tuple[float, float]:
    """``(se of the KL, se of the mean gold reward)`` of one evaluation, from its per-sample terms.

    Each is 0 where the evaluation holds fewer than two samples.
    """
    if len(evaluation.gold_rewards) < 2:
        return 0.0, 0.0
    kl_se = mean_and_stderr(evaluation.log_ratios)[1] if len(evaluation.log_ratios) > 1 else 0.0
    return kl_se, mean_and_stderr(evaluation.gold_rewards)[1]


def plot_frontier(
    runs: Sequence[Run], sft: PolicyEvaluation, highlight: float | None = None, ax: plt.Axes | None = None
) -> plt.Figure:  # pragma: no mutate block, a picture: what it shows is tested as values, its styling is not
    """Gold reward against KL(π‖π_SFT) on samples: the SFT model at KL 0, one dot per run (colours C0, C1, …).

    Each point carries ± 1 standard error of its own KL and gold reward (:func:`evaluation_stderrs`),
    so a reader sees how far apart two points must be to differ; a *difference* of two runs
    evaluated on the same prompts has its own, smaller, paired error. ``highlight`` circles the run with that β.
    """
    ax = ax or plt.subplots(figsize=(5, 3.6))[1]
    ax.errorbar(
        [0.0],
        [sft.gold_reward],
        yerr=[evaluation_stderrs(sft)[1]],
        color="black",
        marker="s",
        linestyle="none",
        capsize=3,
        label="SFT (β → ∞)",
        zorder=3,
    )
    for i, run in enumerate(runs):
        kl, gold = run.evaluation.kl, run.evaluation.gold_reward
        kl_se, gold_se = evaluation_stderrs(run.evaluation)
        ax.errorbar(
            [kl],
            [gold],
            xerr=[kl_se],
            yerr=[gold_se],
            color=f"C{i}",
            marker="o",
            linestyle="none",
            capsize=3,
            label=f"DPO β={run.config.beta:g}",
            zorder=3,
        )
        if highlight is not None and np.isclose(run.config.beta, highlight):
            ax.scatter([kl], [gold], s=220, facecolors="none", edgecolors="black", linewidths=1.5, zorder=4)
    ax.margins(0.15)
    ax.set(
        xlabel="KL(π ‖ π_SFT) on samples (nats)", ylabel="mean gold reward (± 1 s.e.)", title="reward–KL frontier (LM)"
    )
    ax.legend(fontsize=8)
    return ax.figure
