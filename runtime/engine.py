"""The scoring engine: requests in, verdicts out, in one forward pass when the answer is safe.

For a batch: render each prompt (family), append the answer prefix, tokenize and preprocess the
image (preprocess), run one prefill (backend) and read P(unsafe) and P(safe) at the last
position. A request whose first answer token is ``safe`` is done. One that is ``unsafe`` (or
crosses the optional threshold) continues greedily with the KV cache to read its categories;
any other first token is decoded too and reported as ``unparseable`` with the raw text.

    engine = load_engine("demo")
    verdicts = engine.classify([engine.parse(obj) for obj in objs])
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Literal, Sequence

from guardedge.runtime.backends.fastpaths import FastPaths, apply_fast_paths
from guardedge.runtime.decoding import FormatDrafter, argmax_rows
from guardedge.runtime.errors import invalid
from guardedge.runtime.families import GuardFamily, choose_family, for_model
from guardedge.runtime.modeldir import ModelDir
from guardedge.runtime.models import resolve_model
from guardedge.runtime.preprocess import Encoded, Preprocessor
from guardedge.runtime.requests import RequestLimits, check_excluded, parse_request
from guardedge.runtime.scores import CategoryPaths, scores_from
from guardedge.runtime.types import GuardRequest, Timings, Verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOptions:
    device: str | None = None  # auto: cuda if available, else cpu
    dtype: str | None = None  # auto: bfloat16 on cuda, float32 on cpu
    threshold: float | None = None  # unsafe iff P(unsafe) >= threshold; None: greedy answer decides
    max_batch_size: int = 8
    # Rows x longest prompt per batch of classify() (0: no budget): batched attention masks grow with
    # rows x length^2, so a long prompt runs alone; the server's batcher has the same knob.
    max_batch_tokens: int = 8192
    max_text_tokens: int | None = None  # default: the model's context length
    # None: the family's choice (families/base.py ``prompt_source``): Llama Guard 3 Vision and LlavaGuard
    # render with guardedge's byte-checked format; a family whose published template is not available
    # byte for byte (Llama Guard 4, ShieldGemma 2) renders with the directory's template when it has one.
    prompt_source: Literal["builtin", "model"] | None = None
    family: str | None = None  # override the family the manifest / model directory implies
    drafts: bool = True  # verify format drafts while decoding (same answers, fewer passes: runtime/decoding.py)
    category_scores: bool = True  # per-category scores (runtime/scores.py); off only to measure what they cost
    progress: bool = True
    limits: RequestLimits = field(default_factory=RequestLimits)  # what parse() accepts
    fast_paths: FastPaths = field(default_factory=FastPaths)  # opt-in CUDA paths, all off (backends/fastpaths.py)
    # Prompt prefixes (the policy text before a request's own) whose KV cache a PyTorch backend keeps
    # and reuses, for architectures that allow it (runtime/backends/prefix_cache.py); 0: none.
    prefix_cache: int = 4


@dataclass(frozen=True)
class EngineInfo:
    """What a loaded engine is, for ListModels, metrics and responses."""

    name: str
    family: str
    backend: str
    precision: str
    device: str
    categories: tuple[tuple[str, str], ...]
    limits: RequestLimits
    max_text_tokens: int  # prompt tokens accepted (the context minus room for the answer)
    max_batch_size: int
    memory_bytes: int  # the model's parameters and buffers
    max_images: int = 1  # images a request may carry (the family's limit)

    @property
    def variant(self) -> str:
        return f"{self.backend}/{self.precision}/{self.device}"


@dataclass
class Prepared:
    """A request after validation and preprocessing, ready to join a batch.

    ``rows`` holds one encoded prompt per key the family fans the request out to (ShieldGemma 2:
    one per policy); most families have one, under the key "".
    """

    request: GuardRequest
    rows: list[tuple[str, Encoded]]
    preprocess_s: float
    queued_at: float  # time.perf_counter() when the request arrived
    paths: CategoryPaths | None = None  # how to read this request's per-category scores (generative families)
    preprocess_wait_s: float = 0.0  # waiting for a preprocessing worker (the server's)

    @property
    def encoded(self) -> Encoded:
        """The first (for most families the only) prompt."""
        return self.rows[0][1]


OnVerdict = Callable[[int, Verdict], None]  # (row of the batch, its verdict)


def fits_budget(batch: Sequence[Prepared], candidate: Prepared, budget: int) -> bool:
    """Whether ``candidate`` may join ``batch`` within ``budget`` padded tokens: every prompt row
    (a fanned-out request counts each of its prompts) times the longest prompt; 0: no budget.
    The one rule :meth:`Engine.batches` and the server's batcher both cut batches by."""
    if budget <= 0:
        return True
    members = [*batch, candidate]
    longest = max(len(e.input_ids) for q in members for _, e in q.rows)
    return sum(len(q.rows) for q in members) * longest <= budget


