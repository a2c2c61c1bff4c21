"""The real Llama 4 tokenizer, rebuilt offline (Llama Guard 4 shares it with Llama 4 Scout).

Meta's ``llama-models`` package (PyPI, pinned) ships the Llama 4 BPE ranks
(``llama_models/llama4/tokenizer.model``, tiktoken format: 200,000 ranks) and the tokenizer class
that defines the 2,048 special tokens after them (``<|begin_of_text|>`` 200000 ...
``<|header_start|>`` 200005, ``<|eot|>`` 200008, ``<|image|>`` 200090, ``<|patch|>`` 200092, then
reserved ones up to 202047). transformers' ``TikTokenConverter`` turns the ranks into a
``tokenizer.json`` with the o200k split pattern the Llama 4 tokenizer uses; the special tokens are
taken from llama-models' own list (not retyped here), so ids cannot drift from Meta's. Known ids
(REFERENCE §7: ``\\n\\n`` 368, ``safe`` 60411, ``unsafe`` 72110, and Meta's tokenizer on a few strings)
are checked after building.

    python -c "from guardedge.runtime.demo.llama_guard_4.tokenizer import build_tokenizer; print(build_tokenizer())"
"""

from __future__ import annotations

from guardedge.runtime.demo.tokenizer import packaged_file

TOKENIZER_SHA256 = "d0bdbaf59b0762c8c807617e2d8ea51420eb1b1de266df2495be755c8e0ed6ed"
BASE_TOKENS = 200000
VOCAB = 202048  # BASE_TOKENS + 2048 special tokens: Llama Guard 4's text vocab_size
# Ids the Llama 4 tokenizer gives (llama-models' tiktoken tokenizer; REFERENCE §7 for the verdict ones).
EXPECTED = {
    "\n\n": [368],
    "safe": [60411],
    "unsafe": [72110],
    "\nS1": [198, 63, 29],
    "S14": [63, 981],
    ",S": [36001],
    "<|begin_of_text|>": [200000],
    "<|header_start|>": [200005],
    "<|header_end|>": [200006],
    "<|eot|>": [200008],
    "<|finetune_right_pad|>": [200018],
    "<|image_start|>": [200080],
    "<|image_end|>": [200081],
    "<|tile_x_separator|>": [200084],
    "<|tile_y_separator|>": [200085],
    "<|image|>": [200090],
    "<|patch|>": [200092],
}


def tokenizer_model_path():
    """llama-models' Llama 4 BPE ranks, found without importing the package and checked."""
    return packaged_file("llama-models", "0.3.0", "llama_models/llama4/tokenizer.model", TOKENIZER_SHA256,
                         "the Llama Guard 4 tokenizer")


def special_tokens() -> list[str]:
    """The 2,048 special tokens in id order, as llama-models' Llama 4 ``Tokenizer`` defines them."""
    from llama_models.llama4 import tokenizer as meta

    named = meta.BASIC_SPECIAL_TOKENS + meta.LLAMA4_SPECIAL_TOKENS
    reserved = [f"<|reserved_special_token_{i}|>" for i in range(meta.Tokenizer.num_reserved_special_tokens - len(named))]
    return named + reserved


def build_tokenizer():
    """A ``PreTrainedTokenizerFast`` equal to Meta's Llama 4 tokenizer."""
    from llama_models.llama4.tokenizer import Tokenizer
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converter = TikTokenConverter(vocab_file=str(tokenizer_model_path()), pattern=Tokenizer.O200K_PATTERN,
                                  additional_special_tokens=special_tokens())
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=converter.converted(),
        bos_token="<|begin_of_text|>",
        eos_token="<|eot|>",
        pad_token="<|finetune_right_pad|>",
        model_max_length=131072,
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,
    )
    check_ids(tokenizer)
    return tokenizer


def check_ids(tokenizer) -> None:
    if len(tokenizer) != VOCAB:
        raise RuntimeError(f"the rebuilt Llama 4 tokenizer has {len(tokenizer)} tokens, Llama 4 has {VOCAB}")
    for text, expected in EXPECTED.items():
        ids = tokenizer.encode(text, add_special_tokens=False)
        if ids != expected:
            raise RuntimeError(f"tokenizer gives {ids} for {text!r}, Llama 4 gives {expected}")
