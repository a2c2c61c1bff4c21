"""The demo ShieldGemma 2's architecture and the files of a real ShieldGemma 2 directory.

The real checkpoint (google/shieldgemma-2-4b-it) is ``ShieldGemma2ForImageClassification`` over
Gemma 3 4B: a SigLIP tower at 896 px (patch 14, 64 x 64 patches average-pooled 4 x 4 into 256
soft tokens), Gemma 3's text model (vocabulary 262,208 rows, tied embeddings, 5 sliding-window
layers to 1 global, window 1024, 8192 positions), ``Gemma3ImageProcessor`` (bilinear square
resize, mean/std 0.5) and a ``ShieldGemma2Processor`` carrying the policy definitions and the chat
template (transformers' conversion script, ``convert_shieldgemma2_weights_orbax_to_hf.py``,
writes that layout). The demo keeps all of it and shrinks the widths: 224 px (16 x 16 patches
pooled 2 x 2 into 64 soft tokens), widths of 64 (bitsandbytes 4-bit blocks), 3 text layers.

Tests build the same layout at smaller sizes (``tiny=True``) with random weights.
"""

from __future__ import annotations

import json
from pathlib import Path

YES_ID, NO_ID = 10784, 3771  # the real tokenizer's (REFERENCE.md §7)
BOI_ID, EOI_ID, SOFT_ID = 255999, 256000, 262144
EMBED_KEY = "model.language_model.model.embed_tokens.weight"  # as the hub checkpoint names them
HEAD_KEY = "model.language_model.lm_head.weight"
VOCAB_SIZE = 262208  # the real text config's (262,144 tokens + <image_soft_token> + padding rows)


def demo_config(tiny: bool = False, sliding_window: int = 512):
    """``ShieldGemma2Config`` with the real structure at small widths (``tiny``: for tests)."""
    from transformers import ShieldGemma2Config

    image_size, tokens = (28, 4) if tiny else (224, 64)
    vision = dict(model_type="siglip_vision_model", hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=2, image_size=image_size, patch_size=14, hidden_act="gelu_pytorch_tanh",
                  layer_norm_eps=1e-6, vision_use_head=False)
    layers = ["sliding_attention", "full_attention", "sliding_attention"] if tiny else \
             ["sliding_attention", "sliding_attention", "full_attention"]
    text = dict(model_type="gemma3_text", vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=256,
                num_hidden_layers=len(layers), layer_types=layers, num_attention_heads=2, num_key_value_heads=1,
                head_dim=32, query_pre_attn_scalar=32, sliding_window=sliding_window, rope_theta=1_000_000.0,
                rope_local_base_freq=10_000.0, rope_scaling={"rope_type": "linear", "factor": 8.0},
                max_position_embeddings=8192, attn_logit_softcapping=None, final_logit_softcapping=None,
                tie_word_embeddings=True, bos_token_id=2, eos_token_id=1, pad_token_id=0)
    return ShieldGemma2Config(text_config=text, vision_config=vision, mm_tokens_per_image=tokens,
                              boi_token_index=BOI_ID, eoi_token_index=EOI_ID, image_token_index=SOFT_ID,
                              yes_token_index=YES_ID, no_token_index=NO_ID)


def image_processor(tiny: bool = False):
    """``Gemma3ImageProcessor`` as the conversion script configures it, at the demo's size."""
    from transformers import Gemma3ImageProcessor
    from PIL import Image

    size = 28 if tiny else 224
    return Gemma3ImageProcessor(image_seq_length=4 if tiny else 64, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                size={"height": size, "width": size}, resample=Image.Resampling.BILINEAR)


def processor(tokenizer, tiny: bool = False, chat_template: str | None = None):
    """``ShieldGemma2Processor`` with the default policies and guardedge's published-format template."""
    from transformers import ShieldGemma2Processor

    from guardedge.runtime.chat_template import builtin_template

    tokens = 4 if tiny else 64
    return ShieldGemma2Processor(image_processor=image_processor(tiny), tokenizer=tokenizer, image_seq_length=tokens,
                                 chat_template=chat_template or builtin_template("shieldgemma-2"))


def save_model(model, path: Path) -> None:
    """``save_pretrained`` plus the output layer stored under its own key, as the conversion script
    stores it (``model.language_model.lm_head.weight``, the embedding's values).

    Why: save_pretrained drops the tied output layer, and transformers 4.57 does not tie it again
    on load (``ShieldGemma2ForImageClassification.tie_weights`` asks the text model, which has no
    output layer), so the loaded layer would be freshly random.
    """
    from safetensors.torch import load_file, save_file

    model.save_pretrained(path, safe_serialization=True)
    file = path / "model.safetensors"
    state = load_file(str(file))
    state[HEAD_KEY] = model.model.lm_head.weight.detach().to(state[EMBED_KEY].dtype).clone().contiguous()
    save_file(state, str(file), metadata={"format": "pt"})


def write_layout(path: Path, tokenizer, tiny: bool = False) -> None:
    """Tokenizer, processor and chat template files (everything but the weights and config.json)."""
    proc = processor(tokenizer, tiny)
    proc.save_pretrained(path)
    # The hub repository carries the template as chat_template.json (the older form; both load).
    (path / "chat_template.jinja").unlink(missing_ok=True)
    (path / "chat_template.json").write_text(json.dumps({"chat_template": proc.chat_template}, indent=2) + "\n")
    config = json.loads((path / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)  # Gemma 3's generic template: the processor's is ShieldGemma 2's
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
