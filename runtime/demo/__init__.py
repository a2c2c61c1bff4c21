"""The demo guard: a small, trained Llama Guard 3 Vision look-alike that ships with guardedge.

It has the real Mllama architecture, the real Llama 3 tokenizer and the real model-directory
layout, and is trained on a synthetic dataset so that its verdicts mean something. It is a
demo for running the pipeline offline, not a moderation model.

    guardedge demo path      # assemble on first use (<1 min), print the directory
    guardedge demo metrics   # held-out metrics
"""
