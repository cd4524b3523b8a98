"""Which run a checkpoint belongs to: the directory holding its series (`run_dir`), by path logic alone."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from .names import CHECKPOINT_EQUALS_CHAR, parse_name, split_extension

_CONTAINER_DIR = "checkpoints"  # Lightning's ModelCheckpoint dirpath: <run>/checkpoints/
_CLIMB_TEMPLATES = ("hf", "global_step", "step", "iter", "epoch")
_CLIMB_LEVELS = 3
HUB_KINDS = ("models", "datasets", "spaces")  # the Hugging Face hub cache's `<kind>--<org>--<name>` folders
_HUB_REPOS = tuple(f"{kind}--" for kind in HUB_KINDS)


def _is_step_dir(name: str) -> bool:
    return split_extension(name)[1] == "" and parse_name(name).template in _CLIMB_TEMPLATES


def run_dir(checkpoint_path: str | os.PathLike[str]) -> Path:
    """The run a checkpoint belongs to: the directory holding its series. Path logic only, no I/O.

    >>> [run_dir(p).as_posix() for p in (
    ...     "lightning_logs/version_0/checkpoints/epoch=0-step=10.ckpt",  # Lightning: above checkpoints/
    ...     "out/checkpoint-300",                                         # HF: the output dir
    ...     "runs/x/step_100",                                            # DCP step directory
    ...     "ds/global_step500",                                          # DeepSpeed tag directory
    ...     "out/checkpoint-500/global_step500",                          # DeepSpeed inside HF
    ...     "mega/iter_0001000/mp_rank_00/model_optim_rng.pt",            # a file inside a step dir
    ...     "plain/checkpoint_epoch_4.pth",                               # otherwise: the parent
    ...     "hub/models--org--gpt/snapshots/4f2a/model.safetensors")]     # HF hub cache: the repository
    ['lightning_logs/version_0', 'out', 'runs/x', 'ds', 'out', 'mega', 'plain', 'hub/models--org--gpt']

    Rules, in order: (0) in the Hugging Face hub cache, `models--<org>--<name>/snapshots/<revision>/...`
    (and `blobs/`) is the repository folder, its revisions the checkpoints of one series; (1) a path
    inside a step directory (`checkpoint-N`, `global_stepN`, `step_N`, `epoch_N`, `iter_N`; up to 3 levels
    up, the outermost wins) stands for that directory - bare-number names (Orbax) are not climbed out of,
    `/data/2024/model.pt` is not step 2024; (2) the run is the parent, except that a parent named
    `checkpoints` is a container and the run is the one above it (Lightning's layout; the same for an HF
    `output_dir="checkpoints"`), also when folders with a `=` in their name lie between (Lightning makes
    those from a `/` in a metric name; elsewhere, e.g. Hydra's `lr=0.1` run folders, a `=` folder is the
    run).
    """
    return Path(run_dir_of_parent(str(Path(checkpoint_path).parent)))


@lru_cache(maxsize=16384)
def run_dir_of_parent(parent: str) -> str:
    """`run_dir` of any checkpoint directly inside the directory `parent`, as a string: the answer depends
    on the parent alone, so a scanner asks once per directory (memoised) instead of once per checkpoint.

    >>> run_dir_of_parent("lightning_logs/version_0/checkpoints"), run_dir_of_parent("out/checkpoint-500")
    ('lightning_logs/version_0', 'out')
    """
    p = Path(parent)
    parts = p.parts
    for i in range(len(parts) - 1, 0, -1):  # at any depth: a revision holds folders of its own (diffusers)
        if parts[i] in ("snapshots", "blobs") and parts[i - 1].startswith(_HUB_REPOS):
            return str(Path(*parts[:i]))
    start = None  # None: the checkpoint itself, whose parent is `p`
    for ancestor in [p, *p.parents][:_CLIMB_LEVELS]:
        if _is_step_dir(ancestor.name):
            start = ancestor
    base = p if start is None else start.parent
    above = base
    for _ in range(_CLIMB_LEVELS):
        if CHECKPOINT_EQUALS_CHAR not in above.name:
            break
        above = above.parent
    if above.name == _CONTAINER_DIR:
        return str(above.parent)
    return str(base)


def hub_repo(name: str) -> str | None:
    """The repo id a Hugging Face hub cache folder stands for, else None.

    >>> hub_repo("models--meta-llama--Llama-3.1-8B"), hub_repo("datasets--org--set"), hub_repo("models")
    ('meta-llama/Llama-3.1-8B', 'datasets/org/set', None)
    """
    kind, sep, repo = name.partition("--")
    if not sep or not repo or kind not in HUB_KINDS:
        return None
    repo = repo.replace("--", "/")
    return repo if kind == "models" else f"{kind}/{repo}"
