"""LlavaGuard's architecture at its real widths with random weights and few layers, for CPU timing.

``llavaguard-realshape-random`` is LLaVA-OneVision as LlavaGuard v1.2 0.5B ships it: SigLIP so400m
widths (1152 hidden, 4304 MLP, 16 heads, patch 14, 384-px tiles, anyres_max_9 over the 6x6 grid of
384-px pinpoints, 729 tokens a tile), the 2-layer projector, Qwen2-0.5B widths (896 hidden, 4864
MLP, 14 heads, 2 KV heads, vocabulary 151936, tied embeddings), the real Qwen2 tokenizer and the
-hf processor files — with 2 vision and 2 text layers so it fits a CI machine. A 1920x1080 image
costs its real 7,269 prompt tokens. ``guardedge bench stages --model llavaguard-realshape-random``
times the CPU share of a LlavaGuard request at real size; the random output layer is steered as in
bench/fullsize.py so the first answer token is ``Safe`` or ``Unsafe``.

    guardedge bench stages --model llavaguard-realshape-random --image-size 1920x1080 --repeats 3
"""

from __future__ import annotations

import json
import shutil

ALIAS = "llavaguard-realshape-random"
TILE = 384
PINPOINTS = [[TILE * h, TILE * w] for h in range(1, 7) for w in range(1, 7)]
VISION = dict(hidden_size=1152, intermediate_size=4304, num_attention_heads=16, num_hidden_layers=2,
              image_size=TILE, patch_size=14)
TEXT = dict(hidden_size=896, intermediate_size=4864, num_attention_heads=14, num_key_value_heads=2,
            num_hidden_layers=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0,
            tie_word_embeddings=True)


def config():
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    return LlavaOnevisionConfig(vision_config=SiglipVisionConfig(**VISION).to_dict(),
                                text_config=Qwen2Config(**TEXT).to_dict(), image_token_index=151646,
                                image_grid_pinpoints=PINPOINTS, vision_aspect_ratio="anyres_max_9",
                                vision_feature_select_strategy="full", vision_feature_layer=-1,
                                tie_word_embeddings=True)


def model_dir():
    """Config and the demo LlavaGuard's tokenizer/template files with the real 384-px processor; no weights."""
    from guardedge.runtime.demo.builder import home
    from guardedge.runtime.demo.llavaguard.build import ensure_demo_llavaguard
    from guardedge.runtime.modeldir import ModelDir

    path = home() / ALIAS
    if not (path / "config.json").is_file():
        tmp = path.with_name(ALIAS + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for source in ensure_demo_llavaguard(progress=False).iterdir():
            if source.is_file() and source.suffix in (".json", ".txt") and source.name != "config.json":
                shutil.copy2(source, tmp / source.name)
        processor = json.loads((tmp / "preprocessor_config.json").read_text())
        processor.update(size={"height": TILE, "width": TILE}, image_grid_pinpoints=PINPOINTS, crop_size=None)
        (tmp / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
        settings = json.loads((tmp / "processor_config.json").read_text())
        settings["num_image_tokens"] = (TILE // 14) ** 2  # 729
        (tmp / "processor_config.json").write_text(json.dumps(settings, indent=2) + "\n")
        config().to_json_file(tmp / "config.json")
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    return ModelDir(path, json.loads((path / "config.json").read_text()), ALIAS)


def build_model(device, dtype, safe_id: int, unsafe_id: int, seed: int = 0):
    import torch
    from transformers import LlavaOnevisionForConditionalGeneration
    from transformers.modeling_utils import no_init_weights

    from guardedge.bench.random_weights import randomize, steer_head

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with no_init_weights(), device:
            model = LlavaOnevisionForConditionalGeneration(config())
    finally:
        torch.set_default_dtype(previous)
    randomize(model, seed)
    steer_head(model.lm_head.weight, safe_id, unsafe_id)  # tied: the embedding rows move too (random anyway)
    return model.eval()


def load_engine(options):
    """An engine over the random real-width model, assembled by the runtime's one builder."""
    from transformers import AutoTokenizer

    from guardedge.bench.random_weights import one_code_answers
    from guardedge.runtime.backends.torch_backend import TorchBackend, choose_device, choose_dtype
    from guardedge.runtime.engine import build_engine
    from guardedge.runtime.families import get_family
    from guardedge.runtime.preprocess import verdict_tokens

    directory = model_dir()
    # Random weights never write the format: answers are capped at the decode work of a real
    # verdict-only answer (the prefill's draft, then one pass; see test_decoding's LlavaGuard test).
    family = one_code_answers(get_family("llavaguard"))
    tok = AutoTokenizer.from_pretrained(str(directory.path), local_files_only=True, fix_mistral_regex=False)
    device = choose_device(options.device)
    dtype = choose_dtype(options.dtype, device)
    _, safe_id, unsafe_id = verdict_tokens(tok, family.scoring.safe_token, family.scoring.unsafe_token)
    backend = TorchBackend(build_model(device, dtype, safe_id, unsafe_id), device, dtype)
    return build_engine(directory, options, backend=backend, family=family)
