"""ONNX Runtime backend for Mllama: the exported ``vision`` and ``decoder`` components (export/onnx_configs.py).

Same behaviour as the PyTorch backend: one prefill per batch, a KV-cached greedy decode for the
rows the engine asks for, mixed batches with and without images. The vision component runs only
on the image rows and returns each cross-attention layer's keys/values once per request; rows
without an image get zero keys/values and a zero cross-attention mask (the cross layers then add
nothing, as in PyTorch). A batch without any image feeds one zero vision token per row. Exports
with a ``logits_positions`` input decode with format drafts like the PyTorch backend (the
prefill carries the first draft); older exports decode one token per step.

CPU: plain ``session.run`` on numpy arrays. CUDA (``CUDAExecutionProvider``, device cuda/auto when
available): :class:`_CudaSteps` binds the KV cache and the image keys/values as device OrtValues
with IO binding, so the cache never travels to the host between steps; only logits come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from guardedge.runtime.decoding import Drafter, Until, greedy_decode
from guardedge.runtime.errors import ModelLoadError
from guardedge.runtime.architectures import Batch

_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_DTYPE_NAMES = {"float32": "fp32", "float16": "fp16"}  # the engine's names -> the export recipe's


def _providers(device: str | None) -> tuple[list[str], str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device in (None, "auto"):
        device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise ModelLoadError("device cuda asked for, but this onnxruntime has no CUDAExecutionProvider "
                                 "(install onnxruntime-gpu, i.e. guardedge[gpu])")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"
    if device != "cpu":
        raise ModelLoadError(f"the onnxruntime backend runs on cpu or cuda, not {device!r}")
    return ["CPUExecutionProvider"], "cpu"


@dataclass
class OnnxState:
    past: dict[str, object]  # past_key_values.{l}.key/value: numpy (CPU) or OrtValue (CUDA)
    cross: dict[str, np.ndarray]  # cross_key_values.{l}.key/value, [B, kv, V, hd]
    attention_mask: np.ndarray  # [B, L]
    cross_last: np.ndarray  # [B, 1, 1, T]: the last prompt token's tile mask, reused for new tokens
    next_position: np.ndarray  # [B]: position id of the token after the prompt
    prompt_columns: int  # cache columns of the prompt; the draft's follow
    draft: tuple[int, ...] = ()  # tokens fed after every prompt at prefill
    draft_logits: np.ndarray | None = None  # [B, len(draft), vocab]: the logits at their positions


class OnnxBackend:
    name = "onnxruntime"

    def __init__(self, vision, decoder, precision: str, device: str, weight_bytes: int, arch=None):
        self.vision, self.decoder = vision, decoder
        self.arch = arch
        self.precision, self.device_name = precision, device
        self._weight_bytes = weight_bytes
        inputs = {i.name: i for i in decoder.get_inputs()}
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]
        self.cross_names = [n for n in inputs if n.startswith("cross_key_values.")]
        first = inputs[self.cross_names[0]]
        self.kv_heads, self.head_dim = first.shape[1], first.shape[3]
        self.float = _NP[first.type]
        # Exports since 0005 take logits_positions (logits at several positions: drafts are verified);
        # earlier ones return the last position only and decode one token per step.
        self.multi_position = "logits_positions" in inputs
        self._cuda = _CudaSteps(decoder) if device == "cuda" else None

    @classmethod
    def load(cls, model_dir, device: str | None = None, dtype: str | None = None, arch=None) -> OnnxBackend:
        import onnxruntime as ort

        manifest = model_dir.manifest
        exported = manifest.get("recipe", {}).get("dtype")
        if dtype not in (None, "auto") and _DTYPE_NAMES.get(dtype, dtype) != exported:
            raise ModelLoadError(f"{model_dir.path} was exported as {exported}; an ONNX artifact cannot run as "
                                 f"{dtype} (leave dtype at auto, or export again with --dtype)")
        providers, dev = _providers(device)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        from guardedge.runtime.threads import configured

        if threads := configured():  # the container's CPU quota (runtime/threads.py), not the host's cores
            options.intra_op_num_threads = threads
        sessions = {role: ort.InferenceSession(str(model_dir.path / manifest["components"][role]), options, providers=providers)
                    for role in ("vision", "decoder")}
        return cls(sessions["vision"], sessions["decoder"], manifest["precision"], dev, _weight_bytes(model_dir), arch)

    @property
    def description(self) -> str:
        return f"onnxruntime {self.precision} on {self.device_name}"

    def memory_bytes(self) -> int:
        """Bytes of the components' files on disk (graphs + external weight data), not the RAM ORT uses."""
        return self._weight_bytes

    # -- prefill / decode ---------------------------------------------------------------------------

    def _cross_kv(self, batch: Batch) -> dict[str, np.ndarray]:
        n = batch.input_ids.shape[0]
        if not batch.image_rows:
            return {name: np.zeros((n, self.kv_heads, 1, self.head_dim), self.float) for name in self.cross_names}
        out = self.vision.run(None, {
            "pixel_values": batch.extra["pixel_values"].numpy().astype(self.float),
            "aspect_ratio_ids": batch.extra["aspect_ratio_ids"].numpy(),
            "aspect_ratio_mask": batch.extra["aspect_ratio_mask"].numpy()})
        full = {}
        for name, value in zip((o.name for o in self.vision.get_outputs()), out):
            full[name] = np.zeros((n, *value.shape[1:]), value.dtype)
            full[name][batch.image_rows] = value
        return full

    def prefill(self, batch: Batch, draft: Sequence[int] = ()):
        """Logits at the last prompt position and the cache; ``draft`` is fed after every prompt in
        the same run (runtime/decoding.py) when this export can return logits at its positions."""
        import torch

        draft = tuple(draft) if self.multi_position else ()
        prompt_columns = batch.input_ids.shape[1]
        batch = batch.extended(draft, self.arch.extend_extra if self.arch else None)
        n, length = batch.input_ids.shape
        cross = self._cross_kv(batch)
        cross_mask = batch.extra["cross_attention_mask"].numpy() if batch.extra["cross_attention_mask"] is not None \
            else np.zeros((n, length, 1, 1), np.int64)
        empty = np.zeros((n, self.kv_heads, 0, self.head_dim), self.float)
        feeds = {"input_ids": batch.input_ids.numpy(), "attention_mask": batch.attention_mask.numpy(),
                 "position_ids": batch.position_ids.numpy(), "cross_attention_mask": cross_mask,
                 **{name: empty for name in self.past_names}, **cross}
        logits, past = self._step(feeds, np.arange(prompt_columns - 1, length))  # the verdict's position, then the draft's
        state = OnnxState(past, cross, feeds["attention_mask"], cross_mask[:, -1:],
                          batch.position_ids[:, prompt_columns - 1].numpy() + 1, prompt_columns, draft, logits[:, 1:])
        return torch.from_numpy(np.ascontiguousarray(logits[:, 0])), state

    def decode(self, state: OnnxState, rows: list[int], first: list[int], max_new: int | list[int],
               stop_ids: set[int], drafter: Drafter | None = None, until: Until | None = None) -> list[list[int]]:
        """Greedy continuation for ``rows`` after forcing ``first``, drafts verified when this export
        returns logits at several positions (one token per step otherwise)."""
        return greedy_decode(_OnnxSteps(self, state, rows), first, max_new, stop_ids, drafter, until)

    def _step(self, feeds: dict, positions: np.ndarray) -> tuple[np.ndarray, dict]:
        """One decoder run: logits [B, K, vocab] (numpy fp32) at ``positions`` of this run's tokens
        (the last one only, K = 1, for an export without logits_positions) and the next past."""
        if self.multi_position:
            feeds = {**feeds, "logits_positions": positions.astype(np.int64)}
        if self._cuda is not None:
            logits, past = self._cuda.run(feeds)
        else:
            names = [o.name for o in self.decoder.get_outputs()]
            values = self.decoder.run(names, feeds)
            logits, past = values[0], {n.replace("present.", "past_key_values."): v for n, v in zip(names[1:], values[1:])}
        return (logits if logits.ndim == 3 else logits[:, None]), past

    def _select(self, value, rows: list[int]):
        return self._cuda.select(value, rows) if self._cuda is not None else value[rows]

    def _on_device(self, value: np.ndarray):
        return self._cuda.upload(value) if self._cuda is not None else value


