"""The LlavaGuard demo as a plug-in (runtime/demos.py): alias ``demo-llavaguard``.

Loading this module imports nothing heavy; each method imports the demo's builder or data lazily.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from guardedge.runtime.demos import LabelledRequest


class LlavaGuardDemo:
    alias = "demo-llavaguard"
    family = "llavaguard"
    random_weights = False

    def build(self, progress: bool = True) -> Path:
        from guardedge.runtime.demo.llavaguard.build import ensure_demo_llavaguard

        return ensure_demo_llavaguard(progress=progress)

    def samples(self) -> list[dict]:
        from guardedge.runtime.demo.llavaguard_samples import samples

        return samples()

    def eval_set(self, n: int, seed: int) -> tuple[list[LabelledRequest], str]:
        """Labelled image requests from the demo LlavaGuard's held-out generator (eval split)."""
        from guardedge.runtime.demo.llavaguard_samples import held_out_examples
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
        """The held-out generator at seeds 2 and 3, a quarter under held-out custom policies."""
        from guardedge.runtime.demo.llavaguard_samples import check_examples

        return check_examples(split, n)


DEMO = LlavaGuardDemo()
