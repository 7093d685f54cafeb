"""Chapter 15: the per-token distillation losses, the teacher-token budget, the trainers, students, self-training."""

import copy
import math
import warnings

import pytest
import torch
from transformers import LlamaForCausalLM

from rlhf_edu import distillation as D
from rlhf_edu.core import zoo
from rlhf_edu.core.collate import encode_prompt_completion, pad_batch
from rlhf_edu.core.logprobs import token_logprobs
from rlhf_edu.core.rollouts import Rollout, sample_rollouts
from rlhf_edu.core.world import World
from tests.conftest import random_model

BUDGET = 300  # teacher tokens for a trainer test: a few batches of 8 answers
MAX_NEW_TOKENS = 24


# --- the losses against explicit sums ---------------------------------------------------------------------------------
def _log_softmax(z: list[float]) -> list[float]:
    m = max(z)
    lse = m + math.log(sum(math.exp(v - m) for v in z))
    return [v - lse for v in z]


def _kl(p_logits: list[float], q_logits: list[float]) -> float:
    """KL(p ‖ q) = Σ_v p(v) (log p(v) − log q(v)), one term per word of the vocabulary."""
    lp, lq = _log_softmax(p_logits), _log_softmax(q_logits)
    return sum(math.exp(lp[v]) * (lp[v] - lq[v]) for v in range(len(lp)))


def _per_example_mean(values, mask) -> list[float]:
    """Each row's mean of ``values[b][t]`` over the positions where ``mask`` is 1 (0 for a row with none)."""
    out = []
    for row, m in zip(values, mask):
        kept = [v for v, keep in zip(row, m) if keep]
        out.append(sum(kept) / len(kept) if kept else 0.0)
    return out


@pytest.fixture
def logits():
    """Student and teacher logits (B=2, T=3, V=5) in float64, and a mask that drops a position of each row."""
    g = torch.Generator().manual_seed(0)
    student = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    teacher = 2 * torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    return student, teacher, mask


def test_forward_kl_is_the_teacher_weighted_sum_over_the_vocabulary(logits):
    student, teacher, mask = logits
    expected = _per_example_mean(
        [[_kl(teacher[b, t].tolist(), student[b, t].tolist()) for t in range(3)] for b in range(2)], mask.tolist()
    )
    assert D.forward_kl_loss(student, teacher, mask).tolist() == pytest.approx(expected, rel=1e-12)


def test_reverse_kl_is_the_student_weighted_sum_over_the_vocabulary(logits):
    student, teacher, mask = logits
    expected = _per_example_mean(
        [[_kl(student[b, t].tolist(), teacher[b, t].tolist()) for t in range(3)] for b in range(2)], mask.tolist()
    )
    assert D.reverse_kl_loss(student, teacher, mask).tolist() == pytest.approx(expected, rel=1e-12)


