"""Assemble (and, on request, retrain) the demo guard directory.

The trained weights are committed in packed form (``weights/demo-guard-<version>.safetensors``,
a few MB: the dense layers plus the trained rows of the two 128k-row tables; see weights.py).
On first use they are unpacked into a directory with the files of the real
Llama-Guard-3-11B-Vision repository (config.json, model.safetensors, tokenizer files,
preprocessor_config.json, chat_template.json, generation_config.json), evaluated on the
held-out set through the engine, and cached under ``$GUARDEDGE_HOME`` (default
``~/.cache/guardedge``). That takes well under a minute on 2 cores.

    python -m guardedge.runtime.demo.build            # assemble (cached)
    python -m guardedge.runtime.demo.build --retrain  # reproduce the committed pack (see TRAIN_*)
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

DEMO_VERSION = "v1"
SEED = 1234
TRAIN_STEPS = 10000
BATCH_SIZE = 16
LEARNING_RATE = 4e-3
# Training oversamples the cases a small model learns slowest (held-out set: data's defaults).
TRAIN_IMAGE_DECIDED_SHARE = 0.5
TRAIN_POLICY_MIX = (0.45, 0.25, 0.30)  # (default, excluded, custom)
TILE = 56  # image_size of the demo's vision tower (the real model: 560)
MAX_TILES = 4
CARD = Path(__file__).with_name("MODEL_CARD.md")
PACK = Path(__file__).with_name("weights") / f"demo-guard-{DEMO_VERSION}.safetensors"


def home() -> Path:
    return Path(os.environ.get("GUARDEDGE_HOME", Path.home() / ".cache" / "guardedge"))


def demo_dir() -> Path:
    # Keyed by the pack's content, so a changed pack never reuses a stale cached directory.
    digest = hashlib.sha256(PACK.read_bytes()).hexdigest()[:12]
    return home() / f"demo-guard-{DEMO_VERSION}-{digest}"


def demo_config():
    """Real Mllama architecture, tiny widths (multiples of 64 so 4-bit blocks fit)."""
    from transformers import MllamaConfig

    vision = dict(
        hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_global_layers=1,
        attention_heads=2, num_channels=3, image_size=TILE, patch_size=14, max_num_tiles=MAX_TILES,
        intermediate_layers_indices=[0, 1], vision_output_dim=192, norm_eps=1e-5,
        supported_aspect_ratios=[[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]],
    )
    text = dict(
        vocab_size=128256, hidden_size=64, intermediate_size=256, num_hidden_layers=5,
        cross_attention_layers=[2], num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        bos_token_id=128000, eos_token_id=[128001, 128008, 128009], pad_token_id=128004,
        tie_word_embeddings=False,
    )
    return MllamaConfig(vision_config=vision, text_config=text, image_token_index=128256)


def image_processor():
    from transformers import MllamaImageProcessor

    return MllamaImageProcessor(size={"height": TILE, "width": TILE}, max_image_tiles=MAX_TILES)


def ensure_demo(progress: bool = True) -> Path:
    """Return the demo guard directory, building it first if needed (one builder at a time)."""
    target = demo_dir()
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".demo-{DEMO_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "model.safetensors").is_file():
            build(target, progress=progress)
    return target


def build(target: Path, progress: bool = True) -> None:
    """Unpack the committed weights into a full model directory at ``target``."""
    import torch
    from transformers import MllamaForConditionalGeneration

    from guardedge.runtime.demo.tokenizer import build_tokenizer
    from guardedge.runtime.demo.train import evaluate
    from guardedge.runtime.demo.weights import unpack

    started = time.time()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _write_processor_files(tmp, build_tokenizer(), image_processor())
    config = demo_config()
    config.dtype = "bfloat16"  # stored like the real checkpoint
    with torch.device("meta"):
        model = MllamaForConditionalGeneration(config)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    model.load_state_dict(unpack(PACK, shapes), strict=True, assign=True)
    model.save_pretrained(tmp, safe_serialization=True)
    _write_generation_config(tmp)
    metrics = evaluate(tmp, progress=progress)
    metrics["assemble_seconds"] = round(time.time() - started, 1)
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (tmp / "README.md").write_text(CARD.read_text().replace("{metrics}", json.dumps(metrics, indent=2)))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def retrain(out: Path = PACK, steps: int = TRAIN_STEPS, progress: bool = True) -> dict:
    """Train from scratch (deterministic: seeded data and init) and write the packed weights."""
    from guardedge.runtime.demo.tokenizer import build_tokenizer
    from guardedge.runtime.demo.train import train
    from guardedge.runtime.demo.weights import pack

    started = time.time()
    model = train(demo_config(), build_tokenizer(), image_processor(), steps=steps, batch_size=BATCH_SIZE,
                  lr=LEARNING_RATE, seed=SEED,
                  image_decided_share=TRAIN_IMAGE_DECIDED_SHARE, policy_mix=TRAIN_POLICY_MIX, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = pack(model, SEED, out)
    return {"steps": steps, "train_seconds": round(time.time() - started, 1), "trained_rows": rows,
            "bytes": out.stat().st_size}


def _write_processor_files(path: Path, tokenizer, processor) -> None:
    from guardedge.runtime.chat_template import builtin_template

    tokenizer.save_pretrained(path)
    processor.save_pretrained(path)
    config = json.loads((path / "preprocessor_config.json").read_text())
    config["processor_class"] = "MllamaProcessor"
    (path / "preprocessor_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (path / "chat_template.json").write_text(
        json.dumps({"chat_template": builtin_template("llama-guard-3-vision")}, indent=2) + "\n"
    )
    tok_config = json.loads((path / "tokenizer_config.json").read_text())
    tok_config["processor_class"] = "MllamaProcessor"
    (path / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")


def _write_generation_config(path: Path) -> None:
    config = {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "pad_token_id": 128004,
              "do_sample": False, "transformers_version": _transformers_version()}
    (path / "generation_config.json").write_text(json.dumps(config, indent=2) + "\n")


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description="Assemble or retrain the guardedge demo guard")
    parser.add_argument("--force", action="store_true", help="re-assemble even if cached")
    parser.add_argument("--retrain", action="store_true", help="train from scratch and rewrite the committed pack")
    parser.add_argument("--steps", type=int, default=TRAIN_STEPS)
    parser.add_argument("--out", type=Path, default=PACK)
    args = parser.parse_args()
    if args.retrain:
        print(json.dumps(retrain(args.out, args.steps)))
        return
    if args.force:
        shutil.rmtree(demo_dir(), ignore_errors=True)
    print(ensure_demo())


if __name__ == "__main__":
    main()
