"""Render a request with a Jinja chat template, the way transformers' apply_chat_template does.

Used three ways: to render with a model directory's own ``chat_template.json`` (option
``prompt_source="model"``), to warn at load time when that template disagrees with the
family's built-in renderer, and in tests that compare the two byte for byte.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from guardedge.runtime.types import GuardRequest


def builtin_template(family: str) -> str:
    """The official template shipped with guardedge for ``family`` (templates/<family>.jinja)."""
    return resources.files("guardedge.runtime.families").joinpath(f"templates/{family}.jinja").read_text()


def model_template(model_dir: Path) -> str | None:
    """The chat template a model directory carries (chat_template.json, .jinja or tokenizer_config)."""
    for name, key in (("chat_template.json", "chat_template"), ("tokenizer_config.json", "chat_template")):
        path = model_dir / name
        if path.is_file():
            value = json.loads(path.read_text()).get(key)
            if isinstance(value, str):
                return value
    jinja = model_dir / "chat_template.jinja"
    return jinja.read_text() if jinja.is_file() else None


@lru_cache(maxsize=8)
def _compile(template: str):
    _Generation = _generation_tag()
    from jinja2 import ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise ValueError(message)

    # Same environment settings as transformers' chat template rendering (incl. its {% generation %} tag).
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[ext.loopcontrols, _Generation])
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def _generation_tag():
    from jinja2 import ext, nodes

    class Generation(ext.Extension):
        """transformers' ``{% generation %}`` block (it marks assistant text for training masks): renders its body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    return Generation


def to_hf_messages(request: GuardRequest) -> list[dict]:
    return [
        {
            "role": m.role,
            "content": [{"type": "text", "text": p.text} if p.type == "text" else {"type": "image"} for p in m.content],
        }
        for m in request.messages
    ]


def render_with_template(template: str, request: GuardRequest, family=None, key: str = "") -> str:
    """``template`` rendered with what the family's model card passes it (Llama Guard's shape by
    default); ``key``: the prompt of a fanning-out family (ShieldGemma 2: one policy per prompt)."""
    if family is not None:
        return _compile(template).render(**(family.template_inputs(request, key) if key else family.template_inputs(request)))
    kwargs: dict = {"messages": to_hf_messages(request), "excluded_category_keys": list(request.excluded_category_keys)}
    if request.categories is not None:
        kwargs["categories"] = dict(request.categories)
    return _compile(template).render(**kwargs)
