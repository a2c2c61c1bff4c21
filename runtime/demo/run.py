"""``make demo``: classify the demo requests end to end with the demo guard and print verdicts.

    python -m guardedge.runtime.demo.run
"""

from __future__ import annotations

import sys

from guardedge.runtime.demo.samples import samples
from guardedge.runtime.engine import EngineOptions, load_engine
from guardedge.runtime.types import Verdict


def _answer(v: Verdict) -> str:
    """A verdict in the samples' ``expected`` spelling: "safe" or "unsafe S1,S2"."""
    return v.verdict + (" " + ",".join(v.categories) if v.verdict == "unsafe" else "")


def main() -> int:
    engine = load_engine("demo", EngineOptions(max_batch_size=8))
    print(f"model: {engine.model_dir.path} ({engine.backend.description})")
    cases = samples()
    verdicts = engine.classify([engine.parse(c) for c in cases])
    print(f"{'request':<22} {'expected':<10} {'verdict':<12} {'categories':<10} {'P(unsafe)':>9}  note")
    as_expected = 0
    for case, v in zip(cases, verdicts):
        ok = _answer(v) == case["expected"]
        as_expected += ok
        note = "" if ok else f"not as expected{': ' + v.error if v.error else ''}"
        print(f"{case['request_id']:<22} {case['expected']:<10} {v.verdict:<12} {','.join(v.categories):<10} "
              f"{v.unsafe_probability:>9.3f}  {note}")
    print(f"{as_expected}/{len(cases)} as expected (a tiny demo model; its held-out metrics: guardedge demo metrics)")
    kinds = {v.verdict for v in verdicts}
    if not {"safe", "unsafe"} <= kinds:
        print("demo failed: expected at least one safe and one unsafe verdict", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
