"""Debris: files and directories that are not, or not yet, a usable checkpoint (in-progress saves, tuner
leftovers, temporary and partial files, zero-byte files, dangling symlinks, files still being written).
"""

from __future__ import annotations

import re

from .names import CHECKPOINT_SUFFIXES, ORBAX_TMP_DIR_SUFFIX

# (pattern searched in the lower-cased name, reason), tried in order. Only names real tools write.
_DEBRIS_NAMES = (
    (re.compile(r"^tmp-checkpoint-"), "in-progress save (tmp-checkpoint-*)"),  # HF Trainer's staging dir
    (re.compile(re.escape(ORBAX_TMP_DIR_SUFFIX)), "in-progress save (*.orbax-checkpoint-tmp-*)"),
    (re.compile(r"^\.lr_find_.*\.ckpt$"), "leftover Lightning tuner checkpoint (.lr_find_*.ckpt)"),
    (
        re.compile(r"^\.scale_batch_size_.*\.ckpt$"),
        "leftover Lightning tuner checkpoint (.scale_batch_size_*.ckpt)",
    ),
    (re.compile(r"\.tmp$"), "temporary file (*.tmp)"),  # e.g. DCP's .metadata.tmp, renamed when done
    (re.compile(r"\.incomplete$"), "incomplete download (*.incomplete)"),  # huggingface_hub cache blobs
    (re.compile(r"\.(?:part|partial|crdownload)$"), "partial download (*.part)"),
)
# all of them in one pattern: a scan asks about every file and nearly every answer is no
_ANY_DEBRIS_NAME = re.compile("|".join(f"(?:{pattern.pattern})" for pattern, _ in _DEBRIS_NAMES))


def unfinished_save(name: str) -> str | None:
    """Why a file is a save that never finished — a checkpoint name plus a temporary suffix
    (`model.pth.tmp`, `x.ckpt.partial`) — or None.

    >>> unfinished_save("model_best.pth.tmp")
    'temporary file (*.tmp)'
    >>> unfinished_save("notes.tmp") is None
    True
    """
    stem, dot, _ = name.lower().rpartition(".")
    if not (dot and stem.endswith(CHECKPOINT_SUFFIXES)):  # the cheap test first: the scanner asks per file
        return None
    return debris_reason(name, size=None, mtime=None, now=0.0, settle_seconds=0)


# Files that are empty on purpose.
_EMPTY_MARKERS = ("orbax.checkpoint", "commit_success.txt")


def debris_reason(
    name: str,
    *,
    size: int | None,
    mtime: float | None,
    now: float,
    is_symlink: bool = False,
    target_exists: bool = True,
    settle_seconds: float = 5.0,
    link_target: str | None = None,
) -> str | None:
    """Why a file or directory is debris (not, or not yet, a usable checkpoint), or None.

    Checks, first hit wins: a dangling symlink; a temporary / in-progress name; a zero-byte file (`size`
    is None for directories); modified less than `settle_seconds` ago (`now` and `mtime` in the same
    clock, e.g. `time.time()` and `st_mtime`; a `settle_seconds` of 0 turns this off). A future `mtime`
    within `settle_seconds` counts as recent (clock skew on a network file system); further out, not.

    >>> debris_reason("tmp-checkpoint-300", size=None, mtime=0.0, now=100.0)
    'in-progress save (tmp-checkpoint-*)'
    >>> debris_reason("model.safetensors", size=0, mtime=0.0, now=100.0)
    'zero-byte file'
    >>> debris_reason("model.safetensors", size=10, mtime=98.0, now=100.0)
    'modified 2.0 s ago (may still be being written)'
    >>> debris_reason("last.ckpt", size=None, mtime=None, now=0.0, is_symlink=True, target_exists=False,
    ...               link_target="epoch=2-step=300.ckpt")
    'dangling symlink -> epoch=2-step=300.ckpt'
    >>> debris_reason("epoch=2-step=300.ckpt", size=10, mtime=0.0, now=100.0) is None
    True
    """
    if is_symlink and not target_exists:
        return f"dangling symlink -> {link_target}" if link_target else "dangling symlink"
    low = name.rstrip("/").lower()
    if _ANY_DEBRIS_NAME.search(low):
        for pattern, reason in _DEBRIS_NAMES:
            if pattern.search(low):
                return reason
    if size == 0 and low not in _EMPTY_MARKERS:
        return "zero-byte file"
    if mtime is not None and settle_seconds > 0:
        age = now - mtime
        if 0 <= age < settle_seconds:
            return f"modified {age:.1f} s ago (may still be being written)"
        if -settle_seconds < age < 0:
            return f"modified {-age:.1f} s in the future (clock skew? may still be being written)"
    return None
