"""Format detection by content and the one entry point `read_meta(path)`.

`detect` never trusts an extension: it reads the first bytes (and, for zips, the member list). Every reader
has the same shape, `read_<format>(path, limits) -> CheckpointMeta`, raising FormatError on bad input; some
take what detection already read (the first bytes, an open zip) so a file is not opened twice.
"""

from __future__ import annotations

import functools
import gc
import os
import stat
import struct
import threading
from pathlib import Path

from ..errors import CkptlabError, FormatError, IncompleteError
from ..model import CheckpointMeta
from .limits import DEFAULT_LIMITS, Limits

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_PICKLE_START = set(b"c(]})NILFSVGXUTJKMhq") | {0x80}


def _hdf5_at(fd: int, size: int) -> bool:
    # HDF5 allows a user block before the superblock: the signature may sit at 0 (checked by the caller on
    # the head), 512, 1024, 2048...
    off = 512
    while off + 8 <= size and off <= 1 << 20:
        if os.pread(fd, 8, off) == HDF5_SIGNATURE:
            return True
        off *= 2
    return False


def detect_file(path: Path) -> str:
    """Content-detected kind of a single file: a FORMATS name, or 'zip', 'pickle', 'index-json'."""
    return sniff(path)[0]


Sniffed = tuple[str, int, bytes]  # (kind, size, first bytes)

# no blocking on a FIFO (it is refused as not a regular file once open); binary on Windows
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


def sniff(path: Path) -> Sniffed:
    """(kind, size, first bytes): the first 4 KiB hold most safetensors headers of small files, so the
    reader can parse them without opening the file again."""
    p = str(path)
    try:
        sniffed = _probe(p)
    except OSError as e:
        raise FormatError(p, f"cannot read: {e.strerror or e}") from None
    if sniffed is None:
        raise FormatError(p, "not a regular file")
    return sniffed


def _probe(p: str) -> Sniffed | None:
    """One open + fstat: None for a directory, else what the file's first bytes say. A raw descriptor, no
    file object, and no separate stat: this runs once per file of a scan. O_NONBLOCK: a FIFO must not block
    the open (it is refused as not a regular file). Raises OSError (FileNotFoundError...)."""
    try:
        fd = os.open(p, OPEN_FLAGS)
    except (IsADirectoryError, PermissionError):  # where directories cannot be opened (Windows)
        if os.path.isdir(p):
            return None
        raise
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            return None
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block reads or never end
            raise FormatError(p, "not a regular file")
        return _sniff_fd(fd, p, st.st_size)
    finally:
        os.close(fd)


def _sniff_fd(fd: int, p: str, size: int) -> Sniffed:
    head = os.read(fd, 4096)
    if size == 0 or not head:  # (a file can shrink between the stat and the read)
        raise FormatError(p, "empty file (0 bytes)")
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip", size, head
    if head[:8] == HDF5_SIGNATURE:
        return "hdf5", size, head
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors", size, _with_whole_header(fd, head, size)
    # an HDF5 user block puts the signature at 512, 1024, ...: probed only when nothing matched
    if head[0] not in _PICKLE_START and _hdf5_at(fd, size):
        return "hdf5", size, head
    if head.lstrip()[:1] == b"{":
        return "index-json", size, head
    if len(head) > 262 and head[257:262] == b"ustar":
        raise FormatError(p, "a tar archive (the PyTorch < 0.1.10 format) is not supported")
    if head[:2] == b"\x1f\x8b":
        raise FormatError(p, "gzip-compressed file: decompress it first")
    if head[:6] == b"\x93NUMPY":
        raise FormatError(p, "a NumPy .npy array, not a checkpoint")
    if head[:6] == b"7z\xbc\xaf\x27\x1c":
        raise FormatError(p, "a 7z archive, not a checkpoint")
    if head[0] in _PICKLE_START:
        return "pickle", size, head
    if len(head) < 8:
        raise FormatError(p, f"file too small to be a checkpoint ({size} bytes)")
    raise FormatError(p, f"unrecognised format (first bytes {head[:8].hex(' ')})")


_WHOLE_HEADER_MAX = 1 << 20  # a header of ~10,000 tensors; a longer one is read by the reader, under its cap


def _with_whole_header(fd: int, head: bytes, size: int) -> bytes:
    """`head` extended to the whole safetensors header when it is longer than the first read: a big model's
    header is tens of KiB, and reading the rest here spares the reader opening the file again."""
    (n,) = struct.unpack_from("<Q", head)
    want = 8 + n
    if len(head) >= want or want > min(size, _WHOLE_HEADER_MAX):
        return head
    rest = os.read(fd, want - len(head))
    return head + rest  # short (the file shrank): the reader sees too few bytes and reads on its own


