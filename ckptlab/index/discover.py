"""Directory discovery: walk a root once and name every logical checkpoint in it (a file, a sharded index
with its shards, an HF checkpoint-N or DCP directory, or debris), before anything is read."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from operator import attrgetter
from pathlib import Path
from typing import NamedTuple

from ..errors import FormatError
from ..formats import sniff
from ..formats.limits import DEFAULT_LIMITS, Limits
from ..formats.multifile import PART_FOLDER, dir_layout, inside, shard_names
from ..layouts import (
    CHECKPOINT_SUFFIXES,
    HF_CHECKPOINT_DIR,
    debris_reason,
    looks_like_checkpoint_name,
    run_dir_of_parent,
    unfinished_save,
)


class Candidate(NamedTuple):
    """A logical checkpoint found on disk, before reading it. Paths are strings: a scan makes thousands."""

    path: str
    layout: str  # file | sharded | hf-checkpoint | dcp
    parts: tuple[str, ...]
    missing: tuple[str, ...] = ()
    debris: str | None = None
    # the parts' stat results when discovery had them at hand (DirEntry.stat() is cheaper than os.stat of
    # the path), or the error that stat raised, reported when the candidate is fingerprinted; None: not yet
    stats: tuple[os.stat_result, ...] | OSError | None = None
    # what the file's content was found to be when discovery had to look (a name with no checkpoint suffix),
    # so the reading pool need not look again; None: not looked at
    kind: str | None = None
    run: str | None = None  # the run, when the path alone does not say it (an HF output_dir's final save)
    # a file that is a link to a file in the root: the listed checkpoint that holds the target's bytes (the
    # target itself, or the sharded, HF or DCP checkpoint it is a part of); None for a digest-named hub
    # blob, which is not listed under its own name, and for a target no checkpoint holds
    link_to: str | None = None


def _stat_all(entries: Sequence[os.DirEntry[str]]) -> tuple[os.stat_result, ...] | OSError:
    try:
        return tuple([e.stat() for e in entries])  # follows a symlink, as os.stat does
    except OSError as err:
        return err


def _stat_one(entry: os.DirEntry[str]) -> tuple[os.stat_result] | OSError:
    try:
        return (entry.stat(),)
    except OSError as err:
        return err


_by_name = attrgetter("name")


def discover(
    root: str | os.PathLike[str], errors: list[tuple[str, str]], limits: Limits = DEFAULT_LIMITS
) -> tuple[list[Candidate], int]:
    """Every logical checkpoint under `root` and the number of files seen. Each directory is listed once.
    Symlinked directories are not followed; symlinked files only when the target stays inside the root (a
    link out of it with a checkpoint's name is reported). A file reached through a link is listed under the
    link's name; its target too, unless the target's name is a content digest: the Hugging Face hub cache
    links `snapshots/<rev>/model.safetensors` to `blobs/<sha256>`."""
    root = os.fspath(root)
    real_root = os.path.realpath(root)
    out: list[Candidate] = []
    files_seen = 0
    linked: set[str] = set()  # real paths of files listed through a link (as a checkpoint or a part)
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=_by_name)
        except OSError as e:
            errors.append((d, f"cannot read directory: {e.strerror or e}"))
            continue
        targets = _link_targets(entries)
        links = _file_links(targets, real_root)
        files = [e for e in entries if e.is_file(follow_symlinks=False) or e.name in links]
        dirs = {e.name for e in entries if e.is_dir(follow_symlinks=False)}
        layout = dir_layout({e.name for e in files}, dirs)
        consumed: set[str] = set()
        if layout is not None:  # a DCP or HF checkpoint-N directory: one checkpoint, its files are parts
            if layout == "hf-checkpoint":  # DeepSpeed's global_stepN/, FSDP's DCP folders: parts too
                files += _in_part_folders(d, sorted(dirs), real_root, errors)
                consumed.update(n for n in dirs if PART_FOLDER.fullmatch(n))
            # an output_dir holding the final save next to its checkpoint-N folders: those are walked as
            # checkpoints of their own (below), and the final save is of the same run as they are
            run = run_dir_of_parent(d) if any(map(HF_CHECKPOINT_DIR.match, dirs)) else None
            out.append(Candidate(d, layout, tuple(e.path for e in files), stats=_stat_all(files), run=run))
            linked.update(os.path.realpath(e.path) for e in files if e.is_symlink())
            files_seen += len(files)
            consumed.update(e.name for e in entries if e.name not in dirs)  # every file is a part
        names = {e.name for e in files}
        for e in files if layout is None else ():
            if e.name.endswith(".index.json"):
                shards = shard_names(Path(e.path), limits)
                if shards is None:
                    continue
                present, missing = [], []
                for s in shards:
                    # a name from the listing needs no syscall; other names (a folder in them, another case
                    # on a case-folding file system) are resolved
                    if s in names or _fileinside(os.path.join(d, s), real_root):
                        present.append(s)  # Path() joins as before: "./x" must give the same path every scan
                        if s in links:
                            linked.add(links[s])
                    else:
                        out_of_root = os.path.lexists(os.path.join(d, s))
                        missing.append(f"{s} (a link out of the root)" if out_of_root else s)
                consumed.add(e.name)
                consumed.update(shards)
                parts = (e.path, *(str(Path(d, s)) for s in present))
                out.append(Candidate(e.path, "sharded", parts, tuple(missing)))
        for e in entries:
            name = e.name
            if name in consumed:
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    why = debris_reason(name, size=None, mtime=None, now=0.0, settle_seconds=0)
                    if why is not None:  # tmp-checkpoint-*/, *.orbax-checkpoint-tmp-*/
                        out.append(Candidate(e.path, "file", (), debris=why))
                    else:
                        stack.append(e.path)
                    continue
                files_seen += 1
                if e.is_symlink() and name not in links:
                    target = targets[name]
                    if not os.path.exists(target):
                        if looks_like_checkpoint_name(name):
                            why = debris_reason(
                                name,
                                size=None,
                                mtime=None,
                                now=0.0,
                                is_symlink=True,
                                target_exists=False,
                                link_target=os.readlink(e.path),
                            )
                            out.append(Candidate(e.path, "file", (), debris=why))
                        continue
                    if os.path.isfile(target) and name.lower().endswith(CHECKPOINT_SUFFIXES):
                        errors.append((e.path, f"symlink to {target}, outside the root: not followed"))
                    continue  # never follow a link out of the root (nor a link to a directory)
                elif name not in links and not e.is_file(follow_symlinks=False):
                    continue
                n_before = len(out)
                if why := unfinished_save(name):
                    out.append(Candidate(e.path, "file", (e.path,), (), why, _stat_one(e)))
                # a checkpoint suffix is enough (a broken .pt is an error row); others need checkpoint magic
                elif name.lower().endswith(CHECKPOINT_SUFFIXES):
                    out.append(Candidate(e.path, "file", (e.path,), (), None, _stat_one(e)))
                elif (
                    looks_like_checkpoint_name(name) and not name.startswith(".") and (kind := _sniff(e.path))
                ):
                    out.append(Candidate(e.path, "file", (e.path,), (), None, _stat_one(e), kind))
                if name in links and len(out) > n_before:
                    linked.add(links[name])
                    if not _DIGEST.fullmatch(os.path.basename(links[name])):  # see the end of the walk
                        out[-1] = out[-1]._replace(
                            link_to=os.path.join(root, os.path.relpath(links[name], real_root))
                        )
            except OSError as err:
                errors.append((e.path, f"cannot stat: {err.strerror or err}"))
    if linked:
        # a link names the checkpoint whose row counts its target's bytes: the target when it is listed on
        # its own, else the multi-file checkpoint it is a part of (`sh/model.safetensors` ->
        # `hf/checkpoint-4`); a link to a file that no listed checkpoint holds is the only row of those
        # bytes. Paths compared normalized: a sharded index's parts are joined by Path ("./x" gives "x")
        holder = {os.path.normpath(p): c.path for c in out if c.layout != "file" for p in c.parts}
        holder.update((os.path.normpath(c.path), c.path) for c in out)
        out = [c._replace(link_to=holder.get(os.path.normpath(c.link_to))) if c.link_to else c for c in out]
        # a digest-named blob listed under a link's name is not listed again under its hash
        # discovery follows no folder link, so a file's real path is the root's plus the rest of its path
        out = [
            c
            for c in out
            if not (
                _DIGEST.fullmatch(os.path.basename(c.path))
                and not os.path.islink(c.path)
                and os.path.join(real_root, os.path.relpath(c.path, root)) in linked
            )
        ]
    return out, files_seen


_DIGEST = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # git's sha1 and LFS's sha256: the hub cache's blob names


def _in_part_folders(
    d: str, dirs: Sequence[str], real_root: str, errors: list[tuple[str, str]]
) -> list[os.DirEntry[str]]:
    """The files in the part folders (DeepSpeed's `global_stepN/`, FSDP's `pytorch_model_fsdp_0/` and
    `optimizer_0/`) of the HF checkpoint folder `d`."""
    out: list[os.DirEntry[str]] = []
    for name in dirs:
        if PART_FOLDER.fullmatch(name):
            try:
                with os.scandir(os.path.join(d, name)) as it:
                    entries = sorted(it, key=_by_name)
            except OSError as e:
                errors.append((os.path.join(d, name), f"cannot read directory: {e.strerror or e}"))
                continue
            links = _file_links(_link_targets(entries), real_root)
            out += [e for e in entries if e.is_file(follow_symlinks=False) or e.name in links]
    return out


def _link_targets(entries: Sequence[os.DirEntry[str]]) -> dict[str, str]:
    """name -> real path, for the entries that are symlinks (resolved once per listing)."""
    return {e.name: os.path.realpath(e.path) for e in entries if e.is_symlink()}


def _file_links(targets: dict[str, str], real_root: str) -> dict[str, str]:
    """The links of `targets` that lead to regular files inside the root."""
    return {n: t for n, t in targets.items() if inside(t, real_root) and os.path.isfile(t)}


def _fileinside(path: str, real_root: str) -> bool:
    """A regular file inside the root, reached through links or not (a shard name may hold folders)."""
    return os.path.isfile(path) and inside(os.path.realpath(path), real_root)


def _sniff(p: str) -> str | None:
    """Content check for files whose names say nothing (e.g. `model` with no suffix): the file's kind when
    it is a checkpoint's, else None. One open: the first bytes `sniff` read decide. A text file can look like
    a protocol-0 pickle, so only binary pickles (PROTO opcode) count."""
    try:
        kind, _, head = sniff(Path(p))
    except (FormatError, OSError):
        return None
    if kind in ("safetensors", "zip", "hdf5") or (kind == "pickle" and head[:1] == b"\x80"):
        return kind
    return None
