"""Qwen2.5-VL (QwenGuard) as quantization sees it: module groups and the published configuration.

The projector is the vision tower's own 2 x 2 patch merger (``model.visual.merger``), so the
vision group names the tower's patch embedding and blocks and the projector group the merger
(a name covers everything under it: ``model.visual`` would hold both). The output layer is tied
to the token embedding in the 3B.

ONNX names (export/onnx_qwen2_5_vl.py): the decoder's weights keep their module paths
(``layers.{i}.self_attn.q_proj.weight``, ``lm_head.weight``, its own copy); vision.onnx computes
the tower's linears as ``Gemm`` nodes (2-D inputs with biases), which the weight-only quantizers
(MatMul only) do not take, so the vision and projector groups name nothing there.
"""

from __future__ import annotations

from guardedge.runtime.architectures.base import ModuleGroup


def groups(config: dict) -> tuple[ModuleGroup, ...]:
    text = config.get("text_config") or config
    out = []
    for i in range(text["num_hidden_layers"]):
        layer = f"model.language_model.layers.{i}"
        out += [ModuleGroup(f"text.{i}.attention", "attention", (f"{layer}.self_attn",), (f"decoder:layers.{i}.self_attn.",)),
                ModuleGroup(f"text.{i}.mlp", "mlp", (f"{layer}.mlp",), (f"decoder:layers.{i}.mlp.",))]
    return (*out, ModuleGroup("vision", "vision", ("model.visual.patch_embed", "model.visual.blocks")),
            ModuleGroup("projector", "projector", ("model.visual.merger",)),
            ModuleGroup("head", "head", ("lm_head",), ("decoder:lm_head.",)))


def qwenguard_3b_config():
    """QwenGuard v1.2 3B's configuration (Qwen2.5-VL-3B-Instruct's, which it fine-tunes), for
    computed footprints only (no weights).

    Qwen2.5-VL-3B's published config.json: text 2048 wide, MLP 11008, 36 layers, 16 heads / 2 KV
    heads, vocabulary 151,936 rows, tied output layer, mrope sections [16, 24, 24]; the vision
    tower 1280 wide, 32 blocks (full attention in 7, 15, 23, 31; 112-px windows elsewhere), MLP
    3420, 16 heads, merged into 2048. 3.75B parameters (tests check the total)."""
    from transformers import Qwen2_5_VLConfig

    vision = dict(depth=32, hidden_size=1280, hidden_act="silu", intermediate_size=3420, num_heads=16, in_channels=3,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, tokens_per_second=2, window_size=112,
                  out_hidden_size=2048, fullatt_block_indexes=[7, 15, 23, 31])
    text = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                num_key_value_heads=2, hidden_act="silu", max_position_embeddings=128000, rms_norm_eps=1e-6,
                rope_theta=1000000.0, rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
                tie_word_embeddings=True, use_sliding_window=False)
    return Qwen2_5_VLConfig(vision_config=vision, text_config=text, image_token_id=151655, video_token_id=151656,
                            vision_start_token_id=151652, vision_end_token_id=151653, vision_token_id=151654,
                            tie_word_embeddings=True)