class Engine:
    def __init__(self, model_dir: ModelDir, family: GuardFamily, preprocessor: Preprocessor, backend, options: EngineOptions):
        self.model_dir = model_dir
        self.family = family
        self.pre = preprocessor
        self.backend = backend
        self.options = options
        apply_fast_paths(backend, options.fast_paths)
        tok = preprocessor.tokenizer
        spec = family.scoring
        self.safe_id, self.unsafe_id = preprocessor.safe_id, preprocessor.unsafe_id
        self.stop_ids = {i for t in spec.stop_tokens if (i := tok.convert_tokens_to_ids(t)) is not None and i >= 0}
        # Rules see the whole answer: the prefix and the verdict tokens both texts share (appended to every prompt).
        self.answer_head = spec.answer_prefix + tok.decode(preprocessor.shared_ids)
        formats = FormatDrafter(tok, spec.drafts, self.answer_head) if spec.drafts else None
        self.drafter = formats if options.drafts else None
        # Fed after every prompt at prefill: the unsafe token and its draft (runtime/decoding.py). It is
        # fed with drafts off too: per-category scores are read along it (runtime/scores.py), and
        # decoding verifies it like any draft, so answers stay greedy decoding's.
        self.prefill_draft = [self.unsafe_id, *formats([self.unsafe_id])] if formats and spec.mode == "generate" else []
        self.prefill_branches = self._branches() if options.drafts else ()

    def _branches(self) -> tuple[int, ...]:
        """The tokens that may follow the prefill's draft under the default policy (Llama Guard:
        every category number after ``unsafe\\nS``), fed side by side after it where the backend's
        architecture allows (``branch_drafts``): an unsafe row then knows the token after its
        category number without a decode pass. Empty where that does not apply."""
        arch = getattr(self.backend, "arch", None)
        if not self.prefill_draft or not getattr(arch, "branch_drafts", False) or not hasattr(self.backend, "prefill_prompts"):
            return ()
        request = self.parse({"messages": [{"role": "user", "content": "-"}]})
        paths = self.pre.category_paths(replace(request, policy=self.family.policy(request)), self.prefill_draft[1:])
        if paths is None or paths.log_softmax or paths.positions != (len(self.prefill_draft) - 1,):
            return ()
        return paths.token_ids

    # -- the public surface -------------------------------------------------------------------

    def parse(self, obj: object, base_dir=None, limits: RequestLimits | None = None) -> GuardRequest:
        return parse_request(obj, self.family.default_categories(), base_dir, limits or self.options.limits)

    def info(self) -> EngineInfo:
        return EngineInfo(
            name=self.model_dir.name,
            family=self.family.name,
            backend=self.backend.name,
            precision=self.backend.precision,
            device=self.backend.device_name,
            categories=self.family.default_categories(),
            limits=self.options.limits,
            max_text_tokens=self.pre.max_text_tokens - self.pre.answer_budget(),
            max_batch_size=self.options.max_batch_size,
            memory_bytes=self.backend.memory_bytes(),
            max_images=self.family.max_images,
        )

    def prepare(self, request: GuardRequest) -> Prepared:
        """Tokenize and preprocess one request; raises InvalidRequest for this request alone."""
        start = time.perf_counter()
        if request.categories is None and request.excluded_category_keys:
            # parse_request checks excluded codes against the family's defaults when it is given them
            # (engine.parse does); a request parsed without them is checked here.
            check_excluded(request.excluded_category_keys, self.family.default_categories())
        self._check_images(request)
        self.family.check(request)
        if self.family.requires_image and not request.has_image:  # the family's own check says it better
            raise invalid("messages", f"the {self.family.name} family classifies an image: the request has none")
        # The policy, resolved once: it travels with the request to the parser and the decode checks.
        request = replace(request, policy=self.family.policy(request))
        rows = self.pre.encode_rows(request)
        paths = (self.pre.category_paths(request, self.prefill_draft[1:])
                 if self.prefill_draft and self.options.category_scores else None)
        return Prepared(request.without_pixels(), rows, time.perf_counter() - start, start, paths)

    def _check_images(self, request: GuardRequest) -> None:
        limit = self.family.max_images
        found = [(i, j) for i, m in enumerate(request.messages) for j, p in enumerate(m.content) if p.type == "image"]
        if len(found) > limit:
            where = ", ".join(f"messages[{i}].content[{j}]" for i, j in found)
            accepts = "one image" if limit == 1 else f"at most {limit} images"
            raise invalid("messages", f"has {len(found)} images ({where}); the {self.family.name} family accepts {accepts} per request")

    def classify(self, requests: Sequence[GuardRequest], threshold: float | None = None) -> list[Verdict]:
        """Classify requests in batches (:meth:`batches`), keeping their order."""
        prepared = [self.prepare(r) for r in requests]
        out: list[Verdict] = []
        for batch in self.batches(prepared):
            out.extend(self.run(batch, threshold))
        return out

    def batches(self, prepared: Sequence[Prepared]) -> list[list[Prepared]]:
        """``prepared`` cut into engine batches, in order: at most ``max_batch_size`` requests whose
        padded size (longest prompt x prompts) stays within ``max_batch_tokens``; a request over
        the budget runs alone. Why: a padded batch's attention masks grow with rows x length^2
        (two 60k-token prompts would ask for tens of GB), while one prompt alone grows linearly."""
        budget, size = self.options.max_batch_tokens, self.options.max_batch_size
        out: list[list[Prepared]] = []
        for p in prepared:
            batch = out[-1] if out else []
            if batch and len(batch) < size and fits_budget(batch, p, budget):
                batch.append(p)
            else:
                out.append([p])
        return out

    def run(self, batch: Sequence[Prepared], threshold: float | None = None, on_verdict: OnVerdict | None = None) -> list[Verdict]:
        """One engine batch: one prefill, then a KV-cached decode for the rows that need it
        (a label-scoring family: one pass over every prompt of the batch, shared prefixes once).

        A request's own threshold wins over ``threshold``, which wins over the engine's option.
        ``on_verdict(row, verdict)`` is called for each row the moment its answer is complete (right
        after the prefill for a row that needs no decoding) while the batch goes on decoding the
        others; a row's ``inference`` time is the time to its own answer.
        """
        default = self.options.threshold if threshold is None else threshold
        thresholds = [default if p.request.threshold is None else p.request.threshold for p in batch]
        if self.family.scoring.mode == "labels":
            verdicts = self._run_labels(batch, thresholds)
            if on_verdict is not None:  # one pass answers every row at once
                for i, verdict in enumerate(verdicts):
                    on_verdict(i, verdict)
            return verdicts
        return self._run_generate(batch, thresholds, on_verdict)

    def _run_generate(self, batch: Sequence[Prepared], thresholds: list[float | None],
                      on_verdict: OnVerdict | None) -> list[Verdict]:
        import torch

        started = time.perf_counter()
        items = [p.encoded for p in batch]
        # A backend that keeps prompt prefixes (the PyTorch one) feeds only what follows a kept one.
        prefill_prompts = getattr(self.backend, "prefill_prompts", None)
        logits, state = (prefill_prompts(items, self.prefill_draft, self.prefill_branches) if prefill_prompts is not None
                         else self.backend.prefill(self.pre.collate(items), self.prefill_draft))
        probs = torch.softmax(logits, dim=-1)
        p_unsafe = probs[:, self.unsafe_id].tolist()
        p_safe = probs[:, self.safe_id].tolist()
        scores = self._category_scores(batch, state, p_unsafe)
        first = argmax_rows(logits)
        forced = [self._first_token(f, pu, t) for f, pu, t in zip(first, p_unsafe, thresholds)]
        spec = self.family.scoring
        rows = [i for i, f in enumerate(forced) if f != self.safe_id or spec.decode_when_safe]
        verdicts: dict[int, Verdict] = {}

        def finish(i: int, tokens: list[int]) -> None:
            verdicts[i] = self._verdict(batch[i], tokens, p_unsafe[i], p_safe[i], scores[i], time.perf_counter() - started)
            if on_verdict is not None:
                on_verdict(i, verdicts[i])

        for i in sorted(set(range(len(batch))) - set(rows)):
            finish(i, [self.safe_id])
        if rows:
            requests = [batch[i].request for i in rows]
            limits = [self.pre.answer_budget(r) for r in requests]
            watch = _RowWatch(self._until(requests), lambda j, tokens: finish(rows[j], tokens))
            decoded = self.backend.decode(state, rows, [forced[i] for i in rows], limits, self.stop_ids, self.drafter, watch)
            for i, tokens in zip(rows, decoded):
                if i not in verdicts:  # a backend whose loop does not report finished rows
                    finish(i, tokens)
        return [verdicts[i] for i in range(len(batch))]

    def _category_scores(self, batch: Sequence[Prepared], state, p_unsafe: list[float]) -> list[tuple]:
        """Each row's (code, score) pairs, read along the prefill's draft (runtime/scores.py)."""
        out: list[tuple] = [() for _ in batch]
        if not self.prefill_draft or not getattr(state, "draft", ()):
            return out  # an ONNX export from before drafts returns no logits along the draft
        groups: dict[CategoryPaths, list[int]] = {}
        for i, p in enumerate(batch):
            if p.paths is not None:
                groups.setdefault(p.paths, []).append(i)
        for paths, rows in groups.items():
            values = self.backend.draft_logits(state, paths.positions, paths.token_ids, paths.log_softmax)
            for i in rows:
                out[i] = scores_from(values[i], paths, p_unsafe[i])
        return out

    def _run_labels(self, batch: Sequence[Prepared], thresholds: list[float | None]) -> list[Verdict]:
        """Label scoring (ShieldGemma 2): P(unsafe label) over the two label tokens at each prompt's
        last position; a request's prompts (one per policy) share their prefix's pass."""
        import torch

        started = time.perf_counter()
        logits = self.pre.score_rows(self.backend, [p.rows for p in batch], [self.unsafe_id, self.safe_id])
        pair = torch.softmax(logits, dim=-1)[:, 0].tolist()
        inference_s = time.perf_counter() - started
        out, k = [], 0
        for p, t in zip(batch, thresholds):
            keys = [key for key, _ in p.rows]
            scores = tuple(zip(keys, pair[k : k + len(keys)]))
            k += len(keys)
            out.append(self._label_verdict(p, scores, 0.5 if t is None else t, inference_s))
        return out

    def _label_verdict(self, p: Prepared, scores: tuple[tuple[str, float], ...], threshold: float,
                       inference_s: float) -> Verdict:
        spec = self.family.scoring
        flagged = tuple(key for key, s in scores if s >= threshold)
        top = max(s for _, s in scores)
        raw = "\n".join(f"{key}: {spec.unsafe_token if s >= 0.5 else spec.safe_token}" for key, s in scores)
        return Verdict("unsafe" if flagged else "safe", flagged, top, 1.0 - top, raw, self._timings(p, inference_s),
                       request_id=p.request.request_id, category_scores=scores)

    # -- internals ----------------------------------------------------------------------------

    def _first_token(self, greedy: int, p_unsafe: float, threshold: float | None) -> int:
        if threshold is None or greedy not in (self.safe_id, self.unsafe_id):
            return greedy  # an off-format first token is decoded and reported, never guessed
        return self.unsafe_id if p_unsafe >= threshold else self.safe_id

    def _until(self, requests: list[GuardRequest]):
        """When a row's answer is complete before its token bound: a row that asked no rationale
        once the answer holds the family's ``verdict_stop``; any row once the answer can no
        longer parse (the family's ``answer_viable``, checked until ``verdict_stop`` is reached)."""
        stop = self.family.scoring.verdict_stop
        viable = getattr(self.family, "answer_viable", None)
        if not stop or (viable is None and all(r.rationale for r in requests)):
            return None
        settled: set[int] = set()  # rationale rows past the stop: the rest is free text

        def until(row: int, tokens: list[int]) -> bool:
            if row in settled:
                return False
            text = self.answer_head + self.pre.tokenizer.decode(tokens, skip_special_tokens=False)
            if stop in text:
                settled.add(row)
                return not requests[row].rationale
            return viable is not None and not viable(text, requests[row])
        return until

    def _verdict(self, p: Prepared, tokens: list[int], p_unsafe: float, p_safe: float, scores: tuple,
                 inference_s: float) -> Verdict:
        text = self.pre.tokenizer.decode(self.pre.shared_ids + tokens, skip_special_tokens=False)
        stop = self.family.scoring.verdict_stop
        if stop and not p.request.rationale and stop in text:
            # A verified draft may have run a few tokens past the stop: the answer is the same either way.
            text = text[: text.index(stop) + len(stop)]
        parsed = self.family.parse(self.family.scoring.answer_prefix + text, p.request)
        return Verdict(parsed.verdict, parsed.categories, p_unsafe, p_safe, text, self._timings(p, inference_s), parsed.error,
                       p.request.request_id, parsed.rationale, scores)

    def _timings(self, p: Prepared, inference_s: float) -> Timings:
        now = time.perf_counter()
        return Timings(
            queue=max(0.0, now - p.queued_at - p.preprocess_wait_s - p.preprocess_s - inference_s),
            preprocess=p.preprocess_s,
            inference=inference_s,
            total=now - p.queued_at,
            preprocess_wait=p.preprocess_wait_s,
        )