def detect(path: str | os.PathLike[str]) -> str:
    """The checkpoint format of a file or directory (one of model.FORMATS)."""
    return read_meta(path).format


class _GcPause:
    """The cyclic garbage collector off while metadata is read or a scan's bookkeeping runs. Both build
    thousands of small acyclic objects (one or two per tensor, one entry per checkpoint), and every 700
    allocations the collector would traverse them, and now and then everything the process holds: 10-30 % of
    a read, and several ms at once in a fresh process. Neither leaves reference cycles behind (a test checks
    the readers); the collector runs again once the last of concurrent users (the scanner's threads) is
    done. A class rather than @contextmanager: this wraps every file of a scan."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.readers = 0
        self.reenable = False

    def __enter__(self) -> None:
        with self.lock:
            if self.readers == 0:
                self.reenable = gc.isenabled()  # never turn on a collector the application turned off
                gc.disable()
            self.readers += 1

    def __exit__(self, *exc: object) -> None:
        self._leave(promote=False)

    def _leave(self, promote: bool) -> None:
        with self.lock:
            self.readers -= 1
            if self.readers == 0 and self.reenable:
                if promote and gc.get_freeze_count() == 0:
                    # freeze + unfreeze moves every tracked object to the oldest generation, in O(1): what
                    # the block built is not traversed by the young collection that re-enabling would start
                    # at once (3-5 ms after a scan's bookkeeping); a full collection still sees all of it.
                    # Not when the host froze objects itself (a pre-fork server): unfreeze would thaw them
                    gc.freeze()
                    gc.unfreeze()
                gc.enable()

    def keeping(self) -> _Keeping:
        """The same pause, for a block whose objects mostly outlive it (a scan's index rows)."""
        return _Keeping(self)


class _Keeping:
    __slots__ = ("pause",)

    def __init__(self, pause: _GcPause) -> None:
        self.pause = pause

    def __enter__(self) -> None:
        self.pause.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.pause._leave(promote=True)


gc_paused = _GcPause()
_SMALL_FILE = 1 << 20


def read_meta(
    path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS, *, within: str | None = None
) -> CheckpointMeta:
    """Metadata of one logical checkpoint (file, sharded index, HF checkpoint dir, DCP dir), headers only.
    `within`: a real path (a scan's root) that no part of a multi-file checkpoint may leave through a link.

    >>> read_meta("model.safetensors").n_params  # doctest: +SKIP
    124439808
    """
    p = os.fspath(path)  # a str all the way down for file readers: a Path costs more than a small file's read
    try:
        try:
            sniffed = _probe(p)
        except FileNotFoundError:
            raise FormatError(p, "no such file or directory") from None
        if sniffed is None:
            from .multifile import read_directory

            with gc_paused:
                return read_directory(Path(p), limits, within)
        part_of = _part_of_directory(p, sniffed[0])
        if part_of is not None:
            raise FormatError(p, part_of)
        if sniffed[1] < _SMALL_FILE:  # too few objects for the collector to matter
            return read_file(p, limits, sniffed, within)
        with gc_paused:
            return read_file(p, limits, sniffed, within)
    except CkptlabError as e:
        if e.path is None:  # inner layers raise without a path; name the file for the user
            raise type(e)(p, e.cause) from None
        raise
    except MemoryError:
        raise FormatError(p, "ran out of memory while reading metadata") from None
    except RecursionError:
        raise FormatError(p, "structure nested too deeply") from None
    except OSError as e:
        raise FormatError(p, f"cannot read: {e.strerror or e}") from None
    except Exception as e:  # a reader's bug met by some file: one line naming it, and a scan goes on
        raise FormatError(p, f"unexpected {type(e).__name__} while reading ({e}); please report it") from e


# the JSON files that transformers, PEFT and the Trainer write beside the weights (lower-case: a case-folding
# file system opens `Config.JSON` as `config.json`)
_HF_FOLDER_JSON = frozenset(
    {
        "config.json", "generation_config.json", "adapter_config.json", "trainer_state.json",
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
        "vocab.json", "preprocessor_config.json", "processor_config.json", "chat_template.json",
        "all_results.json", "train_results.json", "eval_results.json",
    }
)  # fmt: skip


def _part_of_directory(p: str, kind: str) -> str | None:
    """Why the file `p` is to be inspected as its directory, or None. Read alone, a DCP shard looks like a
    torch.save archive of one tensor, DCP's `.metadata` like a pickle of unknown classes, and the JSON of
    an HF folder like a broken index; the folder holds the checkpoint. Only these names cost a listing.
    torch.save files beside them (optimizer.pt, rng_state.pth) and weight indexes stay readable alone:
    any JSON but the ones an HF folder is known to hold, whatever its name (`weights.index.JSON`, an
    `index_backup.json` copy), is read as an index, or reports why it is none."""
    name = os.path.basename(p)
    # multifile.DCP_METADATA, spelled out: multifile is imported only past this test, not once per file
    dcp_part = name == ".metadata" or name.endswith(".distcp")
    if not dcp_part and kind != "index-json":
        return None
    if not dcp_part and name.lower() not in _HF_FOLDER_JSON:
        return None
    from .multifile import DCP_METADATA, HF_INDEXES, HF_WEIGHTS, dir_layout

    folder = os.path.dirname(p) or os.curdir
    try:
        with os.scandir(folder) as it:
            listing = list(it)
    except OSError:  # the file's own reader reports what is wrong
        return None
    files = {e.name for e in listing if e.is_file()}
    layout = dir_layout(files, [e.name for e in listing if e.is_dir()])
    if dcp_part:
        if layout != "dcp":  # a shard without its index: not a checkpoint directory
            return None
        what = "the index" if name == DCP_METADATA else "a shard"
        return f"{what} of the torch.distributed.checkpoint directory {folder}: inspect the directory"
    if layout == "hf-checkpoint":
        what = "checkpoint"
    elif layout is None and not files.isdisjoint(HF_WEIGHTS + HF_INDEXES):
        what = "model"  # a save_pretrained folder: weights (or their index) and the model's config
    else:
        return None
    return f"a part of the Hugging Face {what} directory {folder}: inspect the directory"


def read_file(
    path: str | Path,
    limits: Limits = DEFAULT_LIMITS,
    sniffed: Sniffed | None = None,
    within: str | None = None,
) -> CheckpointMeta:
    """Metadata of one file, dispatched on its content (`sniffed`: what `sniff` already found). A zip or
    pickle that cannot be read is an error that names the unsafe globals found in it: torch.load may still
    unpickle what ckptlab refuses; such an error carries what the scan found as `unsafe_globals`."""
    kind, size, head = sniffed or sniff(Path(path))
    try:
        return _dispatch(path, kind, limits, (size, head), within)
    except FormatError as e:
        if kind not in ("zip", "pickle") or isinstance(e, IncompleteError):
            raise
        from .globals_scan import unsafe_globals_in_file

        found = unsafe_globals_in_file(Path(path), limits)
        if not found:
            e.unsafe_globals = found  # scanned: a caller need not scan again
            raise
        note = f"; it references unsafe globals {', '.join(found)}"
        err = type(e)(e.path or str(path), e.cause + note)
        err.unsafe_globals = found
        raise err from None


def _dispatch(
    path: str | Path,
    kind: str,
    limits: Limits,
    prefix: tuple[int, bytes],
    within: str | None = None,
) -> CheckpointMeta:
    if kind == "safetensors":
        return _readers().safetensors(path, limits, prefix)
    if kind == "zip":
        return _read_zip(path, limits)
    if kind == "pickle":
        return _readers().legacy(path, limits)
    if kind == "hdf5":
        from .hdf5_reader import read_hdf5

        return read_hdf5(Path(path), limits)
    if kind == "index-json":
        from .multifile import read_index

        return read_index(Path(path), limits, within)
    raise FormatError(str(path), f"unrecognised format {kind}")  # pragma: no cover


class _Readers:
    """The per-file readers, imported on first use (so `import ckptlab` stays light) and then held, so a
    scan does not run an import statement per file."""

    def __init__(self) -> None:
        from .safetensors_reader import read_safetensors
        from .torch_reader import find_prefix, read_torch_legacy, read_torch_zip
        from .zipdir import ZipDirectory

        self.safetensors = read_safetensors
        self.legacy = read_torch_legacy
        self.torch_zip = read_torch_zip
        self.find_prefix = find_prefix
        self.zip_directory = ZipDirectory


@functools.cache
def _readers() -> _Readers:
    return _Readers()


def _read_zip(path: str | Path, limits: Limits) -> CheckpointMeta:
    r = _readers()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        zd = r.zip_directory(f, size, str(path), limits)
        prefix = r.find_prefix(zd.members)
        if prefix is not None:
            return r.torch_zip(path, limits, opened=(f, zd, size, prefix))
        if "config.json" in zd or "model.weights.h5" in zd:
            from .hdf5_reader import read_keras

            return read_keras(path, limits)
    raise FormatError(str(path), "zip archive without data.pkl or model.weights.h5: not a checkpoint")
