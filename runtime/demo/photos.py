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

Real photos are never generated or trained on here; photo_metrics.py measures on them.
"""

from __future__ import annotations

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
HELD_OUT_QUESTION = "What is in this picture?"  # photo_metrics.py asks it
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
