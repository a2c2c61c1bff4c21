"""The real Llama 3 tokenizer, rebuilt offline for the demo guard's model directory.

Meta's ``llama-models`` package (PyPI) ships the Llama 3 BPE ranks (``tokenizer.model``,
tiktoken format). transformers' TikTokenConverter turns them into a ``tokenizer.json`` that is
token-for-token the Llama 3 tokenizer; we add the 256 Llama 3.1 special tokens and ``<|image|>``
(id 128256) exactly as the Llama 3.2 Vision tokenizer has them (REFERENCE.md §2).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

TOKENIZER_SHA256 = "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55"
# The Llama 3 pre-tokenizer split pattern (llama_models/llama3/tokenizer.py).
PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_NAMED = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]
SPECIAL_TOKENS = _NAMED + [f"<|reserved_special_token_{i}|>" for i in range(3, 256 - len(_NAMED) + 3)]
IMAGE_TOKEN = "<|image|>"
# Ids every Llama 3 tokenizer must give (REFERENCE.md §2); checked after building.
EXPECTED_IDS = {
    "\n\n": 271,
    "safe": 19193,
    "unsafe": 39257,
    "<|begin_of_text|>": 128000,
    "<|end_of_text|>": 128001,
    "<|finetune_right_pad_id|>": 128004,
    "<|start_header_id|>": 128006,
    "<|end_header_id|>": 128007,
    "<|eom_id|>": 128008,
    "<|eot_id|>": 128009,
    "<|image|>": 128256,
}


def tokenizer_model_path() -> Path:
    """Locate llama-models' Llama 3 BPE file without importing the package, and check its hash."""
    return packaged_file("llama-models", "0.3.0", "llama_models/llama3/tokenizer.model", TOKENIZER_SHA256, "the demo guard")


def packaged_file(package: str, version: str, relative: str, sha256: str, who: str) -> Path:
    """A data file shipped inside an installed ``package``, found without importing the package
    and checked against ``sha256`` (``who`` needs it; the error says how to install it)."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(f"{who} needs the '{package}' package (pip install {package}=={version})") from None
    path = Path(str(dist.locate_file(relative)))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise RuntimeError(f"{path} has sha256 {digest}, expected {sha256} ({package} {version})")
    return path


def build_tokenizer():
    """A ``PreTrainedTokenizerFast`` equal to the Llama 3.2 Vision tokenizer."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    assert len(SPECIAL_TOKENS) == 256
    converter = TikTokenConverter(
        vocab_file=str(tokenizer_model_path()), pattern=PATTERN, additional_special_tokens=SPECIAL_TOKENS
    )
    backend = converter.converted()
    backend.add_special_tokens([IMAGE_TOKEN])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        model_max_length=131072,
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=True,
    )
    check_ids(tokenizer)
    return tokenizer


def check_ids(tokenizer) -> None:
    for text, expected in EXPECTED_IDS.items():
        ids = tokenizer.encode(text, add_special_tokens=False)
        if ids != [expected]:
            raise RuntimeError(f"tokenizer gives {ids} for {text!r}, Llama 3 gives [{expected}]")
