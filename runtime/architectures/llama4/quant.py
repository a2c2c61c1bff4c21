"""Llama 4 (Llama Guard 4) as quantization sees it: module groups and the published configuration.

``Llama4ForConditionalGeneration`` has no ``.model``: the text model and its untied output layer
live in ``language_model`` (a ``Llama4ForCausalLM``), beside ``vision_model`` and
``multi_modal_projector``. Llama Guard 4's text layers are dense (``feed_forward`` is one gated
MLP), so a layer is two groups, attention and MLP.

ONNX names (export/onnx_llama4.py): the decoder's weights keep their module paths
(``layers.{i}.self_attn.q_proj.weight``, ``layers.{i}.feed_forward.gate_proj.weight``,
``lm_head.weight``); vision.onnx's weights are folded (``onnx::MatMul_*``) but its nodes are named
after the modules the wrapper calls: ``/q_proj``, ``/k_proj``, ``/v_proj``, ``/o_proj``,
``/mlp/fc*`` (encoder layers and the pixel-shuffle adapter) and ``/projector/``.
"""

from __future__ import annotations

from guardedge.runtime.architectures.base import ModuleGroup

# Vision encoder + adapter MatMuls in vision.onnx (node names; the projector's are "/projector/...").
VISION_NODES = ("vision:/q_proj", "vision:/k_proj", "vision:/v_proj", "vision:/o_proj", "vision:/mlp/")


def groups(config: dict) -> tuple[ModuleGroup, ...]:
    out = []
    for i in range(config["text_config"]["num_hidden_layers"]):
        layer = f"language_model.model.layers.{i}"
        out += [ModuleGroup(f"text.{i}.attention", "attention", (f"{layer}.self_attn",), (f"decoder:layers.{i}.self_attn.",)),
                ModuleGroup(f"text.{i}.mlp", "mlp", (f"{layer}.feed_forward",), (f"decoder:layers.{i}.feed_forward.",))]
    return (*out, ModuleGroup("vision", "vision", ("vision_model",), VISION_NODES),
            ModuleGroup("projector", "projector", ("multi_modal_projector",), ("vision:/projector/",)),
            ModuleGroup("head", "head", ("language_model.lm_head",), ("decoder:lm_head.",)))


# What Llama Guard 4 is, apart from its widths (the 12B's and the demo's configs share it): no
# experts, qk-norm, NoPE every 4th layer with attention temperature, no chunking (the checkpoint's
# null), Llama 3 rope scaling, an untied 202,048-row output layer.
def structure() -> tuple[dict, dict, dict]:
    """Fresh (vision, text, top-level) settings (fresh: transformers may edit the dicts it is given)."""
    vision = dict(pixel_shuffle_ratio=0.5, rope_theta=10000, norm_eps=1e-5, vision_feature_select_strategy="default")
    text = dict(vocab_size=202048, max_position_embeddings=131072, moe_layers=[], use_qk_norm=True,
                no_rope_layer_interval=4, attention_chunk_size=None, attn_temperature_tuning=True,
                floor_scale=8192, attn_scale=0.1, rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                rope_scaling={"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 1.0,
                              "original_max_position_embeddings": 8192})
    return vision, text, dict(boi_token_index=200080, eoi_token_index=200081, tie_word_embeddings=False)


def llama_guard_4_12b_config():
    """Llama Guard 4 12B's configuration, for computed footprints only (no weights).

    Llama 4 Scout's published shapes with the experts pruned (REFERENCE: "12B dense, pruned from
    Llama 4 Scout, only the shared expert kept"; vocabulary 202,048, ``attention_chunk_size`` null,
    untied output layer): text 5120 wide, 48 layers, 40 heads / 8 KV heads of 128, every layer a
    dense MLP of the shared expert's width 8192; vision 1408 wide, 34 layers, 16 heads, MLP 5632,
    336-px tiles of 14-px patches, pixel shuffle 0.5, projector 4096 -> 5120. Not read from the
    gated checkpoint's config.json: the widths give 12.0B parameters (tests check the total), which
    is what Meta calls it."""
    from transformers import Llama4Config

    vision, text, top = structure()
    vision |= {"hidden_size": 1408, "intermediate_size": 5632, "num_hidden_layers": 34,
              "num_attention_heads": 16, "image_size": 336, "patch_size": 14, "projector_input_dim": 4096,
              "projector_output_dim": 4096, "vision_output_dim": 4096}
    text |= {"hidden_size": 5120, "intermediate_size": 8192, "intermediate_size_mlp": 8192,
             "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128}
    return Llama4Config(vision_config=vision, text_config=text, image_token_index=200092, **top)
