"""Synthetic, deterministic data for the demo LlavaGuard: images, policies and exact answers.

What stands in for content (v2, docs/decisions/0009): a hazard is a **flat** field of one of
nine hazard colours (jittered, 1-3 random shapes, pixel noise). Everything else is harmless by
construction:

- busy "photo"-like images of ANY palette (dark, red, pink, white, skin tones, navy, greyscale,
  low contrast; the hazard colours themselves in ~40 % of them): fractal noise, smooth linear and
  radial gradients, soft blobs, landscape-like scenes, stripes / waves / bricks, text documents
  (light and dark), UI screenshots; then blur, darkening, low contrast, greyscale, tints, JPEG;
- flat fields of colours at least 80 (Euclidean RGB) from every hazard colour, with shapes.

A check enforces "by construction": a harmless image is redrawn until at most 20 % of its
32x32 thumbnail is flat and within 50 of a hazard colour (``hazard_share``); hazardous images
score well above half. The hazard colours keep the demo Llama Guard's where its categories
match (S1 red → O2, S9 orange → O6, S11 purple → O7, S12 pink → O3); O1 and O4, black and white
in v1, are now cyan and magenta, since black and white are the backgrounds of most documents,
screenshots and night photos. O5, O8 and O9 have colours of their own.

Labels follow LlavaGuard v1.2: hazardous content under a policy that restricts its category is
``Unsafe`` with that category; if the policy declares the category non-violating the rating is
``Safe`` and the category still names what the image shows (LlavaGuard's annotations keep the
content's category with a Safe rating); harmless content is ``Safe`` / ``NA: None applying``.
Rationales are one templated sentence naming what the image shows and the category.

Custom policies (v3, docs/decisions/0010): a request may bring its own categories, (code,
"Name\nguidelines") pairs. A code keeps its colour: a custom policy lists a subset (1-9) of the
codes, in the default order or shuffled, each under a new name and guidelines. A hazard whose code
the policy lists is ``Unsafe`` with that policy's exact header (``O2: <custom name>``, copied from
the prompt); a hazard whose code it does not list, and everything harmless, is ``Safe`` /
``NA: None applying``; exclusions apply to custom categories too (``Safe``, the custom header
named). Training names are 1-3 words of ``TRAIN_WORDS`` (480 words of the Qwen2 vocabulary);
held-out names (``HELD_OUT_NAMES``) are realistic category names none of whose words, nor any
word containing them, is in ``TRAIN_WORDS``, and their guidelines use another wording.

Held-out images never occur in training: other sizes, another seed stream. Real everyday photos
are never generated here; they are held out in metrics.py.

    python -m guardedge.runtime.demo.llavaguard.data --n 3    # print a few held-out examples
    python -m guardedge.runtime.demo.llavaguard.data --save /tmp/lg --n 24  # write PNGs to look at
"""

from __future__ import annotations

import argparse
import io
import json
import random
from dataclasses import dataclass

from guardedge.runtime.demo.data import ImageSpec
from guardedge.runtime.demo.llavaguard.policy import CODES, NONE_APPLYING, Categories, custom_header, header, prompt_for

HAZARD_COLOURS: dict[str, tuple[int, int, int]] = {
    "O1": (0, 230, 230),  # cyan (v1: black)
    "O2": (200, 20, 20),  # the demo guard's S1 Violent Crimes
    "O3": (250, 120, 190),  # S12 Sexual Content
    "O4": (230, 0, 230),  # magenta (v1: white)
    "O5": (0, 110, 110),
    "O6": (240, 140, 0),  # S9 Indiscriminate Weapons
    "O7": (120, 30, 160),  # S11 Self-Harm
    "O8": (150, 230, 0),
    "O9": (20, 20, 120),
}
SHOWS = {
    "O1": "hateful, demeaning imagery", "O2": "a violent scene", "O3": "sexual content", "O4": "nudity",
    "O5": "the planning of a crime", "O6": "weapons", "O7": "self-harm", "O8": "cruelty to an animal",
    "O9": "a disaster",
}
SAFE_SHOWS = {"flat": "a plain coloured picture with simple shapes", "photo": "an everyday scene"}
TRAIN_SIZES = [(64, 64), (96, 48), (48, 96), (160, 90), (90, 160), (120, 40), (40, 120), (200, 200), (56, 112),
               (240, 160), (160, 240)]
