"""The central directory of a torch zip archive, read in one pass without `zipfile`.

A torch.save archive holds one member per storage, so a checkpoint with thousands of tensors has thousands
of members; `zipfile` builds a ZipInfo object per member (about 3 µs each) before anything can be checked.
This reader takes the directory in one read and keeps, per member, only what the torch reader needs, under
the same caps and ambiguity rules as `zipsafe.open_zip` (which `zipfile`-based readers keep using).
"""

from __future__ import annotations

import struct
import zlib
from typing import IO, NamedTuple, NoReturn

from ..errors import FormatError, LimitError
from .limits import Limits
from .zipsafe import ambiguous_names, central_directory, local_header_lengths

# the 46-byte central directory file header, fields this reader does not use skipped (x): signature,
# version needed, flags, method, CRC, compressed size, size, name/extra/comment lengths, local header offset
_CD_ENTRY = struct.Struct("<4s2xBxHH4xIIIHHH8xI")
_CD_SIG = b"PK\x01\x02"
_MAX_DIRECTORY_BYTES = 64 * 1024 * 1024
_U32 = 0xFFFFFFFF
_MAX_EXTRACT_VERSION = 63  # zipfile's limit


class Member(NamedTuple):
    name: str
    header_offset: int  # absolute offset of the local header
    compress_type: int
    file_size: int
    compress_size: int
    crc: int
    flag_bits: int


class ZipDirectory:
    """Members of a zip archive by name. `f` is any seekable binary stream (a file, or a Region of one)."""

    def __init__(self, f: IO[bytes], size: int, path: str, limits: Limits) -> None:
        self.f, self.size, self.path = f, size, path
        self.max_member_bytes = limits.max_pickle_bytes
        try:
            total, start, length, declared_start = central_directory(f, size)
        except FormatError as e:
            raise FormatError(path, e.cause) from None
        if total > limits.max_zip_entries:
            raise LimitError(path, f"zip declares {total} entries, over the cap of {limits.max_zip_entries}")
        if length > _MAX_DIRECTORY_BYTES:
            raise LimitError(path, f"zip central directory is {length} bytes, over the cap")
        f.seek(start)
        buf = f.read(length)
        if len(buf) != length:
            raise FormatError(path, "damaged zip archive (central directory truncated)")
        # data prepended to the archive shifts every offset by the same amount (as zipfile allows)
        self.members = _parse(buf, start - declared_start, limits.max_zip_entries, path)
        ambiguous_names(self.members, path)

    def namelist(self) -> list[str]:
        return list(self.members)

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def data_offset(self, m: Member, check_name: bool = False) -> int:
        """Absolute offset of a member's first byte, past its local header. `check_name`: the local header
        must name the same member as the directory (as zipfile checks before reading one)."""
        if not 0 <= m.header_offset < self.size:
            raise FormatError(
                self.path, f"zip member {m.name}: local header offset {m.header_offset} is outside the file"
            )
        lengths = local_header_lengths(self.f, m.header_offset)
        if lengths is None:
            raise FormatError(self.path, f"zip member {m.name}: local header missing or damaged")
        name_len, extra_len = lengths
        if check_name:  # the name follows the 30-byte header just read
            local = self.f.read(name_len)
            if local != m.name.encode("utf-8" if m.flag_bits & 0x800 else "cp437", "replace"):
                self._damaged(m.name, f"File name in directory {m.name!r} and header {local!r} differ")
        off = m.header_offset + 30 + name_len + extra_len
        if off + m.compress_size > self.size:
            raise FormatError(self.path, f"zip member {m.name} runs past the end of the file (truncated)")
        return off

    def read_stored(self, name: str) -> bytes:
        """A stored (uncompressed) member, read at its data offset as torch does, CRC-checked; flag bits
        such as 'encrypted' that scanners trip over are refused rather than ignored."""
        m = self.stored(name)
        if m.flag_bits & 0x1:
            raise FormatError(self.path, f"archive member {name} is marked encrypted")
        # no local-name check here: torch's reader does not make one either, and what torch would load is
        # what must be checked
        self.f.seek(self.data_offset(m))
        raw = self.f.read(m.file_size)
        if len(raw) != m.file_size:
            raise FormatError(self.path, f"archive member {name} is truncated")
        if zlib.crc32(raw) != m.crc:
            raise FormatError(self.path, f"archive member {name} fails its CRC-32 check (damaged file)")
        return raw

    def read_small(self, name: str) -> bytes:
        """A small member torch reads by name (`byteorder`, `version`): stored or deflated, its declared
        size capped before anything is inflated, CRC-checked."""
        m = self.members[name]
        if m.file_size > self.max_member_bytes:
            raise LimitError(
                self.path,
                f"zip member {name} declares {m.file_size} bytes, over the cap of {self.max_member_bytes}",
            )
        if m.flag_bits & 0x1:
            self._damaged(name, "file is encrypted")
        if m.compress_type not in (0, 8):
            self._damaged(name, "That compression method is not supported")
        self.f.seek(self.data_offset(m, check_name=True))
        raw = self.f.read(m.compress_size)
        if m.compress_type == 8:
            try:
                raw = zlib.decompressobj(-15).decompress(raw, m.file_size)
            except zlib.error as e:
                self._damaged(name, str(e))
        if len(raw) != m.file_size or zlib.crc32(raw) != m.crc:
            self._damaged(name, "Bad CRC-32 or size")
        return raw

    def _damaged(self, name: str, why: str) -> NoReturn:
        raise FormatError(self.path, f"zip member {name} is damaged or unsupported ({why})")

    def stored(self, name: str) -> Member:
        m = self.members.get(name)
        if m is None:
            raise FormatError(self.path, f"archive member {name} is missing (truncated or damaged archive)")
        if m.compress_type != 0:
            raise FormatError(
                self.path, f"archive member {name} is compressed; torch.save never compresses (refusing)"
            )
        return m


