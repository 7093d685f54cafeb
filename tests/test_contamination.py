"""Chapter 16's contamination: the split by prompt string, the inflation as a difference of gains, the likelihood gap
against its definition, and the AUROC against a hand count and a simulation of its standard error."""

import copy

import numpy as np
import pytest
import torch

from rlhf_edu import contamination as ct
from rlhf_edu.core.logprobs import completion_logprobs


def test_the_split_is_by_distinct_prompt_string_seeded_and_complete():
    prompts = ["add 1 and 2", "add 3 and 4", "add 1 and 2", "review the soup", "describe the cat", "add 3 and 4"]
    leaked, clean = ct.leak_split(prompts, 0.5, seed=0)
    assert sorted(leaked + clean) == sorted(set(prompts)) and not set(leaked) & set(clean)
    assert len(leaked) == 2 and (leaked, clean) == ct.leak_split(prompts, 0.5, seed=0)
    assert {tuple(ct.leak_split(prompts, 0.5, seed=s)[0]) for s in range(20)} != {tuple(leaked)}  # the seed matters
    with pytest.raises(ValueError, match="leaves one part empty"):
        ct.leak_split(prompts, 0.01)
    with pytest.raises(ValueError, match="share"):
        ct.leak_split(prompts, 1.0)


def test_inflation_is_the_leaked_gain_beyond_the_clean_gain():
    before = [0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    after = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    leaked = [True, True, True, True, False, False]
    value, se = ct.inflation(before, after, leaked)
    # leaked gains 1, 1, 0, 0: mean ½, sd √(1/3), se √(1/12); clean gains 1, −1: mean 0, sd √2, se 1
    assert value == pytest.approx(0.5)
    assert se == pytest.approx(np.sqrt(1 / 12 + 1.0))
    with pytest.raises(ValueError, match="some prompts True and some False"):
        ct.inflation(before, after, [True] * 6)


def test_detection_auc_counts_every_pair_and_ties_half():
    assert ct.detection_auc([3.0, 2.0], [1.0, 0.0])[0] == 1.0
    assert ct.detection_auc([0.0, 1.0], [2.0, 3.0])[0] == 0.0
    # pairs: 2>1 ✓, 2=2 ½, 2<3 ✗, 0<1 ✗, 0<2 ✗, 0<3 ✗ → 1.5 of 6
    assert ct.detection_auc([2.0, 0.0], [1.0, 2.0, 3.0])[0] == pytest.approx(1.5 / 6)
    with pytest.raises(ValueError, match="leaked_scores must be at least two finite scores"):
        ct.detection_auc([float("nan"), 1.0], [0.0, 1.0])


def test_the_auc_standard_error_matches_its_spread_over_simulated_detectors():
    rng = np.random.default_rng(0)
    draws = [ct.detection_auc(rng.normal(1.0, 1, 50), rng.normal(0.0, 1, 50)) for _ in range(2000)]
    aucs, ses = np.array(draws).T
    assert aucs.std() == pytest.approx(ses.mean(), rel=0.1)  # Hanley–McNeil is an approximation: 10%


def test_likelihood_gap_is_the_difference_of_the_two_models_log_likelihoods(model, tokenizer):
    sft = model
    other = copy.deepcopy(sft)
    with torch.no_grad():
        other.lm_head.weight.mul_(1.5)  # any other model
    prompts, answers = ["add 3 and 5", "review the soup"], ["3 plus 5 is 8", "the soup is tasty"]
    gap = ct.likelihood_gap(other, sft, tokenizer, prompts, answers)
    logps, ref_logps = (completion_logprobs(m, tokenizer, prompts, answers) for m in (other, sft))
    expected = logps - ref_logps
    assert gap == pytest.approx(expected.numpy(), abs=1e-5)
    assert ct.likelihood_gap(sft, sft, tokenizer, prompts, answers) == pytest.approx([0.0, 0.0], abs=1e-6)
