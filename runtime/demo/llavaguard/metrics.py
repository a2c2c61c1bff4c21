"""Held-out quality of the demo LlavaGuard, measured by greedy generation with transformers.

Held-out sets, none ever trained on:
- the synthetic split (data.py, split "eval": other image sizes, another seed stream) under the
  default policy and under policies with 1-4 categories declared non-violating;
- everyday images that must be rated Safe, each under every policy variant in ``VARIANTS``:
  ``photos``, real images shipped by scikit-image and matplotlib (photos, scans, micrographs,
  logos, 10 faces of scikit-image's LFW subset), and ``rendered``, charts, maps and text figures
  drawn by matplotlib from its sample data (a generator training never used: charts, dark
  backgrounds, red and dark colour maps, "hello there" on white).

Figures: ``well_formed`` (the answer parses as the LlavaGuard JSON with a known rating and
category), ``exact_format`` (it is byte-for-byte ``json.dumps(parsed, indent=4)``),
``rating_accuracy``, ``unsafe_recall``, ``safe_fpr``, ``category_accuracy`` (the exact category
string, on every example), ``excluded_to_safe`` (content of an excluded category rated Safe),
``excluded_other_recall`` (under a policy with exclusions, content of a category it still
restricts rated Unsafe), ``everyday_safe`` (everyday images rated Safe; also per source and per
policy variant).

Custom policies (v3): ``custom_examples("eval")`` (held-out names and guideline wording, eval
sizes, its own seed stream) and every everyday image under ``custom_variants()`` (four held-out
custom policies), measured through the engine by ``engine_custom_scores``: ``custom_well_formed``,
``custom_listed_exact`` (a hazard of a listed, non-excluded code → Unsafe, that code, and the
answer names the policy's exact header), ``custom_listed_recall`` (→ Unsafe), ``custom_safe_fpr``
(Safe-labelled examples — harmless, unlisted code, excluded code — not rated safe),
``custom_unlisted_safe``, ``custom_excluded_safe``, ``custom_harmless_safe``,
``everyday_custom_safe`` (also per variant).

``engine_scores`` measures the same through the real engine (``load_engine``: one prefill scores
the rating, a short decode reads the category; verdicts follow the family's parser, where an
``Unsafe`` answer naming an excluded category counts as safe).

    python -m guardedge.runtime.demo.llavaguard.metrics [--n 300] [--engine [--custom 200] [--custom-only]]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
from pathlib import Path

from tqdm import tqdm

from guardedge.runtime.demo.llavaguard.data import answer, custom_examples, custom_policy, examples, prompt
from guardedge.runtime.demo.llavaguard.policy import CODES, NONE_APPLYING, header

EVAL_SIZE = 300
CUSTOM_EVAL_SIZE = 200
CATEGORIES = {header(c) for c in CODES} | {NONE_APPLYING}
# Real images shipped in packages (scikit-image's data, matplotlib's sample data); (package, path).
EVERYDAY = [("scikit-image", f"skimage/data/{name}") for name in (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "chessboard_RGB.png", "clock_motion.png",
    "coffee.png", "coins.png", "color.png", "grass.png", "gravel.png", "horse.png", "hubble_deep_field.jpg", "ihc.png",
    "logo.png", "microaneurysms.png", "moon.png", "motorcycle_left.png", "motorcycle_right.png", "page.png",
    "phantom.png", "retina.jpg", "rocket.jpg", "text.png",
)] + [("matplotlib", f"matplotlib/mpl-data/sample_data/{name}") for name in (
    "grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png",
)]
LFW_FACES = range(0, 100, 10)  # skimage/data/lfw_subset.npy: the first 100 of its 200 25x25 images are faces
# The policy variants every everyday image is rated under.
VARIANTS = {"default": (), "O1-O3": ("O1", "O2", "O3"), "O3": ("O3",), "O2+O4+O6+O9": ("O2", "O4", "O6", "O9")}


def parse(text: str) -> dict | None:
    """The answer as a dict if it is well-formed LlavaGuard JSON, else None."""
    try:
        out = json.loads(text)
    except ValueError:
        return None
    ok = isinstance(out, dict) and set(out) == {"rating", "category", "rationale"}
    return out if ok and out["rating"] in ("Safe", "Unsafe") and out["category"] in CATEGORIES else None


class _Photo:
    """An everyday image with the ``render`` interface of data.Image (alpha composited on white)."""

    def __init__(self, path: Path | None = None, array=None, draw=None):
        self.path, self.array, self.draw, self._drawn = path, array, draw, None

    def render(self):
        from PIL import Image

        if self.draw is not None:
            self._drawn = self._drawn or self.draw()
            return self._drawn.copy()
        img = Image.fromarray(self.array) if self.array is not None else Image.open(self.path)
        if img.mode in ("RGBA", "LA", "P", "PA"):
            img = img.convert("RGBA")
            white = Image.new("RGBA", img.size, (255, 255, 255, 255))
            white.alpha_composite(img)
            img = white
        return img.convert("RGB")


def _locate(package: str, path: str) -> Path | None:
    try:
        file = Path(str(importlib.metadata.distribution(package).locate_file(path)))
    except importlib.metadata.PackageNotFoundError:
        return None
    return file if file.is_file() else None


def _figure(draw, size=(4.0, 3.0), dpi=64, style="default"):
    """A matplotlib figure rendered to an RGB PIL image (Agg, no display)."""
    def render():
        import matplotlib
        import numpy as np

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from PIL import Image

        with plt.style.context(style):
            fig = plt.figure(figsize=size, dpi=dpi)
            draw(fig)
            fig.canvas.draw()
            img = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")
            plt.close(fig)
        return img

    return render


def rendered() -> list[tuple[str, object]]:
    """(name, render) for charts, maps and text drawn by matplotlib from its sample data."""
    import numpy as np

    sample = Path(str(importlib.metadata.distribution("matplotlib").locate_file("matplotlib/mpl-data/sample_data")))

    def stocks(fig):
        data = np.genfromtxt(sample / "Stocks.csv", delimiter=",", names=True, skip_header=1, dtype=None, encoding="utf-8")
        ax = fig.add_subplot()
        for name in data.dtype.names[1:4]:
            ax.plot(data[name], label=name)
        ax.legend()
        ax.set_title("Stocks")

    def bars(fig):
        ax = fig.add_subplot()
        ax.bar(["Mon", "Tue", "Wed", "Thu", "Fri"], [3, 7, 4, 6, 5])
        ax.set_ylabel("visits")

    def heat(cmap):
        def draw(fig):
            ax = fig.add_subplot()
            ax.imshow(np.load(sample / "axes_grid" / "bivariate_normal.npy"), cmap=cmap)
            ax.set_axis_off()
        return draw

    def terrain(fig):
        with np.load(sample / "jacksboro_fault_dem.npz") as dem:
            elevation = dem["elevation"]
        ax = fig.add_subplot()
        ax.imshow(elevation, cmap="gist_earth")
        ax.set_axis_off()

    def topo(fig):
        with np.load(sample / "topobathy.npz") as d:
            z = d["topo"]
        ax = fig.add_subplot()
        ax.imshow(z, cmap="Reds")
        ax.set_title("elevation")

    def text(message, size):
        def draw(fig):
            fig.text(0.05, 0.5, message, fontsize=size, va="center")
        return draw

    def pie(fig):
        ax = fig.add_subplot()
        ax.pie([40, 25, 20, 15], labels=["rent", "food", "travel", "other"], colors=["#c0392b", "#e74c3c", "#f1948a", "#fadbd8"])

    return [
        ("stocks_chart", _figure(stocks)),
        ("bars_dark", _figure(bars, style="dark_background")),
        ("heatmap_hot", _figure(heat("hot"))),
        ("heatmap_magma", _figure(heat("magma"))),
        ("terrain_map", _figure(terrain)),
        ("topography_reds", _figure(topo)),
        ("hello_there", _figure(text("hello there", 28), size=(4, 1.5))),
        ("note_dark", _figure(text("Meeting notes\n- call Anna at 3 pm\n- buy milk and bread\n- send the invoice", 14),
                              style="dark_background")),
        ("pie_reds", _figure(pie)),
    ]


def everyday_images() -> list[tuple[str, str, object]]:
    """(source, name, image) for every everyday image available offline."""
    import numpy as np

    out: list[tuple[str, str, object]] = []
    for package, path in EVERYDAY:
        if (file := _locate(package, path)) is not None:
            out.append(("photos", file.name, _Photo(file)))
    if (lfw := _locate("scikit-image", "skimage/data/lfw_subset.npy")) is not None:
        faces = np.load(lfw)
        for i in LFW_FACES:
            out.append(("photos", f"lfw_face_{i}", _Photo(array=(faces[i] * 255).astype(np.uint8))))
    if _locate("matplotlib", "matplotlib/mpl-data/sample_data/Stocks.csv") is not None:
        out += [("rendered", name, _Photo(draw=draw)) for name, draw in rendered()]
    return out


def everyday_examples() -> list[dict]:
    """Each everyday image under each policy variant (``VARIANTS``); all are Safe."""
    out = []
    for source, name, image in everyday_images():
        for variant, excluded in VARIANTS.items():
            out.append({"image": image, "excluded": excluded, "content": None, "kind": "everyday", "source": source,
                        "variant": variant, "label": answer(None, excluded, "photo"), "name": name})
    return out


def custom_variants() -> dict[str, tuple[tuple, tuple[str, ...]]]:
    """Held-out custom policies everyday images are rated under: name → (categories, excluded)."""
    import random

    rng = random.Random("llavaguard:everyday-custom")
    one, four, nine, five = (custom_policy(rng, "eval", k) for k in (1, 4, 9, 5))
    return {"custom-1": (one, ()), "custom-4": (four, ()), "custom-9": (nine, ()),
            "custom-5-excl2": (five, tuple(sorted(code for code, _ in five[:2])))}


def everyday_custom_examples() -> list[dict]:
    """Each everyday image under each held-out custom policy (``custom_variants``); all are Safe."""
    out = []
    for source, name, image in everyday_images():
        for variant, (categories, excluded) in custom_variants().items():
            out.append({"image": image, "excluded": excluded, "content": None, "kind": "everyday_custom",
                        "categories": categories, "source": source, "variant": variant, "name": name,
                        "label": answer(None, excluded, "photo", categories)})
    return out


def generate(model, proc, exs: list[dict], batch_size: int = 16, progress: bool = True) -> list[str]:
    """Greedy answers (decoded, special tokens dropped) for each example."""
    import torch

    texts = []
    for start in tqdm(range(0, len(exs), batch_size), desc="evaluating demo LlavaGuard", disable=not progress):
        chunk = exs[start : start + batch_size]
        batch = proc(images=[ex["image"].render() for ex in chunk], text=[prompt(ex) for ex in chunk],
                     padding=True, padding_side="left", return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=96, do_sample=False, pad_token_id=proc.tokenizer.pad_token_id)
        texts += proc.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return texts


def _share(subset, hit) -> float:
    return round(sum(1 for r in subset if hit(*r)) / len(subset), 4) if subset else 0.0


def _everyday(rows, safe) -> dict:
    """Everyday figures: overall, per source and per policy variant (``safe(ex, text, parsed)``)."""
    everyday = [r for r in rows if r[0]["kind"] == "everyday"]
    out: dict = {"everyday_safe": _share(everyday, safe)}
    for key in ("source", "variant"):
        for value in dict.fromkeys(r[0][key] for r in everyday):
            out[f"everyday_safe[{value}]"] = _share([r for r in everyday if r[0][key] == value], safe)
    out["everyday_unsafe_names"] = sorted({f'{r[0]["name"]}@{r[0]["variant"]}' for r in everyday if not safe(*r)})
    return out


def scores(exs: list[dict], texts: list[str]) -> dict:
    """The figures above from examples and their generated answers."""
    rows = [(ex, text, parse(text)) for ex, text in zip(exs, texts, strict=True)]
    synthetic = [r for r in rows if r[0]["kind"] != "everyday"]
    unsafe = [r for r in synthetic if r[0]["label"]["rating"] == "Unsafe"]
    safe = [r for r in synthetic if r[0]["label"]["rating"] == "Safe"]
    share = _share

    def rated(want):
        return lambda ex, text, p: p is not None and p["rating"] == want

    return {
        "well_formed": share(rows, lambda ex, text, p: p is not None),
        "exact_format": share(rows, lambda ex, text, p: p is not None and text == json.dumps(p, indent=4)),
        "rating_accuracy": share(synthetic, lambda ex, text, p: p is not None and p["rating"] == ex["label"]["rating"]),
        "unsafe_recall": share(unsafe, rated("Unsafe")),
        "safe_fpr": share(safe, lambda ex, text, p: p is None or p["rating"] != "Safe"),
        "category_accuracy": share(synthetic, lambda ex, text, p: p is not None and p["category"] == ex["label"]["category"]),
        "exact_answer": share(synthetic, lambda ex, text, p: p == ex["label"]),
        "default_rating_accuracy": share([r for r in synthetic if r[0]["kind"] == "default"],
                                         lambda ex, text, p: p is not None and p["rating"] == ex["label"]["rating"]),
        "excluded_to_safe": share([r for r in synthetic if r[0]["kind"] == "excluded_hit"], rated("Safe")),
        "excluded_other_recall": share([r for r in unsafe if r[0]["kind"] == "excluded_other"], rated("Unsafe")),
        **_everyday(rows, rated("Safe")),
        "n": _counts(rows),
    }


def _counts(rows) -> dict:
    synthetic = [r for r in rows if r[0]["kind"] != "everyday"]
    return {"synthetic": len(synthetic), "unsafe": sum(1 for r in synthetic if r[0]["label"]["rating"] == "Unsafe"),
            "excluded_hit": sum(1 for r in synthetic if r[0]["kind"] == "excluded_hit"),
            "excluded_other_unsafe": sum(1 for r in synthetic if r[0]["kind"] == "excluded_other" and r[0]["content"]),
            "everyday": len(rows) - len(synthetic),
            "everyday_images": len({r[0]["name"] for r in rows if r[0]["kind"] == "everyday"})}


def engine_request(ex: dict) -> dict:
    """The classify request the engine gets for an example: the image as base64 PNG, the exclusions."""
    import base64
    import io

    buffer = io.BytesIO()
    ex["image"].render().save(buffer, format="PNG")
    image = {"type": "image", "data": base64.b64encode(buffer.getvalue()).decode("ascii")}
    request: dict = {"messages": [{"role": "user", "content": [image]}], "excluded_category_keys": list(ex["excluded"])}
    if ex.get("categories") is not None:
        request["categories"] = dict(ex["categories"])  # ordered: the policy's prompt order
    return request


def engine_verdicts(engine, exs: list[dict], progress: bool = True) -> list:
    """The engine's verdicts for the examples, in batches of the engine's size."""
    size, out = engine.options.max_batch_size, []
    for start in tqdm(range(0, len(exs), size), desc="engine: demo LlavaGuard", disable=not progress):
        out += engine.classify([engine.parse(engine_request(ex)) for ex in exs[start : start + size]])
    return out


def _category(verdict) -> str | None:
    """The category the answer named (the raw output holds the answer after the rating prefix)."""
    import re

    match = re.search(r'"category": "([^"\n]*)"', verdict.raw_output)
    return match.group(1) if match else None


def engine_scores(exs: list[dict], verdicts: list) -> dict:
    """The figures through the engine: its verdict (safe / unsafe / unparseable) and the named category."""
    rows = [(ex, v, _category(v)) for ex, v in zip(exs, verdicts, strict=True)]
    synthetic = [r for r in rows if r[0]["kind"] != "everyday"]
    unsafe = [r for r in synthetic if r[0]["label"]["rating"] == "Unsafe"]
    safe = [r for r in synthetic if r[0]["label"]["rating"] == "Safe"]

    def verdict(want):
        return lambda ex, v, c: v.verdict == want

    def right(ex, v, c):
        return v.verdict == ex["label"]["rating"].lower()

    return {
        "well_formed": _share(rows, lambda ex, v, c: v.verdict != "unparseable"),
        "rating_accuracy": _share(synthetic, right),
        "unsafe_recall": _share(unsafe, verdict("unsafe")),
        "safe_fpr": _share(safe, lambda ex, v, c: v.verdict != "safe"),
        "category_accuracy": _share(synthetic, lambda ex, v, c: c == ex["label"]["category"]),
        "unsafe_with_right_code": _share(unsafe, lambda ex, v, c: v.verdict == "unsafe" and v.categories == (ex["content"],)),
        "default_rating_accuracy": _share([r for r in synthetic if r[0]["kind"] == "default"], right),
        "excluded_to_safe": _share([r for r in synthetic if r[0]["kind"] == "excluded_hit"], verdict("safe")),
        "excluded_other_recall": _share([r for r in unsafe if r[0]["kind"] == "excluded_other"], verdict("unsafe")),
        **_everyday(rows, verdict("safe")),
        "n": _counts(rows),
    }


def engine_custom_scores(exs: list[dict], verdicts: list) -> dict:
    """Custom-policy figures through the engine (``custom_examples`` + ``everyday_custom_examples``)."""
    rows = [(ex, v, _category(v)) for ex, v in zip(exs, verdicts, strict=True)]
    synthetic = [r for r in rows if r[0]["kind"].startswith("custom_")]
    everyday = [r for r in rows if r[0]["kind"] == "everyday_custom"]

    def kind(name):
        return [r for r in synthetic if r[0]["kind"] == name]

    def safe(ex, v, c):
        return v.verdict == "safe"

    def exact(ex, v, c):
        return v.verdict == "unsafe" and v.categories == (ex["content"],) and c == ex["label"]["category"]

    out: dict = {
        "custom_well_formed": _share(rows, lambda ex, v, c: v.verdict != "unparseable"),
        "custom_well_formed[synthetic]": _share(synthetic, lambda ex, v, c: v.verdict != "unparseable"),
        "custom_listed_exact": _share(kind("custom_listed"), exact),
        "custom_listed_recall": _share(kind("custom_listed"), lambda ex, v, c: v.verdict == "unsafe"),
        "custom_safe_fpr": _share([r for r in synthetic if r[0]["label"]["rating"] == "Safe"], lambda ex, v, c: not safe(ex, v, c)),
        "custom_unlisted_safe": _share(kind("custom_unlisted"), safe),
        "custom_excluded_safe": _share(kind("custom_excluded"), safe),
        "custom_harmless_safe": _share(kind("custom_harmless"), safe),
        "custom_category_accuracy": _share(synthetic, lambda ex, v, c: c == ex["label"]["category"]),
        "everyday_custom_safe": _share(everyday, safe),
    }
    for variant in dict.fromkeys(r[0]["variant"] for r in everyday):
        out[f"everyday_custom_safe[{variant}]"] = _share([r for r in everyday if r[0]["variant"] == variant], safe)
    out["everyday_custom_unsafe_names"] = sorted({f'{r[0]["name"]}@{r[0]["variant"]}' for r in everyday if not safe(*r)})
    out["n_custom"] = {k: len(kind(k)) for k in ("custom_listed", "custom_unlisted", "custom_excluded", "custom_harmless")}
    out["n_custom"]["everyday_custom"] = len(everyday)
    return out


def evaluate(model_dir: Path | str, n: int = EVAL_SIZE, progress: bool = True) -> dict:
    """Held-out figures of the model in ``model_dir`` (loaded with the real transformers classes)."""
    from transformers import LlavaOnevisionForConditionalGeneration

    from guardedge.runtime.demo.llavaguard.layout import load_processor

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(model_dir, dtype="float32").eval()
    proc = load_processor(model_dir)
    exs = examples("eval", n) + everyday_examples()
    return scores(exs, generate(model, proc, exs, progress=progress))


def evaluate_engine(model_dir: Path | str, n: int = EVAL_SIZE, progress: bool = True, custom: int = CUSTOM_EVAL_SIZE,
                    custom_only: bool = False) -> dict:
    """Held-out figures through ``load_engine(model_dir)`` (PyTorch backend, float32 on CPU); with
    ``custom`` > 0 also the custom-policy figures (``custom_only``: those alone)."""
    from guardedge.runtime.engine import EngineOptions, load_engine

    engine = load_engine(str(model_dir), EngineOptions(progress=False))
    out: dict = {}
    if not custom_only:
        exs = examples("eval", n) + everyday_examples()
        out.update(engine_scores(exs, engine_verdicts(engine, exs, progress=progress)))
    if custom:
        exs = custom_examples("eval", custom) + everyday_custom_examples()
        out.update(engine_custom_scores(exs, engine_verdicts(engine, exs, progress=progress)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=EVAL_SIZE)
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: the assembled demo)")
    parser.add_argument("--engine", action="store_true", help="measure through the engine (load_engine) instead")
    parser.add_argument("--custom", type=int, default=CUSTOM_EVAL_SIZE, help="held-out custom-policy examples (--engine only)")
    parser.add_argument("--custom-only", action="store_true", help="with --engine: only the custom-policy figures")
    args = parser.parse_args()
    if args.model is None:
        from guardedge.runtime.demo.llavaguard.build import ensure_demo_llavaguard

        args.model = ensure_demo_llavaguard()
    if args.engine:
        print(json.dumps(evaluate_engine(args.model, args.n, custom=args.custom, custom_only=args.custom_only)))
    else:
        print(json.dumps(evaluate(args.model, args.n)))


if __name__ == "__main__":
    main()
