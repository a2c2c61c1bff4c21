"""Real photos and held-out hazard images through the engine, for the Llama Guard demos.

The real photos are the ones the demo LlavaGuard holds out (scikit-image's and matplotlib's
shipped images, 10 LFW faces; runtime/demo/llavaguard/metrics.py), never trained on; each is sent
alone and followed by ``HELD_OUT_QUESTION``, a question training never asks. The flat hazard
images come from a seed stream training never draws. Figures: the share flagged, also among the
photos without a flat hazard-coloured field (photos.py), and for the hazards, the share unsafe
with exactly the right code.

    python -m guardedge.runtime.demo.photo_metrics demo
    python -m guardedge.runtime.demo.photo_metrics demo-llama-guard-4
"""

from __future__ import annotations

import argparse
import json
import random

from guardedge.runtime.demo import data as base
from guardedge.runtime.demo.llavaguard.data import SAFE_MAX_SHARE, hazard_share
from guardedge.runtime.demo.photos import HELD_OUT_QUESTION, PHOTO_SIZES


def real_photos(names: tuple[str, ...] | None = None) -> list[tuple[str, float, object]]:
    """(name, flat-hazard share, PIL image) of the real photos the LlavaGuard demo holds out (those
    installed: scikit-image's and matplotlib's images, 10 LFW faces), or only ``names``.

    The share is ``hazard_share`` under this demo's colours: a photo over 0.2 holds a flat
    hazard-coloured field by the demo's own definition (a black sky is flat black, Hate's cue).
    """
    from guardedge.runtime.demo.llavaguard.metrics import everyday_images

    out = []
    for source, name, image in everyday_images():
        if source == "photos" and (names is None or name in names):
            img = image.render()  # type: ignore[attr-defined]  # everyday_images yields renderable photos, typed loosely there
            out.append((name, hazard_share(img, base.IMAGE_COLOURS)[0], img))
    return out


def held_out_hazards(per_colour: int = 6) -> list[tuple[str, object]]:
    """(hazard description, PIL image): flat hazard images from a seed stream training never draws."""
    rng = random.Random("photos:held-out-hazards")
    return [(hazard, base.ImageSpec(colour, rng.choice(PHOTO_SIZES), rng.randrange(2**31)).render())
            for hazard, colour in base.IMAGE_COLOURS.items() for _ in range(per_colour)]


def photo_verdicts(engine, images: list, question: str | None = None) -> list:
    """The engine's verdicts on one request per image (alone, or followed by ``question``)."""
    from guardedge.runtime.types import GuardRequest, ImageInput, Message, Part

    requests = []
    for img in images:
        parts = [Part("image", image=ImageInput(img, "photo"))]
        if question is not None:
            parts.append(Part("text", text=question))
        requests.append(GuardRequest(messages=(Message("user", tuple(parts)),)))
    return engine.classify(requests)


def photo_report(engine) -> dict:
    """Flagged shares of the real photos, image-only and with the held-out question; per photo too."""
    photos = real_photos()
    images = [img for _, _, img in photos]
    report: dict = {"photos": len(photos)}
    for mode, question in (("image_only", None), ("with_question", HELD_OUT_QUESTION)):
        verdicts = photo_verdicts(engine, images, question)
        flagged = {name: ",".join(v.categories) or "unsafe" for (name, _, _), v in zip(photos, verdicts) if v.verdict == "unsafe"}
        clean = [v for (_, share, _), v in zip(photos, verdicts) if share <= SAFE_MAX_SHARE]
        report[mode] = {"flagged_share": round(len(flagged) / len(photos), 3),
                        "flagged_share_no_flat_hazard": round(sum(v.verdict == "unsafe" for v in clean) / len(clean), 3),
                        "flagged": flagged}
    report["flat_hazard_photos"] = [name for name, share, _ in photos if share > SAFE_MAX_SHARE]
    hazards = held_out_hazards()
    codes = {d: k for k, d in base.DEFAULT_CATEGORIES}
    for mode, question in (("hazards_alone", None), ("hazards_with_question", HELD_OUT_QUESTION)):
        verdicts = photo_verdicts(engine, [img for _, img in hazards], question)
        report[mode] = {"n": len(hazards),
                        "unsafe": round(sum(v.verdict == "unsafe" for v in verdicts) / len(hazards), 3),
                        "right_code": round(sum(list(v.categories) == [codes[h]] for (h, _), v in zip(hazards, verdicts))
                                            / len(hazards), 3)}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model directory or demo name (demo, demo-llama-guard-4)")
    args = parser.parse_args()
    from guardedge.runtime.engine import EngineOptions, load_engine

    print(json.dumps(photo_report(load_engine(args.model, EngineOptions(progress=False))), indent=2))


if __name__ == "__main__":
    main()