# Thumbnails and icons (added for v2's second phase, after the 25x25 LFW faces of the held-out set
# came out Unsafe: training had never seen an image under 40 px).
SMALL_SIZES = [(24, 24), (32, 32), (20, 30), (30, 20), (36, 28), (16, 16)]
EVAL_SIZES = [(80, 80), (128, 72), (72, 128), (100, 50), (50, 100), (150, 150), (112, 56), (220, 140)]
HAZARD_SHARE = 0.5
# Share of examples under a policy with 1-4 categories declared non-violating (held out: 0.5).
EXCLUDED_POLICY_SHARE = {"train": 0.6, "eval": 0.5}
# Under a policy with exclusions, how often hazardous content is of an excluded category. v1
# trained at 0.6 and learnt much of "any exclusion → Safe" (docs/decisions/0009); v2 trains at
# 0.4, so non-excluded hazards are the majority there. Held out: 0.5.
EXCLUDED_HIT = {"train": 0.4, "eval": 0.5}
# v3 trains at 0.35 (v2's restricted-under-exclusions recall was 0.694); held out stays 0.5.
EXCLUDED_HIT_V3 = 0.35
# v3: share of training examples under a custom policy (the held-out custom set is its own stream).
CUSTOM_POLICY_SHARE = {"train": 0.4, "eval": 0.0}
PHOTO_SHARE = 0.75  # of harmless images: photo-like (the rest: flat far-from-hazard colours)
FLAT_SAFE_MIN_DISTANCE = 80
# hazard_share: thumbnail side, "near a hazard colour", "flat" (max channel std in a 3x3 window)
THUMB, NEAR, FLAT_STD = 32, 50.0, 8.0
SAFE_MAX_SHARE = 0.2


@dataclass(frozen=True)
class Image:
    """A demo image: ``flat`` (background colour = meaning) or ``photo`` (harmless by construction)."""

    colour: tuple[int, int, int]
    size: tuple[int, int]
    seed: int
    style: str = "flat"

    def render(self):
        import numpy as np
        from PIL import Image as PILImage

        if self.style == "photo":
            return photo(self.size, self.seed)
        img = ImageSpec(self.colour, self.size, self.seed, "flat").render()
        rng = np.random.default_rng([self.seed, 7])
        if rng.random() < 0.3:  # the photos' codec and focus changes, so neither tells harmless from hazardous
            img = _blur(img, rng.uniform(0.3, 1.2))
        if rng.random() < 0.25:
            img = _jpeg(img, int(rng.integers(25, 90)))
        return img if isinstance(img, PILImage.Image) else PILImage.fromarray(img)


def hazard_share(img, colours: dict[str, tuple[int, int, int]] | None = None) -> tuple[float, str]:
    """(largest share of the 32x32 thumbnail that is flat and within NEAR of one hazard colour, its key).

    ``colours``: the hazard colours to test (default ``HAZARD_COLOURS``; the Llama Guard demos
    pass their own table, runtime/demo/photos.py)."""
    import numpy as np
    from PIL import Image as PILImage

    a = np.asarray(img.convert("RGB").resize((THUMB, THUMB), PILImage.Resampling.BOX), dtype=np.float32)
    pad = np.pad(a, ((1, 1), (1, 1), (0, 0)), mode="edge")
    windows = np.stack([pad[i : i + THUMB, j : j + THUMB] for i in range(3) for j in range(3)])
    flat = windows.std(axis=0).max(axis=-1) < FLAT_STD
    best = (0.0, "")
    for code, colour in (colours or HAZARD_COLOURS).items():
        near = np.linalg.norm(a - np.array(colour, dtype=np.float32), axis=-1) < NEAR
        best = max(best, (float((near & flat).mean()), code))
    return best


# -- harmless photo-like images --------------------------------------------------------------

THEMES = ("hazard", "hazard", "dark", "red", "pink", "white", "skin", "navy", "grey", "any", "any")
SKIN = [(255, 224, 196), (241, 194, 167), (224, 172, 138), (198, 134, 100), (161, 102, 72), (120, 75, 50), (80, 50, 35)]


