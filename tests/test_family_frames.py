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


def _probes():
    from guardedge.runtime.families import get_family
    from guardedge.runtime.types import GuardRequest, Message, Part

    image = Message("user", (Part("image"),))
    extra = (("exclusions", GuardRequest((image,), excluded_category_keys=("O2", "O9"))),
             ("custom and excluded", GuardRequest((image,), categories=(("O1", "Gambling\nShould not:\n- Show dice."),
                                                                        ("O2", "Fraud\nCan:\n- Show a bank.")),
                                                  excluded_category_keys=("O2",))))
    return get_family("llavaguard").template_probes() + extra


def test_qwenguard_frame_is_the_qwen2_5_vl_template_byte_for_byte():
    from guardedge.runtime.chat_template import builtin_template, render_with_template
    from guardedge.runtime.families import get_family

    family = get_family("llavaguard").for_model_type("qwen2_5_vl")
    template = builtin_template("llavaguard-qwen2_5_vl")
    for label, probe in _probes():
        prompt = family.render(probe)
        assert prompt == render_with_template(template, probe, family), label
        assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                                 "<|vision_start|><|image_pad|><|vision_end|>" + family.policy_text(probe)), label
    assert (family.image_token, family.prompt_source) == ("<|image_pad|>", "model")


def test_onevision_frame_stays_the_hf_template_and_unknown_types_keep_theirs():
    from guardedge.runtime.families import get_family

    family = get_family("llavaguard")
    assert family.for_model_type("llava_onevision") is family and family.for_model_type("mllama") is family
    qwen = family.for_model_type("qwen2_5_vl")
    assert qwen.for_model_type("llama4") is qwen and qwen.for_model_type("llava_onevision").frame == family.frame
    for _, probe in _probes():
        assert family.render(probe) == f"<|im_start|>user\n<image>\n{family.policy_text(probe)}<|im_end|>\n<|im_start|>assistant\n"
    assert (family.image_token, family.prompt_source) == ("<image>", "builtin")


def test_a_qwen2_5_vl_directory_gets_llavaguard_in_the_qwen_frame():
    family = choose_family(SimpleNamespace(config={"model_type": "qwen2_5_vl"}, manifest=None))
    assert family.name == "llavaguard" and family.image_token == "<|image_pad|>"
    artifact = SimpleNamespace(config={"model_type": "qwen2_5_vl"}, manifest={"family": "llavaguard"})
    assert choose_family(artifact).frame == family.frame
