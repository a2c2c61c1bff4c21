"""The demo Llama Guard 4 as a plug-in (runtime/demos.py): alias ``demo-llama-guard-4``.

Loading this module imports nothing heavy; each method imports the demo's builder or data lazily.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from guardedge.runtime.demos import CheckSplit, LabelledRequest


class LlamaGuard4Demo:
    alias = "demo-llama-guard-4"
    family = "llama-guard-4"
    random_weights = False

    def build(self, progress: bool = True) -> Path:
        from guardedge.runtime.demo.llama_guard_4.build import ensure_demo

        return ensure_demo(progress=progress)

    def samples(self) -> list[dict]:
        from guardedge.runtime.demo.llama_guard_4.samples import samples

        return samples()

    def eval_set(self, n: int, seed: int) -> tuple[list[LabelledRequest], str]:
        """The held-out synthetic split with several images per conversation (LG4's data.py)."""
        from guardedge.runtime.demo.llama_guard_4.data import examples
        from guardedge.runtime.demo.llama_guard_4.train import to_request

        generated = examples("eval", n, seed=seed)
        out = [LabelledRequest(ex["id"], ex["task"], to_request(ex), ex["label"]["verdict"], tuple(ex["label"]["categories"]))
               for ex in generated]
        plain = [{**ex, "image_specs": [[s.colour, s.size, s.seed, s.style] for s in ex["image_specs"]]} for ex in generated]
        return out, hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()

    def check_examples(self, split: CheckSplit, n: int) -> list[dict]:
        """The held-out corpus halves and the held-out generator's multi-image requests at seeds 2 and 3."""
        from guardedge.runtime.demo.llama_guard_4.checksets import examples

        return examples(split, n)


DEMO = LlamaGuard4Demo()
