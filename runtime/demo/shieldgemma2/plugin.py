"""The demo ShieldGemma 2 as a plug-in (runtime/demos.py): alias ``demo-shieldgemma-2``.

Loading this module imports nothing heavy; each method imports the demo's builder or data lazily.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from guardedge.runtime.demos import LabelledRequest


class ShieldGemma2Demo:
    alias = "demo-shieldgemma-2"
    family = "shieldgemma-2"
    random_weights = False

    def build(self, progress: bool = True) -> Path:
        from guardedge.runtime.demo.shieldgemma2.build import ensure_demo_shieldgemma2

        return ensure_demo_shieldgemma2(progress=progress)

    def samples(self) -> list[dict]:
        from guardedge.runtime.demo.shieldgemma2.samples import samples

        return samples()

    def eval_set(self, n: int, seed: int) -> tuple[list[LabelledRequest], str]:
        """Labelled image requests from the demo's held-out generator (eval split)."""
        from guardedge.runtime.demo.shieldgemma2.samples import held_out_examples
        from guardedge.runtime.families import get_family
        from guardedge.runtime.requests import parse_request

        family = get_family(self.family)
        generated = held_out_examples(n, seed=seed)
        out = []
        for ex in generated:
            request = parse_request({k: v for k, v in ex.items() if k != "label"}, family.default_categories())
            verdict, categories = family.parse_label(ex["label"])
            out.append(LabelledRequest(ex["request_id"], "prompt", request, verdict, categories))
        return out, hashlib.sha256(json.dumps(generated, sort_keys=True).encode()).hexdigest()

    def check_examples(self, split: str, n: int) -> list[dict]:
        """The held-out generator at seeds 2 and 3, every fourth request with a policy excluded."""
        from guardedge.runtime.demo.shieldgemma2.samples import check_examples

        return check_examples(split, n)


DEMO = ShieldGemma2Demo()