class _RowWatch:
    """The ``until`` greedy_decode gets: the family's rule for a complete answer (may be None), and
    ``finished(row, tokens)``, told once per row when it is complete (runtime/decoding.py)."""

    def __init__(self, until, finished: Callable[[int, list[int]], None]):
        self.until, self.finished = until, finished

    def __call__(self, row: int, tokens: list[int]) -> bool:
        return self.until is not None and self.until(row, tokens)


def load_engine(model: str, options: EngineOptions | None = None) -> Engine:
    """Load ``model`` (an alias such as "demo", a model directory or an artifact) with the backend
    its manifest names (PyTorch for a plain directory)."""
    options = options or EngineOptions()
    return build_engine(resolve_model(model, progress=options.progress), options)


def build_engine(model_dir: ModelDir, options: EngineOptions, backend=None, family: GuardFamily | None = None) -> Engine:
    """The one place an engine is assembled: family, architecture, tokenizer, preprocessor, backend.

    ``backend`` (already loaded, e.g. a model built in memory by a benchmark) replaces loading one.
    """
    from transformers import AutoTokenizer

    from guardedge.runtime.architectures import architecture_class
    from guardedge.runtime.backends import load_backend

    family = for_model(family, model_dir.config) if family else choose_family(model_dir, options.family)
    if _prompt_source(options, family, model_dir) == "model":
        family = _model_template_family(family, model_dir)
    else:
        _warn_if_template_differs(family, model_dir)
    # fix_mistral_regex=False: transformers 4.57.3+ warns about a Mistral regex on every local
    # directory saved by 4.57.x; passing the flag explicitly keeps the tokenizer unchanged and quiet.
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir.path), local_files_only=True, fix_mistral_regex=False)
    _check_image_token(tokenizer, family, model_dir)
    arch = architecture_class(model_dir.config)(model_dir.path, model_dir.config, tokenizer, family.image_token)
    backend = backend or load_backend(model_dir, arch, options.device, options.dtype)
    backend.bind(arch)
    context = arch.context_length()
    # A backend may bound the prompt below the context (ONNX Runtime: attention scores held whole).
    cap = getattr(backend, "max_prompt_tokens", lambda: None)() or context
    max_tokens = min(context, cap, options.max_text_tokens or context)
    keep = getattr(backend, "keep_prefixes", None)
    if keep is not None:
        keep(options.prefix_cache)
    return Engine(model_dir, family, Preprocessor(tokenizer, arch, family, max_tokens), backend, options)


