"""Preferences and preference data (chapter 6): whose preferences a label carries, how it is asked, what flaws cost.

Chapters 5 and 6, and chapter 18's lesson on style and length. The world's annotator (:meth:`World.label_pairs`)
is one person who only errs by chance. Here it becomes many people, each flawed in a known way:

- :class:`Annotator`: its own weights w over the gold components c(x, y), a noise temperature τ, and three flaws of
  known strength: a length bias λ (gold units per word), a position bias b (gold units for the answer shown first)
  and a careless share ε (labels drawn at random). Its utility and label probability are

      u(x, y) = Σ_k w_k · c_k(x, y) + λ · |y|
      P(first ≻ second) = (1 − ε) · σ((u(first) − u(second) + b) / τ) + ε / 2

  With the defaults it *is* the world's annotator, label for label (a test holds it to that).
- :class:`Population`: groups of annotators in shares; each pair is labelled by one member drawn by share.
- Three label formats: a pair; a P-point rating of one answer (an ordered logit: u plus logistic noise of scale τ,
  cut at thresholds); a ranking of K answers (Plackett-Luce: u / τ plus Gumbel noise, sorted).
- :class:`LinearReward`: a reward model on the world's features, r_θ(x, y) = θ · φ(x, y) with φ the five gold
  components and the word count, fitted with chapter 7's losses (Bradley-Terry, Plackett-Luce) or the ordered
  logit. It separates what a label format carries from what a network makes of it, and fits in milliseconds, so
  a notebook can repeat a comparison over many seeds.
- Measurements that recover each planted flaw with an interval: a logistic regression of the labels on the gold
  gap and the length gap (the length bias, in the spirit of AlpacaEval's length-controlled win rate), on the gold
  gap and an intercept (the position bias), and the careless share by maximum likelihood.
- A Condorcet cycle: three groups whose majorities go round in a circle, and the Bradley-Terry fit that has to
  break one of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from datasets import Dataset, concatenate_datasets

from .core.preferences import bradley_terry_loss, expected_accuracy, pair_dataset, pair_texts, plackett_luce_loss
from .core.runtime import numpy_rng
from .core.stats import best_of_n_per_prompt, ceiling_share, logistic_regression, within_prompt_agreement
from .core.validation import check_int, check_number, check_same_length, check_texts
from .core.world import GOLD_WEIGHTS, World, message_text, normalize_text

COMPONENTS = tuple(GOLD_WEIGHTS)  # what an annotator's weights may name
FEATURES = (*COMPONENTS, "length")  # φ(x, y) of the linear reward model: the gold components and the word count
RATING_THRESHOLDS = (0.5, 1.5, 2.25, 3.0)  # a 5-point scale's cuts on u: roughly fifths of sft's answers
_WORLD = World()  # the gold components do not depend on a world's seed


# --- annotators ----------------------------------------------------------------------------------------------------
def _check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(f"weights must be a non-empty dict over the gold components {COMPONENTS}, got {weights!r}")
    unknown = sorted(set(weights) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"weights names {unknown}, which are not gold components: use {', '.join(COMPONENTS)}")
    fix = "a weight says how much the group cares for a component: 0 for not at all, never less"
    return {k: check_number(weights[k], f"weights[{k!r}]", low=0, fix=fix) for k in COMPONENTS if k in weights}


@dataclass(frozen=True)
class Annotator:
    """A person who labels: weights over the gold components, noise τ, and three flaws of known strength.

    ``weights`` names the components the annotator pays for (a missing one weighs 0); the default is the world's
    :data:`~rlhf_edu.core.world.GOLD_WEIGHTS`. ``length_bias`` λ is paid per word, ``position_bias`` b to the answer
    shown first, both in gold units; ``careless`` ε is the share of labels drawn at random.
    """

    weights: Mapping[str, float] = field(default_factory=lambda: dict(GOLD_WEIGHTS))
    tau: float = 0.5
    length_bias: float = 0.0
    position_bias: float = 0.0
    careless: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", _check_weights(self.weights))
        check_number(self.tau, "tau", low=0, low_open=True, fix="the annotator's noise temperature (try 0.5)")
        for name in ("length_bias", "position_bias"):
            check_number(getattr(self, name), name, low=0, fix="a flaw's strength in gold units: 0 for none")
        check_number(self.careless, "careless", low=0, high=1, fix="the share of labels drawn at random")

    def gold(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """This annotator's own gold reward Σ_k w_k · c_k(x, y), without its flaws: what serves it. (N,)"""
        components = _WORLD.gold_components(prompts, completions)
        # Summed in GOLD_WEIGHTS' order, as World.gold_reward sums, so the default annotator matches it bit for bit.
        return np.array([sum(w * components[k][i] for k, w in self.weights.items()) for i in range(len(prompts))])

    def utility(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """u(x, y) = gold + λ · |y|: what the annotator's judgement follows, its length bias included. (N,)"""
        return self.gold(prompts, completions) + self.length_bias * word_counts(completions)

    def feature_weights(self) -> np.ndarray:
        """The utility as a linear function of the features: u(x, y) = φ(x, y) · (w, λ), in :data:`FEATURES` order."""
        return np.array([self.weights.get(k, 0.0) for k in COMPONENTS] + [self.length_bias])

    def probability(self, gap: np.ndarray) -> np.ndarray:
        """P(first ≻ second) from the utility gap u(first) − u(second): (1 − ε) · σ((gap + b) / τ) + ε / 2."""
        gap = np.asarray(gap) + self.position_bias
        with np.errstate(over="ignore"):  # exp(−gap/τ) = inf for a huge gap gives σ = 0, as it should
            return (1 - self.careless) * (1.0 / (1.0 + np.exp(-gap / self.tau))) + self.careless / 2

    def preference_probability(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> np.ndarray:
        """P(first ≻ second) = (1 − ε) · σ((u(first) − u(second) + b) / τ) + ε / 2, one per pair. (N,)"""
        check_same_length(first, second, "first answers", "second answers")
        return self.probability(self.utility(prompts, first) - self.utility(prompts, second))  # (N,)

    def label_pairs(
        self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str], rng: np.random.Generator | int
    ) -> np.ndarray:
        """1 where the answer shown first is preferred, else 0: one draw per pair, as World.label_pairs draws."""
        rng = _generator(rng)
        p = self.preference_probability(prompts, first, second)
        return (rng.random(len(p)) < p).astype(int)

    def rate(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        rng: np.random.Generator | int,
        thresholds: Sequence[float] = RATING_THRESHOLDS,
    ) -> np.ndarray:
        """A rating of each answer on a P-point scale (1 … P, P = len(thresholds) + 1): the ordered logit.

        rating = 1 + #{j : u + τ·ε_logistic > t_j}, so P(rating ≤ j) = σ((t_j − u) / τ). A careless rating is
        uniform over the scale. (N,) integers.
        """
        thresholds = check_thresholds(thresholds)
        rng = _generator(rng)
        noisy = self.utility(prompts, completions) + self.tau * rng.logistic(size=len(completions))  # (N,)
        ratings = 1 + (noisy[:, None] > thresholds[None, :]).sum(axis=1)  # (N,)
        careless = rng.random(len(ratings)) < self.careless
        return np.where(careless, rng.integers(1, len(thresholds) + 2, size=len(ratings)), ratings)

    def rank(
        self, prompts: Sequence[str], completions: Sequence[Sequence[str]], rng: np.random.Generator | int
    ) -> np.ndarray:
        """Each prompt's K answers ranked best first, Plackett-Luce: the order of u / τ + Gumbel noise. (B, K) indices.

        Two answers ranked this way come out in the Bradley-Terry order σ(Δu / τ) of a pair. A careless ranking is a
        uniformly random order.
        """
        check_same_length(prompts, completions, "prompts", "lists of answers")
        k = _check_k(completions)
        rng = _generator(rng)
        flat = [c for answers in completions for c in answers]
        utilities = self.utility([p for p in prompts for _ in range(k)], flat).reshape(len(prompts), k)  # (B, K)
        noisy = utilities / self.tau + rng.gumbel(size=utilities.shape)  # (B, K)
        careless = rng.random(len(prompts)) < self.careless
        noisy = np.where(careless[:, None], rng.random(utilities.shape), noisy)  # (B, K)
        return np.argsort(-noisy, axis=1, kind="stable")  # (B, K) best first


def _generator(rng: np.random.Generator | int) -> np.random.Generator:
    """A generator is used as it is; a seed goes through the runtime, so the seed offset moves these labels too."""
    return numpy_rng(rng, "rng")


def _check_k(completions: Sequence[Sequence[str]]) -> int:
    sizes = {len(check_texts(answers, "completions[i]")) for answers in completions}
    if len(sizes) != 1:
        raise ValueError(
            f"completions holds lists of {sorted(sizes)} answers: give every prompt the same number K of answers"
        )
    (k,) = sizes
    if k < 2:
        raise ValueError(f"completions holds K = {k} answer per prompt: a ranking needs K >= 2 (for one, use rate)")
    return k


def check_thresholds(thresholds: Sequence[float]) -> np.ndarray:
    """The cuts of a rating scale as an increasing float array: at least one, so at least 2 points."""
    if isinstance(thresholds, (str, bytes)) or not isinstance(thresholds, Sequence | np.ndarray):
        raise TypeError(f"thresholds must be a list of increasing numbers, got {thresholds!r}: e.g. RATING_THRESHOLDS")
    values = np.array([check_number(t, "thresholds[i]") for t in thresholds], dtype=np.float64)
    if len(values) < 1:
        raise ValueError("thresholds is empty: a rating scale needs at least 2 points, so 1 threshold (default: 5)")
    if np.any(np.diff(values) <= 0):
        raise ValueError(f"thresholds must increase, got {values.tolist()}: a higher point needs a higher utility")
    return values


def word_counts(completions: Sequence[str]) -> np.ndarray:
    """|y|: each answer's length in words, counted as the gold reward counts them (punctuation is a word). (N,)"""
    return np.array([len(normalize_text(message_text(c, "completion")).split()) for c in completions], dtype=float)


@dataclass(frozen=True)
class Population:
    """Groups of annotators in shares: each pair is labelled by one member, drawn by share.

    ``groups`` maps a name to its :class:`Annotator`, ``shares`` the same names to shares that sum to 1.
    """

    groups: Mapping[str, Annotator]
    shares: Mapping[str, float]

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError("the population is empty: give at least one group, e.g. {'all': Annotator()}")
        for name, group in self.groups.items():
            if not isinstance(group, Annotator):
                raise TypeError(f"groups[{name!r}] must be an Annotator, got {type(group).__name__}: Annotator(...)")
        if set(self.groups) != set(self.shares):
            raise ValueError(f"groups {sorted(self.groups)} and shares {sorted(self.shares)} must name the same groups")
        for name, share in self.shares.items():
            check_number(share, f"shares[{name!r}]", low=0, high=1, fix="a group's share of the annotators")
        if not math.isclose(sum(self.shares.values()), 1.0, abs_tol=1e-9):
            raise ValueError(f"shares must sum to 1, got {sum(self.shares.values()):g}: divide each by their sum")

    @property
    def names(self) -> list[str]:
        return list(self.groups)

    def gold(self, prompts: Sequence[str], completions: Sequence[str]) -> dict[str, np.ndarray]:
        """Every group's own gold reward, so a policy can be scored by each group: ``{name: (N,)}``."""
        return {name: group.gold(prompts, completions) for name, group in self.groups.items()}

    def preference_probability(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> np.ndarray:
        """P(first ≻ second) = Σ_g s_g · P_g(first ≻ second): a member drawn by share, then its label. (N,)"""
        return sum(self.shares[g] * a.preference_probability(prompts, first, second) for g, a in self.groups.items())

    def label_pairs(
        self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str], rng: np.random.Generator | int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels (1 where the first answer wins) and the name of the group that gave each: two (N,) arrays."""
        rng = _generator(rng)
        names = np.array(self.names)
        who = rng.choice(len(names), size=len(first), p=[self.shares[n] for n in names])  # (N,)
        p = np.stack([self.groups[n].preference_probability(prompts, first, second) for n in names])  # (G, N)
        labels = (rng.random(len(first)) < p[who, np.arange(len(first))]).astype(int)
        return labels, names[who]


Labeller = Annotator | Population


def relabel(dataset: Dataset, labeller: Labeller, seed: int = 0) -> Dataset:
    """The pairs of a prompt/chosen/rejected dataset, shown in a random order and labelled again by ``labeller``.

    Returns the columns of :func:`~rlhf_edu.core.preferences.build_preference_dataset` (``p_chosen`` is now the
    labeller's probability of its label), plus ``chosen_first`` (1 where the chosen answer was shown first) and, for
    a :class:`Population`, ``group`` (who labelled the pair). The order is drawn fresh, so a position bias does not
    line up with the old labels.
    """
    prompts, a, b = pair_texts(dataset)
    rng = numpy_rng(seed)
    a_first = rng.random(len(prompts)) < 0.5  # (N,)
    first, second = np.where(a_first, a, b).tolist(), np.where(a_first, b, a).tolist()
    labels, groups = _labels(labeller, prompts, first, second, rng)
    p_first = labeller.preference_probability(prompts, first, second)
    relabelled = pair_dataset(prompts, first, second, labels, p_first, gold=_WORLD.gold_reward)
    relabelled = relabelled.add_column("chosen_first", labels.tolist())
    return relabelled if groups is None else relabelled.add_column("group", groups.tolist())


def _labels(
    labeller: Labeller, prompts: Sequence[str], first: Sequence[str], second: Sequence[str], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(labeller, Population):
        return labeller.label_pairs(prompts, first, second, rng)
    if isinstance(labeller, Annotator):
        return labeller.label_pairs(prompts, first, second, rng), None
    raise TypeError(f"labeller must be an Annotator or a Population, got {type(labeller).__name__}")


def demonstration_pairs(world: World, n: int, split: str = "train", seed: int = 0) -> Dataset:
    """Off-policy pairs: two of the world's demonstrations per prompt, labelled by its annotator.

    The same columns as :func:`~rlhf_edu.core.preferences.build_preference_dataset`; pairs of two identical
    answers are dropped, so there can be fewer than ``n`` rows.
    """
    prompts = world.prompts(check_int(n, "n"), split=split)
    rng = numpy_rng(seed)
    first = [world.demonstration(p, rng) for p in prompts]
    second = [world.demonstration(p, rng) for p in prompts]
    keep = [i for i in range(len(prompts)) if first[i] != second[i]]
    prompts, first, second = ([xs[i] for i in keep] for xs in (prompts, first, second))
    labels = np.array(world.label_pairs(prompts, first, second, rng))
    return pair_dataset(prompts, first, second, labels, world.preference_probability(prompts, first, second),
                        gold=world.gold_reward)  # fmt: skip


def mixed_pairs(on_policy: Dataset, off_policy: Dataset, share: float, n: int, seed: int = 0) -> Dataset:
    """``n`` pairs, a ``share`` of them off-policy, drawn without replacement from each, shuffled together."""
    check_number(share, "share", low=0, high=1, fix="the off-policy share of the pairs")
    n_off = round(check_int(n, "n") * share)
    for name, data, want in (("on_policy", on_policy, n - n_off), ("off_policy", off_policy, n_off)):
        if len(data) < want:
            raise ValueError(f"{name} has {len(data)} pairs but the mix needs {want}: build more pairs")
    rng = numpy_rng(seed)
    parts = [on_policy.select(rng.permutation(len(on_policy))[: n - n_off]),
             off_policy.select(rng.permutation(len(off_policy))[:n_off])]  # fmt: skip
    return concatenate_datasets(parts).shuffle(seed=int(rng.integers(2**31)))


# --- a reward model on the world's features, fitted with chapter 7's losses -----------------------------------------
def features(prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
    """φ(x, y): the five gold components and the word count of each answer, in :data:`FEATURES` order. (N, 6)"""
    components = _WORLD.gold_components(prompts, completions)
    return np.column_stack([components[k] for k in COMPONENTS] + [word_counts(completions)])


@dataclass
class LinearReward:
    """r_θ(x, y) = θ · φ(x, y), with the covariance of θ from the fit's curvature (standard errors for intervals)."""

    theta: np.ndarray  # (d,)
    covariance: np.ndarray  # (d, d)
    names: tuple[str, ...] = FEATURES

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        return features(prompts, completions) @ self.theta  # (N,)

    @property
    def stderr(self) -> np.ndarray:
        return np.sqrt(np.diag(self.covariance))

    def weights(self) -> dict[str, float]:
        return dict(zip(self.names, self.theta.tolist()))


def fit_linear(nll: Callable[[torch.Tensor], torch.Tensor], size: int, ridge: float = 1e-2) -> tuple[np.ndarray, ...]:
    """θ̂ = argmin Σ_i nll_i(θ) + (ridge / 2)·‖θ‖², by L-BFGS in float64; returns θ̂ and the inverse Hessian.

    The small ridge keeps a feature that never varies in the data at 0 instead of undefined. The inverse Hessian
    of the penalised negative log-likelihood is the usual large-sample covariance of θ̂.
    """
    theta = torch.zeros(size, dtype=torch.float64, requires_grad=True)

    def objective(t: torch.Tensor) -> torch.Tensor:
        return nll(t).sum() + ridge / 2 * (t**2).sum()

    optimizer = torch.optim.LBFGS(
        [theta], max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = objective(theta)
        loss.backward()
        return loss

    optimizer.step(closure)
    hessian = torch.autograd.functional.hessian(objective, theta.detach())  # (d, d)
    return theta.detach().numpy(), torch.linalg.inv(hessian).numpy()


def fit_pairs(chosen_features: np.ndarray, rejected_features: np.ndarray) -> LinearReward:
    """The Bradley-Terry fit of r_θ = θ · φ on labelled pairs: chapter 7's loss, −log σ(r_c − r_r), summed."""
    chosen, rejected = torch.as_tensor(chosen_features), torch.as_tensor(rejected_features)  # (N, d) each
    theta, covariance = fit_linear(lambda t: bradley_terry_loss(chosen @ t, rejected @ t), chosen.shape[1])
    return LinearReward(theta, covariance)


def fit_rankings(ranked_features: np.ndarray) -> LinearReward:
    """The Plackett-Luce fit (eq:kwise_rm) of r_θ = θ · φ on (B, K, d) features, each row sorted best first."""
    ranked = torch.as_tensor(ranked_features)  # (B, K, d)
    theta, covariance = fit_linear(lambda t: plackett_luce_loss(ranked @ t), ranked.shape[2])
    return LinearReward(theta, covariance)


def rating_probabilities(scores: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """P(rating = j | r) for j = 1 … P under the ordered logit, P(rating ≤ j) = σ(t_j − r): (N,) scores → (N, P).

    Each row is a difference of the cumulative probabilities 0, σ(t_1 − r), …, σ(t_{P−1} − r), 1, so it sums to 1.
    """
    cumulative = torch.sigmoid(thresholds[None, :] - scores[:, None])  # (N, P − 1) P(rating ≤ j)
    zeros, ones = torch.zeros_like(scores)[:, None], torch.ones_like(scores)[:, None]  # (N, 1) each
    return torch.cat([cumulative, ones], dim=1) - torch.cat([zeros, cumulative], dim=1)  # (N, P)


def ordinal_nll(scores: torch.Tensor, ratings: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """−log P(rating | r) of the ordered logit (:func:`rating_probabilities`), for ratings 1 … P. (N,)"""
    probabilities = rating_probabilities(scores, thresholds)  # (N, P)
    return -probabilities.gather(1, (ratings - 1)[:, None]).squeeze(1).clamp(min=1e-300).log()


def fit_ratings(rated_features: np.ndarray, ratings: Sequence[int], points: int) -> LinearReward:
    """The ordered-logit fit of r_θ = θ · φ and the P − 1 thresholds on rated answers; θ's part of the result.

    Thresholds are t_1 and positive gaps (exp of a free parameter), so they stay in order while L-BFGS moves them.
    """
    x = torch.as_tensor(rated_features)  # (N, d)
    r = torch.as_tensor(np.asarray(ratings, dtype=np.int64))
    if len(r) != len(x) or r.min() < 1 or r.max() > check_int(points, "points", low=2, fix="a scale of 2 or more"):
        raise ValueError(f"ratings must be one per row of rated_features, each in 1 … points = {points}")
    d = x.shape[1]

    def nll(params: torch.Tensor) -> torch.Tensor:
        gaps = torch.cat([params.new_zeros(1), params[d + 1 :].exp()])  # (P − 1,) 0, then t_j − t_{j−1} > 0
        return ordinal_nll(x @ params[:d], r, params[d] + gaps.cumsum(0))

    params, covariance = fit_linear(nll, d + points - 1)
    return LinearReward(params[:d], covariance[:d, :d])


# --- recovering a planted flaw -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """A measured quantity with its standard error; ``interval(k)`` is value ± k·stderr."""

    value: float
    stderr: float

    def interval(self, k: float = 3.0) -> tuple[float, float]:
        return self.value - k * self.stderr, self.value + k * self.stderr

    def contains(self, truth: float, k: float = 3.0) -> bool:
        low, high = self.interval(k)
        return low <= truth <= high


def _check_labels(labels: Sequence[int], *columns) -> tuple[np.ndarray, ...]:
    """Labels as a 0/1 array, and each (column, name) pair after it as a float array of the same length."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be a list of 0s and 1s, 1 where the first answer won")
    arrays = [labels]
    for values, name in zip(columns[0::2], columns[1::2]):
        values = np.asarray(values, dtype=np.float64)
        if values.shape != labels.shape:
            raise ValueError(f"{name} has shape {values.shape} but labels {labels.shape}: pass one value per label")
        arrays.append(values)
    return tuple(arrays)


def ratio_estimate(theta: np.ndarray, covariance: np.ndarray, top: int, bottom: int) -> Estimate:
    """θ_top / θ_bottom with its delta-method standard error: ∇ = (1/θ_b, −θ_t/θ_b²), var = ∇ᵀ Σ ∇."""
    ratio = theta[top] / theta[bottom]
    gradient = np.zeros_like(theta)
    gradient[top], gradient[bottom] = 1 / theta[bottom], -ratio / theta[bottom]
    return Estimate(float(ratio), float(np.sqrt(gradient @ covariance @ gradient)))


def length_regression(labels: Sequence[int], gold_gap: np.ndarray, length_gap: np.ndarray) -> tuple[np.ndarray, ...]:
    """θ̂ = (θ_g, θ_n) and its covariance, of P(first ≻ second) = σ(θ_g · Δg + θ_n · Δ|y|), by logistic regression.

    Δg is the gold gap (first − second) and Δ|y| the length gap. Holding the gold gap fixed is what makes it a
    *length-controlled* comparison: whatever the labels pay for length beyond gold, θ_n measures.
    """
    labels, gold_gap, length_gap = _check_labels(labels, gold_gap, "gold_gap", length_gap, "length_gap")
    return logistic_regression(np.column_stack([gold_gap, length_gap]), labels)


def length_bias_estimate(labels: Sequence[int], gold_gap: np.ndarray, length_gap: np.ndarray) -> Estimate:
    """λ̂ = θ_n / θ_g of :func:`length_regression`: what one word is worth to the labeller, in gold units."""
    return ratio_estimate(*length_regression(labels, gold_gap, length_gap), 1, 0)


def position_bias_estimate(labels: Sequence[int], gold_gap: np.ndarray) -> Estimate:
    """b̂, gold units, from P(first ≻ second) = σ(θ_g · Δg + θ_0): b̂ = θ_0 / θ_g, the first answer's head start."""
    labels, gold_gap = _check_labels(labels, gold_gap, "gold_gap")
    theta, covariance = logistic_regression(np.column_stack([gold_gap, np.ones_like(gold_gap)]), labels)
    return ratio_estimate(theta, covariance, 1, 0)


def careless_share_estimate(labels: Sequence[int], p_careful: np.ndarray) -> Estimate:
    """ε̂ by maximum likelihood, given each pair's probability p_careful of a careful label: q = (1 − ε)·h + ε/2.

    h is p_careful for a 1 and 1 − p_careful for a 0. The log-likelihood is concave in ε, so its root is found by
    bisection on [0, 1]; the standard error is the observed information's, 1 / sqrt(Σ (1/2 − h)² / q²).
    """
    labels, p_careful = _check_labels(labels, p_careful, "p_careful")
    h = np.where(labels == 1, p_careful, 1 - p_careful)  # (N,) the careful annotator's probability of this label

    def slope(eps: float) -> float:
        return float(np.sum((0.5 - h) / (h + eps * (0.5 - h))))

    low, high = 0.0, 1.0
    if slope(low) <= 0:  # the labels are no noisier than a careful annotator's: the maximum is at 0
        high = 0.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if slope(mid) > 0 else (low, mid)
    eps = (low + high) / 2
    q = h + eps * (0.5 - h)
    return Estimate(eps, float(1 / np.sqrt(np.sum((0.5 - h) ** 2 / q**2))))


def length_controlled_win_rate(
    labels: Sequence[int], gold_gap: np.ndarray, length_gap: np.ndarray
) -> dict[str, float | Estimate]:
    """A judge's raw win rate, and the win rate its own regression gives at equal length (AlpacaEval's LC idea).

    Fits :func:`length_regression` once, then averages σ(θ_g · Δg) over the pairs: the same judge, with the length
    term set to zero. Returns ``raw``, ``length_controlled`` and the ``length_bias`` estimate θ_n / θ_g.
    """
    theta, covariance = length_regression(labels, gold_gap, length_gap)
    controlled = 1 / (1 + np.exp(-theta[0] * np.asarray(gold_gap, dtype=np.float64)))
    return {
        "raw": float(np.mean(labels)),
        "length_controlled": float(controlled.mean()),
        "length_bias": ratio_estimate(theta, covariance, 1, 0),
    }


def ask_twice(
    labeller: Annotator,
    prompts: Sequence[str],
    first: Sequence[str],
    second: Sequence[str],
    rng: np.random.Generator | int,
) -> np.ndarray:
    """The remedy for position bias: ask with ``first`` shown first, then swapped, and average. (N,) in {0, ½, 1}.

    Each answer gets the head start once, so neither order is favoured: the expected label of a pair is
    ½ [σ((Δu + b)/τ) + σ((Δu − b)/τ)], symmetric in the order, though pulled toward ½ compared with σ(Δu/τ). A pair
    the two asks disagree on comes out a tie.
    """
    if not isinstance(labeller, Annotator):
        raise TypeError(f"labeller must be an Annotator, got {type(labeller).__name__}: ask one person twice")
    rng = _generator(rng)
    as_shown = labeller.label_pairs(prompts, first, second, rng)
    swapped = 1 - labeller.label_pairs(prompts, second, first, rng)
    return (as_shown + swapped) / 2


# --- whose preferences: a pooled reward model, a Condorcet cycle ----------------------------------------------------
def best_of_n_gains(scores: np.ndarray, golds: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Each group's gain from best-of-n chosen by ``scores``, per prompt: E[gold of the pick] − mean gold. {name: (M,)}

    ``scores`` and each gold are (M, N): N answers to each of M prompts. The pick is the same for every group;
    what it is worth differs (:func:`~rlhf_edu.core.stats.best_of_n_per_prompt` averages over the n-subsets).
    """
    return {name: best_of_n_per_prompt(scores, gold, n) - np.asarray(gold).mean(axis=1) for name, gold in golds.items()}


def preference_matrix(labeller: Labeller, prompt: str, answers: Sequence[str]) -> np.ndarray:
    """P[i, j] = P(answers[i] ≻ answers[j]) for one prompt's K answers; the diagonal is ½. (K, K)"""
    k = len(check_texts(answers, "answers"))
    first = [answers[i] for i in range(k) for _ in range(k)]
    second = [answers[j] for _ in range(k) for j in range(k)]
    return labeller.preference_probability([prompt] * k * k, first, second).reshape(k, k)


def majority_cycle(preferences: np.ndarray) -> list[int] | None:
    """Three answers i → j → k → i, each preferred to the next by a majority (P > ½), or None if there is none."""
    k = preferences.shape[0]
    for i in range(k):
        for j in range(k):
            for m in range(k):
                if len({i, j, m}) == 3 and min(preferences[i, j], preferences[j, m], preferences[m, i]) > 0.5:
                    return [i, j, m]
    return None


def bradley_terry_scores(preferences: np.ndarray) -> np.ndarray:
    """The scalar scores s (mean 0) whose σ(s_i − s_j) best fits P: argmax Σ_{i≠j} P_ij · log σ(s_i − s_j). (K,)

    The expected Bradley-Terry log-likelihood of labels drawn from P, as many labels would give it.
    """
    p = torch.as_tensor(preferences, dtype=torch.float64)  # (K, K)
    off_diagonal = ~torch.eye(len(p), dtype=torch.bool)

    def nll(s: torch.Tensor) -> torch.Tensor:
        gaps = s[:, None] - s[None, :]  # (K, K)
        return (p * bradley_terry_loss(gaps, torch.zeros_like(gaps)))[off_diagonal]

    scores, _ = fit_linear(nll, len(p), ridge=1e-9)
    return scores - scores.mean()


def broken_majorities(preferences: np.ndarray, scores: np.ndarray) -> list[tuple[int, int]]:
    """The pairs (i, j) a majority prefers (P_ij > ½) that the scores order the other way (s_i < s_j)."""
    k = len(scores)
    return [(i, j) for i in range(k) for j in range(k) if preferences[i, j] > 0.5 and scores[i] < scores[j]]


# --- label formats at an equal budget ------------------------------------------------------------------------------
FORMATS = ("pairs", "ratings", "rankings")


@dataclass
class AnswerPool:
    """N answers to each of M prompts, with their features: what a format's judgements are drawn from."""

    prompts: list[str]  # (M,)
    completions: list[list[str]]  # (M, N)
    features: np.ndarray  # (M, N, d)

    @classmethod
    def from_flat(cls, prompts: Sequence[str], completions: Sequence[str], n: int) -> AnswerPool:
        """From a rollout's flat lists, prompt 0's ``n`` answers first (as :func:`sample_rollouts` orders them)."""
        check_same_length(prompts, completions, "prompts", "completions")
        n = check_int(n, "n", low=2, fix="a pair needs two answers to one prompt")
        if not completions or len(completions) % n:
            raise ValueError(f"completions holds {len(completions)} answers, not n = {n} per prompt: pass n per prompt")
        m = len(completions) // n
        phi = features(prompts, completions).reshape(m, n, -1)
        return cls([prompts[i * n] for i in range(m)], [list(completions[i * n : (i + 1) * n]) for i in range(m)], phi)

    def texts(self, rows: np.ndarray, columns: np.ndarray) -> tuple[list[str], list[str]]:
        return [self.prompts[r] for r in rows], [self.completions[r][c] for r, c in zip(rows, columns)]


def fit_format(
    fmt: str,
    pool: AnswerPool,
    annotator: Annotator,
    budget: int,
    rng: np.random.Generator | int,
    k: int = 4,
    thresholds: Sequence[float] = RATING_THRESHOLDS,
) -> LinearReward:
    """Draw ``budget`` judgements of one format from the pool, have ``annotator`` make them, and fit r_θ on them.

    A judgement is one pair, one rating of one answer, or one ranking of ``k`` answers, each to a random prompt.
    """
    _check_format(fmt)
    rng = _generator(rng)
    m, n, _ = pool.features.shape
    k = check_int(k, "k", low=2, fix="a ranking orders at least 2 answers")
    if k > n:
        raise ValueError(f"k = {k} is more answers than the pool has per prompt ({n}): rank at most {n}")
    rows = rng.integers(m, size=check_int(budget, "budget"))  # (J,)
    size = {"pairs": 2, "ratings": 1, "rankings": k}[fmt]
    columns = np.stack([rng.choice(n, size=size, replace=False) for _ in rows])  # (J, size)
    if fmt == "ratings":
        prompts, answers = pool.texts(rows, columns[:, 0])
        ratings = annotator.rate(prompts, answers, rng, thresholds)
        return fit_ratings(pool.features[rows, columns[:, 0]], ratings, len(thresholds) + 1)
    answers = [[pool.completions[r][c] for c in cols] for r, cols in zip(rows, columns)]
    order = annotator.rank([pool.prompts[r] for r in rows], answers, rng)  # (J, size) best first
    ranked = pool.features[rows[:, None], np.take_along_axis(columns, order, axis=1)]  # (J, size, d)
    return fit_pairs(ranked[:, 0], ranked[:, 1]) if fmt == "pairs" else fit_rankings(ranked)


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(map(repr, FORMATS))}")
    return fmt


def held_out_metrics(reward: LinearReward, pool: AnswerPool, annotator: Annotator) -> dict[str, float]:
    """A reward model measured as chapter 7 measures one, on a held-out pool labelled by ``annotator``.

    ``within_prompt_agreement`` with the annotator's gold over every same-prompt pair, and ``ceiling_share``,
    (expected accuracy − ½) / (Bayes accuracy − ½), on the pairs of answers 0 and 1, 2 and 3, … of each prompt.
    The annotator's utility is linear in the features (:meth:`Annotator.feature_weights`), so it is read off the
    pool's features rather than recomputed from the texts.
    """
    weights = annotator.feature_weights()  # (d,)
    scores = pool.features @ reward.theta  # (M, N)
    gold = pool.features[..., : len(COMPONENTS)] @ weights[: len(COMPONENTS)]  # (M, N) the annotator's own gold
    utility = pool.features @ weights  # (M, N)
    half = pool.features.shape[1] // 2
    first, second = slice(0, 2 * half, 2), slice(1, 2 * half, 2)  # answers 0, 2, … against 1, 3, …
    p_first = annotator.probability(utility[:, first] - utility[:, second]).reshape(-1)  # (M·N/2,)
    score_first = torch.as_tensor(scores[:, first].reshape(-1))
    score_second = torch.as_tensor(scores[:, second].reshape(-1))
    accuracy = expected_accuracy(score_first, score_second, p_first)
    return {
        "within_prompt_agreement": within_prompt_agreement(scores, gold),
        "ceiling_share": ceiling_share(accuracy, float(np.maximum(p_first, 1 - p_first).mean())),
    }


def format_comparison(
    train: AnswerPool, test: AnswerPool, annotator: Annotator, budget: int, seeds: Sequence[int], k: int = 4
) -> dict[str, dict[str, np.ndarray]]:
    """Each format's held-out metrics at ``budget`` judgements, one value per seed: ``{format: {metric: (S,)}}``."""
    results = {fmt: {} for fmt in FORMATS}
    for seed in seeds:
        for fmt in FORMATS:
            reward = fit_format(fmt, train, annotator, budget, numpy_rng(seed), k=k)
            for name, value in held_out_metrics(reward, test, annotator).items():
                results[fmt].setdefault(name, []).append(value)
    return {fmt: {name: np.array(values) for name, values in metrics.items()} for fmt, metrics in results.items()}


# --- which pairs to label ------------------------------------------------------------------------------------------
STRATEGIES = ("random", "uncertainty")


def candidate_pairs(pool: AnswerPool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every same-prompt pair (i < j) of the pool whose two answers differ in features: its row, and its two columns.

    A pair with φ(a) = φ(b) ("the pizza is tasty" against "the pizza is great") is a coin flip to the annotator and
    moves no weight of r_θ (its gradient is 0); uncertainty sampling would pick it first, since its margin is 0 for
    every θ, and learn nothing. Three (C,) arrays.
    """
    m, n, _ = pool.features.shape
    upper_i, upper_j = np.triu_indices(n, k=1)
    rows, left, right = np.repeat(np.arange(m), len(upper_i)), np.tile(upper_i, m), np.tile(upper_j, m)
    differ = np.abs(pool.features[rows, left] - pool.features[rows, right]).max(axis=1) > 0  # (C,)
    return rows[differ], left[differ], right[differ]


def active_reward(
    pool: AnswerPool,
    annotator: Annotator,
    budget: int,
    strategy: str,
    rng: np.random.Generator | int,
    start: int = 20,
    batch: int = 20,
) -> LinearReward:
    """Label ``budget`` of the pool's pairs, chosen at random or by uncertainty sampling, and fit r_θ on them.

    Uncertainty sampling labels ``start`` random pairs, fits, then labels the ``batch`` unlabelled pairs the current
    fit is least sure of (the smallest |r_θ(a) − r_θ(b)|), refits, and repeats until the budget is spent. Every
    candidate's label is drawn once, up front, so two strategies that pick the same pair see the same label.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: use one of {', '.join(map(repr, STRATEGIES))}")
    rng = _generator(rng)
    rows, left, right = candidate_pairs(pool)
    prompts, first = pool.texts(rows, left)
    second = pool.texts(rows, right)[1]
    first_wins = annotator.label_pairs(prompts, first, second, rng).astype(bool)  # (C,)
    winner = np.where(first_wins, left, right)
    loser = np.where(first_wins, right, left)
    gaps = pool.features[rows, winner] - pool.features[rows, loser]  # (C, d) chosen minus rejected
    budget = check_int(budget, "budget")
    if budget > len(rows):
        raise ValueError(f"budget = {budget} is more pairs than the pool holds ({len(rows)}): lower it")
    picked = list(rng.choice(len(rows), size=budget if strategy == "random" else min(start, budget), replace=False))
    while True:
        reward = fit_pairs(gaps[picked], np.zeros_like(gaps[picked]))
        if len(picked) == budget:
            return reward
        margin = np.abs(gaps @ reward.theta)  # (C,)
        margin[picked] = np.inf
        picked += list(np.argsort(margin, kind="stable")[: min(batch, budget - len(picked))])


# --- the populations the notebooks measure ------------------------------------------------------------------------
WARM = Annotator(weights={"correctness": 1.0, "relevance": 1.0, "tone": 3.0, "repetition": 2.0})  # kind words first
FACTS = Annotator(weights={"correctness": 3.0, "relevance": 1.0, "concision": 1.0, "repetition": 2.0})  # no praise


def two_groups(warm_share: float) -> Population:
    """Notebook 05's population: the :data:`WARM` group in ``warm_share``, the :data:`FACTS` group in the rest."""
    check_number(warm_share, "warm_share", low=0, high=1, fix="the warm group's share of the annotators")
    return Population({"warm": WARM, "facts": FACTS}, {"warm": warm_share, "facts": 1 - warm_share})


# A Condorcet cycle: three groups (weights on correctness, tone and concision; relevance 1 and repetition 2 for all),
# decisive (τ = 0.25), in equal shares, over three answers to one prompt. Each pair is won 2 groups to 1.
CONDORCET_PROMPT = "describe the cat"
CONDORCET_ANSWERS = {
    "terse": "the cat is small",
    "friendly": "the cat is lovely and fun",
    "thorough": "the cat is small and soft and grey and lovely and fun",
}
CONDORCET_GROUPS = {
    name: Annotator({"correctness": c, "relevance": 1.0, "tone": t, "concision": k, "repetition": 2.0}, tau=0.25)
    for name, (c, t, k) in {
        "fact-checkers": (4.0, 2.0, 1.0),
        "skimmers": (1.0, 0.0, 3.0),
        "enthusiasts": (0.5, 4.0, 3.0),
    }.items()
}
