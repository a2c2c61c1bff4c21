"""The QwenGuard demo as a plug-in (runtime/demos.py): alias ``demo-qwenguard``, RANDOM weights.

Its requests are the llavaguard family's own (the same policy and JSON answer as the demo
LlavaGuard's: runtime/demo/llavaguard_samples.py). An untrained model cannot rate them, so each
sample expects what the random model deterministically writes: an answer that leaves the JSON at
once, reported ``unparseable`` with its raw text (the engine stops decoding it after one token).
What ``make demo`` shows for it is the QwenGuard route end to end — Qwen2.5-VL's frame, tokenizer,
patches and 3-D positions behind the same server — not a rating. Loading this module imports nothing heavy
(runtime/demo/plugin_base.py).
"""

from __future__ import annotations

from guardedge.runtime.demo.plugin_base import DemoPlugin
from guardedge.runtime.demos import LabelledRequest


class QwenGuardDemo(DemoPlugin):
    alias = "demo-qwenguard"
    family = "llavaguard"
    random_weights = True
    assembler = "guardedge.runtime.demo.qwenguard.build:ensure_demo_qwenguard"

    def samples(self) -> list[dict]:
        """The family's demo requests; a random model answers each off-format (MODEL_CARD.md)."""
        from guardedge.runtime.demo.llavaguard_samples import samples

        return [{**case, "expected": "unparseable"} for case in samples()]

    def eval_set(self, n: int, seed: int) -> tuple[list[LabelledRequest], str]:
        """The family's held-out requests (the demo LlavaGuard's generator): the same labels, which a
        random model does not meet; exports compare their answers with the source's, not with the labels."""
        from guardedge.runtime.demo.llavaguard.plugin import DEMO

        return DEMO.eval_set(n, seed)


DEMO = QwenGuardDemo()
