"""Plausible wrong answers to notebook 11's function exercises, each with the case its check must name."""

import torch

from tests.exercise_tools import WrongVersion


# ----------------------------------------------------------------------------------------------- 11.1 group advantages
def _advantages(rewards, algorithm, *, bessel=True, eps=1e-4, others_normaliser=-1, over="group"):
    """RLOO or GRPO with one slip: the std's normaliser, ε, the leave-one-out normaliser, or the batch as the group."""
    G = rewards.shape[1]
    if algorithm == "rloo":
        if others_normaliser is None:  # the baseline averages all G rewards, the sample's own included
            return rewards - rewards.mean(dim=1, keepdim=True)
        return rewards - (rewards.sum(dim=1, keepdim=True) - rewards) / (G + others_normaliser)
    if over == "batch":
        return (rewards - rewards.mean()) / (rewards.std() + eps)
    return (rewards - rewards.mean(dim=1, keepdim=True)) / (
        rewards.std(dim=1, keepdim=True, correction=int(bessel)) + eps
    )


# ------------------------------------------------------------------------------------------------------------ 11.2 GAE
def _gae(rewards, values, mask, gamma, lam, *, sign=1, with_lambda=True, mask_inputs=True, baseline=True):
    """GAE with one slip: δ's sign, λ left out of the recursion, junk at the padding read, or V left out."""
    if mask_inputs:
        rewards, values = rewards * mask, values * mask
    values = values if baseline else torch.zeros_like(values)
    advantages, next_value, next_advantage = torch.zeros_like(values), 0.0, 0.0
    for t in reversed(range(values.shape[1])):
        delta = sign * (rewards[:, t] + gamma * next_value - values[:, t])
        advantages[:, t] = delta + gamma * (lam if with_lambda else 1.0) * next_advantage
        next_value, next_advantage = values[:, t], advantages[:, t]
    return advantages * mask


# ------------------------------------------------------------------------------------------------------ 11.5 the clip
def _clipped(logps, old_logps, advantages, mask, epsilon, *, keep=torch.min, inverted=False, masked=True):
    """The clipped loss with one slip: max for min, the clip alone, the ratio upside down, or the padding kept."""
    ratio = (old_logps - logps).exp() if inverted else (logps - old_logps).exp()
    advantages = advantages.unsqueeze(1)
    clipped = ratio.clamp(1 - epsilon, 1 + epsilon) * advantages
    losses = -(clipped if keep is None else keep(ratio * advantages, clipped))
    return losses * mask if masked else losses


WRONG = {
    "11.1": [
        WrongVersion(  # a wrong normaliser: torch.std(correction=0), NumPy's default, divides by G
            "GRPO's std divided by G, not G − 1",
            lambda rewards, algorithm: _advantages(rewards, algorithm, bessel=False),
            'a group of G = 2, "grpo"',
        ),
        WrongVersion(  # forgetting a term: the guard against a zero std
            "GRPO without ε",
            lambda rewards, algorithm: _advantages(rewards, algorithm, eps=0.0),
            'a group whose rewards are all equal (every advantage is 0), "grpo"',
        ),
        WrongVersion(  # the leave-one-out mean over G, not the G − 1 others
            "RLOO's leave-one-out sum divided by G",
            lambda rewards, algorithm: _advantages(rewards, algorithm, others_normaliser=0),
            'a group whose rewards are all equal (every advantage is 0), "rloo"',
        ),
        WrongVersion(  # RLOO taken for Dr. GRPO: the sample stays in its own baseline
            "RLOO's baseline with the sample itself in it",
            lambda rewards, algorithm: _advantages(rewards, algorithm, others_normaliser=None),
            'a group of G = 2, "rloo"',
        ),
        WrongVersion(  # the mean and std of the whole batch, where each prompt's group is its own
            "GRPO normalised over the batch, not the group",
            lambda rewards, algorithm: _advantages(rewards, algorithm, over="batch"),
            'two prompts whose rewards differ in scale (each group is its own), "grpo"',
        ),
    ],
    "11.2": [
        WrongVersion(  # a sign flip: δ = V(s_t) − r_t − γV(s_{t+1})
            "the TD residual with its sign flipped",
            lambda *args: _gae(*args, sign=-1),
            "a score of 2 on the last token, V = 0, γ = λ = 1 (every advantage is 2)",
        ),
        WrongVersion(  # forgetting a term: the recursion discounts by γ alone
            "λ left out of the recursion",
            lambda *args: _gae(*args, with_lambda=False),
            "λ = 0 (each advantage is the TD residual δ_t)",
        ),
        WrongVersion(  # forgetting the baseline: discounted rewards, no −V(s_t)
            "V left out (the discounted reward to go)",
            lambda *args: _gae(*args, baseline=False),
            "γ = 0 (each advantage is r_t − V(s_t))",
        ),
        WrongVersion(  # a mask applied to the output only: the last token bootstraps from the padding's value
            "the padding's rewards and values read",
            lambda *args: _gae(*args, mask_inputs=False),
            "rows padded after 3 and 2 tokens, with junk rewards and values at the padding",
        ),
    ],
    "11.5": [
        WrongVersion(  # a sign flip of the bound: max in place of min
            "max in place of min",
            lambda *args: _clipped(*args, keep=torch.max),
            "A = 2 and ratios above 1 + ε (the clip holds ρ at 1 + ε)",
        ),
        WrongVersion(  # forgetting a term: the clipped objective alone, so a step the wrong way is not corrected
            "the clipped term alone, no min",
            lambda *args: _clipped(*args, keep=None),
            "A = −2 and ratios above 1 + ε (not clipped: a step the wrong way is corrected)",
        ),
        WrongVersion(  # a sign flip: ρ = π_old/π
            "the ratio upside down",
            lambda *args: _clipped(*args, inverted=True),
            "ratios inside [1 − ε, 1 + ε] with A = 1.5 (the loss is −ρA)",
        ),
        WrongVersion(  # a mask forgotten: the padding's tokens keep a loss
            "the padding not masked",
            lambda *args: _clipped(*args, masked=False),
            "a row padded after 2 tokens (the loss must be 0 at the padding)",
        ),
    ],
}
