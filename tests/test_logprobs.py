import pytest
import torch

from rlhf_edu.core.collate import collate, encode_prompt_completion
from rlhf_edu.core.logprobs import check_tokenizer_fits, completion_logprobs, sequence_logprobs, token_logprobs
from tests.conftest import logprob_alone, random_model

PROMPTS = ["add 3 and 5", "review the soup", "describe the cat"]
COMPLETIONS = ["3 plus 5 is 8", "the soup is tasty and fresh and good", "the cat is small"]


def brute_force_logprob(model, tokenizer, prompt, completion):
    """log π(y|x) one sequence at a time, straight from the full logits: the independent check."""
    return logprob_alone(model, encode_prompt_completion(tokenizer, prompt, completion))


def test_sequence_logprobs_matches_brute_force_on_every_architecture(model, tokenizer):
    batch = collate(tokenizer, PROMPTS, COMPLETIONS)
    with torch.no_grad():
        logps = sequence_logprobs(model, **batch)
        expected = [brute_force_logprob(model, tokenizer, p, c) for p, c in zip(PROMPTS, COMPLETIONS)]
    assert logps.tolist() == pytest.approx(expected, abs=1e-4)


def test_average_is_sum_over_completion_tokens(model, tokenizer):
    batch = collate(tokenizer, PROMPTS, COMPLETIONS)
    with torch.no_grad():
        total = sequence_logprobs(model, **batch)
        mean = sequence_logprobs(model, **batch, average=True)
    assert (total / mean).tolist() == pytest.approx(batch["completion_mask"].sum(1).float().tolist())


def test_batch_composition_and_padding_side_do_not_matter(model, tokenizer):
    batch = collate(tokenizer, PROMPTS, COMPLETIONS)
    with torch.no_grad():
        together = sequence_logprobs(model, **batch)
        alone = torch.cat(
            [sequence_logprobs(model, **collate(tokenizer, [p], [c])) for p, c in zip(PROMPTS, COMPLETIONS)]
        )
        # Move each row's padding to the left: same tokens, shifted positions in the tensor.
        left = {
            k: torch.stack([torch.cat([row[m == 0], row[m == 1]]) for row, m in zip(v, batch["attention_mask"])])
            for k, v in batch.items()
        }
        left_padded = sequence_logprobs(model, **left)
    assert together.tolist() == pytest.approx(alone.tolist(), abs=1e-4)
    assert left_padded.tolist() == pytest.approx(together.tolist(), abs=1e-4)


def test_token_logprobs_are_zero_off_the_completion(model, tokenizer):
    batch = collate(tokenizer, PROMPTS, COMPLETIONS)
    with torch.no_grad():
        logps, mask = token_logprobs(model, **batch)
    assert logps.shape == mask.shape
    assert (logps[mask == 0] == 0).all() and (logps[mask == 1] < 0).all()
    assert mask.sum().item() == batch["completion_mask"].sum().item()


def test_gradients_flow(tokenizer):

    model = random_model("llama", len(tokenizer)).train()
    sequence_logprobs(model, **collate(tokenizer, PROMPTS, COMPLETIONS)).sum().backward()
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0


def test_mismatched_shapes_are_refused(model, tokenizer):
    batch = collate(tokenizer, PROMPTS, COMPLETIONS)
    T = batch["input_ids"].shape[1]
    with pytest.raises(
        ValueError,
        match=rf"^input_ids \(3, {T}\), attention_mask \(3, {T - 1}\) and completion_mask \(3, {T}\) must have the "
        r"same \(B, T\) shape$",
    ):
        token_logprobs(model, batch["input_ids"], batch["attention_mask"][:, :-1], batch["completion_mask"])
    with pytest.raises(ValueError, match=r"completion_mask \(3, 2\) must have the same"):
        token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"][:, :2])


