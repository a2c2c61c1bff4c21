"""The demo Llama Guard 4's starting point: the demo Llama Guard 3 Vision's trained text weights.

Training a Llama Guard demo from scratch took ~25,000 CPU steps (docs/decisions/0001, 0007). The
two demos share their data and answer format, and their text models have the same shapes (hidden
64, 2 heads / 1 KV head of 32, MLP 256), so v1 starts from the LG3V demo's committed pack:

- table rows by token: a Llama 4 token whose byte string is a Llama 3 token gets that token's
  trained embedding / output row (both tokenizers are byte-level BPE over the same byte alphabet);
  the header, end-of-turn and image tokens map to their Llama 3 counterparts;
- the LG3V demo's four self-attention layers become the four Llama 4 layers (its cross-attention
  layer is dropped), q/k rows permuted from transformers' Llama rotary layout (dimension i pairs
  with i + d/2) to Llama 4's (2i with 2i + 1), so the same rotations apply;
- the vision encoder, projector and everything else keep their seeded init (the two vision
  towers have nothing in common). qk-norm and the NoPE layer differ from Llama 3: training adapts.

    python -m guardedge.runtime.demo.llama_guard_4.build --retrain   # starts here
"""

from __future__ import annotations

from pathlib import Path

import torch

from guardedge.runtime.demo.llama_guard_4.pack import TABLES, table_init

SOURCE = Path(__file__).parents[1] / "weights" / "demo-guard-v2.safetensors"
SOURCE_LAYERS = (0, 1, 3, 4)  # the LG3V demo's self-attention layers (2 is cross-attention)
SPECIALS = {"<|begin_of_text|>": "<|begin_of_text|>", "<|header_start|>": "<|start_header_id|>",
            "<|header_end|>": "<|end_header_id|>", "<|eot|>": "<|eot_id|>", "<|eom|>": "<|eom_id|>",
            "<|image|>": "<|image|>", "<|end_of_text|>": "<|end_of_text|>"}


def rotary_rows(head_dim: int, heads: int) -> list[int]:
    """Row order taking a [heads * d, in] q/k weight from the half-split to the interleaved layout."""
    half = head_dim // 2
    return [h * head_dim + (i // 2 if i % 2 == 0 else half + i // 2) for h in range(heads) for i in range(head_dim)]


def token_map(llama4, llama3) -> dict[int, int]:
    """Llama 4 id -> Llama 3 id for tokens spelled the same (specials by role)."""
    by_text = llama3.get_vocab()
    out = {i: by_text[text] for text, i in llama4.get_vocab().items() if text in by_text and not text.startswith("<|")}
    out.update({llama4.convert_tokens_to_ids(a): llama3.convert_tokens_to_ids(b) for a, b in SPECIALS.items()})
    return out


def warm_state(model, seed: int, llama4_tokenizer) -> dict[str, int]:
    """Load the LG3V demo's text weights into ``model`` (a fresh demo Llama 4) in place; counts."""
    from guardedge.runtime.demo.build import demo_config as lg3v_config
    from guardedge.runtime.demo.tokenizer import build_tokenizer as llama3_tokenizer
    from guardedge.runtime.demo.weights import unpack

    shapes = {k: v.shape for k, v in _meta_state(lg3v_config()).items()}
    source = {k: v.float() for k, v in unpack(SOURCE, shapes).items()}
    state = model.state_dict()
    for name in TABLES:  # this model's seeded tables (the pack is a diff against them)
        state[name].copy_(table_init(name, *state[name].shape, seed=seed))
    mapping = token_map(llama4_tokenizer, llama3_tokenizer())
    trained = {"language_model.model.embed_tokens.weight": "model.language_model.embed_tokens.weight",
               "language_model.lm_head.weight": "lm_head.weight"}
    counts = {}
    for ours, theirs in trained.items():
        rows = set(_trained_rows(SOURCE, theirs))
        pairs = [(a, b) for a, b in mapping.items() if b in rows]
        state[ours][[a for a, _ in pairs]] = source[theirs][[b for _, b in pairs]]
        counts[ours] = len(pairs)
    text = model.config.text_config
    for layer, source_layer in enumerate(SOURCE_LAYERS):
        src, dst = f"model.language_model.layers.{source_layer}.", f"language_model.model.layers.{layer}."
        for part in ("input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.v_proj.weight",
                     "self_attn.o_proj.weight"):
            state[dst + part].copy_(source[src + part])
        for part in ("gate_proj", "up_proj", "down_proj"):
            state[f"{dst}feed_forward.{part}.weight"].copy_(source[f"{src}mlp.{part}.weight"])
        q, k = source[src + "self_attn.q_proj.weight"], source[src + "self_attn.k_proj.weight"]
        state[dst + "self_attn.q_proj.weight"].copy_(q[rotary_rows(text.head_dim, text.num_attention_heads)])
        state[dst + "self_attn.k_proj.weight"].copy_(k[rotary_rows(text.head_dim, text.num_key_value_heads)])
    state["language_model.model.norm.weight"].copy_(source["model.language_model.norm.weight"])
    return counts


def _meta_state(config) -> dict:
    from transformers import MllamaForConditionalGeneration

    with torch.device("meta"):
        return MllamaForConditionalGeneration(config).state_dict()


def _trained_rows(path: Path, name: str) -> list[int]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(f"{name}::rows").tolist()
