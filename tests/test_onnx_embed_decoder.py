"""The shared vision + embed + decoder pieces, without exporting anything: the decoder contract's input
order (the runtime feeds by these names) with each architecture's own inputs in place, and the
backend's writing of image features over placeholder rows, refused when the counts disagree.
The exports themselves run in test_export_onnx_llava.py, test_export_onnx_qwen.py,
test_shieldgemma2_onnx.py and test_llama4_exports.py."""

from __future__ import annotations

import numpy as np
import pytest

from guardedge.runtime.backends.onnx_common import OnnxEmbedDecoderBackend


def test_write_rows_puts_each_rows_features_over_its_tokens_in_order():
    ids = np.array([[5, 9, 9, 5], [9, 5, 5, 9], [5, 5, 5, 5]])
    embeds = np.zeros((3, 4, 2), np.float32)
    features = [np.array([[1, 1], [2, 2]], np.float64), np.array([[3, 3], [4, 4]], np.float64)]
    OnnxEmbedDecoderBackend._write_rows(embeds, ids, [0, 1], 9, features)
    assert embeds.dtype == np.float32
    assert embeds[0, :, 0].tolist() == [0, 1, 2, 0] and embeds[1, :, 0].tolist() == [3, 0, 0, 4]
    assert not embeds[2].any()


def test_write_rows_refuses_a_count_the_processor_and_model_disagree_on():
    ids = np.array([[9, 9, 5]])
    with pytest.raises(RuntimeError, match="row 0: 2 soft tokens but 3 image features; the artifact's processor"):
        OnnxEmbedDecoderBackend._write_rows(np.zeros((1, 3, 2)), ids, [0], 9, [np.ones((3, 2))], "soft tokens")


@pytest.mark.parametrize(("model_type", "config_class", "extra"), [
    ("llava_onevision", "LlavaOnevisionConfig", []),
    ("llama4", "Llama4Config", []),
    ("shieldgemma2", "ShieldGemma2Config", ["token_type_ids"]),
    ("qwen2_5_vl", "Qwen2_5_VLConfig", ["mrope_deltas"]),
])
def test_decoder_inputs_keep_the_contracts_order(model_type, config_class, extra):
    pytest.importorskip("optimum.exporters.onnx")
    import transformers

    from guardedge.export.onnx_specs import spec_for

    config = getattr(transformers, config_class)()
    decoder = spec_for({"model_type": model_type}).components["decoder"][1](config)
    layers = config.text_config.num_hidden_layers
    past = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    assert list(decoder.inputs) == ["inputs_embeds", "attention_mask", "position_ids", *extra, "logits_positions", *past]
    assert list(decoder.outputs) == ["logits", *(name.replace("past_key_values", "present") for name in past)]
    dummy = decoder.generate_dummy_inputs()
    assert list(dummy) == ["inputs_embeds", "attention_mask", "position_ids", *extra, "logits_positions", "past_key_values"]
    assert dummy["past_key_values"][0][0].shape[1:3] == (config.text_config.num_key_value_heads, 4)