class _OnnxSteps:
    """Decode steps over the exported decoder's explicit cache: several positions per row per step
    (drafts) when the export returns logits there; positions a row did not keep are masked out."""

    def __init__(self, backend: OnnxBackend, state: OnnxState, rows: list[int]):
        self.backend = backend
        self.max_chunk = 4 if backend.multi_position else 1  # as the PyTorch backend
        self.past = {k: backend._select(v, rows) for k, v in state.past.items()}
        self.cross = {k: backend._on_device(v[rows]) for k, v in state.cross.items()}  # uploaded once per decode
        self.attn, self.cross_mask, self.position = state.attention_mask[rows], state.cross_last[rows], state.next_position[rows]
        self.pending = state.draft
        self._pending_greedy = state.draft_logits[rows].argmax(-1).tolist() if state.draft else None
        self._fed_from = state.prompt_columns

    def pending_greedy(self):
        greedy = self._pending_greedy
        return lambda row, position: greedy[row][position]

    def step(self, tokens: list[list[int]]):
        ids = np.asarray(tokens, np.int64)
        rows, width = ids.shape
        self._fed_from = self.attn.shape[1]
        self.attn = np.concatenate([self.attn, np.ones((rows, width), self.attn.dtype)], axis=1)
        steps = np.arange(width)
        logits, self.past = self.backend._step({
            "input_ids": ids, "attention_mask": self.attn, "position_ids": self.position[:, None] + steps,
            "cross_attention_mask": np.repeat(self.cross_mask, width, axis=1), **self.past, **self.cross}, steps)
        greedy = logits.argmax(-1).tolist()
        return lambda row, position: greedy[row][position]

    def commit(self, kept: list[int]) -> None:
        kept_a = np.asarray(kept)
        columns = np.arange(self.attn.shape[1] - self._fed_from)
        self.attn[:, self._fed_from:] = (columns[None, :] < kept_a[:, None]).astype(self.attn.dtype)
        self.position = self.position + kept_a


