"""What every ONNX Runtime backend shares, whatever its architecture: sessions, the decoder's explicit
KV cache, drafted decode steps, and CUDA IO binding.

Each architecture's backend subclasses :class:`OnnxDecoderBackend` (Mllama: onnx_backend.py) or,
for a vision + embed + decoder artifact, :class:`OnnxEmbedDecoderBackend` (LLaVA-OneVision:
onnx_llava_onevision.py; Llama 4, ShieldGemma 2, Qwen2.5-VL: their plug-ins' onnx.py) and says only
what is its own: how a prefill's inputs are built (images) and which inputs a decode step feeds
beside the cache, masks and positions (:meth:`OnnxDecoderBackend.token_feeds`). The decoder graph is the same contract for all
(export/onnx_configs.py, export/onnx_embed_decoder.py): attention_mask
[B, past+S], position_ids [B, S], logits_positions [K], ``past_key_values.{l}.key/.value`` in,
``logits`` [B, K, vocab] and ``present.*`` out.

CPU: plain ``session.run`` on numpy arrays. CUDA (``CUDAExecutionProvider``, device cuda/auto when
available): :class:`CudaSteps` binds the KV cache (and other per-decode inputs) as device
OrtValues with IO binding, so the cache never travels to the host between steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from guardedge.runtime.decoding import Drafter, Until, greedy_decode
from guardedge.runtime.errors import ModelLoadError

if TYPE_CHECKING:
    from guardedge.runtime.architectures import Batch

NP_FLOAT = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_DTYPE_NAMES = {"float32": "fp32", "float16": "fp16"}  # the engine's names -> the export recipe's


def providers(device: str | None) -> tuple[list[str], str]:
    """ONNX Runtime providers for ``device`` (cpu, cuda, auto) and the device actually used."""
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


def open_sessions(model_dir, roles: tuple[str, ...], device: str | None, dtype: str | None) -> tuple[dict, str]:
    """One InferenceSession per component role of the artifact, and the device they run on."""
    import onnxruntime as ort

    from guardedge.runtime.threads import configured

    manifest = model_dir.manifest
    exported = manifest.get("recipe", {}).get("dtype")
    if dtype not in (None, "auto") and _DTYPE_NAMES.get(dtype, dtype) != exported:
        raise ModelLoadError(f"{model_dir.path} was exported as {exported}; an ONNX artifact cannot run as "
                             f"{dtype} (leave dtype at auto, or export again with --dtype)")
    missing = [role for role in roles if role not in manifest["components"]]
    if missing:
        raise ModelLoadError(f"{model_dir.path}: its manifest has no {', '.join(missing)} component; export it again")
    provider_list, dev = providers(device)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads := configured():  # the container's CPU quota (runtime/threads.py), not the host's cores
        options.intra_op_num_threads = threads
    sessions = {role: ort.InferenceSession(str(model_dir.path / manifest["components"][role]), options, providers=provider_list)
                for role in roles}
    return sessions, dev


def weight_bytes(model_dir) -> int:
    """Sizes of the component files and their external-data files (``<component>_data``)."""
    files = [model_dir.path / f for c in model_dir.manifest["components"].values() for f in (c, c + "_data")]
    return sum(f.stat().st_size for f in files if f.is_file())


@dataclass
class OnnxState:
    past: dict[str, object]  # past_key_values.{l}.key/value: numpy (CPU) or OrtValue (CUDA)
    attention_mask: np.ndarray  # [B, L]
    next_position: np.ndarray  # [B]: position id of the token after the prompt
    prompt_columns: int  # cache columns of the prompt; the draft's follow
    draft: tuple[int, ...]  # tokens fed after every prompt at prefill (may be empty)
    draft_logits: np.ndarray  # [B, len(draft), vocab]: the logits at their positions
    extra: dict = field(default_factory=dict)  # the architecture's per-row decode inputs ([B, ...] numpy)


# The exported decoders compute attention as plain matmuls: each layer holds [rows, heads, width,
# columns] fp32 scores. A prompt whose scores would pass this is refused before any work (a 60k-token
# prompt to the demo Llama Guard 4 export asked ONNX Runtime for a 29 GB buffer and failed mid-run).
MAX_SCORE_BYTES = 4 * 2**30


class OnnxDecoderBackend:
    """An exported decoder with an explicit cache; subclasses add the image side and ``token_feeds``."""

    name = "onnxruntime"

    def __init__(self, decoder, precision: str, device: str, weight_bytes: int, arch=None):
        self.decoder, self.arch = decoder, arch
        self.precision, self.device_name = precision, device
        self._weight_bytes = weight_bytes
        inputs = {i.name: i for i in decoder.get_inputs()}
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]
        # Exports since 0005 take logits_positions (logits at several positions: drafts are verified);
        # earlier ones return the last position only and decode one token per step.
        self.multi_position = "logits_positions" in inputs
        self._cuda = CudaSteps(decoder) if device == "cuda" else None

    def bind(self, arch) -> None:
        self.arch = arch

    def max_prompt_tokens(self) -> int | None:
        """The longest prompt whose one-prompt attention scores fit ``MAX_SCORE_BYTES`` (None: unknown heads)."""
        config = getattr(self.arch, "config", None) or {}
        heads = config.get("text_config", config).get("num_attention_heads")
        return int((MAX_SCORE_BYTES / (4 * heads)) ** 0.5) if heads else None

    @property
    def description(self) -> str:
        return f"onnxruntime {self.precision} on {self.device_name}"

    def draft_logits(self, state: OnnxState, positions, token_ids, log_softmax: bool):
        """As TorchBackend.draft_logits: read from the logits the prefill returned along the draft."""
        import torch

        values = torch.from_numpy(np.ascontiguousarray(state.draft_logits[:, list(positions)])).float()
        if log_softmax:
            values = torch.log_softmax(values, dim=-1)
        return values[..., list(token_ids)]

    def prefill_shared(self, prefix, suffix, parents, token_ids=None):
        """As TorchBackend.prefill_shared: the prefix's cache (and image inputs) reused by the rows
        that continue it, through the decoder's explicit cache."""
        import torch

        _, state = self.prefill(prefix)
        rows = list(parents)
        past = {k: self.select(v, rows) for k, v in state.past.items()}
        extra = self.select_extra(state.extra, rows)
        mask = suffix.attention_mask.numpy()
        attention = np.concatenate([state.attention_mask[rows], mask.astype(state.attention_mask.dtype)], axis=1)
        positions = state.next_position[rows][:, None] + np.clip(mask.cumsum(-1) - 1, 0, None)
        width = mask.shape[1]
        logits, _ = self.run_decoder({"attention_mask": attention, "position_ids": positions,
                                      **self.token_feeds(suffix.input_ids.numpy(), extra), **past}, np.array([width - 1]))
        out = torch.from_numpy(np.ascontiguousarray(logits[:, -1])).float()
        return out if token_ids is None else out[:, list(token_ids)]  # the graph computes every row anyway

    def memory_bytes(self) -> int:
        """Bytes of the components' files on disk (graphs + external weight data), not the RAM ORT uses."""
        return self._weight_bytes

    def select_extra(self, extra: dict, rows: list[int]) -> dict:
        """The decoding rows' share of ``OnnxState.extra``, once per decode (e.g. uploaded to the device)."""
        return {k: v[rows] for k, v in extra.items()}

    def token_feeds(self, ids: np.ndarray, extra: dict) -> dict:
        """The decoder's inputs for the [rows, width] token block ``ids`` beyond cache, mask and positions."""
        raise NotImplementedError

    def decode(self, state: OnnxState, rows: list[int], first: list[int], max_new: int | list[int],
               stop_ids: set[int], drafter: Drafter | None = None, until: Until | None = None) -> list[list[int]]:
        """Greedy continuation for ``rows`` after forcing ``first``, drafts verified when this export
        returns logits at several positions (one token per step otherwise)."""
        return greedy_decode(OnnxSteps(self, state, rows), first, max_new, stop_ids, drafter, until)

    def run_decoder(self, feeds: dict, positions: np.ndarray) -> tuple[np.ndarray, dict]:
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

    def select(self, value, rows: list[int]):
        return self._cuda.select(value, rows) if self._cuda is not None else value[rows]

    def on_device(self, value: np.ndarray):
        return self._cuda.upload(value) if self._cuda is not None else value


