import pytest
from transformers import LlamaForCausalLM

from rlhf_edu import recipes, zoo
from rlhf_edu.core.world import World
from rlhf_edu.pretraining import perplexity


@pytest.fixture(scope="module")
def held_out_text():
    return World(seed=123).pretraining_corpus(300)


def test_base_loads_offline_as_a_small_llama(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = zoo.load("base", device="cpu")
    assert isinstance(model, LlamaForCausalLM) and not model.training
    assert 1e6 <= sum(p.numel() for p in model.parameters()) <= 5e6
    assert len(tokenizer) == model.config.vocab_size
    assert (zoo.SHIPPED_DIR / "base" / "model.safetensors").exists()


def test_shipped_base_knows_the_language(held_out_text):
    model, tokenizer = zoo.load("base", device="cpu")
    untrained, _ = zoo.new_model(seed=0)
    shipped, fresh = perplexity(model, tokenizer, held_out_text), perplexity(untrained, tokenizer, held_out_text)
    assert shipped < 5 and fresh > 50  # the world's language has ~95 words; a uniform guess scores ~95


def test_new_model_follows_the_preset():
    model, tokenizer = zoo.new_model("tiny")
    assert model.config.hidden_size == 192 and model.config.vocab_size == len(tokenizer)


def test_rebuild_reaches_the_shipped_quality(tmp_path, held_out_text):
    """`rlhf-edu zoo build base` from scratch, then compare with the shipped checkpoint."""
    (path,) = recipes.build(["base"], out_dir=tmp_path, device="cpu")
    rebuilt = LlamaForCausalLM.from_pretrained(path)
    shipped, tokenizer = zoo.load("base", device="cpu")
    assert perplexity(rebuilt, tokenizer, held_out_text) < 1.05 * perplexity(shipped, tokenizer, held_out_text)


def test_unknown_checkpoint_names_the_zoo():
    with pytest.raises(ValueError, match="unknown checkpoint 'gpt5'.*base"):
        zoo.load("gpt5")
    with pytest.raises(ValueError, match="unknown checkpoint 'gpt5'"):
        recipes.build(["gpt5"])


def test_unbuilt_preset_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setenv("RLHF_EDU_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="rlhf-edu zoo build base --preset small"):
        zoo.load("base", preset="small")


def test_small_preset_runs_the_same_code_at_gpu_size():
    """No GPU in CI: check that the `small` model builds at its size and takes a training step on CPU."""
    from functools import partial

    from rlhf_edu.core.collate import pad_batch
    from rlhf_edu.core.training import TrainingConfig, train
    from rlhf_edu.pretraining import encode_document, language_modeling_loss

    model, tokenizer = zoo.new_model("small")
    assert 20e6 < sum(p.numel() for p in model.parameters()) < 30e6
    rows = [encode_document(tokenizer, text) for text in World(preset="small").pretraining_corpus(4)]
    history = train(model, partial(language_modeling_loss, model), [pad_batch(rows, tokenizer.pad_token_id)],
                    TrainingConfig(progress=False))
    assert len(history["loss"]) == 1
