"""The command's policy options, and the identities every output row carries.

A row records **which model** decided it (``model_sha256``) and **under which policy**
(``policy_sha256``), so results of different models or policies never mix silently:

- model: an artifact's identity is the sha256 of its manifest's file hashes (the files every
  load re-verifies, runtime/artifact.py); a plain model directory's is the hash of config.json and
  every ``*.safetensors`` file (runtime/artifact.py ``source_identity``; a 21 GB directory takes
  about a minute at disk speed, once per run).
- policy: sha256 of the family name, the categories the prompt shows (the family's defaults when
  the request names none, so a changed default changes the hash), the excluded codes and the
  threshold. A JSONL item that carries its own policy gets its own hash.

The command's options (``--categories FILE.json``, ``--exclude S1,S2``, ``--threshold``,
``--rationale``) are defaults merged into every request; an item's own fields win, as in
``guardedge classify``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from guardedge.runtime.types import GuardRequest


@dataclass(frozen=True)
class Policy:
    categories: tuple[tuple[str, str], ...] | None = None  # None: the family's defaults
    excluded: tuple[str, ...] = ()
    threshold: float | None = None
    rationale: bool = False

    def fields(self) -> dict:
        """The request fields this policy sets (only those it sets)."""
        out: dict = {}
        if self.categories is not None:
            out["categories"] = dict(self.categories)
        if self.excluded:
            out["excluded_category_keys"] = list(self.excluded)
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.rationale:
            out["rationale"] = True
        return out

    def apply(self, request: dict) -> dict:
        """``request`` with this policy's fields where it sets none of its own."""
        return {**self.fields(), **request} if isinstance(request, dict) else request

    def digest(self, family: str, defaults: tuple[tuple[str, str], ...]) -> str:
        return policy_digest(family, self.categories if self.categories is not None else defaults,
                             self.excluded, self.threshold)

    def describe(self) -> dict:
        return {"categories": None if self.categories is None else dict(self.categories),
                "excluded_category_keys": list(self.excluded), "threshold": self.threshold}


def policy_digest(family: str, categories: tuple[tuple[str, str], ...], excluded: tuple[str, ...],
                  threshold: float | None) -> str:
    text = json.dumps({"family": family, "categories": [list(c) for c in categories],
                       "excluded": sorted(excluded), "threshold": threshold}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def request_digest(request: GuardRequest, family: str, defaults: tuple[tuple[str, str], ...]) -> str:
    """The policy hash of one parsed request (same as :meth:`Policy.digest` for the same policy)."""
    categories = request.categories if request.categories is not None else defaults
    return policy_digest(family, categories, request.excluded_category_keys, request.threshold)


def load_policy(categories_file: str | None, exclude: str | None, threshold: float | None, rationale: bool) -> Policy:
    """The command's policy options, read and shape-checked (ValueError says what is wrong)."""
    categories = None
    if categories_file:
        try:
            raw = json.loads(Path(categories_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"--categories {categories_file}: cannot read a JSON object of code -> description ({exc})") from None
        if not isinstance(raw, dict) or not raw:
            raise ValueError(f"--categories {categories_file}: must be a non-empty JSON object of code -> description")
        categories = tuple(raw.items())
    excluded = tuple(c.strip() for c in exclude.split(",") if c.strip()) if exclude else ()
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError("--threshold must be between 0 and 1")
    return Policy(categories, excluded, threshold, rationale)


def validate_policy(policy: Policy, defaults: tuple[tuple[str, str], ...]) -> None:
    """Refuse malformed policy options once, at the start, rather than on every row (GuardError)."""
    from guardedge.runtime.errors import GuardError, InvalidRequest
    from guardedge.runtime.requests import check_excluded, parse_request

    probe = {"messages": [{"role": "user", "content": "policy check"}], **policy.fields()}
    try:
        request = parse_request(probe, defaults, load_images=False)
        if request.categories is None and request.excluded_category_keys:
            check_excluded(request.excluded_category_keys, defaults)
    except InvalidRequest as exc:
        raise GuardError(f"the policy options are invalid: {exc}") from None


def model_digest(model_dir) -> str:
    """The model's identity (see the module docstring); ``model_dir`` is a runtime ModelDir."""
    from guardedge.runtime.artifact import source_identity

    if model_dir.manifest is not None:
        files = json.dumps(model_dir.manifest["files"], sort_keys=True)
        return hashlib.sha256(files.encode()).hexdigest()
    return source_identity(Path(model_dir.path), model_dir.name)["sha256"]
