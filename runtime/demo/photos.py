"""Busy photo-like harmless images for the Llama Guard demos, and real photos to measure them on.

The demo Llama Guard 3 Vision (v1, v2) and the demo Llama Guard 4 (v1) read an image's hazard from
its background colour (data.py), and their harmless "photo" scenes were drawn in a palette kept
far from every hazard colour — so a real photo with a lot of orange, brown, red or black came out
unsafe (4/4 scikit-image photos sent alone). The fix is the demo LlavaGuard's (v2,
docs/decisions/0009): a hazard is a **flat** field of a hazard colour; a busy photo-like image
of any palette, the hazard colours included, is harmless. ``BusyPhoto`` draws the LlavaGuard
demo's ``photo()`` images, redrawn until at most 20 % of the thumbnail is flat and near one of
*this* demo's hazard colours (``IMAGE_COLOURS``: it has flat black for Hate, which LlavaGuard's
table does not), and ``with_photos`` mixes requests about such images into a training stream.

Real photos are never generated or trained on here: ``real_photos`` (scikit-image's and
matplotlib's shipped images, the LlavaGuard demo's held-out everyday set) only measures.

    python -m guardedge.runtime.demo.photos demo                  # flagged share of real photos
    python -m guardedge.runtime.demo.photos demo-llama-guard-4
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass

from guardedge.runtime.demo import data as base
from guardedge.runtime.demo.llavaguard.data import SAFE_MAX_SHARE, hazard_share, photo

REDRAWS = 50
# Photos are drawn at the usual sizes and at larger, photo-like ones (real photos are 300-1400 px).
PHOTO_SIZES = base.IMAGE_SIZES + [(256, 256), (320, 240), (240, 320), (400, 300), (300, 400), (480, 320)]
# Questions about an image for training; "What is in this picture?" stays out (measurement only).
QUESTIONS = base.IMAGE_PROMPTS + ["What's this?", "Can you describe what you see?", "What does this photo show?",
                                  "Look at this.", "Any thoughts on this image?", "Where was this taken?",
                                  "Is this picture safe?", "Caption this image."]
HELD_OUT_QUESTION = "What is in this picture?"
HAZARD_SHARE = 0.4  # of photo requests: a flat hazard image (the rest harmless, mostly busy photos)


@dataclass(frozen=True)
class BusyPhoto(base.ImageSpec):
    """A harmless busy photo-like image (the LlavaGuard demo's ``photo``), flat-hazard-free for this demo."""

    style: str = "busy"

    def render(self):
        for k in range(REDRAWS):
            img = photo(self.size, self.seed * REDRAWS + k)
            if hazard_share(img, base.IMAGE_COLOURS)[0] <= SAFE_MAX_SHARE:
                return img
        raise RuntimeError(f"no harmless busy photo for seed {self.seed}")


class PhotoRequests:
    """Wraps a data.Generator: a share of its examples become requests about one image (alone, or
    with a question), and the busy photos it lets ride along with a request become BusyPhotos."""

    def __init__(self, gen: base.Generator, share: float, image_only: float, seed: int):
        self.gen, self.share, self.image_only = gen, share, image_only
        self.rng = random.Random(f"photos:{gen.split}:{seed}")
        self.split, self.natural = gen.split, gen.natural

    def example(self) -> dict:
        if self.rng.random() < self.share:
            return self._image_request()
        ex = self.gen.example()
        spec = ex.get("image_spec")
        if spec is not None and spec.style == "photo" and self.rng.random() < 0.5:
            ex["image_spec"] = BusyPhoto((0, 0, 0), self.rng.choice(PHOTO_SIZES), spec.seed)
        return ex

    def _image_request(self) -> dict:
        rng = self.rng
        categories, excluded, _ = self.gen._policy()
        policy = {k: v for k, v in (categories or dict(base.DEFAULT_CATEGORIES)).items() if k not in excluded}
        hazard, size, seed = None, rng.choice(PHOTO_SIZES), rng.randrange(2**31)
        if rng.random() < HAZARD_SHARE:
            hazard = rng.choice(list(base.IMAGE_COLOURS))
            spec = base.ImageSpec(base.IMAGE_COLOURS[hazard], size, seed)
        elif rng.random() < 0.8:
            spec = BusyPhoto((0, 0, 0), size, seed)
        else:  # the older harmless images stay in the mix
            spec = base.ImageSpec(rng.choice(base.SAFE_COLOURS), size, seed, rng.choice(["flat", "photo"]))
        content: list[dict] = [{"type": "image"}]
        if rng.random() >= self.image_only:
            content.insert(rng.randrange(2), {"type": "text", "text": rng.choice(QUESTIONS)})
        return base._example([{"role": "user", "content": content}], "prompt", "photo", policy, {hazard} - {None},
                             categories, excluded, spec)


def with_photos(gen: base.Generator, mix: base.TrainingMix | None, seed: int):
    """``gen``, wrapped in PhotoRequests when the mix asks for photo requests."""
    if mix is None or not mix.photo_requests:
        return gen
    return PhotoRequests(gen, mix.photo_requests, mix.image_only, seed)


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
            img = image.render()
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