class _CudaSteps:
    """IO binding for the decode loop on CUDA: past/present stay on the GPU between steps."""

    def __init__(self, session):
        self.session = session
        self.present = [o.name for o in session.get_outputs()][1:]

    def run(self, feeds: dict) -> tuple[np.ndarray, dict]:
        import onnxruntime as ort

        binding = self.session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        binding.bind_output("logits", "cpu")
        for name in self.present:
            binding.bind_output(name, "cuda")  # ORT allocates it on the device; it becomes next step's past
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        return outputs[0].numpy(), {n.replace("present.", "past_key_values."): v for n, v in zip(self.present, outputs[1:])}

    @staticmethod
    def select(value, rows: list[int]):
        """Rows of a device OrtValue. Done once per decode (not per token), so a host round trip is acceptable."""
        import onnxruntime as ort

        host = value.numpy() if isinstance(value, ort.OrtValue) else value
        return _CudaSteps.upload(host[rows])

    @staticmethod
    def upload(value: np.ndarray):
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), "cuda", 0)


def _weight_bytes(model_dir) -> int:
    """Sizes of the component files and their external-data files (``<component>_data``)."""
    files = [model_dir.path / f for c in model_dir.manifest["components"].values() for f in (c, c + "_data")]
    return sum(f.stat().st_size for f in files if f.is_file())
