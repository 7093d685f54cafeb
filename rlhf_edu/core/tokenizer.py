"""The world's tokenizer: one token per word, wrapped as a Hugging Face fast tokenizer.

It is built with the ``tokenizers`` library and wrapped as a
``PreTrainedTokenizerFast`` with a chat template, so ``apply_chat_template``,
``generate`` and TRL-style datasets behave exactly as they do on a real chat model.
A word-level vocabulary keeps every token readable when a notebook prints it.

Chat format (one line per turn, each turn closed by the end-of-turn token)::

    <bos> <|user|> add 3 and 5 <|end|> <|assistant|> 3 plus 5 is 8 <|end|>
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .world import VOCAB

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
END_OF_TURN = "<|end|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS, END_OF_TURN, *ROLE_TOKENS.values()]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + message['role'] + ': use system, user or assistant') }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    # generation tags let apply_chat_template(return_assistant_tokens_mask=True) find the answer
    "{{ '<|assistant|> ' }}{% generation %}{{ message['content'] + ' <|end|>' }}{% endgeneration %}{{ ' ' }}"
    "{% else %}{{ '<|' + message['role'] + '|> ' + message['content'] + ' <|end|> ' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Return the world tokenizer: special tokens first (``<pad>`` is id 0), then the sorted vocabulary.

    Text is lower-cased and punctuation is split off, as the world's gold reward reads it;
    a word outside the vocabulary still becomes ``<unk>``, which every encoder in the
    package refuses (:func:`rlhf_edu.core.validation.check_known_words`).
    ``eos_token`` is the end-of-turn token ``<|end|>``, as on chat models, so
    ``generate`` stops when the assistant closes its turn. Pretraining text ends
    with the plain ``<eos>`` instead, which is why the base model never learns to
    close a turn before instruction tuning.
    """
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + VOCAB)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Read text as the world does (rlhf_edu.core.world.normalize_text): "The cat." is "the cat ."
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=END_OF_TURN,
        additional_special_tokens=[EOS, *ROLE_TOKENS.values()],
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