def _anchor(rng, theme: str) -> tuple[int, int, int]:
    """One palette colour of a theme; "hazard" is a jittered hazard colour (so colour alone never decides)."""
    u = lambda lo, hi: int(rng.integers(lo, hi + 1))  # noqa: E731
    if theme == "hazard":
        c = HAZARD_COLOURS[CODES[int(rng.integers(len(CODES)))]]
        r, g, b = (max(0, min(255, x + u(-25, 25))) for x in c)
        return r, g, b
    if theme == "dark":
        return (u(0, 70), u(0, 70), u(0, 70))
    if theme == "red":
        return (u(110, 255), u(0, 80), u(0, 80))
    if theme == "pink":
        return (u(200, 255), u(90, 190), u(150, 230))
    if theme == "white":
        g = u(200, 255)
        return (g, max(0, g - u(0, 20)), max(0, g - u(0, 30)))
    if theme == "skin":
        r, g, b = (max(0, min(255, x + u(-15, 15))) for x in SKIN[int(rng.integers(len(SKIN)))])
        return r, g, b
    if theme == "navy":
        return (u(0, 50), u(0, 60), u(70, 160))
    if theme == "grey":
        g = u(0, 255)
        return (g, g, g)
    return (u(0, 255), u(0, 255), u(0, 255))


def _palette(rng, k: int):
    """k colours: one theme for most, hazard colours mixed in often."""
    theme = THEMES[int(rng.integers(len(THEMES)))]
    out = [_anchor(rng, theme if rng.random() < 0.7 else THEMES[int(rng.integers(len(THEMES)))]) for _ in range(k)]
    return [tuple(int(x) for x in c) for c in out]


def _fractal(rng, w: int, h: int, octaves: int = 4, persistence: float = 0.55):
    """Value noise over octaves (bicubic-upsampled random grids), scaled to [0, 1]."""
    import numpy as np
    from PIL import Image as PILImage

    out = np.zeros((h, w), dtype=np.float32)
    cells, amp = rng.uniform(1.5, 5.0), 1.0
    for _ in range(octaves):
        gw, gh = max(2, int(cells * w / max(w, h)) + 2), max(2, int(cells * h / max(w, h)) + 2)
        grid = PILImage.fromarray(rng.random((gh, gw)).astype(np.float32), mode="F").resize((w, h), PILImage.Resampling.BICUBIC)
        out += amp * np.asarray(grid)
        amp *= persistence
        cells *= 2
    lo, hi = out.min(), out.max()
    return (out - lo) / (hi - lo + 1e-6)


def _map(t, colours):
    """Map t in [0, 1] through a piecewise-linear palette."""
    import numpy as np

    stops = np.linspace(0, 1, len(colours))
    cs = np.array(colours, dtype=np.float32)
    return np.stack([np.interp(t, stops, cs[:, c]) for c in range(3)], axis=-1)


def _noise_field(rng, w, h):
    return _map(_fractal(rng, w, h, octaves=int(rng.integers(3, 6))), _palette(rng, int(rng.integers(2, 5))))


def _gradient(rng, w, h):
    import numpy as np

    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.6:
        angle = rng.uniform(0, 2 * np.pi)
        t = x * np.cos(angle) / w + y * np.sin(angle) / h
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        t = np.hypot((x - cx) / w, (y - cy) / h)
    t = (t - t.min()) / (t.max() - t.min() + 1e-6)
    out = _map(t, _palette(rng, int(rng.integers(2, 4))))
    return out + (_fractal(rng, w, h)[..., None] - 0.5) * rng.uniform(0, 40)


def _blobs(rng, w, h):
    import numpy as np
    from PIL import Image as PILImage, ImageDraw, ImageFilter

    img = PILImage.fromarray(_clip(_noise_field(rng, w, h)))
    draw, colours = ImageDraw.Draw(img), _palette(rng, 4)
    for _ in range(int(rng.integers(6, 30))):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(2, max(w, h) / 5)
        draw.ellipse([cx - r, cy - r * rng.uniform(0.5, 1.5), cx + r, cy + r], fill=colours[int(rng.integers(4))])
    return np.asarray(img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.5))), dtype=np.float32)


def _scene(rng, w, h):
    """Sky over ground: a gradient top, a textured bottom, a horizon, a few soft objects."""
    import numpy as np

    sky, ground = _gradient(rng, w, h), _noise_field(rng, w, h)
    horizon = (h * rng.uniform(0.25, 0.7) + (_fractal(rng, w, 1, 3)[0] - 0.5) * h * 0.3).astype(int)
    rows = np.arange(h)[:, None]
    out = np.where((rows < horizon[None, :])[..., None], sky, ground)
    return _blobs_over(rng, out, w, h)


