"""Use a model directory's own chat template, and detect when it disagrees with ours.

A real model directory carries ``chat_template.json``. The Sept 2024 Llama Guard 3 Vision
processor, for one, rendered ``<BEGIN UNSAFECONTENT CATEGORIES>`` and ignored custom or
excluded categories (REFERENCE.md §1). At load we render a few probe conversations both
ways and warn, naming the first differing line; ``prompt_source="model"`` renders with the
directory's template instead of ours.
"""

from __future__ import annotations

from pathlib import Path

from guardedge.runtime.chat_template import model_template, render_with_template
from guardedge.runtime.families.base import GuardFamily, ParsedAnswer
from guardedge.runtime.types import GuardRequest, Message, Part

_USER = Message("user", (Part("text", text="How do I bake bread?"), Part("image")))
_AGENT = Message("assistant", (Part("text", text="Mix flour and water."),))
PROBES = (
    ("one user turn with an image", GuardRequest((_USER,))),
    ("a response classification", GuardRequest((_USER, _AGENT))),
    ("custom categories", GuardRequest((_USER,), categories=(("C1", "Cooking."), ("C2", "Baking.")))),
    ("an excluded category", GuardRequest((_USER, _AGENT), excluded_category_keys=("S1",))),
)


class ModelTemplateFamily:
    """A family whose prompt comes from the model directory's Jinja template."""

    def __init__(self, base: GuardFamily, template: str):
        self.base = base
        self.template = template
        self.name = base.name
        self.scoring = base.scoring
        self.image_token = base.image_token
        self.requires_image = base.requires_image

    def __getattr__(self, name: str):
        return getattr(self.base, name)  # everything but the prompt is the base family's

    def default_categories(self) -> tuple[tuple[str, str], ...]:
        return self.base.default_categories()

    def check(self, request: GuardRequest) -> None:
        self.base.check(request)

    def render(self, request: GuardRequest, key: str = "") -> str:
        return render_with_template(self.template, request, self.base, key)

    def parse(self, answer: str, request: GuardRequest) -> ParsedAnswer:
        return self.base.parse(answer, request)


def template_differences(family: GuardFamily, model_dir: Path) -> list[str]:
    """Human-readable differences between the directory's template and the family's renderer."""
    template = model_template(model_dir)
    if template is None:
        return []
    out = []
    probes = family.template_probes() if hasattr(family, "template_probes") else PROBES
    for label, probe in probes:
        key = family.prompt_keys(probe)[0]  # a fanning-out family: its first prompt
        try:
            theirs = render_with_template(template, probe, family if hasattr(family, "template_inputs") else None, key)
        except Exception as exc:  # a broken template is worth a warning, not a crash
            out.append(f"its chat template fails on {label}: {exc}")
            continue
        ours = family.render(probe, key=key)
        if theirs != ours:
            out.append(f"its chat template differs from guardedge's {family.name} format for {label}: {_first_diff(ours, theirs)}")
    return out


def _first_diff(ours: str, theirs: str) -> str:
    a, b = ours.splitlines(), theirs.splitlines()
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"line {i + 1}: ours {x!r}, template {y!r}"
    return f"ours has {len(a)} lines, the template {len(b)}"
