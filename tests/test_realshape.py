"""Shapes, masks and collation at the real Llama Guard 3 Vision size (issue 13 §2).

The fast tests need no real-width weights: the config, the tokenizer and the 560 px image
processor of ``realshape-random``, and the tiny model (same 560 px, 4-tile image configuration)
for the vision encoder's token count. The real-width model (about 4.8 GB, minutes on 2 cores)
runs only with GUARDEDGE_REALSHAPE=1 (``make realshape-check``).
"""

from __future__ import annotations

import os

import pytest
from checks import require_env
import torch

PATCHES_PER_TILE = (560 // 14) ** 2 + 1  # 1600 patches + the class token
PADDED_PER_TILE = 1608  # the encoder pads each tile's sequence to a multiple of 8


def _realshape_checks() -> None:
    require_env("GUARDEDGE_REALSHAPE", "realshape-check", "builds the 4.8 GB real-width model and runs it on the CPU")


def _requests(engine_like_parse, image_size=(1120, 1120)):
    from guardedge.bench.latency import requests

    with_image = requests(1, "natural", image_size)[0]
    text_only = requests(2, "natural", None)[1]
    return [engine_like_parse(with_image), engine_like_parse(text_only)]


def _parse(obj):
    from guardedge.runtime.requests import RequestLimits, parse_request

    return parse_request(obj, (("S1", "Violent Crimes."),), None, RequestLimits())


def test_realshape_config_keeps_every_width_and_only_drops_layers():
    from guardedge.bench.fullsize import fullsize_config

    full, real = fullsize_config("full").to_dict(), fullsize_config("realshape").to_dict()
    layer_keys = {"num_hidden_layers", "num_global_layers", "intermediate_layers_indices", "cross_attention_layers"}
    for part in ("vision_config", "text_config"):
        differing = {k for k in full[part] if full[part][k] != real[part][k]}
        assert differing <= layer_keys, (part, differing - layer_keys)
    vision = real["vision_config"]
    assert vision["vision_output_dim"] == 7680 == vision["hidden_size"] * (len(vision["intermediate_layers_indices"]) + 1)
    assert max(vision["intermediate_layers_indices"]) < vision["num_hidden_layers"]
    assert real["text_config"]["cross_attention_layers"] == [1] and real["text_config"]["num_hidden_layers"] == 2


def test_a_4_tile_image_is_6432_tokens_in_the_vision_encoder():
    from guardedge.bench.fullsize import build_model

    model = build_model("tiny", torch.device("cpu"), torch.float32, 1, 2)  # 560 px, 4 tiles, like the real one
    seen = []
    model.model.vision_model.transformer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape))
    with torch.inference_mode():
        out = model.model.vision_model(pixel_values=torch.randn(1, 1, 4, 3, 560, 560),
                                       aspect_ratio_ids=torch.tensor([[6]]),
                                       aspect_ratio_mask=torch.ones(1, 1, 4, dtype=torch.long)).last_hidden_state
    assert seen[0][1] == 4 * PADDED_PER_TILE == 6432
    assert tuple(out.shape[:4]) == (1, 1, 4, PATCHES_PER_TILE) and 4 * PATCHES_PER_TILE == 6404


