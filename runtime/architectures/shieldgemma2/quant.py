"""ShieldGemma 2 (Gemma 3) as quantization sees it: module groups and the published configuration.

``ShieldGemma2ForImageClassification`` nests the Gemma 3 model one level deeper than Gemma 3
itself: ``model.model`` holds the vision tower, the projector and the text model, ``model.lm_head``
the output layer (its rows for ``Yes`` and ``No`` are all P(Yes) reads). Gemma 3's projector is a
weight matrix, not a Linear (``mm_input_projection_weight``): bitsandbytes never quantizes it, ONNX
does (one MatMul in vision.onnx), so its group has modules but no Linear.

ONNX names (export/onnx_shieldgemma2.py): the decoder's weights keep their module paths
(``layers.{i}.self_attn.q_proj.weight``, ``layers.{i}.mlp.gate_proj.weight``, ``lm_head.weight``:
its ``prepare`` stores them as MatMul initializers); vision.onnx's nodes are named after the
modules (``/vision_tower/...``, ``/multi_modal_projector/MatMul``).
"""

from __future__ import annotations

from guardedge.runtime.architectures.base import ModuleGroup


def groups(config: dict) -> tuple[ModuleGroup, ...]:
    out = []
    for i in range(config["text_config"]["num_hidden_layers"]):
        layer = f"model.model.language_model.layers.{i}"
        out += [ModuleGroup(f"text.{i}.attention", "attention", (f"{layer}.self_attn",), (f"decoder:layers.{i}.self_attn.",)),
                ModuleGroup(f"text.{i}.mlp", "mlp", (f"{layer}.mlp",), (f"decoder:layers.{i}.mlp.",))]
    return (*out, ModuleGroup("vision", "vision", ("model.model.vision_tower",), ("vision:/vision_tower/",)),
            ModuleGroup("projector", "projector", ("model.model.multi_modal_projector",), ("vision:/multi_modal_projector/",)),
            ModuleGroup("head", "head", ("model.lm_head",), ("decoder:lm_head.",)))


def shieldgemma_2_4b_config():
    """ShieldGemma 2 4B's configuration (Gemma 3 4B's), for computed footprints only (no weights).

    Gemma 3 4B's published config.json: text 2560 wide, MLP 10240, 34 layers (5 sliding-window
    layers of 1024 to each global one), 8 heads / 4 KV heads of 256, vocabulary 262,208 rows, tied
    output layer; SigLIP vision 1152 wide, MLP 4304, 27 layers, 16 heads, 896-px images of 14-px
    patches pooled into 256 soft tokens (REFERENCE: ``Yes`` 10784, ``No`` 3771, 256 image tokens).
    4.3B parameters (tests check the total)."""
    from transformers import ShieldGemma2Config

    vision = dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                  num_attention_heads=16, image_size=896, patch_size=14, hidden_act="gelu_pytorch_tanh",
                  layer_norm_eps=1e-6, vision_use_head=False)
    text = dict(model_type="gemma3_text", vocab_size=262208, hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
                num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256, sliding_window=1024,
                rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, rope_scaling={"rope_type": "linear", "factor": 8.0},
                max_position_embeddings=8192, attn_logit_softcapping=None, final_logit_softcapping=None,
                tie_word_embeddings=True)
    return ShieldGemma2Config(text_config=text, vision_config=vision, mm_tokens_per_image=256, boi_token_index=255999,
                              eoi_token_index=256000, image_token_index=262144, yes_token_index=10784, no_token_index=3771)
