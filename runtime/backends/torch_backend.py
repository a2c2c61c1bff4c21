"""PyTorch backend: a transformers model from a local directory, prefill + KV-cached greedy decode.

What is architecture-specific (the image inputs of the forward passes, the class that loads the
directory) comes from the architecture plug-in (runtime/architectures/); this module owns the
cache, the positions and masks of left-padded rows, and the decode steps. Image work happens
once, at prefill, and lives in the cache.

Decoding is the shared drafted greedy loop (runtime/decoding.py) over :class:`_TorchSteps`. On
CPU the output layer is replaced by :class:`SplitHead` (the same weights in a layout MKL runs on
every core). bitsandbytes specifics live in ``bnb.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, cast

import torch

from guardedge.runtime.backends.bnb import bnb_precision, quant_state_bytes, saved_quantization, set_bnb_compute_dtype
from guardedge.runtime.backends.cpu_head import SplitHead
from guardedge.runtime.decoding import Drafter, GreedyAt, Until, argmax_rows, greedy_decode
from guardedge.runtime.architectures import Architecture, Batch, Encoded
from guardedge.runtime.backends.prefix_cache import Hit, PrefixCache, reusable

if TYPE_CHECKING:
    from transformers import DynamicCache  # imported where a cache is made: transformers loads lazily

# Prompts longer than this (tokens) are fed without branches or a kept prefix (prefill_prompts).
LONG_PROMPT = 4096
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def choose_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def choose_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    # fp32 on CPU (bf16 matmuls are slow on most CPUs), bf16 on CUDA (the checkpoint's own dtype).
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}") from None


def device_map_target(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda:{dev.index if dev.index is not None else torch.cuda.current_device()}"
    return dev.type


@dataclass
class PrefillState:
    cache: DynamicCache
    attention_mask: torch.Tensor
    context: dict  # the architecture's decode context (e.g. Mllama's cross-attention mask)
    next_position: torch.Tensor  # [B] position id of the token after the prompt
    prompt_columns: int  # cache columns of the prompt; the draft's follow
    draft: tuple[int, ...]  # tokens fed after every prompt at prefill (may be empty)
    draft_hidden: torch.Tensor  # [B, len(draft), hidden]: their last hidden states
    branches: tuple[int, ...] = ()  # tokens fed side by side after the draft (see prefill)
    branch_hidden: torch.Tensor | None = None  # [B, len(branches), hidden]


class TorchBackend:
    """Runs the architecture's transformers model in eval mode without autograd."""

    name = "torch"

    def __init__(self, model, device: torch.device, dtype: torch.dtype, quantization: str | None = None,
                 arch: Architecture | None = None):
        self.model = model
        self.arch = arch
        self.device = device
        self.dtype = dtype
        self.quantization = quantization  # "bnb-int8", "bnb-nf4", "bnb-fp4" or None
        # The dtype transformers gives its own masks: that of the token embeddings (the hidden states').
        self.mask_dtype = model.get_input_embeddings().weight.dtype
        self.trunk: Callable | None = None
        self.prefixes: PrefixCache | None = None  # kept prompt prefixes (keep_prefixes)
        if arch is not None:
            self.bind(arch)

    def bind(self, arch: Architecture) -> None:
        """Use ``arch``'s trunk and output layer; on CPU an untied fp32 output layer is replaced,
        where it sits in the model, by a :class:`SplitHead` over the same weights."""
        self.arch = arch
        self.trunk = arch.torch_trunk(self.model)
        head = arch.torch_head(self.model)
        tied = getattr(head, "weight", None) is self.model.get_input_embeddings().weight
        if self.device.type == "cpu" and not tied and isinstance(head, torch.nn.Linear) and (parts := SplitHead.parts_for(head)):
            _replace_module(self.model, head, SplitHead(head, parts))

    def keep_prefixes(self, entries: int) -> None:
        """Keep the KV cache of up to ``entries`` prompt prefixes for :meth:`prefill_prompts` to
        reuse (runtime/backends/prefix_cache.py), if the architecture allows it; 0 keeps none."""
        arch = self.bound()[0]
        self.prefixes = PrefixCache(entries) if entries and getattr(arch, "prefix_reuse", False) else None

    @property
    def head(self) -> torch.nn.Module:
        """The output layer where it sits in the model now: read on every use, so a module swapped
        into the model (export/groupquant.py's in-process trials) is the one that answers."""
        if self.arch is None:
            raise RuntimeError("TorchBackend.bind(arch) was not called: the backend has no architecture")
        return self.arch.torch_head(self.model)

    def bound(self) -> tuple[Architecture, Callable, torch.nn.Module]:
        """The architecture, trunk and output layer :meth:`bind` set (build_engine binds every backend)."""
        if self.arch is None or self.trunk is None:
            raise RuntimeError("TorchBackend.bind(arch) was not called: the backend has no architecture")
        return self.arch, self.trunk, self.head

    @classmethod
    def load(cls, model_dir: Path, device: str | None = None, dtype: str | None = None, arch: Architecture | None = None,
             head_rows: str | None = None, **load_kwargs) -> TorchBackend:
        """The directory's model; its class comes from the architecture (``arch``, else config.json's model_type).

        ``head_rows``: a file of the directory (its manifest names it) holding float output rows
        for the verdict and category tokens of a quantized head (runtime/backends/head_rows.py)."""
        import json

        import transformers

        from guardedge.runtime.architectures import architecture_class

        arch_cls = arch or architecture_class(json.loads((Path(model_dir) / "config.json").read_text()))
        cls_name = arch_cls.transformers_class

        dev = choose_device(device)
        dt = choose_dtype(dtype, dev)
        quant = bnb_precision(saved_quantization(model_dir) or load_kwargs.get("quantization_config"))
        if quant:
            from guardedge.runtime.extras import require

            require("bitsandbytes", "accelerate", purpose=f"the bitsandbytes ({quant}) model {model_dir}")
            # bitsandbytes weights are placed (and on CUDA quantized) while loading; .to() is refused.
            load_kwargs.setdefault("device_map", {"": device_map_target(dev)})
        model = getattr(transformers, cls_name).from_pretrained(
            str(model_dir), local_files_only=True, use_safetensors=True, dtype=dt, **load_kwargs
        )
        if quant:
            set_bnb_compute_dtype(model, dt)
        else:
            model.to(dev)
        if head_rows:
            from guardedge.runtime.backends import head_rows as rows

            rows.wrap(model, Path(model_dir) / head_rows, dt, arch_cls.verdict_head)
        model.eval()
        return cls(model, dev, dt, quant, arch)

    @property
    def description(self) -> str:
        return f"torch {self.precision} on {self.device_name}"

    @property
    def precision(self) -> str:
        return self.quantization or str(self.dtype).removeprefix("torch.")

    @property
    def device_name(self) -> str:
        return self.device.type

    def memory_bytes(self) -> int:
        """Bytes held by the model's parameters and buffers (quantized weights at their packed size)."""
        tensors = [*self.model.parameters(), *self.model.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors) + quant_state_bytes(self.model)

    @torch.inference_mode()
    def prefill(self, batch: Batch, draft: Sequence[int] = (), branches: Sequence[int] = ()) -> tuple[torch.Tensor, PrefillState]:
        """Logits (fp32, [B, vocab]) for the token after the last prompt token, and the cache.

        ``draft`` tokens are fed after every prompt in the same pass (runtime/decoding.py); their
        hidden states wait in the state until decode (or per-category scores) needs them.
        ``branches`` (architectures with ``branch_drafts``): tokens fed after the draft side by
        side, each at the position after it and seeing only the prompt, the draft and itself
        (Llama Guard: every category number after ``unsafe\\nS``), so the token that follows the
        one the model picks is known without another pass.
        """
        from transformers import DynamicCache

        arch, trunk, head = self.bound()
        prompt_columns = batch.input_ids.shape[1]
        batch = _side_by_side(batch.extended([*draft, *branches], arch.extend_extra), len(branches))
        cache = DynamicCache()
        inputs, context = arch.torch_prefill(self.model, batch, self.device, self.dtype)
        positions, text_positions = arch.torch_positions(batch)
        attention_mask = batch.attention_mask.to(self.device)
        hidden = trunk(
            input_ids=batch.input_ids.to(self.device),
            attention_mask=self._mask(arch, attention_mask, 0, context, len(branches)),
            position_ids=positions.to(self.device),
            past_key_values=cache,
            use_cache=True,
            **inputs,
        ).last_hidden_state[:, prompt_columns - 1 :]
        return self._state(head, hidden, cache, attention_mask, context,
                           text_positions[:, prompt_columns - 1].to(self.device) + 1, prompt_columns, draft, branches)

    def _mask(self, arch: Architecture, attention_mask: torch.Tensor, first: int, context: dict, branches: int) -> object:
        if not branches:
            return arch.torch_mask(attention_mask, first, self.mask_dtype, context)
        # An architecture that declares ``branch_drafts`` takes ``hide`` (runtime/architectures/forward.py).
        return cast(Any, arch).torch_mask(attention_mask, first, self.mask_dtype, context,
                                          hide=_siblings(attention_mask.shape[1], first, branches, self.device))

    def _state(self, head: torch.nn.Module, hidden: torch.Tensor, cache, attention_mask: torch.Tensor, context: dict,
               next_position: torch.Tensor, prompt_columns: int, draft: Sequence[int],
               branches: Sequence[int]) -> tuple[torch.Tensor, PrefillState]:
        """The verdict's logits and the decode state from the last prompt position's hidden state on."""
        logits = head(hidden[:, 0]).float()
        end = 1 + len(draft)
        state = PrefillState(cache, attention_mask, context, next_position, prompt_columns, tuple(draft),
                             hidden[:, 1:end], tuple(branches), hidden[:, end:] if branches else None)
        return logits, state

    @torch.inference_mode()
    def prefill_prompts(self, items: Sequence[Encoded], draft: Sequence[int] = (),
                        branches: Sequence[int] = ()) -> tuple[torch.Tensor, PrefillState]:
        """:meth:`prefill` of ``items`` (collated by the architecture), feeding only what follows a
        kept prefix they all start with (:meth:`keep_prefixes`). A batch that matches none (or
        shares less than half of its leading text with one: another policy) keeps the prefix of
        its longest prompt."""
        arch = self.bound()[0]
        if max(len(item.input_ids) for item in items) > LONG_PROMPT:
            # Branches must not see each other and a kept prefix sits before the fed columns: both
            # need an additive [rows, 1, width, columns] mask, whose memory grows with the square of
            # the prompt (a 60k-token Llama 4 prompt asked for 24 GB and was killed). Without them
            # an unpadded prompt takes sdpa's own causal path (no mask): memory grows linearly.
            # What they save (a decode pass, a few hundred prompt tokens) is small beside such a prefill.
            return self.prefill(arch.collate(items), draft)
        if self.prefixes is None:
            return self.prefill(arch.collate(items), draft, branches)
        hit = self.prefixes.lookup(items)
        logits, state = (self._prefill_after(hit, items, draft, branches) if hit
                         else self.prefill(arch.collate(items), draft, branches))
        # The longest prompt has no padding: its keys and values are contiguous from column 0.
        row = int(state.attention_mask[:, : state.prompt_columns].all(dim=1).nonzero()[0])
        if hit is None or 2 * hit.tokens < reusable(items[row]):
            self.prefixes.remember(items[row], [(k[row : row + 1], v[row : row + 1]) for k, v in _layers(state.cache)])
        return logits, state

    def _prefill_after(self, hit: Hit, items: Sequence[Encoded], draft: Sequence[int],
                       branches: Sequence[int]) -> tuple[torch.Tensor, PrefillState]:
        """The prefill of ``items`` whose first ``hit.tokens`` tokens are the kept ones: the rest
        is left-padded after them (pad columns masked like any other), positions continue."""
        from transformers import DynamicCache

        arch, trunk, head = self.bound()
        kept, rows = hit.tokens, len(items)
        suffix = arch.collate([_after(item, kept) for item in items])
        prompt_columns = suffix.input_ids.shape[1]
        suffix = _side_by_side(suffix.extended([*draft, *branches], arch.extend_extra), len(branches))
        cache = DynamicCache()
        for layer, (keys, values) in enumerate(hit.kv):  # update copies: the kept entry is never written
            cache.update(keys[:, :, :kept].expand(rows, -1, -1, -1), values[:, :, :kept].expand(rows, -1, -1, -1), layer)
        attention_mask = torch.cat([suffix.attention_mask.new_ones((rows, kept)), suffix.attention_mask], dim=1).to(self.device)
        inputs, context = arch.torch_prefill(self.model, suffix, self.device, self.dtype)
        positions, text_positions = arch.torch_positions(suffix)
        hidden = trunk(
            input_ids=suffix.input_ids.to(self.device),
            attention_mask=self._mask(arch, attention_mask, kept, context, len(branches)),
            position_ids=(positions + kept).to(self.device),
            past_key_values=cache,
            use_cache=True,
            cache_position=kept + torch.arange(suffix.input_ids.shape[1], device=self.device),
            **inputs,
        ).last_hidden_state[:, prompt_columns - 1 :]
        return self._state(head, hidden, cache, attention_mask, context,
                           text_positions[:, prompt_columns - 1].to(self.device) + kept + 1, kept + prompt_columns,
                           draft, branches)

    @torch.inference_mode()
    def prefill_shared(self, prefix: Batch, suffix: Batch, parents: Sequence[int],
                       token_ids: Sequence[int] | None = None) -> torch.Tensor:
        """Logits (fp32, [rows, vocab], or [rows, len(token_ids)] for just those tokens: a label
        family reads two) after each row of ``suffix``, which continues row ``parents[i]`` of
        ``prefix``: the prefix (images included) is run once and its KV cache reused by every row
        that continues it (a family's fan-out: one prompt per policy).

        The result equals each prefix + suffix run whole: suffix rows are left-padded *after* the
        prefix, and those pad columns are masked like any other.
        """
        from transformers import DynamicCache

        arch, trunk, head = self.bound()
        cache = DynamicCache()
        inputs, context = arch.torch_prefill(self.model, prefix, self.device, self.dtype)
        positions, text_positions = arch.torch_positions(prefix)
        prefix_mask = prefix.attention_mask.to(self.device)
        trunk(input_ids=prefix.input_ids.to(self.device),
              attention_mask=arch.torch_mask(prefix_mask, 0, self.mask_dtype, context),
              position_ids=positions.to(self.device), past_key_values=cache, use_cache=True, **inputs)
        index = torch.tensor(list(parents), device=self.device)
        cache.batch_select_indices(index)
        context = arch.torch_select(context, index)
        columns = prefix_mask.shape[1]
        attention_mask = torch.cat([prefix_mask[index], suffix.attention_mask.to(self.device)], dim=1)
        start = text_positions[:, -1].to(self.device)[index] + 1
        steps = (suffix.attention_mask.to(self.device).cumsum(-1) - 1).clamp(min=0)
        inputs, context = arch.torch_step(context, suffix.input_ids.shape[1])
        hidden = trunk(
            input_ids=suffix.input_ids.to(self.device),
            attention_mask=arch.torch_mask(attention_mask, columns, self.mask_dtype, context),
            position_ids=arch.torch_step_positions(start[:, None] + steps),
            past_key_values=cache,
            use_cache=True,
            cache_position=columns + torch.arange(suffix.input_ids.shape[1], device=self.device),
            **inputs,
        ).last_hidden_state[:, -1]
        if token_ids is not None:  # only the output rows read: 2 of Gemma 3's 262k
            return _row_logits(head, hidden, list(token_ids))
        return head(hidden).float()

    @torch.inference_mode()
    def draft_logits(self, state: PrefillState, positions: Sequence[int], token_ids: Sequence[int],
                     log_softmax: bool) -> torch.Tensor:
        """fp32 [B, len(positions), len(token_ids)]: the logits of ``token_ids`` after draft
        position p (0: after the draft's first token), or their log-probabilities over the whole
        vocabulary when ``log_softmax``. Only the rows of the output layer that are read are
        computed when the normaliser is not needed."""
        _, _, head = self.bound()
        hidden = state.draft_hidden[:, list(positions)]
        if log_softmax:
            return torch.log_softmax(head(hidden).float(), dim=-1)[..., list(token_ids)]
        return _row_logits(head, hidden, list(token_ids))

    def decode(self, state: PrefillState, rows: list[int], first: list[int], max_new: int | list[int],
               stop_ids: set[int], drafter: Drafter | None = None, until: Until | None = None) -> list[list[int]]:
        """Greedy continuation for ``rows`` after forcing ``first``; stops at a stop id or max_new tokens."""
        with torch.inference_mode():
            return greedy_decode(_TorchSteps(self, state, rows), first, max_new, stop_ids, drafter, until)


