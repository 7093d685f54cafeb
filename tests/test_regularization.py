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
