"""Notebook 11's exercises (chapter 11, policy gradients): group advantages, GAE, the theorem, k in a loss, the clip."""

from __future__ import annotations

import functools

import torch

from ..core.runtime import torch_generator
from ..objective import kl_divergence
from ..policy_gradients import clipped_surrogate_loss, gae_advantages, grpo_advantages, rloo_advantages
from ..regularization import kl_estimate
from .checks import Case, Exercise, Prediction, close, register


# ----------------------------------------------------------------------------------------------- 11.1 group advantages
def group_advantages(rewards: torch.Tensor, algorithm: str) -> torch.Tensor:
    """The library's RLOO or GRPO advantage of ``rewards`` (P, G): the reference of exercise 11.1."""
    return rloo_advantages(rewards) if algorithm == "rloo" else grpo_advantages(rewards, scale_rewards="group")


def _advantage_cases() -> list[Case]:
    """Each algorithm on a group of equal rewards, G = 2, the book's group, groups of two scales and random rewards."""
    generator = torch_generator(11)
    random_rewards = torch.randn(3, 6, generator=generator, dtype=torch.float64)  # (P, G)
    groups = [
        ("a group whose rewards are all equal (every advantage is 0)", torch.full((1, 4), 0.5, dtype=torch.float64)),
        ("a group of G = 2", torch.tensor([[0.3, 1.7]], dtype=torch.float64)),
        ("the group [1, 0, 0, 0] of section 1", torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)),
        (
            "two prompts whose rewards differ in scale (each group is its own)",
            torch.tensor([[0.0, 1.0, 2.0, 3.0], [10.0, 20.0, 30.0, 40.0]], dtype=torch.float64),
        ),
        ("random rewards, 3 prompts of G = 6", random_rewards),
    ]
    return [
        Case(f'{name}, "{algorithm}"', (rewards, algorithm))
        for algorithm in ("rloo", "grpo")
        for name, rewards in groups
    ]


# ------------------------------------------------------------------------------------------------------------ 11.2 GAE
def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """The library's GAE advantages (B, T), without the returns: the reference of exercise 11.2."""
    return gae_advantages(rewards, values, mask, gamma=gamma, lam=lam)[0]


