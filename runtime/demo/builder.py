"""What every demo guard's build.py shares: the cache, atomic assembly, retraining in phases, the CLI.

A demo's trained weights are committed as a small pack (runtime/demo/packing.py). Its build.py
names the pack, the files whose bytes key its cached directory (:func:`cache_dir`, under
``$GUARDEDGE_HOME``, default ``~/.cache/guardedge``), how it writes a model directory (run through
:func:`assemble`, one builder at a time: :func:`assemble_once`) and, for a trained demo, its phases
and how one phase trains (:func:`run_phases`, :func:`phased_main`). Each build.py is run as a module, e.g.

    python -m guardedge.runtime.demo.llavaguard.build            # assemble (cached)
    python -m guardedge.runtime.demo.llavaguard.build --force    # re-assemble
    python -m guardedge.runtime.demo.llavaguard.build --retrain  # reproduce the committed pack
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
from typing import Any, Callable, Iterable, Sequence

# One phase's training: (the phase, the pack it starts from or None, a checkpoint callback) -> (model, steps run).
PhaseTrainer = Callable[[Any, "Path | None", Callable[[Any, int], None]], tuple[Any, int]]


def home() -> Path:
    return Path(os.environ.get("GUARDEDGE_HOME", Path.home() / ".cache" / "guardedge"))


def cache_dir(name: str, pack: Path, sources: Iterable[Path]) -> Path:
    """``home()/<name>-<digest>``, keyed by the pack, by what writes the directory's other files
    (``sources``) and by the shared code that unpacks and assembles every demo (this module,
    packing.py), so changed code never reuses a stale cached directory."""
    digest = hashlib.sha256(pack.read_bytes())
    for path in (*sources, Path(__file__), Path(__file__).with_name("packing.py")):
        digest.update(path.read_bytes())
    return home() / f"{name}-{digest.hexdigest()[:12]}"


def assemble_once(target: Path, lock_name: str, build_into: Callable[[Path], None]) -> Path:
    """``target``, built by ``build_into`` unless it holds a model already; concurrent callers
    (test workers, server replicas) wait on a file lock beside it instead of building twice."""
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / lock_name, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "model.safetensors").is_file():
            build_into(target)
    return target


def assemble(target: Path, write: Callable[[Path], None], label: str | None = None, progress: bool = True) -> None:
    """Let ``write`` fill a fresh ``<target>.tmp``, then rename it to ``target``: a reader never sees
    half a directory. With ``label`` and ``progress``, say how long it took."""
    started = time.time()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if progress and label is not None:
        print(f"assembled {label} in {time.time() - started:.1f}s: {target}")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def meta_model(model_class, config):
    """``model_class(config)`` on the meta device, its config saying bf16 (stored like the real checkpoint)."""
    import torch

    config.dtype = "bfloat16"
    with torch.device("meta"):
        return model_class(config)


def load_tied(model, state: dict, source: Path) -> None:
    """Load an unpacked ``state`` into a meta ``model`` whose output layer is its embedding
    (tie_word_embeddings): the tie fills it; anything else missing is an error naming ``source``."""
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    missing = [k for k, v in model.state_dict().items() if v.is_meta]
    if missing:
        raise RuntimeError(f"{source} lacks {missing}")


def phase_pack(out: Path, number: int, step: int | None = None) -> Path:
    """Where phase ``number`` (1-based) writes its pack beside ``out``: ``-phase<N>``, ``-phase<N>-step<S>``."""
    return out.with_name(f"{out.stem}-phase{number}{'' if step is None else f'-step{step}'}{out.suffix}")


def run_phases(out: Path, phases: Sequence, train: PhaseTrainer, pack: Callable[[Any, Path], Any],
               init: Path | None = None) -> dict:
    """Train ``phases`` in order, each from the previous one's pack (bf16), the first from ``init``.

    The last phase's pack is ``out``, the others' are written beside it (:func:`phase_pack`), as are
    the checkpoints ``train`` asks for; ``pack(model, path)`` writes one and returns its row counts.
    """
    report, started = [], time.time()
    for number, phase in enumerate(phases, 1):
        target = out if number == len(phases) else phase_pack(out, number)

        def checkpoint(model, step: int, number=number) -> None:
            pack(model, phase_pack(out, number, step))

        began = time.time()
        model, done = train(phase, init, checkpoint)
        rows = pack(model, target)
        report.append({"phase": number, "steps": done, "train_seconds": round(time.time() - began, 1), "trained_rows": rows})
        init = target
    return {"phases": report, "train_seconds": round(time.time() - started, 1), "bytes": out.stat().st_size}


def assembly_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--force", action="store_true", help="re-assemble even if cached")
    return parser


def phased_parser(description: str, retrain_help: str, pack: Path, init: Path | None, init_help: str,
                  checkpoint_every: bool = True) -> argparse.ArgumentParser:
    """:func:`assembly_parser` and the flags of a demo retrained with :func:`run_phases`."""
    parser = assembly_parser(description)
    parser.add_argument("--retrain", action="store_true", help=retrain_help)
    parser.add_argument("--out", type=Path, default=pack)
    parser.add_argument("--phases", default=None, help="run only these phases, e.g. 2 (comma-separated, 1-based)")
    parser.add_argument("--init", type=Path, default=init, help=init_help)
    if checkpoint_every:
        parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds of training")
    return parser


def chosen(phases: Sequence, numbers: str | None) -> tuple:
    """``--phases``: the 1-based comma-separated phases to run (all by default)."""
    return tuple(phases) if numbers is None else tuple(phases[int(i) - 1] for i in numbers.split(","))


def phased_main(parser: argparse.ArgumentParser, phases: Sequence, retrain: Callable[..., dict],
                directory: Callable[[], Path], ensure: Callable[[], Path]) -> None:
    """Run a :func:`phased_parser` command line: ``--retrain`` prints ``retrain``'s report (called
    with ``out``, the chosen phases, and ``init``, ``time_limit_s``, ``checkpoint_every`` where the
    parser has it); otherwise assemble (cached unless ``--force``) and print the directory."""
    args = parser.parse_args()
    if args.retrain:
        options = {"checkpoint_every": args.checkpoint_every} if "checkpoint_every" in vars(args) else {}
        print(json.dumps(retrain(args.out, chosen(phases, args.phases), init=args.init, time_limit_s=args.time_limit,
                                 **options)))
        return
    print(assembled(directory, ensure, args.force))


def assembled(directory: Callable[[], Path], ensure: Callable[[], Path], force: bool) -> Path:
    """The demo's directory (``--force``: removed and assembled again)."""
    if force:
        shutil.rmtree(directory(), ignore_errors=True)
    return ensure()
