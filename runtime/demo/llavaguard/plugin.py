"""The LlavaGuard demo as a plug-in (runtime/demos.py): alias ``demo-llavaguard``.

Loading this module imports nothing heavy; each method imports the demo's builder or data lazily
(runtime/demo/plugin_base.py).
"""

from __future__ import annotations

from guardedge.runtime.demo.plugin_base import Checked, DemoPlugin, labelled_request_dicts
from guardedge.runtime.demos import LabelledRequest


class LlavaGuardDemo(Checked, DemoPlugin):
    alias = "demo-llavaguard"
    family = "llavaguard"
    assembler = "guardedge.runtime.demo.llavaguard.build:ensure_demo_llavaguard"
    sample_source = "guardedge.runtime.demo.llavaguard_samples:samples"
    # The held-out generator at seeds 2 and 3, a quarter under held-out custom policies.
    check_source = "guardedge.runtime.demo.llavaguard_samples:check_examples"

    def eval_set(self, n: int, seed: int) -> tuple[list[LabelledRequest], str]:
        """Labelled image requests from the demo LlavaGuard's held-out generator (eval split)."""
        from guardedge.runtime.demo.llavaguard_samples import held_out_examples

        return labelled_request_dicts(self.family, held_out_examples(n, seed=seed))


DEMO = LlavaGuardDemo()
