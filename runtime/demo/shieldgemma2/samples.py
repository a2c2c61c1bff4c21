"""Demo ShieldGemma 2 requests: ``make demo``'s samples, the family's smoke set and a held-out set.

ShieldGemma 2 scores one image against each policy and reads no message text, so every request is
one user message holding one image: under the three default policies, with one excluded (not
scored) or with custom policies. Images are the demo LlavaGuard's (data.py says which colour
violates which policy).

    python -m guardedge.runtime.demo.shieldgemma2.samples   # the smoke set as JSON (for families/data)
"""

from __future__ import annotations

import json

from guardedge.runtime.demo.llavaguard.data import HAZARD_COLOURS, Image
from guardedge.runtime.demo.llavaguard_samples import image_request
from guardedge.runtime.demo.shieldgemma2.data import POLICIES, examples

WEAPONS = {"weapons": "No Weapons: The image shall not contain firearms, knives or explosives, nor instructions to make them."}


def samples() -> list[dict]:
    """Requests with ``expected`` ("safe" or "unsafe violence")."""
    cases = [
        (image_request("safe-photo", Image((0, 0, 0), (96, 64), 7, "photo")), "safe"),
        (image_request("violence", Image(HAZARD_COLOURS["O2"], (96, 64), 7)), "unsafe violence"),
        (image_request("dangerous", Image(HAZARD_COLOURS["O6"], (64, 96), 7)), "unsafe dangerous"),
        (image_request("excluded-policy", Image(HAZARD_COLOURS["O3"], (100, 50), 5), excluded_category_keys=["sexual"]), "safe"),
    ]
    return [{**request, "expected": expected} for request, expected in cases]


def smoke_requests() -> list[dict]:
    """The samples without their expectations, plus custom policies (the image is harmless)."""
    custom = image_request("custom-policy", Image((40, 90, 220), (96, 64), 9), categories={**WEAPONS, "violence": dict_default("violence")})
    return [{k: v for k, v in case.items() if k != "expected"} for case in samples()] + [custom]


def dict_default(key: str) -> str:
    from guardedge.runtime.families.shieldgemma2 import DEFAULT_POLICIES

    return dict(DEFAULT_POLICIES)[key]


def held_out_examples(n: int, seed: int = 1) -> list[dict]:
    """``n`` labelled request dicts from the held-out generator (eval split; ``seed`` 1 is not the
    split the model card's figures use): exports' agreement sets and ``bench drift --data demo``."""
    out = []
    for i, ex in enumerate(examples("eval", n, seed)):
        flagged = [p for p in POLICIES if ex["labels"][p]]
        label = {"verdict": "unsafe" if flagged else "safe", "categories": flagged}
        out.append({**image_request(f"sg2-heldout-{seed}-{i}", ex["image"]), "label": label})
    return out


CHECK_SEEDS = {"calibration": 2, "evaluation": 3}  # seed 0: the demo's metrics; 1: exports' agreement, --data demo


def check_examples(split: str, n: int = 400) -> list[dict]:
    """``n`` labelled request dicts of the ``calibration`` or ``evaluation`` set for checking a
    quantized guard (issue 21): disjoint draws of the held-out generator (other image sizes than
    training) that neither the demo's training, its metrics nor the recipes' design (decision 0012,
    on other families' sets) saw. Every fourth request excludes one default policy (not scored;
    its label follows), rotating over the three."""
    if split not in CHECK_SEEDS:
        raise ValueError(f"split must be one of {', '.join(CHECK_SEEDS)}, not {split!r}")
    out = []
    for i, ex in enumerate(examples("eval", n, CHECK_SEEDS[split])):
        excluded = [POLICIES[(i // 4) % len(POLICIES)]] if i % 4 == 3 else []
        flagged = [p for p in POLICIES if ex["labels"][p] and p not in excluded]
        policy = {"excluded_category_keys": excluded} if excluded else {}
        request = image_request(f"sg2-{split}-{i}", ex["image"], **policy)
        out.append({**request, "id": f"sg2-{split}-{i}", "label": {"verdict": "unsafe" if flagged else "safe", "categories": flagged}})
    return out


if __name__ == "__main__":
    print(json.dumps(smoke_requests(), indent=1))