def _parse(buf: bytes, shift: int, cap: int, path: str) -> dict[str, Member]:
    members: dict[str, Member] = {}
    unpack, new = _CD_ENTRY.unpack_from, tuple.__new__
    pos, end = 0, len(buf)
    while pos < end:
        if pos + 46 > end:
            raise FormatError(path, "damaged zip archive (central directory entry truncated)")
        sig, need, flags, method, crc, csize, usize, nlen, elen, clen, off = unpack(buf, pos)
        if sig != _CD_SIG:
            raise FormatError(path, "damaged zip archive (bad magic number for central directory)")
        if need > _MAX_EXTRACT_VERSION:  # a feature (as zipfile sees it) this reader lacks
            v = need / 10
            raise FormatError(path, f"damaged zip archive (zip file version {v:.1f} is not supported)")
        name_end = pos + 46 + nlen
        nxt = name_end + elen + clen
        if nxt > end:
            raise FormatError(path, "damaged zip archive (central directory entry truncated)")
        raw = buf[pos + 46 : name_end]
        if not raw:
            raise FormatError(path, "damaged zip archive (a member has an empty name)")
        try:
            name = raw.decode("ascii")  # the same in both encodings below, and decoded fastest
        except UnicodeDecodeError:
            name = raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        if usize == _U32 or csize == _U32 or off == _U32:
            usize, csize, off = _zip64(buf[name_end : name_end + elen], usize, csize, off, path)
        if name in members:
            raise FormatError(path, f"ambiguous zip archive: member {name!r} appears twice")
        if len(members) >= cap:
            raise LimitError(path, f"zip central directory holds more than {cap} entries")
        members[name] = new(Member, (name, off + shift, method, usize, csize, crc, flags))
        pos = nxt
    return members


def _zip64(extra: bytes, usize: int, csize: int, offset: int, path: str) -> tuple[int, int, int]:
    """Sizes and offset from the zip64 extended-information extra field (only the fields that overflowed
    in the fixed header are stored there, in this order)."""
    i = 0
    while i + 4 <= len(extra):
        tag, ln = struct.unpack_from("<HH", extra, i)
        if tag == 1:
            data, j = extra[i + 4 : i + 4 + ln], 0
            vals = []
            for v in (usize, csize, offset):
                if v == _U32:
                    if j + 8 > len(data):
                        raise FormatError(path, "damaged zip archive (corrupt zip64 extra field)")
                    vals.append(struct.unpack_from("<Q", data, j)[0])
                    j += 8
                else:
                    vals.append(v)
            return vals[0], vals[1], vals[2]
        i += 4 + ln
    raise FormatError(path, "damaged zip archive (zip64 sizes without a zip64 extra field)")
