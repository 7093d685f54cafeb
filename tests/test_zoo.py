import pytest
import torch
from datasets import Dataset
from transformers import LlamaForCausalLM

from rlhf_edu import zoo
from rlhf_edu.core.world import World
from rlhf_edu.experiments import recipes
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


@pytest.mark.slow  # minutes: pretrains base from scratch
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
    history = train(
        model,
        partial(language_modeling_loss, model),
        [pad_batch(rows, tokenizer.pad_token_id)],
        TrainingConfig(progress=False),
    )
    assert len(history["loss"]) == 1


# --- any Hugging Face causal LM: a folder saved with save_pretrained, with a tokenizer that is not the world's ---
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def foreign_dir(tmp_path_factory):
    """A byte-level BPE tokenizer trained on the world corpus with a ChatML template, and a random tiny Qwen2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    world = World(seed=0)
    texts = world.pretraining_corpus(500) + [row[0]["content"] for row in world.sft_dataset(200)["completion"]]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("foreign")
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_a_local_folder_with_a_foreign_tokenizer_loads_and_runs_every_path(foreign_dir, monkeypatch):
    from rlhf_edu.core.collate import collate
    from rlhf_edu.core.logprobs import sequence_logprobs
    from rlhf_edu.core.rollouts import generate_completions
    from rlhf_edu.direct_alignment import DPOConfig, train_dpo

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = zoo.load(str(foreign_dir), device="cpu")
    assert type(model).__name__ == "Qwen2ForCausalLM" and not model.training
    assert tokenizer.convert_ids_to_tokens(tokenizer("the pizza is great")["input_ids"]) != [
        "the",
        "pizza",
        "is",
        "great",
    ]  # BPE pieces
    world = World(seed=0)
    prompts = world.prompts(4)
    completions = generate_completions(model, tokenizer, prompts, max_new_tokens=6, seed=0)
    assert len(completions) == 4 and all(isinstance(c, str) for c in completions)
    # the world's words survive the round trip through BPE, so the gold reward reads them as written
    answer = "3 plus 5 is 8"
    assert tokenizer.decode(tokenizer(answer)["input_ids"]) == answer
    assert world.gold_reward(["add 3 and 5"], [answer]) == World(seed=0).gold_reward(["add 3 and 5"], [answer])
    batch = collate(tokenizer, ["add 3 and 5"], [answer])
    with torch.no_grad():
        logps = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        logits = model(input_ids=batch["input_ids"]).logits[0, :-1].log_softmax(-1)  # (T-1, V)
    targets, mask = batch["input_ids"][0, 1:], batch["completion_mask"][0, 1:].bool()
    by_hand = logits[torch.arange(len(targets)), targets][mask].sum()  # log π(y|x) = Σ_t log π(y_t|x, y_<t)
    assert logps.item() == pytest.approx(by_hand.item(), abs=1e-4)
    pairs = Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": "add 3 and 5"}]] * 2,
            "chosen": [[{"role": "assistant", "content": answer}]] * 2,
            "rejected": [[{"role": "assistant", "content": "3 plus 5 is 9"}]] * 2,
        }
    )
    before = [p.detach().clone() for p in model.parameters()]
    history = train_dpo(model, tokenizer, pairs, DPOConfig(batch_size=2, progress=False))
    assert history["loss"] == [pytest.approx(0.6931, abs=1e-4)]  # one step, from the policy as its own reference
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), before))


def test_a_hub_id_offline_says_it_needs_the_network(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr(zoo, "is_offline_mode", lambda: True)
    with pytest.raises(ValueError, match=r"needs the network.*offline.*zoo\.load\('sft'\)"):
        zoo.load("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_what_is_neither_checkpoint_nor_folder_nor_hub_id_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown checkpoint 'no such folder'.*save_pretrained.*Hub id"):
        zoo.load("no such folder")
    with pytest.raises(ValueError, match="unknown checkpoint"):
        zoo.load(tmp_path / "missing")
    with pytest.raises(TypeError, match="name must be a checkpoint name, a folder or a Hub id, got int"):
        zoo.load(3)


@pytest.mark.parametrize("offline", [True, False])
def test_a_hub_id_reads_the_local_cache_only_when_offline(monkeypatch, offline):
    calls = []
    monkeypatch.setattr(zoo, "is_offline_mode", lambda: offline)
    monkeypatch.setattr(zoo, "load_dir", lambda path, device, local_files_only: calls.append((path, local_files_only)))
    zoo.load("owner/model")
    assert calls == [("owner/model", offline)]


def test_a_hub_id_that_fails_online_names_the_id_and_the_offline_default(monkeypatch):
    def unreachable(path, device, local_files_only):
        raise OSError("connection refused")

    monkeypatch.setattr(zoo, "is_offline_mode", lambda: False)
    monkeypatch.setattr(zoo, "load_dir", unreachable)
    with pytest.raises(ValueError, match=r"'owner/model' from the Hub \(connection refused\).*zoo\.load\('sft'\)"):
        zoo.load("owner/model")


def test_a_tokenizer_without_a_pad_token_pads_with_its_end_token(foreign_dir, tmp_path):
    model, tokenizer = zoo.load(str(foreign_dir), device="cpu")
    tokenizer.pad_token = None
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    _, reloaded = zoo.load(str(tmp_path), device="cpu")
    assert reloaded.pad_token == reloaded.eos_token == "<|im_end|>"
