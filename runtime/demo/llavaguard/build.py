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

v2 (docs/decisions/0009) continued from v1's committed pack; v3 (docs/decisions/0010: custom
policies) continues from v2's (``BASE``). Both older packs stay in weights/ (v1 to assemble it for
comparison, v2 as v3's start).
"""

from __future__ import annotations

from pathlib import Path

from guardedge.runtime.demo.builder import (assemble, assemble_once, cache_dir, load_tied, meta_model, phased_main, phased_parser,
                                            run_phases)

DEMO_VERSION = "v3"
HERE = Path(__file__).parent
PACK = HERE / "weights" / f"demo-llavaguard-{DEMO_VERSION}.safetensors"
BASE = HERE / "weights" / "demo-llavaguard-v2.safetensors"  # v3 continues from v2 (v2 from v1, v1 from the seeded init)
CARD = HERE / "MODEL_CARD.md"
SEED = 1234  # model init, table init and data order
BATCH_SIZE = 8
# v2's training from v1's pack (kept for the record; MODEL_CARD.md): phase 1 450 steps at 2e-3 on
# data.TRAIN_SIZES, phase 2 300 steps at 1e-3 adding data.SMALL_SIZES (data seeds SEED, SEED + 1).
# v3's training, in phases; each starts from the previous one's pack (bf16), the first from v2's.
# Phase 1: custom policies in 40 % of examples (data.CUSTOM_POLICY_SHARE), excluded content in 35 %
# of hazards under exclusion policies (data.EXCLUDED_HIT_V3), thumbnails kept so v2's fix stays; a
# 1200-step schedule stopped at 600 (held-out check at step 400: custom names not yet copied).
# Phase 2: custom policies in 75 %, the custom header's tokens weigh 4 (copying the name).
PHASES = (
    {"steps": 1200, "stop_after": 600, "lr": 1.5e-3, "data_seed": SEED + 2, "small": True, "excluded_hit": 0.35},
    {"steps": 750, "lr": 1.5e-3, "data_seed": SEED + 3, "small": True, "excluded_hit": 0.35,
     "custom": 0.75, "header_weight": 4.0},
)


def demo_dir() -> Path:
    sources = ("build.py", "layout.py", "tokenizer.py", "pack.py", "MODEL_CARD.md")
    return cache_dir(f"demo-llavaguard-{DEMO_VERSION}", PACK, [HERE / name for name in sources])


def ensure_demo_llavaguard(progress: bool = True) -> Path:
    """Return the demo LlavaGuard directory, assembling it first if needed (one builder at a time)."""
    return assemble_once(demo_dir(), f".demo-llavaguard-{DEMO_VERSION}.lock", lambda target: build(target, progress=progress))


def build(target: Path, progress: bool = True, pack: Path = PACK) -> None:
    """Unpack the committed weights (or another ``pack``, e.g. v1's or a checkpoint) into a full model directory at ``target``."""
    from transformers import LlavaOnevisionForConditionalGeneration

    from guardedge.runtime.demo.llavaguard.layout import demo_config, write_layout
    from guardedge.runtime.demo.llavaguard.pack import unpack
    from guardedge.runtime.demo.llavaguard.tokenizer import build_tokenizer

    def write(tmp: Path) -> None:
        model = meta_model(LlavaOnevisionForConditionalGeneration, demo_config())
        # lm_head is the embedding (tie_word_embeddings), as in the 0.5B checkpoint
        load_tied(model, unpack(pack, tuple(model.get_input_embeddings().weight.shape)), pack)
        model.save_pretrained(tmp, safe_serialization=True)
        write_layout(tmp, build_tokenizer())  # after the weights: save_pretrained writes its own generation_config.json
        (tmp / "README.md").write_text(CARD.read_text())

    assemble(target, write, "demo LlavaGuard", progress)


def retrain(out: Path = PACK, phases=PHASES, progress: bool = True, checkpoint_every: int = 0,
            time_limit_s: float | None = None, init: Path = BASE) -> dict:
    """Reproduce the pack (v1's pack, seeded data, fixed phases) and write it to ``out``.

    Each phase's pack is written next to ``out`` (``-phase<N>``); with ``checkpoint_every``, also
    ``-phase<N>-step<S>`` along the way.
    """
    from guardedge.runtime.demo.llavaguard.data import SMALL_SIZES, TRAIN_SIZES
    from guardedge.runtime.demo.llavaguard.pack import pack
    from guardedge.runtime.demo.llavaguard.tokenizer import build_tokenizer
    from guardedge.runtime.demo.llavaguard.train import train

    tokenizer = build_tokenizer()

    def train_phase(phase: dict, start: Path | None, checkpoint):
        sizes = TRAIN_SIZES + SMALL_SIZES if phase["small"] else TRAIN_SIZES
        return train(tokenizer, steps=phase["steps"], batch_size=BATCH_SIZE, lr=phase["lr"], seed=SEED,
                     progress=progress, init=start, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                     time_limit_s=time_limit_s, data_seed=phase["data_seed"], sizes=sizes,
                     excluded_hit=phase.get("excluded_hit"), custom=phase.get("custom"),
                     header_weight=phase.get("header_weight", 2.0), stop_after=phase.get("stop_after"))

    return run_phases(out, phases, train_phase, lambda model, path: pack(model, SEED, path), init)


def main() -> None:
    parser = phased_parser("Assemble or retrain the guardedge demo LlavaGuard", "train from the seeded init and rewrite the pack",
                           PACK, BASE, "the pack the first phase run starts from")
    phased_main(parser, PHASES, retrain, demo_dir, ensure_demo_llavaguard)


if __name__ == "__main__":
    main()