def test_row_without_completion_is_refused(model, tokenizer):
    batch = collate(tokenizer, PROMPTS, COMPLETIONS)
    batch["completion_mask"][1] = 0
    with pytest.raises(
        ValueError, match="^a row has no completion tokens: every example needs a non-empty completion$"
    ):
        token_logprobs(model, **batch)


def test_tokenizer_that_does_not_fit_the_model_is_refused(tokenizer):

    with pytest.raises(
        ValueError,
        match=r"^the tokenizer has 95 tokens but the model only embeds 50: load the tokenizer that belongs to this "
        r"model \(zoo\.load returns both\), or call model\.resize_token_embeddings\(len\(tokenizer\)\) before "
        "training$",
    ):
        check_tokenizer_fits(random_model("gpt2", 50), tokenizer)


class Sized:
    """A stand-in with only what check_tokenizer_fits reads: a length, or an input embedding's size."""

    def __init__(self, n: int):
        self.n = n
        self.num_embeddings = n

    def __len__(self) -> int:
        return self.n

    def get_input_embeddings(self) -> "Sized":
        return self


@pytest.mark.parametrize(
    "vocabulary, embeddings, fits",
    [
        (95, 95, True),
        (95, 94, False),
        (95, 95 + 1024, True),  # small vocabularies may be padded by up to 1024 rows
        (95, 95 + 1025, False),
        (20_000, 22_000, True),  # large ones by up to a tenth
        (20_000, 22_001, False),
    ],
)
def test_check_tokenizer_fits_allows_a_little_embedding_padding_and_no_more(vocabulary, embeddings, fits):
    if fits:
        check_tokenizer_fits(Sized(embeddings), Sized(vocabulary))
    elif embeddings < vocabulary:
        with pytest.raises(ValueError, match=rf"^the tokenizer has {vocabulary} tokens but the model only embeds"):
            check_tokenizer_fits(Sized(embeddings), Sized(vocabulary))
    else:
        with pytest.raises(
            ValueError,
            match=rf"^the model embeds {embeddings} tokens but the tokenizer has only {vocabulary}: they do not belong "
            r"together\. Load the tokenizer that belongs to this model \(zoo\.load returns both\)$",
        ):
            check_tokenizer_fits(Sized(embeddings), Sized(vocabulary))


def test_check_language_model_names_the_argument(tokenizer):
    from rlhf_edu.core.logprobs import check_language_model
    from rlhf_edu.reward_modeling import reward_model_from

    with pytest.raises(
        TypeError, match="^policy is a LlamaForSequenceClassification, which has no language-model head"
    ):
        check_language_model(reward_model_from(random_model("llama", len(tokenizer))), tokenizer, "policy")
    with pytest.raises(TypeError, match="^model is a LlamaForSequenceClassification"):
        check_language_model(reward_model_from(random_model("llama", len(tokenizer))), tokenizer)
    with pytest.raises(ValueError, match="^the tokenizer has 95 tokens but the model only embeds 50"):
        check_language_model(random_model("llama", 50), tokenizer)


def test_position_ids_count_real_tokens_only():
    from rlhf_edu.core.logprobs import position_ids_from_mask

    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 1, 2, 2], [0, 0, 1, 2]]


def test_completion_logprobs_match_brute_force_whatever_the_batch(model, tokenizer):
    expected = torch.tensor([brute_force_logprob(model, tokenizer, p, c) for p, c in zip(PROMPTS, COMPLETIONS)])
    for batch_size in (1, 2, 256):
        got = completion_logprobs(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=batch_size)
        assert got.shape == (3,) and torch.allclose(got, expected, atol=1e-4)
    assert completion_logprobs(model, tokenizer, [], []).shape == (0,)


def test_check_token_logprobs_refuses_a_mask_that_selects_nothing():
    from rlhf_edu.core.logprobs import check_token_logprobs

    check_token_logprobs(torch.zeros(2, 3), torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))  # one token is enough
    with pytest.raises(ValueError, match="^the mask selects no token: every example needs a non-empty completion$"):
        check_token_logprobs(torch.zeros(2, 3), torch.zeros(2, 3))
