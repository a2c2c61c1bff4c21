"""The demo Llama Guard 4 as a plug-in (runtime/demos.py): alias ``demo-llama-guard-4``.

Loading this module imports nothing heavy; each method imports the demo's builder or data lazily
(runtime/demo/plugin_base.py).
"""

from __future__ import annotations

import hashlib
import json

from guardedge.runtime.demo.plugin_base import Checked, DemoPlugin, labelled
from guardedge.runtime.demos import LabelledRequest


class LlamaGuard4Demo(Checked, DemoPlugin):
    alias = "demo-llama-guard-4"
    family = "llama-guard-4"
    assembler = "guardedge.runtime.demo.llama_guard_4.build:ensure_demo"
    sample_source = "guardedge.runtime.demo.llama_guard_4.samples:samples"
    # The held-out corpus halves and the held-out generator's multi-image requests at seeds 2 and 3.
    check_source = "guardedge.runtime.demo.llama_guard_4.checksets:examples"

    def eval_set(self, n: int, seed: int) -> tuple[list[LabelledRequest], str]:
        """The held-out synthetic split with several images per conversation (LG4's data.py)."""
        from guardedge.runtime.demo.llama_guard_4.data import examples
        from guardedge.runtime.demo.llama_guard_4.train import to_request

        generated = examples("eval", n, seed=seed)
        plain = [{**ex, "image_specs": [[s.colour, s.size, s.seed, s.style] for s in ex["image_specs"]]} for ex in generated]
        return labelled(generated, to_request), hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()


DEMO = LlamaGuard4Demo()
