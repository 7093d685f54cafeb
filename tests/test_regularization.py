import pytest
import torch

from rlhf_edu.regularization import kl_estimate


def test_kl_estimators_against_the_exact_kl_of_a_small_categorical():
    p = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    q = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    exact = (p * (p / q).log()).sum().item()  # KL(p‖q) ≈ 0.396
    samples = torch.multinomial(p, 400_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logps, ref_logps = p.log()[samples], q.log()[samples]
    means = {k: kl_estimate(logps, ref_logps, k).mean().item() for k in ("k1", "k2", "k3")}
    stderr = {k: (kl_estimate(logps, ref_logps, k).std() / len(samples) ** 0.5).item() for k in means}
    assert abs(means["k1"] - exact) < 4 * stderr["k1"]  # unbiased
    assert abs(means["k3"] - exact) < 4 * stderr["k3"]  # unbiased
    assert abs(means["k2"] - exact) > 10 * stderr["k2"]  # biased this far from the reference
    assert (kl_estimate(logps, ref_logps, "k3") >= 0).all() and (kl_estimate(logps, ref_logps, "k2") >= 0).all()


def test_k3_with_the_ratio_reversed_would_be_biased():
    """The book's reference code uses π/π_ref inside k3; on samples from π that estimates something else."""
    p = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    q = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    exact = (p * (p / q).log()).sum().item()
    reversed_k3 = (p * ((p / q) - 1 - (p / q).log())).sum().item()  # its exact mean under π
    assert abs(reversed_k3 - exact) > 0.1
    expected_k3 = (p * ((q / p) - 1 - (q / p).log())).sum().item()
    assert expected_k3 == pytest.approx(exact)  # the right direction's mean is the KL exactly


def test_estimators_by_hand():
    logps, ref_logps = torch.tensor([-1.0]), torch.tensor([-2.0])  # log r = −1
    assert kl_estimate(logps, ref_logps, "k1").item() == pytest.approx(1.0)
    assert kl_estimate(logps, ref_logps, "k2").item() == pytest.approx(0.5)
    assert kl_estimate(logps, ref_logps, "k3").item() == pytest.approx(0.36787944)  # e^−1 − 1 + 1


def test_bad_estimator_and_shapes_are_refused():
    with pytest.raises(ValueError, match="unknown estimator 'k4': use one of 'k1', 'k2', 'k3'"):
        kl_estimate(torch.zeros(2), torch.zeros(2), "k4")
    with pytest.raises(ValueError, match="must have one shape"):
        kl_estimate(torch.zeros(2), torch.zeros(3))


def test_the_forward_kl_optimum_beats_every_nearby_policy():
    from rlhf_edu.objective import expected_reward, kl_divergence
    from rlhf_edu.regularization import forward_kl_regularized_optimum
    ref_probs = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    rewards = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    beta = 0.7
    objective = lambda p: expected_reward(p, rewards) - beta * kl_divergence(ref_probs, p)  # E[r] − β·KL(π_ref‖π)
    best = forward_kl_regularized_optimum(ref_probs, rewards, beta)
    assert best.sum().item() == pytest.approx(1.0, abs=1e-12)
    grid = torch.linspace(0.01, 0.98, 98, dtype=torch.float64)  # brute force over the simplex
    candidates = torch.stack([torch.stack([a, b, 1 - a - b]) for a in grid for b in grid if a + b < 0.995])
    assert objective(best) >= objective(candidates).max() - 1e-9
    stationary = rewards + beta * ref_probs / best  # r(a) + β·π_ref(a)/π(a) is one λ for every action
    torch.testing.assert_close(stationary, stationary.mean().expand(3))


def test_the_forward_kl_optimum_stays_at_the_reference_for_a_large_beta():
    from rlhf_edu.regularization import forward_kl_regularized_optimum
    ref_probs = torch.tensor([0.6, 0.4])
    torch.testing.assert_close(forward_kl_regularized_optimum(ref_probs, torch.tensor([0.0, 1.0]), 1e6).float(),
                               ref_probs, atol=1e-5, rtol=0)
