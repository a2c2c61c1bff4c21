"""The Llama Guard 3 Vision demo as a plug-in (runtime/demos.py): alias ``demo``.

Loading this module imports nothing heavy; each method imports the demo's builder or data lazily
(runtime/demo/plugin_base.py).
"""

from __future__ import annotations

import hashlib
import json

from guardedge.runtime.demo.plugin_base import Checked, DemoPlugin, labelled
from guardedge.runtime.demos import LabelledRequest


class LlamaGuardDemo(Checked, DemoPlugin):
    alias = "demo"
    family = "llama-guard-3-vision"
    assembler = "guardedge.runtime.demo.build:ensure_demo"
    sample_source = "guardedge.runtime.demo.samples:samples"
    # The independently written held-out corpus halved by a fixed hash, with synthetic image requests.
    check_source = "guardedge.runtime.demo.checksets:examples"

    def eval_set(self, n: int, seed: int) -> tuple[list[LabelledRequest], str]:
        """The demo guard's held-out generator (real Llama 3 tokens, synthetic images)."""
        from guardedge.runtime.demo.data import examples
        from guardedge.runtime.demo.train import to_request

        generated = examples("eval", n, seed=seed)
        return labelled(generated, to_request), hashlib.sha256(_plain_json(generated).encode()).hexdigest()


def _plain_json(generated: list[dict]) -> str:
    def plain(ex: dict) -> dict:
        spec = ex.get("image_spec")
        return {**ex, "image_spec": None if spec is None else [spec.colour, spec.size, spec.seed]}

    return json.dumps([plain(ex) for ex in generated], sort_keys=True)


DEMO = LlamaGuardDemo()