class OnnxEmbedDecoderBackend(OnnxDecoderBackend):
    """A ``vision`` + ``embed`` + ``decoder`` artifact (LLaVA-OneVision, Qwen2.5-VL, Llama 4, ShieldGemma 2;
    export/onnx_embed_decoder.py): the embed component turns ids into embeddings, the subclass's
    ``_write_images`` puts each image's features over its placeholder rows, and the decoder runs with
    an empty cache; decode steps are embed + decoder. ``prefill_feeds`` adds what a decoder needs
    besides embeddings, mask and positions; ``init_kwargs`` what the subclass's constructor reads from
    the artifact besides the sessions (e.g. the config its host-side image geometry needs)."""

    def __init__(self, vision, embed, decoder, precision: str, device: str, weight_bytes: int, arch=None):
        super().__init__(decoder, precision, device, weight_bytes, arch)
        self.vision, self.embed = vision, embed
        first = {i.name: i for i in decoder.get_inputs()}[self.past_names[0]]
        self.kv_heads, self.head_dim = first.shape[1], first.shape[3]
        self.float = NP_FLOAT[first.type]
        self.vision_float = NP_FLOAT[vision.get_inputs()[0].type]

    @classmethod
    def load(cls, model_dir, device: str | None = None, dtype: str | None = None, arch=None):
        sessions, dev = open_sessions(model_dir, ("vision", "embed", "decoder"), device, dtype)
        return cls(sessions["vision"], sessions["embed"], sessions["decoder"], model_dir.manifest["precision"], dev,
                   weight_bytes(model_dir), arch, **cls.init_kwargs(model_dir))

    @classmethod
    def init_kwargs(cls, model_dir) -> dict:
        return {}

    def prefill(self, batch: Batch, draft: Sequence[int] = ()):
        """Logits at the last prompt position and the cache; ``draft`` is fed after every prompt in
        the same run (runtime/decoding.py)."""
        import torch

        draft = tuple(draft) if self.multi_position else ()
        prompt_columns = batch.input_ids.shape[1]
        batch = batch.extended(draft, self.arch.extend_extra if self.arch else None)
        n, length = batch.input_ids.shape
        ids = batch.input_ids.numpy()
        embeds = self._embed(ids)
        if batch.image_rows:
            self._write_images(embeds, ids, batch)
        empty = np.zeros((n, self.kv_heads, 0, self.head_dim), self.float)
        feeds = {"inputs_embeds": embeds, "attention_mask": batch.attention_mask.numpy(),
                 "position_ids": batch.position_ids.numpy(), **self.prefill_feeds(batch),
                 **{name: empty for name in self.past_names}}
        logits, past = self.run_decoder(feeds, np.arange(prompt_columns - 1, length))  # the verdict's position, then the draft's
        state = OnnxState(past, feeds["attention_mask"], feeds["position_ids"][:, prompt_columns - 1] + 1,
                          prompt_columns, draft, logits[:, 1:])
        return torch.from_numpy(np.ascontiguousarray(logits[:, 0])), state

    def prefill_feeds(self, batch: Batch) -> dict:
        """The prefill's inputs beyond embeddings, mask, positions and cache; a ``position_ids`` here
        replaces the batch's (e.g. Qwen2.5-VL's text axis of its 3-D positions)."""
        return {}

    def token_feeds(self, ids: np.ndarray, extra: dict) -> dict:
        return {"inputs_embeds": self._embed(ids)}

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        return self.embed.run(["inputs_embeds"], {"input_ids": ids})[0]

    def _write_images(self, embeds: np.ndarray, ids: np.ndarray, batch: Batch) -> None:
        raise NotImplementedError

    @staticmethod
    def _write_rows(embeds: np.ndarray, ids: np.ndarray, rows: Sequence[int], token: int, features,
                    what: str = "image tokens") -> None:
        """Each row's features over its ``token`` positions, in order (as masked_scatter), one image per row."""
        for row, image in zip(rows, features):
            where = np.flatnonzero(ids[row] == token)
            if len(where) != len(image):
                raise RuntimeError(f"row {row}: {len(where)} {what} but {len(image)} image features; "
                                   "the artifact's processor and model disagree")
            embeds[row, where] = image.astype(embeds.dtype)


