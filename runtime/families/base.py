"""The guard-family interface: everything model-specific about prompts and answers.

A family renders a validated request into the exact prompt text its model was trained on, says
how the engine should score it in one forward pass (the text appended to the prompt, the tokens
whose probabilities decide, when to decode), and parses the decoded answer into a verdict.
The engine knows nothing about any particular guard's format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from guardedge.runtime.types import GuardRequest, VerdictKind


@dataclass(frozen=True)
class ScoringSpec:
    """How to turn one forward pass into a decision.

    The engine appends ``answer_prefix`` to the prompt, reads the next-token distribution at the
    last position and compares the probabilities of the verdict texts ``unsafe_token`` and
    ``safe_token`` at the first token where their tokenizations differ (tokens they share are
    appended to the prefix). If the answer needs more text (categories, a rationale), it continues
    greedily after the verdict (after ``safe_token`` too when ``decode_when_safe``) until a stop
    token or ``max_new_tokens``. ``verdict_stop``: when the request asks no rationale, decoding
    also stops once the answer text contains it (what follows is the rationale); a request that
    asks for one decodes up to ``max_rationale_tokens``.

    ``verdict_stop``: when the request asks for no rationale, decoding stops as soon as the answer
    text (prefix included) contains it ("" = never). ``max_rationale_tokens`` bounds decoding when
    a rationale is asked for (0 = the family writes none).

    ``mode="labels"``: ``unsafe_token``/``safe_token`` are the two labels (ShieldGemma 2: ``Yes``
    means the image violates the policy); each prompt of a request gets P(unsafe_token) over the
    pair, the request is unsafe where one reaches the threshold (0.5 unless the request sets one).

    ``drafts`` are (regex, text) rules for the answer format: when the answer so far (prefix
    included) matches a regex, the text is proposed as the next tokens and kept only where
    greedy decoding agrees (runtime/decoding.py). They change the speed of decoding, never its
    result. Anchor with ``\\Z``: ``$`` also matches before a final newline.
    """

    answer_prefix: str
    safe_token: str
    unsafe_token: str
    stop_tokens: tuple[str, ...]
    max_new_tokens: int
    decode_when_safe: bool = False
    drafts: tuple[tuple[str, str], ...] = ()
    verdict_stop: str = ""
    max_rationale_tokens: int = 0
    # "generate": the verdict is the first answer token, P over the whole vocabulary, then the answer
    # is decoded. "labels": the family scores label tokens only — P(unsafe_token) in a softmax over
    # the two label tokens at each prompt's last position, no decoding (ShieldGemma 2's Yes/No).
    mode: Literal["generate", "labels"] = "generate"


@dataclass(frozen=True)
class ParsedAnswer:
    verdict: VerdictKind
    categories: tuple[str, ...] = ()
    error: str = ""
    rationale: str = ""  # the guard's own explanation, when its format has one and it was asked for


LabelVerdict = Literal["safe", "unsafe"]


class GuardFamily(Protocol):
    """One guard model family (prompt format + answer format)."""

    name: str
    scoring: ScoringSpec
    image_token: str  # the image placeholder the prompt spells ("" for none); the architecture expands it
    requires_image: bool  # a request without an image is refused
    max_images: int  # images a request may carry, in the turns where they occur (checked before decoding)
    # Optional: ``prompt_source = "model"`` renders with the model directory's chat template when it
    # has one (the published template is the source of truth where guardedge cannot check its bytes).
    # Optional: ``for_model_type(model_type) -> GuardFamily``, the family in the prompt frame of that
    # architecture's checkpoints (LlavaGuard: the LLaVA-OneVision -hf template, or Qwen2.5-VL's for
    # QwenGuard); families.for_model applies it wherever a family meets a model directory.

    def default_categories(self) -> tuple[tuple[str, str], ...]: ...

    def policy(self, request: GuardRequest) -> object:
        """The request's policy as the prompt states it (exclusions applied), in the family's own shape;
        ``request.policy`` once the engine resolved it."""
        ...

    @property
    def label_space(self) -> tuple[str, ...]:
        """The category codes an evaluation label may name (the default policy's codes)."""
        ...

    def parse_label(self, label: dict) -> tuple[LabelVerdict, tuple[str, ...]]:
        """An evaluation data label in this family's own codes; raises ValueError saying what is wrong."""
        ...

    def warmup_request(self) -> dict:
        """A request dict (``guardedge classify --input`` shape) this family accepts, for warm-up."""
        ...

    def smoke_requests(self) -> list[dict]:
        """A handful of request dicts covering the family's paths (default policy, an excluded
        category, a custom policy): what exports record and ``guardedge export verify`` re-runs."""
        ...

    def head_answers(self) -> tuple[str, ...]:
        """Verdict-only answers (after the answer prefix) under the default policy: the output-layer
        rows of their tokens are what reads the verdict and the categories, kept in float when a
        quantized export quantizes the head (runtime/backends/head_rows.py)."""
        ...

    def check(self, request: GuardRequest) -> None:
        """The family's own request rules (beyond the generic ones); raises InvalidRequest."""
        ...

    def prompt_keys(self, request: GuardRequest) -> tuple[str, ...]:
        """The prompts one request fans out to, by key (``("",)``: one prompt). ShieldGemma 2
        renders one prompt per policy; the engine runs their shared prefix once."""
        ...

    def render(self, request: GuardRequest, key: str = "") -> str:
        """The exact prompt text (of prompt ``key``), special tokens spelled out, without the answer prefix."""
        ...

    # Optional: ``answer_viable(answer, request) -> bool``, False once ``answer`` (the text so far,
    # answer prefix included) can no longer become a well-formed answer. The engine then stops
    # decoding that row: the answer is reported unparseable with what the model wrote, and an
    # off-format answer costs one decode step instead of its whole token budget.
    # Optional: ``category_answers(request) -> ((code, text), ...)``, the answer text after the
    # unsafe verdict that names each code of the request's policy first: per-category scores are
    # read along it (runtime/scores.py).
    # Optional: ``moderation_categories: dict[str, tuple[str, ...]]``, each default code -> the OpenAI
    # moderation names it answers (runtime/service/moderation.py); a family without it maps none.
    # Optional: ``verdict_texts(request) -> tuple[str, ...]``, every complete verdict-only answer
    # (after the answer prefix) the request allows; the verdict's token bound is raised to the
    # longest of them when ``max_new_tokens`` is too small (long or escaped custom names).

    def parse(self, answer: str, request: GuardRequest) -> ParsedAnswer:
        """Parse the model's answer (text after the prompt, answer prefix included).

        An answer that is not well-formed becomes ``unparseable`` with the reason; a bug in the
        parser raises like any other bug (it is not dressed up as an off-format answer).
        """
        ...


def load_smoke(family: str) -> list[dict]:
    """The family's smoke requests, committed as data (``data/<family>.smoke.json``: request dicts
    with inline PNGs), so a family needs no demo code to have them."""
    import json
    from importlib import resources

    return json.loads(resources.files("guardedge.runtime.families").joinpath(f"data/{family}.smoke.json").read_text("utf-8"))


def verdict_label(raw: object, codes: set[str] | None = None) -> tuple[LabelVerdict, tuple[str, ...]]:
    """An evaluation label ``{"verdict": "unsafe", "categories": ["S1"]}`` checked against ``codes``
    (None: any code) -> (verdict, categories); ValueError saying what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError('label must be an object like {"verdict": "unsafe", "categories": ["S1"]}')
    verdict = raw.get("verdict")
    if verdict not in ("safe", "unsafe"):
        raise ValueError(f'bad label verdict {verdict!r}; use "safe" or "unsafe"')
    categories = raw.get("categories", [])
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise ValueError("label categories must be a list of category codes (strings)")
    if verdict == "safe" and categories:
        raise ValueError("a safe label cannot name categories")
    unknown = [c for c in categories if codes is not None and c not in codes]
    if unknown:
        raise ValueError(f"label categories {unknown} are not codes of this family ({', '.join(sorted(codes or ()))})")
    return verdict, tuple(categories)


def key_renderer(family: GuardFamily, request: GuardRequest, key: str):
    """The renderer of prompt ``key`` of ``family`` for ``request``. The prompt encoder also renders
    the request with caller text mapped (runtime/prompt_tokens.py), keys included (a fanning-out
    family's keys may be caller-written category codes): there the key is the one at the same place."""
    if not key:
        return family.render
    index = family.prompt_keys(request).index(key)
    return lambda r: family.render(r, key=family.prompt_keys(r)[index])