def test_real_size_collation_of_a_mixed_batch():
    from guardedge.bench.fullsize import fullsize_preprocessor

    pre = fullsize_preprocessor("realshape")
    image_row, text_row = (pre.encode(r) for r in _requests(_parse))
    assert image_row.image.num_tiles == 4 and image_row.image.pixel_values is None  # compact until collate
    batch = pre.collate([image_row, text_row])
    length = batch.input_ids.shape[1]
    cross = batch.extra["cross_attention_mask"]
    assert tuple(cross.shape) == (2, length, 1, 4)
    assert tuple(batch.extra["pixel_values"].shape) == (1, 1, 4, 3, 560, 560) and batch.image_rows == [0]
    start = length - len(image_row.input_ids)
    image_at = start + image_row.image_pos
    assert cross[0, image_at:].eq(1).all() and cross[0, :image_at].eq(0).all()
    assert cross[1].eq(0).all()  # the text row sees no tile
    assert batch.attention_mask[1].sum() == len(text_row.input_ids) and batch.attention_mask[1, 0] == 0  # left-padded


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_vision_component_exports_to_onnx_at_real_width(tmp_path):
    """vision.onnx (vision tower + projector + cross K/V, export/onnx_configs.py) at real width, one
    4-tile image: the keys/values have the real shapes and match PyTorch."""
    _realshape_checks()
    import numpy as np
    import onnxruntime as ort
    from optimum.exporters.onnx.convert import export_pytorch

    from guardedge.bench.fullsize import build_model
    from guardedge.export import onnx_configs as cfg

    model = build_model("realshape", torch.device("cpu"), torch.float32, 1, 2)
    model.lm_head = torch.nn.Identity()  # the text head and embedding are not in vision.onnx: free them
    model.model.language_model.embed_tokens = torch.nn.Identity()
    cfg.pretranspose_text_linears(model)  # as export_float does: the wrappers multiply by [in, out] weights
    wrapper, config = cfg.MllamaVisionToCrossKV(model).eval(), cfg.MllamaVisionOnnxConfig(model.config)
    path = tmp_path / "vision.onnx"
    with torch.no_grad():
        export_pytorch(wrapper, config, 18, path, input_shapes={"image_batch": 1})
    inputs = config.generate_dummy_inputs(image_batch=1)
    with torch.no_grad():
        expected = wrapper(**inputs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    assert [tuple(g.shape) for g in got] == [(1, 8, 4 * PATCHES_PER_TILE, 128)] * 2  # key, value of the one cross layer
    for g, e in zip(got, expected):
        assert np.abs(g - e.numpy()).max() < 1e-3


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_real_width_model_mixed_batch_shapes_and_parity():
    _realshape_checks()
    from guardedge.bench.fullsize import open_engine
    from guardedge.runtime.engine import EngineOptions

    engine = open_engine("realshape-random", EngineOptions(device="cpu", progress=False, max_batch_size=2))
    model, pre = engine.backend.model, engine.pre
    batch = pre.collate([engine.prepare(r).encoded for r in _requests(engine.parse)])
    seen = []
    model.model.vision_model.transformer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape))
    with torch.inference_mode():
        states = engine.backend.arch.torch_vision(model, batch, engine.backend.device, torch.float32)
    assert tuple(seen[0]) == (1, 6432, 1280)
    assert tuple(states.shape) == (2 * 4, PATCHES_PER_TILE, 4096)  # [B*T, P, text hidden], zeros for the text row
    assert states[4:].eq(0).all() and states[:4].abs().sum() > 0
    mixed = engine.classify([engine.parse(r) for r in _requests(lambda r: r)])
    alone = engine.classify([engine.parse(_requests(lambda r: r)[1])])
    assert mixed[1].unsafe_probability == pytest.approx(alone[0].unsafe_probability, abs=1e-4)
    assert {v.verdict for v in mixed} <= {"safe", "unsafe"}


def test_llavaguard_real_width_image_costs_its_real_tokens():
    """LlavaGuard's architecture at real widths: a 1920x1080 image is 7,269 prompt tokens (the
    count LlavaGuard's processor gives), batched into real-width patches, refused past the context."""
    from guardedge.bench.realshape_llava import load_engine
    from guardedge.runtime.engine import EngineOptions
    from guardedge.runtime.errors import InvalidRequest

    engine = load_engine(EngineOptions(device="cpu", dtype="float32", progress=False))
    assert engine.family.name == "llavaguard" and engine.backend.model.config.text_config.hidden_size == 896
    prepared = engine.prepare(engine.parse(_llava_request((1920, 1080))))
    assert prepared.encoded.image_tokens == 7269
    batch = engine.pre.collate([prepared.encoded])
    assert tuple(batch.extra["pixel_values"].shape[-3:]) == (3, 384, 384)
    assert (batch.input_ids == 151646).sum() == 7269
    engine.pre.max_text_tokens = len(prepared.encoded.input_ids)  # no room left for the answer
    with pytest.raises(InvalidRequest, match="of which 7269 for the image"):
        engine.prepare(engine.parse(_llava_request((1920, 1080))))


def _llava_request(size: tuple[int, int]) -> dict:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (120, 160, 200)).save(buf, format="PNG")
    return {"messages": [{"role": "user", "content": [{"type": "image", "data": base64.b64encode(buf.getvalue()).decode()}]}]}