LAZY_POSITIONS = 4  # the longest block computed position by position on CPU (see _GreedyHead)


class _GreedyHead:
    """Greedy tokens from last hidden states through the output layer.

    - A :class:`SplitHead` (CPU, fp32): every position at once through its verified bf16 product
      (``SplitHead.greedy``: the fp32 answer at a fraction of the cost).
    - Other layers: all positions in one product, except for a single row on CPU, where each
      position is computed only when verification reads it (a rejected draft position, and every
      one after it, is never computed): there the layer costs per row read, while a batch's many
      rows are cheapest in one product; on CUDA a few rows cost what one does.
    """

    def __init__(self, head: torch.nn.Module, hidden: torch.Tensor):
        self.head, self.hidden = head, hidden
        rows, positions, width = hidden.shape
        self.table: list[list[int]] | None
        if isinstance(head, SplitHead):
            flat = head.greedy(hidden.reshape(rows * positions, width))
            self.table = [flat[r * positions : (r + 1) * positions] for r in range(rows)]
        else:
            # Lazy only for the short blocks Llama Guard's drafts make: a long block (LlavaGuard's JSON
            # scaffolding, ~12 positions) is cheaper as one matrix product than as a product per position
            # (demo LlavaGuard, 152000-row head: 25 one-row products 74 ms, one 25-row product ~8 ms).
            lazy = hidden.device.type == "cpu" and rows == 1 and positions <= LAZY_POSITIONS
            self.table = None if lazy else _greedy_table(head(hidden))
        self.memo: dict[int, int] = {}

    def __call__(self, row: int, position: int) -> int:
        if self.table is not None:
            return self.table[row][position]
        if position not in self.memo:
            self.memo[position] = argmax_rows(self.head(self.hidden[0, position][None]))[0]
        return self.memo[position]


