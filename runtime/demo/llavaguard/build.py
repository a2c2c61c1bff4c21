"""Assemble (and, on request, retrain) the demo LlavaGuard model directory.

The trained weights are committed packed (``weights/demo-llavaguard-<version>.safetensors``, a
few MB; pack.py). On first use they are unpacked into a directory laid out like a real
LlavaGuard v1.2 OV ``-hf`` repository (config.json, model.safetensors, vocab.json, merges.txt,
tokenizer.json, tokenizer_config.json, special_tokens_map.json, added_tokens.json,
preprocessor_config.json, processor_config.json, chat_template.json, generation_config.json,
README.md) under ``$GUARDEDGE_HOME`` (default ``~/.cache/guardedge``), keyed by a digest of the
pack and of the code that writes the other files.

    python -m guardedge.runtime.demo.llavaguard.build            # assemble (cached)
    python -m guardedge.runtime.demo.llavaguard.build --retrain  # reproduce the committed pack
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import shutil
import time
from pathlib import Path

from guardedge.runtime.demo.build import home

DEMO_VERSION = "v1"
HERE = Path(__file__).parent
PACK = HERE / "weights" / f"demo-llavaguard-{DEMO_VERSION}.safetensors"
CARD = HERE / "MODEL_CARD.md"
SEED = 1234  # model init, table init and data order
STEPS, BATCH_SIZE, LR = 440, 8, 3e-3


def demo_dir() -> Path:
    digest = hashlib.sha256(PACK.read_bytes())
    for name in ("build.py", "layout.py", "tokenizer.py", "pack.py", "MODEL_CARD.md"):
        digest.update((HERE / name).read_bytes())
    return home() / f"demo-llavaguard-{DEMO_VERSION}-{digest.hexdigest()[:12]}"


def ensure_demo_llavaguard(progress: bool = True) -> Path:
    """Return the demo LlavaGuard directory, assembling it first if needed (one builder at a time)."""
    target = demo_dir()
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".demo-llavaguard-{DEMO_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "model.safetensors").is_file():
            build(target, progress=progress)
    return target


def build(target: Path, progress: bool = True) -> None:
    """Unpack the committed weights into a full model directory at ``target``."""
    import torch
    from transformers import LlavaOnevisionForConditionalGeneration

    from guardedge.runtime.demo.llavaguard.layout import demo_config, write_layout
    from guardedge.runtime.demo.llavaguard.pack import unpack
    from guardedge.runtime.demo.llavaguard.tokenizer import build_tokenizer

    started = time.time()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = demo_config()
    config.dtype = "bfloat16"  # stored like the real checkpoint
    with torch.device("meta"):
        model = LlavaOnevisionForConditionalGeneration(config)
    embed = model.get_input_embeddings().weight
    model.load_state_dict(unpack(PACK, tuple(embed.shape)), strict=False, assign=True)
    model.tie_weights()  # lm_head is the embedding (tie_word_embeddings), as in the 0.5B checkpoint
    missing = [k for k, v in model.state_dict().items() if v.is_meta]
    if missing:
        raise RuntimeError(f"{PACK} lacks {missing}")
    model.save_pretrained(tmp, safe_serialization=True)
    write_layout(tmp, build_tokenizer())  # after the weights: save_pretrained writes its own generation_config.json
    (tmp / "README.md").write_text(CARD.read_text())
    if progress:
        print(f"assembled demo LlavaGuard in {time.time() - started:.1f}s: {target}")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def retrain(out: Path = PACK, steps: int = STEPS, progress: bool = True) -> dict:
    """Reproduce the pack (seeded data and init, fixed step count) and write it to ``out``."""
    from guardedge.runtime.demo.llavaguard.pack import pack
    from guardedge.runtime.demo.llavaguard.tokenizer import build_tokenizer
    from guardedge.runtime.demo.llavaguard.train import train

    started = time.time()
    model, done = train(build_tokenizer(), steps=steps, batch_size=BATCH_SIZE, lr=LR, seed=SEED, progress=progress)
    rows = pack(model, SEED, out)
    return {"steps": done, "train_seconds": round(time.time() - started, 1), "trained_rows": rows, "bytes": out.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description="Assemble or retrain the guardedge demo LlavaGuard")
    parser.add_argument("--force", action="store_true", help="re-assemble even if cached")
    parser.add_argument("--retrain", action="store_true", help="train from the seeded init and rewrite the pack")
    parser.add_argument("--out", type=Path, default=PACK)
    args = parser.parse_args()
    if args.retrain:
        print(json.dumps(retrain(args.out)))
        return
    if args.force:
        shutil.rmtree(demo_dir(), ignore_errors=True)
    print(ensure_demo_llavaguard())


if __name__ == "__main__":
    main()
