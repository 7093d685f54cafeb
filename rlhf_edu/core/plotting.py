"""Pictures of what a language model does with tokens, shared by every chapter's notebook.

- :func:`plot_tokens` and :func:`plot_token_logprobs` draw a sequence token by token:
  which tokens are prompt, which are completion (and so count in log π(y | x)),
  which are padding, and the log-probability of each completion token.
- :func:`next_token_logits` and :func:`plot_next_token_distribution` show the
  distribution a model samples its next token from (reshape it with
  :func:`rlhf_edu.core.distributions.apply_temperature`, measure it with
  :func:`~rlhf_edu.core.distributions.entropy`).
- :func:`plot_gold_components` breaks the world's gold reward into its weighted
  components, so a plot shows which one an answer (or a policy) wins or loses on.

Every plot function draws on ``ax`` when given, else on a new figure, and returns the figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .world import GOLD_WEIGHTS

PROMPT_COLOR = "#e3e3e3"  # tokens that are given, not generated: they never count
COMPLETION_COLOR = "#9ecae1"  # tokens the model generates: they count in log π(y | x)
LOGP_CMAP = "RdYlGn"  # red = unlikely, green = likely
LOGP_RANGE = (-8.0, 0.0)  # colour scale of per-token log-probs


# --- tokens ---------------------------------------------------------------------------
def align_token_logprobs(logps: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Put the (B, L) output of :func:`rlhf_edu.core.logprobs.token_logprobs` back on the (B, T) token grid.

    ``token_logprobs`` scores the last L tokens of each row, so its columns line up
    with the right end of ``input_ids``. Returns (B, T): the log-prob of each
    completion token at its own position, NaN on tokens that do not count.
    """
    if logps.dim() != 2 or completion_mask.dim() != 2 or logps.shape[0] != completion_mask.shape[0]:
        raise ValueError(
            f"logps {tuple(logps.shape)} and completion_mask {tuple(completion_mask.shape)} must be (B, L) and "
            "(B, T) for the same batch: pass token_logprobs' logps and the batch's completion_mask"
        )
    B, T = completion_mask.shape
    L = logps.shape[1]
    if L > T:
        raise ValueError(f"logps has {L} columns but the batch only {T} tokens: pass the matching completion_mask")
    grid = torch.full((B, T), float("nan"))  # (B, T)
    grid[:, T - L :] = logps.detach().float().cpu()
    return grid.masked_fill(completion_mask.cpu() == 0, float("nan"))  # (B, T)


def _draw_token_row(
    ax: Axes, y: float, tokens: Sequence[str], faces: Sequence, notes: Sequence[str], dashed: Sequence[bool]
) -> float:
    """Draw one row of token boxes at height ``y`` with a note under each; return the row's width."""
    x = 0.0
    for token, face, note, is_dashed in zip(tokens, faces, notes, dashed):
        width = 0.3 + 0.12 * len(token)  # wide enough for the token's text
        ax.add_patch(
            FancyBboxPatch(
                (x, y),
                width,
                0.6,
                boxstyle="round,pad=0.02",
                facecolor=face,
                edgecolor="#999999" if is_dashed else "#555555",
                linestyle="--" if is_dashed else "-",
                linewidth=0.8,
            )
        )
        ax.text(
            x + width / 2,
            y + 0.3,
            token,
            ha="center",
            va="center",
            fontsize=9,
            family="monospace",
            color="#999999" if is_dashed else "black",
        )
        ax.text(x + width / 2, y - 0.08, note, ha="center", va="top", fontsize=7, color="#444444")
        x += width + 0.1
    return x


def _finish_token_axes(ax: Axes, width: float, rows: int) -> None:
    ax.set_xlim(-0.1, width)
    ax.set_ylim(-0.6, rows * 1.3 - 0.4)
    ax.set_axis_off()


def plot_tokens(
    tokenizer: PreTrainedTokenizerBase,
    input_ids: Sequence[int] | torch.Tensor,
    completion_mask: Sequence[int] | torch.Tensor | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Draw one sequence token by token with each token's id beneath; completion tokens (mask 1) in blue."""
    ids = [int(i) for i in input_ids]
    counts = [0] * len(ids) if completion_mask is None else [int(m) for m in completion_mask]
    if len(counts) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(counts)} mask values: pass the mask of the same sequence")
    tokens = tokenizer.convert_ids_to_tokens(ids)
    faces = [COMPLETION_COLOR if c else PROMPT_COLOR for c in counts]
    if ax is None:
        _, ax = plt.subplots(figsize=(min(16.0, 0.6 + 0.7 * sum(0.4 + 0.12 * len(t) for t in tokens)), 1.0))
    width = _draw_token_row(ax, 0.0, tokens, faces, [str(i) for i in ids], [False] * len(ids))
    _finish_token_axes(ax, width, rows=1)
    return ax.figure


