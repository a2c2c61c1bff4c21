"""The demo QwenGuard: the real Qwen2.5-VL architecture at tiny size with RANDOM weights, real Qwen2 tokenizer.

``ensure_demo_qwenguard()`` (build.py) assembles the model directory on first use. It is not
trained (the issue allows it): it exercises QwenGuard's architecture, prompt frame, tokenizer and
directory layout end to end, and its answers are off-format (MODEL_CARD.md).
"""
