"""LlavaGuard v1.2 policies for the demo's data, through the LlavaGuard family's renderer.

Every prompt the demo's data, training and evaluation build comes from :func:`prompt_for`,
which asks ``runtime/families/llavaguard.py`` to render a one-image request whose
``excluded_category_keys`` are declared non-violating, so the demo learns exactly the prompts
the engine sends. With nothing excluded the policy is the published 5513-character v1.2 text
(sha256 pinned below).
"""

from __future__ import annotations

from functools import lru_cache

from guardedge.runtime.families.llavaguard import LlavaGuard, parts
from guardedge.runtime.types import GuardRequest, ImageInput, Message, Part

DEFAULT_POLICY_SHA256 = "e00d3a4e822bde7c729a7866b18805ed78d2938d0e591e66ec62562a02fd0652"
CODES = ("O1", "O2", "O3", "O4", "O5", "O6", "O7", "O8", "O9")
NONE_APPLYING = "NA: None applying"


def header(code: str) -> str:
    """The category as the answer names it, e.g. ``O2: Violence, Harm, or Cruelty``."""
    return parts()["categories"][code]["header"]


def request(excluded: tuple[str, ...] = ()) -> GuardRequest:
    """A one-image request; the image itself never enters the rendered text (it is ``<image>``)."""
    image = Part("image", image=ImageInput(None, "demo"))
    return GuardRequest(messages=(Message("user", (image,)),), excluded_category_keys=tuple(excluded))


def policy_text(excluded: tuple[str, ...] = ()) -> str:
    """The policy with each code in ``excluded`` declared as non-violating."""
    unknown = set(excluded) - set(CODES)
    if unknown:
        raise ValueError(f"unknown LlavaGuard categories {sorted(unknown)}; expected some of {', '.join(CODES)}")
    return LlavaGuard().policy_text(request(excluded))


@lru_cache(maxsize=1024)
def prompt_for(excluded: tuple[str, ...] = ()) -> str:
    """The full prompt for one image under the policy (the -hf chat template's rendering)."""
    policy_text(excluded)  # validates the codes
    return LlavaGuard().render(request(excluded))
