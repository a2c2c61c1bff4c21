"""LlavaGuard v1.2 policies for the demo's data, through the LlavaGuard family's renderer.

Every prompt the demo's data, training and evaluation build comes from :func:`prompt_for`,
which asks ``runtime/families/llavaguard.py`` to render a one-image request whose
``excluded_category_keys`` are declared non-violating (and, from v3, whose ``categories`` are a
custom policy), so the demo learns exactly the prompts the engine sends. With nothing excluded
and no custom categories the policy is the published 5513-character v1.2 text (sha256 pinned below).
"""

from __future__ import annotations

from functools import lru_cache

from guardedge.runtime.families.llavaguard import LlavaGuard, _category_problem, parts
from guardedge.runtime.types import GuardRequest, ImageInput, Message, Part

DEFAULT_POLICY_SHA256 = "e00d3a4e822bde7c729a7866b18805ed78d2938d0e591e66ec62562a02fd0652"
CODES = ("O1", "O2", "O3", "O4", "O5", "O6", "O7", "O8", "O9")
NONE_APPLYING = "NA: None applying"


def header(code: str) -> str:
    """The category as the answer names it, e.g. ``O2: Violence, Harm, or Cruelty``."""
    return parts()["categories"][code]["header"]


Categories = tuple[tuple[str, str], ...]  # a custom policy: (code, "Name\nguidelines") pairs, in prompt order


def custom_header(code: str, text: str) -> str:
    """A custom category's header as the family renders it and the answer must name it: ``O2: <name>``."""
    return f"{code}: {text.partition(chr(10))[0]}"


def request(excluded: tuple[str, ...] = (), categories: Categories | None = None) -> GuardRequest:
    """A one-image request; the image itself never enters the rendered text (it is ``<image>``)."""
    image = Part("image", image=ImageInput(None, "demo"))
    return GuardRequest(messages=(Message("user", (image,)),), excluded_category_keys=tuple(excluded),
                        categories=categories)


def policy_text(excluded: tuple[str, ...] = (), categories: Categories | None = None) -> str:
    """The policy (default, or the custom ``categories``) with each code in ``excluded`` declared as non-violating."""
    codes = CODES if categories is None else tuple(code for code, _ in categories)
    unknown = set(excluded) - set(codes)
    if unknown:
        raise ValueError(f"unknown LlavaGuard categories {sorted(unknown)}; expected some of {', '.join(codes)}")
    if excluded and set(excluded) >= set(codes):
        raise ValueError("every category is excluded; the engine refuses such a request")
    for code, text in categories or ():  # the engine refuses what the family refuses; so does the data
        if problem := _category_problem(code, text, set(codes)):
            raise ValueError(f"custom category {code}: {problem}")
    return LlavaGuard().policy_text(request(excluded, categories))


@lru_cache(maxsize=4096)
def prompt_for(excluded: tuple[str, ...] = (), categories: Categories | None = None) -> str:
    """The full prompt for one image under the policy (the -hf chat template's rendering)."""
    policy_text(excluded, categories)  # validates the codes and the custom categories
    return LlavaGuard().render(request(excluded, categories))
