"""Shared fixtures: the world, its tokenizer, and tiny random models of three architectures.

Core code is tested on Llama, GPT-2 and Qwen2 so that no code path quietly
assumes one architecture.
"""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from rlhf_edu.core.tokenizer import build_tokenizer
from rlhf_edu.core.world import World


# Tests that take minutes are marked @pytest.mark.slow (`make unit-fast` leaves them out) and start first: under
# pytest-xdist they then run beside the rest instead of after it, where one worker would finish them alone while the
# other waits.
def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # a stable sort keeps the rest in order


torch.set_num_threads(1)  # tiny models: one thread is as fast, and never oversubscribes CI's two cores


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def world():
    return World(seed=0)


def random_model(arch: str, vocab_size: int, seed: int = 0):
    """A randomly initialised causal LM of about 100k parameters."""
    torch.manual_seed(seed)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=128,
            pad_token_id=0,
        )
        return LlamaForCausalLM(config).eval()
    if arch == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=128,
            pad_token_id=0,
            attn_pdrop=0.0,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
        )
        return GPT2LMHeadModel(config).eval()
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    return Qwen2ForCausalLM(config).eval()


@pytest.fixture(params=["llama", "gpt2", "qwen2"])
def model(request, tokenizer):
    return random_model(request.param, len(tokenizer))


def with_end_of_turn_bias(model, tokenizer, bias: float):
    """``model`` with ``bias`` added to its end-of-turn logit at every position: −inf never closes a turn."""

    def hook(module, inputs, output):
        output.logits[..., tokenizer.eos_token_id] += bias
        return output

    model.register_forward_hook(hook)
    return model


@pytest.fixture(autouse=True)
def close_figures():
    """Close every figure a test drew, so that figures never pile up across the suite."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def logprob_alone(model, row: dict[str, list[int]]) -> float:
    """log π(y|x) of one encoded row, alone (no padding), straight from every position's logits.

    The independent check for every batched log-prob in the package: one forward pass,
    the full log-softmax, and a plain sum over the completion tokens.
    """
    ids = torch.tensor([row["input_ids"]])  # (1, T)
    with torch.no_grad():
        logps = model(input_ids=ids).logits[0].log_softmax(-1)  # (T, V)
    return sum(logps[t - 1, ids[0, t]].item() for t in range(1, ids.shape[1]) if row["completion_mask"][t])