def _gae_cases() -> list[Case]:
    """A score at the end, γ or λ at 0 and 1, random rows, padding that holds junk, one token, and no token at all."""
    generator = torch_generator(12)
    rewards, values = torch.randn(2, 3, 5, generator=generator, dtype=torch.float64)  # (B, T) each
    full = torch.ones(3, 5, dtype=torch.float64)  # (B, T)
    padded = torch.tensor([[1.0] * 5, [1.0] * 3 + [0.0] * 2, [1.0] * 2 + [0.0] * 3], dtype=torch.float64)
    scored = torch.tensor([[0.0, 0.0, 0.0, 2.0]], dtype=torch.float64)  # (1, 4): the score on the last token only
    return [
        Case("a score of 2 on the last token, V = 0, γ = λ = 1 (every advantage is 2)",
             (scored, torch.zeros_like(scored), torch.ones_like(scored), 1.0, 1.0)),
        Case("γ = 0 (each advantage is r_t − V(s_t))", (rewards, values, full, 0.0, 0.95)),
        Case("λ = 0 (each advantage is the TD residual δ_t)", (rewards, values, full, 0.9, 0.0)),
        Case("γ = λ = 1 (the reward still to come minus V(s_t))", (rewards, values, full, 1.0, 1.0)),
        Case("random rewards and values, γ = 0.9, λ = 0.8", (rewards, values, full, 0.9, 0.8)),
        Case("rows padded after 3 and 2 tokens, with junk rewards and values at the padding",
             (rewards, values, padded, 0.9, 0.8)),
        Case("a one-token completion", (rewards[:1, :1], values[:1, :1], full[:1, :1], 0.9, 0.8)),
        Case("a zero-length completion (a row of padding only)", (rewards[:2], values[:2], padded[:2] * 0, 1.0, 0.95)),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------- 11.3 the theorem
@functools.lru_cache(maxsize=1)
def section_2_bandit() -> tuple[torch.Tensor, torch.Tensor]:
    """Section 2's bandit as the notebook builds it: π_ref (A,) and the gold rewards (A,) of "add 3 and 5"."""
    from .. import World, zoo  # loads a checkpoint: only when the check runs
    from ..bandit import completion_bandit
    from ..core.runtime import get_device

    model, tokenizer = zoo.load("sft", device=get_device())
    _, ref_probs, rewards = completion_bandit(model, tokenizer, World(seed=0), "add 3 and 5", k=32, seed=0)
    return ref_probs, rewards


def _reward_gradient() -> tuple[torch.Tensor, torch.Tensor]:
    """∇θ E_π[r] at π_θ = π_ref by autograd, twice: what the sums with b = 0 and with b = E_π[r] must both give."""
    ref_probs, rewards = section_2_bandit()
    theta = ref_probs.log().clone().requires_grad_()  # (A,) logits
    (gradient,) = torch.autograd.grad((torch.softmax(theta, -1) * rewards).sum(), theta)
    return gradient, gradient.clone()


# ------------------------------------------------------------------------------------------------ 11.4 k in a loss
P = (0.6, 0.3, 0.1)  # p = softmax(θ) with θ = log P
Q = (0.2, 0.5, 0.3)  # q, the reference


def _pathwise_gradients() -> dict[str, torch.Tensor]:
    """E_p[∇θ k(a)] for k1, k2, k3: the mean over a ~ p of each estimate's gradient, taken through log p(a) only."""
    theta = torch.tensor(P, dtype=torch.float64).log().requires_grad_()
    p, log_q = torch.softmax(theta, -1).detach(), torch.tensor(Q, dtype=torch.float64).log()  # p is a weight: no grad
    means = {}
    for estimator in ("k1", "k2", "k3"):
        (means[estimator],) = torch.autograd.grad(
            (p * kl_estimate(torch.log_softmax(theta, -1), log_q, estimator)).sum(), theta
        )
    return means


def _kl_gradients() -> dict[str, torch.Tensor]:
    """The exact gradients of KL(p‖q) and KL(q‖p) with respect to θ, by autograd through ``kl_divergence``."""
    theta = torch.tensor(P, dtype=torch.float64).log().requires_grad_()
    q = torch.tensor(Q, dtype=torch.float64)
    (forward,) = torch.autograd.grad(kl_divergence(torch.softmax(theta, -1), q), theta)
    (reverse,) = torch.autograd.grad(kl_divergence(q, torch.softmax(theta, -1)), theta)
    return {"∇KL(p‖q)": forward, "∇KL(q‖p)": reverse}


def _which_gradient(gradient: torch.Tensor) -> str:
    """Which of 0, ∇KL(p‖q) and ∇KL(q‖p) ``gradient`` is (the prediction's outcome)."""
    candidates = {"0": torch.zeros_like(gradient)} | _kl_gradients()
    return next(name for name, g in candidates.items() if torch.allclose(gradient, g, atol=1e-9))


def _by_estimator(answer: object, expected: dict[str, torch.Tensor]) -> str | None:
    """Compare a dict {"k1": …, "k2": …, "k3": …} with the expected, estimator by estimator; say which one is off."""
    if not isinstance(answer, dict) or set(answer) != set(expected):
        return 'your answer must be a dict with the keys "k1", "k2" and "k3"'
    for estimator, want in expected.items():
        problem = close(1e-6)(answer[estimator], want)
        if problem is not None:
            return f'for "{estimator}", {problem}'
    return None


# ------------------------------------------------------------------------------------------------------ 11.5 the clip
def clipped_losses(
    logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """The library's per-token clipped loss (B, T), without the metrics: the reference of exercise 11.5."""
    return clipped_surrogate_loss(logps, old_logps, advantages, mask, epsilon=epsilon)[0]


def _clip_cases() -> list[Case]:
    """Ratios inside the clip, beyond it on both sides with either sign of A, padding, and random rows."""
    generator = torch_generator(15)
    old = -torch.rand(2, 4, generator=generator, dtype=torch.float64) * 3  # (B, T) log π_old
    full = torch.ones(2, 4, dtype=torch.float64)  # (B, T)

    def at(log_ratio: float, advantage: float) -> tuple:
        """Both rows at one log-ratio log ρ and one advantage A (per completion, (B,))."""
        return old + log_ratio, old, torch.full((2,), advantage, dtype=torch.float64), full, 0.2

    random_logps = old + torch.randn(2, 4, generator=generator, dtype=torch.float64) * 0.3
    padded = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    return [
        Case("ratios inside [1 − ε, 1 + ε] with A = 1.5 (the loss is −ρA)", at(0.1, 1.5)),
        Case("A = 2 and ratios above 1 + ε (the clip holds ρ at 1 + ε)", at(0.5, 2.0)),
        Case("A = −2 and ratios below 1 − ε (the clip holds ρ at 1 − ε)", at(-0.5, -2.0)),
        Case("A = −2 and ratios above 1 + ε (not clipped: a step the wrong way is corrected)", at(0.5, -2.0)),
        Case("A = 2 and ratios below 1 − ε (not clipped)", at(-0.5, 2.0)),
        Case("a row padded after 2 tokens (the loss must be 0 at the padding)",
             (random_logps, old, torch.tensor([1.0, -0.5], dtype=torch.float64), padded, 0.2)),
        Case("random ratios and advantages of both signs, ε = 0.1",
             (random_logps, old, torch.tensor([0.7, -1.2], dtype=torch.float64), full, 0.1)),
    ]  # fmt: skip


register(
    Exercise(
        "11.1",
        success="RLOO subtracts the mean of the other G − 1; GRPO centres on the group and divides by its std + ε",
        hints=(
            "which rewards make up an answer's group, and which of them does RLOO's baseline leave out? For GRPO, "
            "what would a group of equal rewards make you divide by?",
            "eq:RLOO_advantage: A_i = r_i − (Σ_j r_j − r_i)/(G − 1), the mean of the other G − 1; eq:GRPO_ADV: "
            "A_i = (r_i − mean(r))/(std(r) + ε) within the group, with section 1's std (divided by G − 1) and ε",
        ),
        reference=group_advantages,
        cases=_advantage_cases,
    ),
    Exercise(
        "11.2",
        success="GAE runs backwards, A_t = δ_t + γλ·A_{t+1}, with V = 0 past the last token and nothing from padding",
        hints=(
            "A_t needs what comes after t: in which direction along the completion can you compute it in one pass? "
            "And what should a padded position pass on to the token before it?",
            "eq:TD_RESIDUAL: δ_t = r_t + γ·V(s_{t+1}) − V(s_t); eq:GAE_DFN: A_t = Σ_l (γλ)^l·δ_{t+l}, a discounted "
            "sum of the TD residuals still to come, with V = 0 past a completion's last token and no reward or "
            "value read from the padding",
        ),
        reference=gae,
        cases=_gae_cases,
    ),
    Exercise(
        "11.3",
        success="with b = 0 and with b = E_π[r] the sum is ∇E[r]: Σ_a π(a)·∇log π(a) = ∇Σ_a π(a) = ∇1 = 0",
        hints=(
            "∇θ log π(a) is a vector with one entry per logit θ_j: how does log π(a) of a softmax change when θ_a "
            "moves, and when another θ_j does?",
            "eq:policy_gradient_expectation on the bandit, with the expectation an exact sum over the arms: "
            "∇θ E_π[r] = Σ_a π(a)·(r(a) − b)·∇θ log π(a), at π_θ = π_ref, with the score function ∇θ log π(a) of a "
            "softmax",
        ),
        expected=_reward_gradient,
        compare=close(1e-5),
    ),
    Exercise(
        "11.4",
        success="E_p[∇k1] = 0, E_p[∇k2] = ∇KL(p‖q), E_p[∇k3] = ∇KL(q‖p): only k2 in a loss penalises KL(p‖q)",
        hints=(
            "the sampled token a is fixed: through which quantity alone does k(a) depend on θ, and may the weight "
            "p(a) of the mean carry gradient too?",
            "eq:kl_approx with log r = log q(a) − log p(a): k1 = −log r, k2 = ½(log r)², k3 = (r − 1) − log r, each "
            "differentiated through log p(a) only; the mean weighs each token's gradient by p(a), a constant",
        ),
        expected=_pathwise_gradients,
        compare=_by_estimator,
        prediction=Prediction(
            ("0", "∇KL(p‖q)", "∇KL(q‖p)"),
            lambda means: _which_gradient(means["k1"]),
            "k1's gradient is ∇log p(a), and its mean Σ_a p(a)·∇log p(a) = ∇Σ_a p(a) is 0: an unbiased estimate of the "
            "KL whose gradient in a loss pushes nothing, which is why k1 goes into the reward",
        ),
    ),
    Exercise(
        "11.5",
        success="−min(ρA, clip(ρ, 1 − ε, 1 + ε)·A): the clip removes the gradient only where A favours moving further",
        hints=(
            "PPO's objective weighs A by the probability ratio ρ twice, once clipped: which of the two does it keep, "
            "and does the loss carry the objective's sign? Where do the completion's one advantage and the mask "
            "come in?",
            "eq:PPO_EQN per token: ρ = π(y_t)/π_old(y_t), the objective min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A), A the "
            "completion's advantage shared by its tokens, and no loss at the padding",
        ),
        reference=clipped_losses,
        cases=_clip_cases,
    ),
)