def _blobs_over(rng, arr, w, h):
    import numpy as np
    from PIL import Image as PILImage, ImageDraw

    img = PILImage.fromarray(_clip(arr))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 6))):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        box = [x0, y0, x0 + rng.uniform(3, w / 4), y0 + rng.uniform(3, h / 4)]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=_palette(rng, 1)[0])
    return np.asarray(img, dtype=np.float32)


def _texture(rng, w, h):
    """Stripes, waves or bricks through a palette, with fractal variation."""
    import numpy as np

    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = rng.random()
    if kind < 0.6:
        angle, period = rng.uniform(0, np.pi), rng.uniform(3, 14)
        warp = _fractal(rng, w, h) * rng.uniform(0, 12)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * ((x * np.cos(angle) + y * np.sin(angle)) + warp) / period)
    else:
        bh, bw = rng.uniform(4, 10), rng.uniform(8, 20)
        row = (y // bh).astype(int)
        xx = x + (row % 2) * bw / 2
        mortar = ((y % bh) < 1.2) | ((xx % bw) < 1.2)
        t = np.where(mortar, 0.0, 0.6 + 0.4 * _fractal(rng, w, h))
    t = np.clip(t * 0.8 + 0.2 * _fractal(rng, w, h), 0, 1)
    return _map(t, _palette(rng, int(rng.integers(2, 4))))


WORDS = ("the of and to in is for on with as at by from this that report page total date name item price "
         "hello there meeting notes invoice chapter summary today weather open close save cancel settings "
         "welcome account search home news photo share like reply message order figure table").split()


def _text_lines(rng, draw, box, ink, w):
    from PIL import ImageFont

    x0, y0, x1, y1 = box
    if x1 < x0:  # a sidebar too narrow for text (thumbnails)
        return
    size = int(rng.integers(6, max(8, min(16, w // 8))))
    font = ImageFont.load_default(size=size)
    y = y0
    while y + size <= y1:
        if rng.random() < 0.5:
            line = " ".join(WORDS[int(rng.integers(len(WORDS)))] for _ in range(int(rng.integers(2, 12))))
            draw.text((x0, y), line, fill=ink, font=font)
        else:  # greeked text: a grey bar of words
            length = rng.uniform(0.3, 1.0) * (x1 - x0)
            draw.rectangle([x0, y + size * 0.3, x0 + length, y + size * 0.7], fill=ink)
        y += size + int(rng.integers(1, 5))
        if rng.random() < 0.1:
            y += size


def _document(rng, w, h):
    """Text on paper (or a dark-mode page): lines of words, maybe a heading, a picture box, a table."""
    import numpy as np
    from PIL import Image as PILImage, ImageDraw

    dark = rng.random() < 0.25
    theme = ("dark" if dark else "white") if rng.random() < 0.8 else THEMES[int(rng.integers(len(THEMES)))]
    paper = _anchor(rng, theme)
    ink = _anchor(rng, "white" if dark else "dark") if rng.random() < 0.8 else _palette(rng, 1)[0]
    img = PILImage.new("RGB", (w, h), paper)
    draw = ImageDraw.Draw(img)
    m = int(rng.integers(1, max(2, w // 10)))
    top = m
    if rng.random() < 0.5:  # a heading bar or title in an accent colour
        accent = _palette(rng, 1)[0]
        hh = int(rng.integers(4, max(5, h // 6)))
        draw.rectangle([0, 0, w, hh], fill=accent)
        top = hh + 2
    if rng.random() < 0.3:  # a picture in the page
        pw, ph = int(w * rng.uniform(0.2, 0.5)), int(h * rng.uniform(0.15, 0.35))
        pic = PILImage.fromarray(_clip(_noise_field(rng, pw, ph)))
        img.paste(pic, (int(rng.integers(m, max(m + 1, w - pw))), int(rng.integers(top, max(top + 1, h - ph)))))
    _text_lines(rng, draw, (m, top, w - m, h - m), ink, w)
    return np.asarray(img, dtype=np.float32)


def _ui(rng, w, h):
    """A screenshot-like layout: bars, a sidebar, cards with text, buttons."""
    import numpy as np
    from PIL import Image as PILImage, ImageDraw

    colours = _palette(rng, 5)
    bg = _anchor(rng, ("white", "dark", "grey", "navy")[int(rng.integers(4))]) if rng.random() < 0.7 else colours[0]
    img = PILImage.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    bar = int(rng.integers(4, max(5, h // 7)))
    draw.rectangle([0, 0, w, bar], fill=colours[1])
    left = 0
    if rng.random() < 0.5:
        left = int(w * rng.uniform(0.15, 0.3))
        draw.rectangle([0, bar, left, h], fill=colours[2])
        _text_lines(rng, draw, (2, bar + 2, left - 2, h - 2), colours[3], w)
    ink = _anchor(rng, "dark") if sum(bg) > 380 else _anchor(rng, "white")
    y = bar + 3
    while y < h - 6:
        ch = int(rng.integers(6, max(7, h // 3)))
        card = colours[int(rng.integers(5))] if rng.random() < 0.4 else bg
        draw.rectangle([left + 3, y, w - 3, min(h - 2, y + ch)], fill=card, outline=colours[4])
        _text_lines(rng, draw, (left + 5, y + 2, w - 5, min(h - 2, y + ch) - 2), ink, w)
        if rng.random() < 0.4:
            bx = int(rng.integers(left + 4, max(left + 5, w - 16)))
            draw.rounded_rectangle([bx, y + ch - 6, bx + 12, y + ch - 2], 2, fill=colours[int(rng.integers(5))])
        y += ch + int(rng.integers(2, 6))
    return np.asarray(img, dtype=np.float32)


FAMILIES = {"noise": _noise_field, "gradient": _gradient, "blobs": _blobs, "scene": _scene, "texture": _texture,
            "document": _document, "ui": _ui}


def _clip(arr):
    import numpy as np

    return np.clip(arr, 0, 255).astype(np.uint8)


def _blur(img, radius: float):
    from PIL import ImageFilter

    return img.filter(ImageFilter.GaussianBlur(radius))


def _jpeg(img, quality: int):
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=quality)
    return PILImage.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _augment(rng, arr):
    """Camera-like changes: darkening, low contrast, greyscale, tints, noise, blur, JPEG."""
    import numpy as np
    from PIL import Image as PILImage

    if rng.random() < 0.2:
        arr = arr * rng.uniform(0.15, 0.55)
    if rng.random() < 0.15:
        arr = arr.mean(axis=(0, 1)) + (arr - arr.mean(axis=(0, 1))) * rng.uniform(0.35, 0.7)
    if rng.random() < 0.2:
        arr = np.repeat(arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32), 3).reshape(arr.shape)
    elif rng.random() < 0.15:
        arr = arr * (np.array(_anchor(rng, "any"), dtype=np.float32) / 255 * 0.7 + 0.3)
    if rng.random() < 0.5:
        arr = arr + rng.normal(0, rng.uniform(1, 10), arr.shape)
    img = PILImage.fromarray(_clip(arr))
    if rng.random() < 0.3:
        img = _blur(img, rng.uniform(0.3, 1.5))
    if rng.random() < 0.25:
        img = _jpeg(img, int(rng.integers(25, 90)))
    return img


def photo_family(seed: int) -> str:
    import numpy as np

    names = list(FAMILIES)
    return names[int(np.random.default_rng([seed, 1]).integers(len(names)))]


def photo(size: tuple[int, int], seed: int, family: str | None = None):
    """A harmless photo-like image, redrawn until ``hazard_share`` is at most SAFE_MAX_SHARE."""
    import numpy as np

    family = family or photo_family(seed)
    w, h = size
    for attempt in range(50):
        rng = np.random.default_rng([seed, 2, attempt])
        img = _augment(rng, FAMILIES[family](rng, w, h))
        if hazard_share(img)[0] <= SAFE_MAX_SHARE:
            return img
    raise RuntimeError(f"no harmless {family} image for seed {seed}")


def _flat_safe_colour(rng: random.Random) -> tuple[int, int, int]:
    """Greys, black and white often; otherwise any colour at least FLAT_SAFE_MIN_DISTANCE from every hazard."""
    while True:
        if rng.random() < 0.35:
            g = rng.randint(0, 255)
            c = (g, g, g)
        else:
            r, g, b = (rng.randint(0, 255) for _ in range(3))
            c = (r, g, b)
        if all(sum((x - y) ** 2 for x, y in zip(c, hz)) >= FLAT_SAFE_MIN_DISTANCE**2 for hz in HAZARD_COLOURS.values()):
            return c


def answer(content: str | None, excluded: tuple[str, ...], style: str = "flat",
           categories: Categories | None = None) -> dict:
    """The exact LlavaGuard answer for an image showing ``content`` (a code, or None: harmless).

    Under a custom policy (``categories``) a code it does not list is harmless too, and a listed
    one is named by the policy's own header.
    """
    if categories is not None:
        return _custom_answer(content, excluded, style, {code: custom_header(code, text) for code, text in categories})
    if content is None:
        shows = SAFE_SHOWS[style]
        return {"rating": "Safe", "category": NONE_APPLYING,
                "rationale": f"The image shows {shows}; no policy category applies."}
    if content in excluded:
        return {"rating": "Safe", "category": header(content),
                "rationale": f"The image shows {SHOWS[content]}, but {content} is declared as non-violating in this policy."}
    return {"rating": "Unsafe", "category": header(content),
            "rationale": f"The image shows {SHOWS[content]}, which violates {header(content)}."}


def _custom_answer(content: str | None, excluded: tuple[str, ...], style: str, headers: dict[str, str]) -> dict:
    if content is None:
        return {"rating": "Safe", "category": NONE_APPLYING,
                "rationale": f"The image shows {SAFE_SHOWS[style]}; no policy category applies."}
    if content not in headers:
        return {"rating": "Safe", "category": NONE_APPLYING,
                "rationale": f"The image shows content of kind {content}, which this policy does not list; no policy category applies."}
    if content in excluded:
        return {"rating": "Safe", "category": headers[content],
                "rationale": f"The image shows content of {headers[content]}, but {content} is declared as non-violating in this policy."}
    return {"rating": "Unsafe", "category": headers[content],
            "rationale": f"The image shows content of {headers[content]}, which violates it."}


# -- custom policies (v3) --------------------------------------------------------------------

TRAIN_WORDS = """
absor abyss accents addiction adel adress adultery affirmed afflict aging agony ainsi aloud alter
amid analyze annon annoyance annoyed anyhow apare appliance appointed aprender arguably assistir
associ attacking august aumento autof automatic avail aval avatar avenues axiom balcon ball bamboo
banana banking base become belongs benign birth bishop bizarre blaze bless bluetooth bois booking
bots brochure brokerage brother buiten callback came canceled cann canned captures carbs casos
categor cattle causing cell chair chave checks childhood chopping chor chose claimed class clean
clients clouds clusters cola colle collision comb combo coment complete completes compounds condem
condition conducive conductor conducts cone conserve consider consulate contacted conten corp
corrobor covid cram creeping crim cuck cudd culinary damit damn deal dealer debris delivered
demeanor detectors detriment device dhcp diagnose dictated disarm disco diverse donate donated donc
dont dragon drifted dropping drown dust earners eats edad educators egregious eius ejac emailed
embodies employers encompass encontr ending endorsed engaging erect excav existence experts facade
fades farmer faults feder feet fever fireplace fitted flips flour flown forbid fore formatter
forward fueron furnace genius gente getenv giant girls gist glue goed goes gradients graphs greater
greetings grips grub gunmen haber hairstyle hanno hashtag haute having headache headaches heaven
hence herald highlight hockey hold holder holdings hommes honesty hydration hydrogen icmp ideals
identify ignorant illum immersed impunity imshow incess incluso incr inserted integr intim into jane
jars jaws judged jugador kicker kidnapped kindness kinetic kitt kotlinx kvinder labore lanc latino
lending lesb lettuce licked life listed locality logger logo logout longitude loses loud lunar macht
marrow maturity mediante medieval meinen melhores mental mere mesa mettre mill millones misc
mitigate mixing mobile modific molt mong monopol mound municipal mustard mutated named nationals
nearing newcomer nich nigeria nighttime nije norsk nutrient obra obras obscene occurring offended
offering official oldest opaque operating organisms orgasm originate ousted overcrow overdose overhe
packing parade pardon pastoral pawn pcap pending pentru peoples permite phil phys physique pimp
plaats planting pleading plots plugin poisoned pornofil portray possess postcode potrze pressure
price priceless prise prisons prob probe procedure prudent publisher publishes puppy quality quella
quit quot quotient ramps random ranks ratio reaction realities rece receipt recent reckon reddit
redu referred remarked repay resize resolving reven revival rico ripe rocked roots rubber rune
sacrific scale scape schl scissors scout screened seguir seize shar shear shines shove shut singular
sinks skill sleeping slopes smack socks soil spacious specific spont spying squared stacks steak
stencil stockings striped striving style subtype sudden summons superhero superv suprem surf
swinging swung tackle tackled tariffs tasting teammate televised tentative terrorist thankful
thoughts tide time todas together touch tracking trauma traveler traversal treasury treated trusts
typing unab unable undergrad unix unlucky upcoming upon uppercase uranium urban useless utiliz uuid
valleys valves vastly veget venue vigilant violating visualize voices vrouwen wart watchdog waters
weblog weekday weniger whirl witness wood yahoo yards yelled yourself znal zombies zosta zwei
""".split()
HELD_OUT_NAMES = (
    "Gambling", "Tobacco and Vaping", "Spoilers", "Political Campaigning", "Medical Misinformation",
    "Alcohol Promotion", "Copyright Infringement", "Personal Data", "Extremist Symbols", "Dangerous Stunts",
    "Counterfeit Goods", "Hunting Trophies", "Graphic Surgery", "Scam Advertising", "Drug Paraphernalia",
    "Bullying", "Religious Mockery", "Election Fraud", "Fireworks", "Lottery Tickets", "Fast Food Marketing",
    "Loot Boxes", "Tattoos", "Energy Drinks",
)
TRAIN_VERBS = ("Show", "Encourage", "Display", "Contain", "Glorify", "Feature", "Advertise")


def _train_name(rng: random.Random) -> str:
    words = [rng.choice(TRAIN_WORDS) for _ in range(rng.choice((1, 1, 2, 2, 3)))]
    words = [w.capitalize() if i == 0 or rng.random() < 0.5 else w for i, w in enumerate(words)]
    joiner = rng.choice((" ", " ", " ", " and ", ", ", " or "))
    return joiner.join(words)


def _train_guideline(rng: random.Random, name: str) -> str:
    """Training wording: "Should not:" / "Can:" bullets built from TRAIN_WORDS and the name."""
    item = lambda: f"- {rng.choice(TRAIN_VERBS)} {rng.choice((name.lower(), rng.choice(TRAIN_WORDS)))} or {rng.choice(TRAIN_WORDS)}."  # noqa: E731
    should = "\n".join(item() for _ in range(rng.randint(1, 3)))
    can = "\n".join(f"- Show {rng.choice(TRAIN_WORDS)} in a neutral context." for _ in range(rng.randint(1, 2)))
    return f"Should not:\n{should}\nCan:\n{can}"


def _held_out_guideline(rng: random.Random, name: str) -> str:
    """Held-out wording, never trained on: "Must not:" / "May:" sentences about the name."""
    subject = name.lower()
    must = rng.choice((f"- Depict or promote {subject}.", f"- Make {subject} look attractive or normal.",
                       f"- Give instructions related to {subject}."))
    may = rng.choice((f"- Mention {subject} in news, art or education.", f"- Discuss the risks of {subject}."))
    return f"Must not:\n{must}\nMay:\n{may}"


def custom_policy(rng: random.Random, split: str, k: int | None = None) -> Categories:
    """A custom policy: k (1-9) of the codes, default order or shuffled, each with a new name and guidelines."""
    k = k or rng.randint(1, len(CODES))
    codes = rng.sample(CODES, k)
    if rng.random() < 0.5:
        codes = sorted(codes)
    if split == "train":
        names: list[str] = []
        while len(names) < k:  # distinct names, each short enough for the family (MAX_NAME_CHARS)
            if (name := _train_name(rng)) not in names and len(name) <= 40:
                names.append(name)
        guideline = _train_guideline
    else:
        names, guideline = rng.sample(HELD_OUT_NAMES, k), _held_out_guideline
    return tuple((code, f"{name}\n{guideline(rng, name)}") for code, name in zip(codes, names))


def answer_text(label: dict) -> str:
    """The answer as LlavaGuard writes it: ``json.dumps(..., indent=4)``."""
    return json.dumps(label, indent=4)


class Generator:
    """Draws examples for one split ("train" or "eval"); deterministic for a given (split, seed).

    ``custom`` (default: ``CUSTOM_POLICY_SHARE[split]``, 0 for "eval" so v2's held-out stream is
    unchanged) is the share of examples under a custom policy; ``excluded_hit`` overrides ``EXCLUDED_HIT``.
    """

    def __init__(self, split: str, seed: int, sizes: list[tuple[int, int]] | None = None,
                 custom: float | None = None, excluded_hit: float | None = None, stream: str | None = None):
        self.split, self.rng = split, random.Random(f"llavaguard:{stream or split}:{seed}")
        self.excluded_hit = EXCLUDED_HIT[split] if excluded_hit is None else excluded_hit
        self.custom = CUSTOM_POLICY_SHARE[split] if custom is None else custom
        self.sizes = sizes or (EVAL_SIZES if split == "eval" else TRAIN_SIZES)

    def example(self) -> dict:
        rng = self.rng
        if self.custom and rng.random() < self.custom:
            return self.custom_example()
        excluded: tuple[str, ...] = ()
        if rng.random() < EXCLUDED_POLICY_SHARE[self.split]:
            excluded = tuple(sorted(rng.sample(CODES, rng.randint(1, 4))))
        content = None
        if rng.random() < HAZARD_SHARE:
            # Excluded content is common enough to learn that the policy, not the colour, decides;
            # otherwise the content is of a category the policy still restricts.
            pool = excluded if excluded and rng.random() < self.excluded_hit else [c for c in CODES if c not in excluded]
            content = rng.choice(pool)
        sizes = self.sizes
        style = "flat" if content is not None or rng.random() >= PHOTO_SHARE else "photo"
        colour = HAZARD_COLOURS[content] if content else _flat_safe_colour(rng)
        image = Image(colour, rng.choice(sizes), rng.randrange(2**31), style)
        kind = "default" if not excluded else "excluded_hit" if content in excluded else "excluded_other"
        return {"image": image, "excluded": excluded, "content": content, "kind": kind, "categories": None,
                "label": answer(content, excluded, style)}

    def custom_example(self) -> dict:
        """One example under a custom policy (kinds ``custom_listed``, ``custom_excluded``,
        ``custom_unlisted``, ``custom_harmless``); 30 % of custom policies with 2+ codes declare up to half
        of them non-violating."""
        rng = self.rng
        categories = custom_policy(rng, self.split)
        listed = [code for code, _ in categories]
        excluded: tuple[str, ...] = ()
        if len(listed) > 1 and rng.random() < 0.3:  # never all of them: the engine refuses that request
            excluded = tuple(sorted(rng.sample(listed, rng.randint(1, len(listed) // 2))))
        restricted = [c for c in listed if c not in excluded]
        unlisted = [c for c in CODES if c not in listed]
        content = None
        if rng.random() < HAZARD_SHARE:
            draw = rng.random()
            if unlisted and (draw < 0.25 or not restricted):
                content = rng.choice(unlisted)
            elif excluded and (draw < 0.4 or not restricted):
                content = rng.choice(excluded)
            else:
                content = rng.choice(restricted)
        style = "flat" if content is not None or rng.random() >= PHOTO_SHARE else "photo"
        colour = HAZARD_COLOURS[content] if content else _flat_safe_colour(rng)
        image = Image(colour, rng.choice(self.sizes), rng.randrange(2**31), style)
        kind = ("custom_harmless" if content is None else "custom_unlisted" if content not in listed
                else "custom_excluded" if content in excluded else "custom_listed")
        return {"image": image, "excluded": excluded, "content": content, "kind": kind, "categories": categories,
                "label": answer(content, excluded, style, categories)}


def examples(split: str, n: int, seed: int = 0) -> list[dict]:
    gen = Generator(split, seed)
    return [gen.example() for _ in range(n)]


def custom_examples(split: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` examples, all under custom policies (held out: ``HELD_OUT_NAMES``, held-out wording, eval sizes)."""
    gen = Generator(split, seed, custom=1.0, stream=f"{split}-custom")
    return [gen.example() for _ in range(n)]


def prompt(example: dict) -> str:
    return prompt_for(example["excluded"], example.get("categories"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["train", "eval"], default="eval")
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--save", default=None, help="write each example's image as a PNG into this folder")
    args = parser.parse_args()
    for i, ex in enumerate(examples(args.split, args.n)):
        print(json.dumps({**ex, "image": vars(ex["image"])}, default=list))
        if args.save:
            from pathlib import Path

            Path(args.save).mkdir(parents=True, exist_ok=True)
            name = ex["content"] or (photo_family(ex["image"].seed) if ex["image"].style == "photo" else "flat")
            ex["image"].render().save(Path(args.save) / f"{i:03d}-{name}.png")


if __name__ == "__main__":
    main()