class OnnxSteps:
    """Decode steps over the exported decoder's explicit cache: several positions per row per step
    (drafts) when the export returns logits there; positions a row did not keep are masked out."""

    def __init__(self, backend: OnnxDecoderBackend, state: OnnxState, rows: list[int]):
        self.backend = backend
        self.max_chunk = 4 if backend.multi_position else 1  # as the PyTorch backend
        self.past = {k: backend.select(v, rows) for k, v in state.past.items()}
        self.extra = backend.select_extra(state.extra, rows)
        self.attn, self.position = state.attention_mask[rows], state.next_position[rows]
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
        logits, self.past = self.backend.run_decoder({
            "attention_mask": self.attn, "position_ids": self.position[:, None] + steps,
            **self.backend.token_feeds(ids, self.extra), **self.past}, steps)
        greedy = logits.argmax(-1).tolist()
        return lambda row, position: greedy[row][position]

    def commit(self, kept: list[int]) -> None:
        kept_a = np.asarray(kept)
        columns = np.arange(self.attn.shape[1] - self._fed_from)
        self.attn[:, self._fed_from:] = (columns[None, :] < kept_a[:, None]).astype(self.attn.dtype)
        self.position = self.position + kept_a


class CudaSteps:
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
        return CudaSteps.upload(host[rows])

    @staticmethod
    def upload(value: np.ndarray):
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), "cuda", 0)