def _check_image_token(tokenizer, family: GuardFamily, model_dir: ModelDir) -> None:
    from guardedge.runtime.errors import ModelLoadError

    token = family.image_token
    if token and tokenizer.convert_tokens_to_ids(token) in (None, tokenizer.unk_token_id):
        raise ModelLoadError(f"{model_dir.path}: the {family.name} family's image token {token!r} is not a token of "
                             "this model's tokenizer; is it the right --family?")


def _prompt_source(options: EngineOptions, family: GuardFamily, model_dir: ModelDir) -> str:
    if options.prompt_source is not None:
        return options.prompt_source
    from guardedge.runtime.chat_template import model_template

    prefers = getattr(family, "prompt_source", "builtin")
    return "model" if prefers == "model" and model_template(model_dir.path) is not None else "builtin"


def _model_template_family(family: GuardFamily, model_dir: ModelDir) -> GuardFamily:
    from guardedge.runtime.chat_template import model_template
    from guardedge.runtime.families.model_template import ModelTemplateFamily

    template = model_template(model_dir.path)
    if template is None:
        from guardedge.runtime.errors import ModelLoadError

        raise ModelLoadError(f"{model_dir.path} has no chat template; use --prompt-source builtin")
    return ModelTemplateFamily(family, template)


def _warn_if_template_differs(family: GuardFamily, model_dir: ModelDir) -> None:
    from guardedge.runtime.families.model_template import template_differences

    for difference in template_differences(family, model_dir.path):
        log.warning("model %s: %s", model_dir.name, difference)