def _greedy_table(logits: torch.Tensor) -> list[list[int]]:
    """[rows, positions, vocab] logits -> greedy ids per row and position, in one argmax."""
    rows, positions, vocab = logits.shape
    flat = argmax_rows(logits.reshape(rows * positions, vocab))
    return [flat[r * positions : (r + 1) * positions] for r in range(rows)]


class _TorchSteps:
    """Decode steps over the prefill's cache: several positions per row per step (drafts), and
    positions a row did not keep are masked out of its attention from then on."""

    max_chunk = 4  # "unsafe" + "\nS" + the category digit fit; the decode loop widens it to a family's longest draft

    def __init__(self, backend: TorchBackend, state: PrefillState, rows: list[int]):
        self.arch, self.trunk, self.head = backend.bound()
        self.device = backend.device
        self.mask_dtype = backend.mask_dtype
        index = torch.tensor(rows, device=self.device)
        self.cache = state.cache
        if len(rows) != state.attention_mask.shape[0]:
            self.cache.batch_select_indices(index)
        self.attn = state.attention_mask[index]
        self.context = self.arch.torch_select(state.context, index)
        self.position = state.next_position[index]
        self.pending = state.draft
        self._pending_hidden = state.draft_hidden[index] if state.draft else None
        self._fed_from = state.prompt_columns  # first cache column of the last step (or of the prefill's draft)
        self.branches = state.branches
        self._branch_hidden = state.branch_hidden[index] if state.branch_hidden is not None else None
        self._branch_from = state.prompt_columns + len(state.draft)  # cache column of the first branch
        self._guessed: dict[int, int] = {}  # row -> the branch token read with the draft (pending_greedy)
        self._guess_read: GreedyAt | None = None
        self._branches_by_token = sorted(range(len(self.branches)), key=self.branches.__getitem__)

    def pending_greedy(self) -> GreedyAt:
        """The greedy tokens at the pending positions, read together with each row's likeliest
        branch: the one whose token has the largest logit at the last pending position, which is
        the branch decoding takes whenever the greedy token there is a branch at all.

        Why: on CPU the output layer costs per product, not per row (demo LG4, 202,048 rows: one
        bf16 product of 4 rows ~1.4 ms, of 3 rows and then 1 row ~2.9 ms), and a one-category answer
        reads both. A wrong guess costs one row of the product; :meth:`branch_greedy` then reads
        the branch it is asked for on its own, so the answer never depends on the guess."""
        assert self._pending_hidden is not None, "decoding asks for it only when there is a pending draft"
        guesses = self._likeliest_branches()
        if guesses is None:
            return _GreedyHead(self.head, self._pending_hidden)
        assert self._branch_hidden is not None
        rows = torch.arange(len(guesses), device=self.device)
        extra = self._branch_hidden[rows, torch.tensor(guesses, device=self.device)][:, None]
        greedy = _GreedyHead(self.head, torch.cat([self._pending_hidden, extra], dim=1))
        self._guessed = {row: self.branches[g] for row, g in enumerate(guesses)}
        self._guess_read = greedy  # the guessed branch is its last column
        return greedy

    def _likeliest_branches(self) -> list[int] | None:
        """Per row, the index of the branch whose token scores highest after the last pending
        position (the lowest token on a tie, as argmax); None when there are no branches or their
        output rows are not plain numbers (a quantized layer: the guess would cost a whole product)."""
        if self._branch_hidden is None:
            return None
        rows = _float_rows(self.head, list(self.branches))
        if rows is None:
            return None
        assert self._pending_hidden is not None, "asked by pending_greedy only"
        logits = (self._pending_hidden[:, -1].to(rows.dtype) @ rows.t()).float()
        order = self._branches_by_token  # argmax takes the first maximum: a tie goes to the lowest token, as greedy's
        return [order[b] for b in logits[:, order].argmax(-1).tolist()]

    def branch_greedy(self, row: int, token: int) -> int:
        """The greedy token after branch ``token`` (fed at prefill after the draft) for ``row``."""
        assert self._branch_hidden is not None, "decoding asks for it only when the prefill fed branches"
        if self._guess_read is not None and self._guessed.get(row) == token:
            return self._guess_read(row, len(self.pending))
        return _GreedyHead(self.head, self._branch_hidden[row, self.branches.index(token)][None, None])(0, 0)

    def take_branches(self, taken: list[int | None]) -> None:
        """Row i's context goes on after branch ``taken[i]`` (None: after what it kept of the draft).
        Every branch column is masked out by the draft's commit; the taken one is shown again."""
        steps = torch.zeros_like(self.position)
        for row, token in enumerate(taken):
            if token is not None:
                self.attn[row, self._branch_from + self.branches.index(token)] = 1
                steps[row] = 1
        self.position = self.position + steps

    def step(self, tokens: list[list[int]]) -> GreedyAt:
        ids = torch.tensor(tokens, device=self.device)
        rows, width = ids.shape
        self._fed_from = self.attn.shape[1]
        self.attn = torch.cat([self.attn, self.attn.new_ones((rows, width))], dim=1)
        inputs, self.context = self.arch.torch_step(self.context, width)
        steps = torch.arange(width, device=self.device)
        hidden = self.trunk(
            input_ids=ids,
            attention_mask=self.arch.torch_mask(self.attn, self._fed_from, self.mask_dtype, self.context),
            position_ids=self.arch.torch_step_positions(self.position[:, None] + steps),
            past_key_values=self.cache,
            use_cache=True,
            cache_position=self._fed_from + steps,
            **inputs,
        ).last_hidden_state
        return _GreedyHead(self.head, hidden)

    def commit(self, kept: list[int]) -> None:
        kept_t = torch.tensor(kept, device=self.device)
        columns = torch.arange(self.attn.shape[1] - self._fed_from, device=self.device)
        self.attn[:, self._fed_from:] = (columns[None, :] < kept_t[:, None]).to(self.attn.dtype)
        self.position = self.position + kept_t


