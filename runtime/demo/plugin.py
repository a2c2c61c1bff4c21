"""The Llama Guard 3 Vision demo as a plug-in (runtime/demos.py): alias ``demo``.

Loading this module imports nothing heavy; each method imports the demo's builder or data lazily.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from guardedge.runtime.demos import CheckSplit, LabelledRequest


class LlamaGuardDemo:
    alias = "demo"
    family = "llama-guard-3-vision"
    random_weights = False

    def build(self, progress: bool = True) -> Path:
        from guardedge.runtime.demo.build import ensure_demo

        return ensure_demo(progress=progress)

    def samples(self) -> list[dict]:
        from guardedge.runtime.demo.samples import samples

        return samples()

    def eval_set(self, n: int, seed: int) -> tuple[list[LabelledRequest], str]:
        """The demo guard's held-out generator (real Llama 3 tokens, synthetic images)."""
        from guardedge.runtime.demo.data import examples
        from guardedge.runtime.demo.train import to_request

        generated = examples("eval", n, seed=seed)
        out = [LabelledRequest(ex["id"], ex["task"], to_request(ex), ex["label"]["verdict"], tuple(ex["label"]["categories"]))
               for ex in generated]
        return out, hashlib.sha256(_plain_json(generated).encode()).hexdigest()

    def check_examples(self, split: CheckSplit, n: int) -> list[dict]:
        """The independently written held-out corpus halved by a fixed hash, with synthetic image
        requests (runtime/demo/checksets.py)."""
        from guardedge.runtime.demo.checksets import examples

        return examples(split, n)


def _plain_json(generated: list[dict]) -> str:
    def plain(ex: dict) -> dict:
        spec = ex.get("image_spec")
        return {**ex, "image_spec": None if spec is None else [spec.colour, spec.size, spec.seed]}

    return json.dumps([plain(ex) for ex in generated], sort_keys=True)


DEMO = LlamaGuardDemo()
