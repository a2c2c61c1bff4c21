"""The demo ShieldGemma 2 as a plug-in (runtime/demos.py): alias ``demo-shieldgemma-2``.

Loading this module imports nothing heavy; each method imports the demo's builder or data lazily
(runtime/demo/plugin_base.py).
"""

from __future__ import annotations

from guardedge.runtime.demo.plugin_base import Checked, DemoPlugin, labelled_request_dicts
from guardedge.runtime.demos import LabelledRequest


class ShieldGemma2Demo(Checked, DemoPlugin):
    alias = "demo-shieldgemma-2"
    family = "shieldgemma-2"
    assembler = "guardedge.runtime.demo.shieldgemma2.build:ensure_demo_shieldgemma2"
    sample_source = "guardedge.runtime.demo.shieldgemma2.samples:samples"
    # The held-out generator at seeds 2 and 3, every fourth request with a policy excluded.
    check_source = "guardedge.runtime.demo.shieldgemma2.samples:check_examples"

    def eval_set(self, n: int, seed: int) -> tuple[list[LabelledRequest], str]:
        """Labelled image requests from the demo's held-out generator (eval split)."""
        from guardedge.runtime.demo.shieldgemma2.samples import held_out_examples

        return labelled_request_dicts(self.family, held_out_examples(n, seed=seed))


DEMO = ShieldGemma2Demo()
