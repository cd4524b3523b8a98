"""Checkpoint naming and run layout: what a name says (step, epoch, metrics), what is debris, which run.

Pure functions over names, paths and already-parsed documents: nothing here touches the file system or
reads the clock (callers pass `size`, `mtime` and `now` in), and nothing imports torch.

One module per job; their public names are re-exported here, and `__all__` below is the one list of them
(`from ckptlab.layouts import parse_name`):

    names    what a checkpoint's name says (`parse_name`, `NameInfo`, `TEMPLATES`) and the scanner's cheap
             pre-filter (`looks_like_checkpoint_name`, `CHECKPOINT_SUFFIXES`)
    order    the stage a checkpoint is at, content first, then the name (`stage`, `Stage`); how a run's
             checkpoints are ordered (`order_key`, `natural_key`, `sort_checkpoints`,
             `in_run_order`)
    debris   what is not, or not yet, a usable checkpoint (`debris_reason`, `unfinished_save`)
    runs     which run a checkpoint belongs to (`run_dir`, `run_dir_of_parent`)
"""

from __future__ import annotations

from .debris import debris_reason, unfinished_save
from .names import (
    CHECKPOINT_EQUALS_CHAR,
    CHECKPOINT_JOIN_CHAR,
    CHECKPOINT_NAME_LAST,
    CHECKPOINT_SUFFIXES,
    FILE_EXTENSION,
    HF_CHECKPOINT_DIR,
    HF_CHECKPOINT_PREFIX,
    MULTIFILE_PART_NAMES,
    ORBAX_TMP_DIR_SUFFIX,
    SKIP_SUFFIXES,
    TEMPLATES,
    NameInfo,
    looks_like_checkpoint_name,
    parse_name,
)
from .order import Stage, in_run_order, natural_key, order_key, sort_checkpoints, stage
from .runs import hub_repo, run_dir, run_dir_of_parent

__all__ = [
    "CHECKPOINT_EQUALS_CHAR",
    "CHECKPOINT_JOIN_CHAR",
    "CHECKPOINT_NAME_LAST",
    "CHECKPOINT_SUFFIXES",
    "FILE_EXTENSION",
    "HF_CHECKPOINT_DIR",
    "HF_CHECKPOINT_PREFIX",
    "MULTIFILE_PART_NAMES",
    "ORBAX_TMP_DIR_SUFFIX",
    "SKIP_SUFFIXES",
    "TEMPLATES",
    "NameInfo",
    "Stage",
    "debris_reason",
    "hub_repo",
    "in_run_order",
    "looks_like_checkpoint_name",
    "natural_key",
    "order_key",
    "parse_name",
    "run_dir",
    "run_dir_of_parent",
    "sort_checkpoints",
    "stage",
    "unfinished_save",
]
