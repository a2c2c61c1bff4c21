"""A family's prompt frame per architecture (families.for_model, the optional ``for_model_type``):
LlavaGuard prompts LLaVA-OneVision checkpoints in their -hf template and QwenGuard (Qwen2.5-VL) in
Qwen2.5-VL's, byte for byte as the published templates render."""

from __future__ import annotations

from types import SimpleNamespace

from guardedge.runtime.families import choose_family, for_model


class _Framed:
    """A family whose frame follows the model type."""

    name = "framed"

    def __init__(self, frame: str = "default"):
        self.frame = frame

    def for_model_type(self, model_type):
        return _Framed(model_type)


def test_for_model_binds_a_family_that_has_frames_and_leaves_the_others():
    assert for_model(_Framed(), {"model_type": "qwen2_5_vl"}).frame == "qwen2_5_vl"
    plain = SimpleNamespace(name="plain")
    assert for_model(plain, {"model_type": "qwen2_5_vl"}) is plain


def test_choose_family_answers_in_the_directory_architecture_frame():
    directory = SimpleNamespace(config={"model_type": "mllama"}, manifest=None)
    family = choose_family(directory)
    assert family.name == "llama-guard-3-vision" and for_model(family, directory.config) is family
