"""The demo LlavaGuard: real LLaVA-OneVision architecture at tiny size, real Qwen2 tokenizer.

``ensure_demo_llavaguard()`` (build.py) assembles the model directory on first use.
"""