def test_sampled_reverse_kl_is_the_mean_log_ratio_of_the_sampled_tokens():
    student_logps = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -3.0, -1.0]], dtype=torch.float64)
    teacher_logps = torch.tensor([[-1.5, -0.5, -0.5], [-2.0, -1.0, -1.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    expected = [((-1.0 + 1.5) + (-2.0 + 0.5)) / 2, -0.1 + 2.0]
    assert D.sampled_reverse_kl(student_logps, teacher_logps, mask).tolist() == pytest.approx(expected, rel=1e-12)


def test_every_loss_is_zero_when_the_student_is_the_teacher(logits):
    student, _, mask = logits
    assert D.forward_kl_loss(student, student.clone(), mask).abs().max() < 1e-12
    assert D.reverse_kl_loss(student, student.clone(), mask).abs().max() < 1e-12
    logps = torch.log_softmax(student, dim=-1)[..., 0]  # (B, T) any token's log-prob, the same under both
    assert D.sampled_reverse_kl(logps, logps.clone(), mask).abs().max() == 0


def test_forward_and_reverse_kl_differ_on_an_asymmetric_example():
    """A teacher with two modes, a student on one: the forward KL charges the missed mode, the reverse far less."""
    teacher = torch.log(torch.tensor([[[0.5, 0.5, 1e-6]]], dtype=torch.float64))
    student = torch.log(torch.tensor([[[0.98, 0.01, 0.01]]], dtype=torch.float64))
    mask = torch.ones(1, 1)
    forward, reverse = (
        D.forward_kl_loss(student, teacher, mask).item(),
        D.reverse_kl_loss(student, teacher, mask).item(),
    )
    assert forward == pytest.approx(0.5 * math.log(0.5 / 0.98) + 0.5 * math.log(0.5 / 0.01), rel=1e-4)
    assert forward > 2 * reverse > 0


def test_sampled_reverse_kl_has_the_reverse_kl_as_its_expectation(logits):
    student, teacher, mask = logits
    log_p_S, log_p_T = torch.log_softmax(student, -1), torch.log_softmax(teacher, -1)  # (B, T, V)
    # Exactly, on one position: Σ_v p_S(v) · (the estimate at token v).
    one = torch.ones(1, 1, dtype=torch.float64)
    exact = sum(
        log_p_S[0, 0, v].exp() * D.sampled_reverse_kl(log_p_S[:1, :1, v], log_p_T[:1, :1, v], one) for v in range(5)
    )
    assert exact.item() == pytest.approx(D.reverse_kl_loss(student[:1, :1], teacher[:1, :1], one).item(), rel=1e-12)
    # By sampling, on every position with the mask: the mean of many estimates, within 4 standard errors.
    S = 20_000
    y = torch.multinomial(log_p_S.exp().view(-1, 5), S, replacement=True, generator=torch.Generator().manual_seed(1))
    y = y.T.reshape(S, 2, 3, 1)  # (S, B, T, 1) token ids drawn from p_S
    pick = lambda logps: logps.expand(S, -1, -1, -1).gather(-1, y).squeeze(-1).reshape(S * 2, 3)  # (S·B, T)
    estimates = D.sampled_reverse_kl(pick(log_p_S), pick(log_p_T), mask.repeat(S, 1)).view(S, 2)  # (S, B)
    stderr = estimates.std(dim=0) / math.sqrt(S)
    assert ((estimates.mean(dim=0) - D.reverse_kl_loss(student, teacher, mask)).abs() < 4 * stderr).all()


def test_the_reverse_kl_gradient_flows_through_the_students_weights(logits):
    """∂KL(p_S ‖ p_T)/∂z_S = p_S ⊙ (d − Σ_v p_S d), d = log p_S − log p_T: the weights p_S are differentiated too."""
    student, teacher, _ = logits
    z = student[:1, :1].clone().requires_grad_(True)
    D.reverse_kl_loss(z, teacher[:1, :1], torch.ones(1, 1)).sum().backward()
    p_S = torch.softmax(student[0, 0], -1)
    d = torch.log_softmax(student[0, 0], -1) - torch.log_softmax(teacher[0, 0], -1)
    assert torch.allclose(z.grad[0, 0], p_S * (d - (p_S * d).sum()), atol=1e-12)


def test_token_mean_weighs_every_completion_token_alike():
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert D.token_mean(torch.tensor([2.0, 6.0]), mask).item() == pytest.approx((3 * 2.0 + 6.0) / 4)


def test_the_losses_agree_with_trls_gkd_at_beta_0_and_1(logits):
    """TRL's generalized JSD: β = 0 is KL(teacher ‖ student), β = 1 is KL(student ‖ teacher) (F.kl_div's order)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trl.experimental says it is experimental
        gkd = pytest.importorskip("trl.experimental.gkd")
    student, teacher, mask = logits
    labels = torch.where(mask.bool(), 1, -100)  # TRL masks by label -100; "batchmean" is then the per-token mean
    jsd = lambda beta: gkd.GKDTrainer.generalized_jsd_loss(student, teacher, labels, beta=beta).item()
    assert jsd(0) == pytest.approx(D.token_mean(D.forward_kl_loss(student, teacher, mask), mask).item(), rel=1e-10)
    assert jsd(1) == pytest.approx(D.token_mean(D.reverse_kl_loss(student, teacher, mask), mask).item(), rel=1e-10)


def test_the_losses_refuse_mismatched_shapes(logits):
    student, teacher, mask = logits
    with pytest.raises(ValueError, match="teacher_logits"):
        D.forward_kl_loss(student, teacher[..., :4], mask)
    with pytest.raises(ValueError, match="mask"):
        D.reverse_kl_loss(student, teacher, mask[:, :2])
    with pytest.raises(ValueError, match="teacher_logps"):
        D.sampled_reverse_kl(mask, mask[:1], mask)


# --- the config -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [0, -5])
def test_a_budget_of_no_teacher_tokens_is_refused(budget):
    with pytest.raises(ValueError, match=rf"teacher_tokens must be >= 1, got {budget}: the budget"):
        D.DistillationConfig(teacher_tokens=budget)


@pytest.mark.parametrize(
    ("settings", "argument"),
    [
        ({"kind": "logit"}, "unknown kind 'logit'"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"kind": "on_policy", "num_epochs": 3}, "num_epochs=3"),
        ({"kind": "on_policy", "lr_scheduler_type": "linear"}, "lr_scheduler_type='linear'"),
    ],
)
def test_the_config_names_a_bad_setting(settings, argument):
    with pytest.raises(ValueError, match=argument):
        D.DistillationConfig(**settings)


# --- vocabularies -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sft():
    return zoo.load("sft")


@pytest.fixture(scope="module")
def base():
    return zoo.load("base")[0]


@pytest.fixture(scope="module")
def prompts():
    return World(seed=0).prompts(32)


def llama_with_vocabulary(vocab_size: int) -> LlamaForCausalLM:
    """conftest's random Llama, built without moving the global random state."""
    with torch.random.fork_rng():
        return random_model("llama", vocab_size).eval()


def test_a_teacher_of_another_vocabulary_is_refused_where_distributions_are_compared(sft, prompts):
    teacher, tokenizer = sft
    other = llama_with_vocabulary(128)  # fits the tokenizer (a padded vocabulary) but is not the teacher's
    with pytest.raises(ValueError, match=r"teacher's vocabulary has 95 tokens and the student's 128.*sequence-level"):
        D.check_same_vocabulary(teacher, other, tokenizer)
    for kind in ("token", "on_policy"):
        config = D.DistillationConfig(kind=kind, teacher_tokens=BUDGET, progress=False)
        with pytest.raises(ValueError, match="distil between models that share the world tokenizer"):
            D.train_distillation(other, teacher, tokenizer, prompts, config)


def test_the_student_must_not_be_the_teacher(sft, prompts):
    teacher, tokenizer = sft
    with pytest.raises(ValueError, match="student and teacher are one model"):
        D.train_distillation(teacher, teacher, tokenizer, prompts, D.DistillationConfig(progress=False))


# --- answers as rows, the teacher's distributions, the budget ---------------------------------------------------------
def test_rollout_rows_are_chapter_9_rows_of_the_sampled_tokens(sft, prompts):
    model, tokenizer = sft
    rollout = sample_rollouts(model, tokenizer, prompts[:8], seed=0)
    rows = D.rollout_rows(rollout)
    for row, finished, length in zip(rows, rollout.finished.tolist(), rollout.mask.sum(1).tolist()):
        assert sum(row["completion_mask"]) == length
        if finished:  # a closed answer is what encoding its text gives
            assert encode_prompt_completion(tokenizer, row["prompt"], row["completion"]) == {
                "input_ids": row["input_ids"],
                "completion_mask": row["completion_mask"],
            }


def test_the_teachers_distributions_are_scored_once_per_completion_token(sft, prompts):
    teacher, tokenizer = sft
    rows = D.rollout_rows(sample_rollouts(teacher, tokenizer, prompts[:6], seed=0))
    scored = D.with_teacher_logps(teacher, rows, tokenizer.pad_token_id, batch_size=4)  # two scoring batches
    batch = pad_batch(rows, tokenizer.pad_token_id)
    logps, mask = token_logprobs(teacher, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    for i, row in enumerate(scored):
        distribution = row["teacher_logps"]  # (n_i, V)
        assert distribution.shape == (sum(row["completion_mask"]), len(tokenizer))
        assert torch.allclose(distribution.exp().sum(-1), torch.ones(len(distribution)), atol=1e-5)
        targets = [t for t, m in zip(row["input_ids"], row["completion_mask"]) if m]
        picked = distribution[torch.arange(len(targets)), targets]  # log p_T of each sampled token
        assert torch.allclose(picked, logps[i][mask[i].bool()], atol=1e-4)


def test_teacher_samples_spend_the_budget_to_within_one_answer(sft, prompts):
    teacher, tokenizer = sft
    config = D.DistillationConfig(teacher_tokens=BUDGET, batch_size=8, max_new_tokens=MAX_NEW_TOKENS)
    rows = D.teacher_samples(teacher, tokenizer, prompts, config)
    spent = sum(sum(row["completion_mask"]) for row in rows)
    assert BUDGET - MAX_NEW_TOKENS < spent <= BUDGET


def test_rows_within_keeps_the_longest_prefix_that_fits():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    rollout = _rollout(["p"] * 4, ["a", "b", "c", "d"], mask, torch.zeros(4, 4))
    assert [D.rows_within(rollout, budget) for budget in (2, 3, 5, 8, 9, 10)] == [0, 1, 2, 2, 3, 4]


# --- the trainers -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", D.KINDS)
def test_each_kind_trains_within_the_teacher_token_budget(kind, sft, base, prompts):
    teacher, tokenizer = sft
    student = copy.deepcopy(base)
    config = D.DistillationConfig(kind=kind, teacher_tokens=BUDGET, batch_size=8, progress=False)
    calls = []  # (grad enabled, student in train mode) at each teacher forward pass
    hook = teacher.register_forward_hook(lambda *_: calls.append((torch.is_grad_enabled(), student.training)))
    try:
        history = D.train_distillation(student, teacher, tokenizer, prompts, config)
    finally:
        hook.remove()
    assert {"loss", "grad_norm", "teacher_tokens"} <= set(history.keys())
    spent = history["teacher_tokens"]
    assert BUDGET - MAX_NEW_TOKENS < spent[-1] <= BUDGET  # whole answers, within one of the budget
    assert all(math.isfinite(loss) for loss in history["loss"])
    assert not any(grad for grad, _ in calls)  # the teacher never keeps a graph
    assert not any(during_a_step for _, during_a_step in calls)  # nor runs inside a step (token: all ahead of it)
    if kind == "on_policy":
        assert all(b > a for a, b in zip(spent, spent[1:]))  # cumulative, a batch of the student's answers a step
        assert {"entropy", "completions/mean_length"} <= set(history.keys())
    else:
        assert len(set(spent)) == 1  # the teacher's work is done before the first step
    assert not student.training and not any(p.grad is not None for p in teacher.parameters())


def test_a_budget_smaller_than_any_answer_is_refused(sft, base, prompts):
    teacher, tokenizer = sft
    reviews = [p for p in prompts if p.startswith("review")]  # answered in several words
    config = D.DistillationConfig(kind="on_policy", teacher_tokens=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="teacher_tokens=1 is spent before the first answer fits"):
        D.train_distillation(copy.deepcopy(base), teacher, tokenizer, reviews, config)


# --- a smaller student ------------------------------------------------------------------------------------------------
def test_kept_layers_are_spread_over_the_depth():
    assert D.kept_layers(4, 2) == [0, 2]  # every other layer, as DistilBERT
    assert D.kept_layers(12, 6) == [0, 2, 4, 6, 8, 10]
    assert D.kept_layers(4, 3) == [0, 1, 2]
    assert D.kept_layers(4, 1) == [0]


def test_a_smaller_student_keeps_its_layers_weights_and_shares_none(sft):
    teacher, tokenizer = sft
    state = torch.random.get_rng_state()
    student = D.smaller_student(teacher, 2)
    assert torch.equal(torch.random.get_rng_state(), state)  # building it draws no global random numbers
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    assert student.config.vocab_size == teacher.config.vocab_size and not student.training
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
    source = teacher.state_dict()
    for name, weight in student.state_dict().items():
        mapped = name.replace("layers.1.", "layers.2.")  # kept layers 0 and 2 become 0 and 1
        assert torch.equal(weight, source[mapped]), name
    with torch.no_grad():
        student.model.layers[1].mlp.up_proj.weight.add_(1.0)
        student.model.embed_tokens.weight.add_(1.0)
    assert torch.equal(
        teacher.state_dict()["model.layers.2.mlp.up_proj.weight"], source["model.layers.2.mlp.up_proj.weight"]
    )
    assert torch.equal(teacher.model.embed_tokens.weight, source["model.embed_tokens.weight"])
    assert len(sample_rollouts(student, tokenizer, ["add 3 and 5"], seed=0)) == 1  # a working language model


def test_a_smaller_student_of_any_architecture(model):
    """Llama, GPT-2 and Qwen2 (conftest's random two-layer models) each give a one-layer copy."""
    student = D.smaller_student(model, 1)
    assert student.config.num_hidden_layers == 1 and type(student) is type(model)
    ids = torch.tensor([[1, 5, 7, 9]])
    assert student(input_ids=ids).logits.shape == model(input_ids=ids).logits.shape


@pytest.mark.parametrize("num_layers", [0, -1, 4, 5])
def test_a_smaller_student_needs_fewer_layers_but_some(sft, num_layers):
    with pytest.raises(ValueError, match=rf"num_layers must be .* got {num_layers}"):
        D.smaller_student(sft[0], num_layers)


# --- diversity and self-training --------------------------------------------------------------------------------------
def _rollout(prompts, completions, mask, entropies) -> Rollout:
    """A hand-made rollout with a one-column prompt and ``mask`` over its completion columns."""
    B, N = mask.shape
    completion_mask = torch.cat([torch.zeros(B, 1, dtype=torch.long), mask.long()], dim=1)  # (B, 1 + N)
    return Rollout(
        prompts=prompts,
        completions=completions,
        input_ids=torch.ones(B, 1 + N, dtype=torch.long),
        attention_mask=completion_mask.clone().index_fill_(1, torch.tensor([0]), 1),
        completion_mask=completion_mask,
        finished=torch.ones(B, dtype=torch.bool),
        logps=torch.zeros(B, N),
        entropies=entropies.float(),
    )


def test_diversity_by_hand():
    """Prompt x: "a", "a", "b" (2 distinct); prompt y: "c" three times (1): 1.5 distinct answers a prompt."""
    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 0], [1, 0], [1, 1]])
    entropies = torch.tensor([[1.0, 2.0], [3.0, 9.0], [0.0, 0.0], [4.0, 9.0], [1.0, 9.0], [2.0, 0.5]])
    rollout = _rollout(["x"] * 3 + ["y"] * 3, ["a", "a", "b", "c", "c", "c"], mask, entropies)
    report = D.diversity(rollout, 3)
    assert report["distinct_answers"] == 1.5
    assert report["distinct_per_prompt"] == [2, 1]
    assert report["entropy"] == pytest.approx((1 + 2 + 3 + 0 + 0 + 4 + 1 + 2 + 0.5) / 9)  # masked tokens only
    with pytest.raises(ValueError, match="num_generations=4"):
        D.diversity(rollout, 4)
    with pytest.raises(ValueError, match="num_generations=2"):
        D.diversity(rollout, 2)  # rows 2 and 3 answer different prompts


def test_self_training_records_each_generation_and_leaves_the_model_alone(sft, prompts):
    model, tokenizer = sft
    before = {name: weight.clone() for name, weight in model.state_dict().items()}
    records = D.self_training(model, tokenizer, World(seed=0), prompts[:8], generations=2, real_share=0.25)
    assert [r["generation"] for r in records] == [0, 1, 2]
    assert [r["real_rows"] for r in records] == [8, 8, 0]  # a quarter of 8 prompts × 4 answers, none after the last
    for record in records:
        assert {"gold", "gold_stderr", "distinct_answers", "entropy"} <= set(record)
        assert 1 <= record["distinct_answers"] <= 4 and record["entropy"] >= 0
        assert len(record["gold_per_prompt"]) == len(record["distinct_per_prompt"]) == 8  # one value per prompt
        assert sum(record["gold_per_prompt"]) / 8 == pytest.approx(record["gold"])  # equal samples per prompt
        assert sum(record["distinct_per_prompt"]) / 8 == pytest.approx(record["distinct_answers"])
    assert all(torch.equal(weight, before[name]) for name, weight in model.state_dict().items())


@pytest.mark.parametrize(
    ("settings", "argument"),
    [({"generations": 0}, "generations"), ({"real_share": -0.1}, "real_share"), ({"real_share": 1.5}, "real_share")],
)
def test_self_training_names_a_bad_setting(sft, prompts, settings, argument):
    model, tokenizer = sft
    with pytest.raises(ValueError, match=rf"{argument} must be"):
        D.self_training(model, tokenizer, World(seed=0), prompts[:2], **{"generations": 1} | settings)


# --- quality against quantity -----------------------------------------------------------------------------------------
def test_filter_by_keeps_the_passing_pairs_as_sft_rows():
    rows = D.filter_by(["add 1 and 2", "add 2 and 2"], ["1 plus 2 is 3", "2 plus 2 is 5"], [True, False])
    assert rows == [{"prompt": "add 1 and 2", "completion": "1 plus 2 is 3"}]
    with pytest.raises(ValueError, match="keep passes none"):
        D.filter_by(["add 1 and 2"], ["1 plus 2 is 4"], [False])
    with pytest.raises(ValueError, match="keep verdicts"):
        D.filter_by(["add 1 and 2"], ["1 plus 2 is 3"], [True, True])
