"""The built-in demo: a real (tiny) training run saved the way six common toolchains save checkpoints.

`build_demo(root)` trains a ~167K-parameter MLP classifier on a fixed synthetic dataset, once per run
directory, and writes::

    plain-pytorch/   checkpoint_epoch_{e}.pth, best.pt, exports/model_legacy.pt (legacy torch format)
    lightning-run/   checkpoints/epoch={e}-step={s}.ckpt, last.ckpt, lightning_logs/version_0/
    hf-run/          checkpoint-{step}/ (HF Trainer layout), model.safetensors, config.json
    keras-run/       weights.{epoch:02d}-{val_loss:.2f}.h5 (Keras 2 full-model HDF5)
    sharded-export/  model-0000{k}-of-00002.safetensors, model.safetensors.index.json
    dcp-run/         step_{s}/ (torch.distributed.checkpoint)

Same seed, same bytes (all but the legacy-format export, whose storage keys are memory addresses; its
tensors are equal). Importing this package does not import torch; building does (torch is an optional
dependency: `pip install 'ckptlab[torch]'`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import CkptlabError

MARKER = ".ckptlab-demo-complete"
DEMO_VERSION = 1  # bump when the layout changes: ensure_demo rebuilds older demos
RUNS = ("plain-pytorch", "lightning-run", "hf-run", "keras-run", "sharded-export", "dcp-run")

__all__ = ["DEMO_VERSION", "MARKER", "RUNS", "build_demo", "default_demo_dir", "ensure_demo", "is_complete"]


def default_demo_dir() -> Path:
    """Where `ensure_demo()` builds by default: `<user data dir>/ckptlab/demo`."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("ckptlab")) / "demo"


def is_complete(root: Path) -> bool:
    """True when `root` holds a finished demo of the current DEMO_VERSION."""
    try:
        info = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("demo_version") == DEMO_VERSION


def build_demo(
    root: Path, *, epochs: int = 6, seed: int = 0, progress: Callable[[str], None] | None = None
) -> Path:
    """Train the demo model for real and write every demo run under `root` (created; must not hold a demo).

    Each run trains its own model (different seeds and schedules, as separate experiments would) on the same
    dataset; the marker file is written last, so an interrupted build is recognisable. Takes a few seconds
    on one CPU core. Returns `root`.

    >>> build_demo(Path("/tmp/ckptlab-demo"), epochs=2)  # doctest: +SKIP
    PosixPath('/tmp/ckptlab-demo')
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    say = progress or (lambda _msg: None)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any((root / name).exists() for name in (*RUNS, MARKER)):
        raise FileExistsError(f"{root} already holds demo files; choose an empty directory")

    say("importing torch")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise CkptlabError(str(root), "building the demo needs torch: pip install 'ckptlab[torch]'") from None
    from . import hf_run, keras_run, torch_runs
    from .training import isolated_torch, make_dataset

    started = time.perf_counter()
    with isolated_torch():
        data = make_dataset(seed)
        say(f"plain-pytorch: training {epochs} epochs")
        torch_runs.write_plain_pytorch(root / "plain-pytorch", data, epochs, seed + 1)
        say(f"lightning-run: training {epochs} epochs")
        torch_runs.write_lightning(root / "lightning-run", data, epochs, seed + 2)
        say(f"hf-run: training {epochs} epochs")
        hf = hf_run.write_hf_run(root / "hf-run", data, epochs, seed + 3)
        say("sharded-export: sharding the hf-run model")
        hf_run.save_sharded(hf_run.hf_state_dict(hf), root / "sharded-export")
        say(f"keras-run: training {epochs} epochs")
        keras_run.write_keras(root / "keras-run", data, epochs, seed + 4)
        say(f"dcp-run: training {epochs} epochs")
        torch_runs.write_dcp(root / "dcp-run", data, epochs, seed + 5)
    info = {"demo_version": DEMO_VERSION, "epochs": epochs, "seed": seed}
    (root / MARKER).write_text(json.dumps(info) + "\n")
    say(f"demo built in {time.perf_counter() - started:.1f} s")
    return root


def ensure_demo(root: Path | None = None, *, progress: Callable[[str], None] | None = None) -> Path:
    """The demo directory, built on first use (default: `default_demo_dir()`). Returns it.

    A build goes into a hidden temporary sibling and is renamed into place, so readers never see a half-built
    demo and two processes racing both end with one complete demo. A directory without the marker (an
    interrupted build, an older demo version) is replaced.
    """
    root = Path(root) if root is not None else default_demo_dir()
    if is_complete(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    try:
        build_demo(tmp, progress=progress)
        for _ in range(5):
            try:
                os.rename(tmp, root)  # atomic; fails when root exists (and is not an empty dir)
                return root
            except OSError:
                if is_complete(root):  # another process finished first: keep theirs
                    return root
                _move_aside(root)
        raise OSError(f"could not move the demo into place at {root}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_aside(root: Path) -> None:
    """Rename a stale demo out of the way, then delete it (rename first: deleting in place is not atomic)."""
    stale = Path(tempfile.mkdtemp(prefix=f".{root.name}.stale-", dir=root.parent))
    with contextlib.suppress(FileNotFoundError):  # someone else moved it already
        os.replace(root, stale / "old")
    shutil.rmtree(stale, ignore_errors=True)