def _layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's keys and values [rows, kv heads, columns, head size] in a transformers cache."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def _side_by_side(batch: Batch, branches: int) -> Batch:
    """``batch`` whose last ``branches`` columns all sit at the position after the column before them."""
    if not branches:
        return batch
    positions = batch.position_ids.clone()
    positions[:, -branches:] = positions[:, -branches - 1 : -branches] + 1
    return replace(batch, position_ids=positions)


def _siblings(columns: int, first: int, branches: int, device: torch.device) -> torch.Tensor:
    """[columns - first, columns] bool: query/key pairs among the last ``branches`` columns that
    must not see each other (each sees only itself)."""
    query = torch.arange(first, columns, device=device)[:, None]
    key = torch.arange(columns, device=device)[None, :]
    start = columns - branches
    return (query >= start) & (key >= start) & (query != key)


def _after(item: Encoded, kept: int) -> Encoded:
    """``item`` without its first ``kept`` tokens (all text: a kept prefix ends before any image)."""
    return Encoded(item.input_ids[kept:], item.images, [p - kept for p in item.image_positions], item.image_tokens,
                   item.image_lengths)


def _replace_module(model: torch.nn.Module, old: torch.nn.Module, new: torch.nn.Module) -> torch.nn.Module:
    """Put ``new`` where ``old`` sits in ``model`` (found by identity, wherever the architecture keeps it)."""
    name = next(n for n, m in model.named_modules() if m is old)
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
    return new


def _row_logits(head: torch.nn.Module, hidden: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    """fp32 logits of ``token_ids`` for ``hidden`` [..., H]: from those rows of the output layer
    alone where they are plain numbers, else from the whole (quantized) layer."""
    rows = _float_rows(head, token_ids)
    if rows is None:
        return head(hidden).float()[..., token_ids]
    return (hidden.to(rows.dtype) @ rows.t()).float()


def _float_rows(head: torch.nn.Module, token_ids: list[int]) -> torch.Tensor | None:
    """[len(token_ids), hidden]: the output layer's rows for ``token_ids`` (plain, split, or the
    float rows a quantized head keeps); None where they exist only quantized."""
    from guardedge.runtime.backends.head_rows import HeadRows

    if isinstance(head, HeadRows):
        kept = {t: i for i, t in enumerate(head.ids.tolist())}
        if all(t in kept for t in token_ids):
            return head.rows[[kept[t] for t in token_ids]]
        head = head.head
    weight = getattr(head, "weight", None)
    if weight is None or not weight.dtype.is_floating_point:  # bitsandbytes: rows are not plain numbers
        return None
    if isinstance(head, SplitHead):
        return head.rows(torch.tensor(token_ids, device=weight.device))
    return weight[token_ids]