def plot_token_logprobs(
    tokenizer: PreTrainedTokenizerBase,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    logps: torch.Tensor,
    ax: Axes | None = None,
) -> Figure:
    """Draw a padded batch, one row per example, each completion token coloured by its log-prob.

    Takes the batch from :func:`rlhf_edu.core.collate.collate` and the ``logps`` from
    :func:`rlhf_edu.core.logprobs.token_logprobs`. Prompt tokens are grey (they are given,
    so they do not count), padding is dashed (it is masked out of attention), and
    the number under each completion token is its log π(y_t | x, y_<t): a row's
    numbers add up to its sequence log-probability.
    """
    grid = align_token_logprobs(logps, completion_mask)  # (B, T)
    cmap, norm = plt.get_cmap(LOGP_CMAP), Normalize(*LOGP_RANGE)
    B = input_ids.shape[0]
    if ax is None:
        _, ax = plt.subplots(figsize=(14, 1.3 * B + 0.6))
    width = 0.0
    for b in range(B):
        tokens = tokenizer.convert_ids_to_tokens(input_ids[b].tolist())
        values, counts, real = grid[b].tolist(), completion_mask[b].tolist(), attention_mask[b].tolist()
        faces = [cmap(norm(v)) if c else (PROMPT_COLOR if r else "white") for v, c, r in zip(values, counts, real)]
        notes = [f"{v:.2f}" if c else "" for v, c in zip(values, counts)]
        dashed = [not r for r in real]
        width = max(width, _draw_token_row(ax, 1.3 * (B - 1 - b), tokens, faces, notes, dashed))
    _finish_token_axes(ax, width, rows=B)
    ax.figure.colorbar(
        plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.02, pad=0.01, label="log π(y_t | x, y_<t)"
    )
    return ax.figure


# --- the next-token distribution -------------------------------------------------------------
def next_token_logits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str) -> torch.Tensor:
    """The logits of the token that would follow ``text``: (V,).

    ``text`` is used verbatim, special tokens included (write ``"<bos> the cat is"``
    or pass a rendered chat template), so the picture shows exactly what the model saw.
    """
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]  # (1, T)
    if ids.shape[1] == 0:
        raise ValueError("empty text: pass at least one token, e.g. '<bos>' to see how a document starts")
    with torch.no_grad():
        logits = model(input_ids=ids.to(model.device), logits_to_keep=1).logits  # (1, 1, V)
    return logits[0, -1].float().cpu()  # (V,)


def plot_next_token_distribution(
    probs: torch.Tensor,
    tokenizer: PreTrainedTokenizerBase,
    top_k: int = 12,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Bar chart of the ``top_k`` most likely next tokens under ``probs`` (V,), most likely first."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 2.6))
    top = probs.topk(min(top_k, probs.shape[-1]))
    ax.bar(
        tokenizer.convert_ids_to_tokens(top.indices.tolist()),
        top.values.tolist(),
        color=COMPLETION_COLOR,
        edgecolor="#2f5d8c",
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.tick_params(axis="x", labelrotation=60, labelsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    ax.figure.tight_layout()
    return ax.figure


# --- the gold reward --------------------------------------------------------------------------
def plot_gold_components(
    components: dict[str, list[float]],
    labels: Sequence[str],
    weights: dict[str, float] = GOLD_WEIGHTS,
    ax: Axes | None = None,
) -> Figure:
    """Stacked horizontal bars of w_k · c_k per answer (gains right of 0, penalties left), a dot at the total.

    ``components`` is the output of :meth:`rlhf_edu.core.world.World.gold_components`;
    ``labels`` names each answer.
    """
    if any(len(values) != len(labels) for values in components.values()):
        raise ValueError("give one label per answer: every component list must be as long as labels")
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 0.45 * len(labels) + 1.2))
    y = list(range(len(labels)))[::-1]  # first answer on top
    gains, losses = [0.0] * len(labels), [0.0] * len(labels)
    for name, values in components.items():
        weighted = [weights[name] * v for v in values]
        left = [g if w >= 0 else s for w, g, s in zip(weighted, gains, losses)]
        ax.barh(y, weighted, left=left, label=name)
        gains = [g + max(w, 0) for g, w in zip(gains, weighted)]
        losses = [s + min(w, 0) for s, w in zip(losses, weighted)]
    ax.scatter([g + s for g, s in zip(gains, losses)], y, color="black", zorder=3, label="gold reward")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlim(min(losses) - 0.3, max(gains) + 0.3)
    ax.set_yticks(y, labels, fontsize=8, family="monospace")
    ax.set_xlabel("weighted component  w_k · c_k")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.figure.tight_layout()
    return ax.figure
