"""Reading what a GGUF file says about itself (header, metadata, tensor table) at the speed of the disk.

`read_gguf(path)` walks the header, every key-value pair and the tensor table with `struct` over an mmap
of the file and returns a `GGUFFacts`: the scalar metadata (strings decoded), where each array lies (its
element type, count and offset: fixed-size arrays are skipped arithmetically; string arrays such as a
262k-token vocabulary are walked by their lengths, never decoded), and where the tensor data ends. It
never builds the token list, which is what makes `gguf.GGUFReader` take ~24 s on Gemma 3's GGUF: this
takes a fraction of a second (the string walk is most of it).

Anything that is not a well-formed GGUF raises `GGUFError` with one line saying what is wrong and where;
the checks are the ones llama.cpp's own loader makes (magic, version, key and type codes, duplicate keys,
alignment, tensor types, dimensions, offsets), so a file that passes reaches llama.cpp only to be loaded.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32  # GGUF's default for the tensor data section
MAX_DIMS = 4  # GGML_MAX_DIMS

# GGUF metadata value types: code -> (struct format, size); 8 = string, 9 = array
_FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
TYPE_NAMES = {
    0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32", 6: "float32", 7: "bool",
    8: "string", 9: "array", 10: "uint64", 11: "int64", 12: "float64",
}  # fmt: skip

# ggml tensor types: code -> (elements per block, bytes per block), as in ggml's type traits (and
# gguf.constants.GGML_QUANT_SIZES); codes 4, 5, 31-33, 36-38 were removed from ggml and are refused by it.
GGML_BLOCKS = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}  # fmt: skip


class GGUFError(ValueError):
    """A file that is not a readable GGUF; the message is one line saying what is wrong."""


@dataclass(frozen=True)
class GGUFArray:
    """Where an array value lies in the file: its element type code, count and first element's offset."""

    type: int
    count: int
    offset: int


@dataclass
class GGUFFacts:
    """What a GGUF file says about itself, read without loading it (see `read_gguf`)."""

    path: str
    file_size: int
    version: int
    n_tensors: int  # tensors in this file (a split part holds some of the model's)
    metadata: dict[str, Any]  # scalar values by key, strings decoded
    arrays: dict[str, GGUFArray] = field(default_factory=dict)  # array values by key, not read
    alignment: int = DEFAULT_ALIGNMENT
    data_offset: int = 0  # where the tensor data section starts
    data_end: int = 0  # the end of the last byte any tensor needs (at most file_size in a whole file)

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) and arch else None

    @property
    def context_length(self) -> int | None:
        """The training context length (`{arch}.context_length`), when the file states it."""
        n = self.metadata.get(f"{self.architecture}.context_length")
        return int(n) if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None

    @property
    def chat_template(self) -> str | None:
        t = self.metadata.get("tokenizer.chat_template")
        return t if isinstance(t, str) and t.strip() else None

    @property
    def has_chat_template(self) -> bool:
        return self.chat_template is not None

    @property
    def split_count(self) -> int:
        """How many files the model is split into (1: not split)."""
        n = self.metadata.get("split.count", 0)
        return max(1, int(n)) if isinstance(n, int) else 1

    @property
    def split_index(self) -> int:
        """This file's place among the split parts, from 0 (`split.no`)."""
        n = self.metadata.get("split.no", 0)
        return int(n) if isinstance(n, int) else 0

    @property
    def n_vocab(self) -> int | None:
        tokens = self.arrays.get("tokenizer.ggml.tokens")
        return tokens.count if tokens is not None else None

    @property
    def truncated(self) -> bool:
        return self.data_end > self.file_size


def read_gguf(path: str | Path) -> GGUFFacts:
    """The header, metadata and tensor table of a GGUF file; `GGUFError` when it is not one or is damaged.

    Truncation is reported, not raised: `facts.truncated` when some tensor's data lies past the end."""
    path = Path(path)
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        magic = f.read(4)
        if magic != GGUF_MAGIC:
            raise GGUFError(f"not a GGUF file (it starts with {magic!r}, GGUF files with {GGUF_MAGIC!r})")
        if size < 24:
            raise GGUFError(f"damaged or truncated GGUF file: {size} bytes, too short for a GGUF header")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            try:
                return _Walker(mm, size, str(path)).facts()
            except struct.error:
                raise GGUFError(
                    f"damaged or truncated GGUF file: its metadata or tensor table runs past the end ({size} bytes)"
                ) from None


class _Walker:
    """One pass over the file's header, key-value pairs and tensor table."""

    def __init__(self, mm: mmap.mmap, size: int, path: str):
        self.mm, self.size, self.path, self.off = mm, size, path, 4
        self.u32 = struct.Struct("<I").unpack_from
        self.u64 = struct.Struct("<Q").unpack_from

    def facts(self) -> GGUFFacts:
        (version,) = self.u32(self.mm, 4)
        if version & 0xFFFF == 0 and version:
            raise GGUFError("a big-endian (byte-swapped) GGUF file; llama.cpp here reads little-endian ones")
        if version not in (2, 3):
            raise GGUFError(f"GGUF version {version} is not supported (llama.cpp reads versions 2 and 3)")
        n_tensors, n_kv = struct.unpack_from("<QQ", self.mm, 8)
        self.off = 24
        left = self.size - self.off
        if n_kv > left // 13 or n_tensors > left // 24 + 1:  # each pair, each tensor needs at least that many bytes
            raise GGUFError(
                f"damaged or truncated GGUF file: its header claims {n_kv} metadata keys and {n_tensors} tensors, "
                f"more than fit in its {self.size} bytes"
            )
        meta: dict[str, Any] = {}
        arrays: dict[str, GGUFArray] = {}
        for i in range(n_kv):
            key = self._key(f"metadata key {i + 1} of {n_kv}")
            if key in meta or key in arrays:
                raise GGUFError(f"damaged GGUF metadata: duplicate key '{key}'")
            (vtype,) = self.u32(self.mm, self.off)
            self.off += 4
            if vtype == _ARRAY:
                arrays[key] = self._array(key)
            else:
                meta[key] = self._scalar(vtype, key)
        alignment = meta.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise GGUFError(f"damaged GGUF metadata: general.alignment is {alignment!r}, not a power of two")
        need = 0
        for i in range(n_tensors):
            need = max(need, self._tensor(i, n_tensors, alignment))
        data_offset = -(-self.off // alignment) * alignment
        return GGUFFacts(
            path=self.path, file_size=self.size, version=version, n_tensors=n_tensors, metadata=meta,
            arrays=arrays, alignment=alignment, data_offset=data_offset, data_end=data_offset + need,
        )  # fmt: skip

    def _string(self, what: str) -> str:
        (n,) = self.u64(self.mm, self.off)
        start = self.off + 8
        if n > self.size - start:
            raise GGUFError(f"damaged or truncated GGUF file: {what} is {n} bytes long, past the end of the file")
        self.off = start + n
        return self.mm[start : self.off].decode("utf-8", errors="replace")

    def _key(self, what: str) -> str:
        key = self._string(what)
        if not key:
            raise GGUFError(f"damaged GGUF metadata: {what} is empty")
        return key

    def _scalar(self, vtype: int, key: str) -> Any:
        if vtype == _STRING:
            return self._string(f"the value of '{key}'")
        fmt = _FIXED.get(vtype)
        if fmt is None:
            raise GGUFError(f"damaged GGUF metadata: '{key}' has value type {vtype}, which GGUF does not define")
        (v,) = struct.unpack_from("<" + fmt, self.mm, self.off)
        self.off += struct.calcsize(fmt)
        return v

    def _array(self, key: str) -> GGUFArray:
        etype, count = struct.unpack_from("<IQ", self.mm, self.off)
        self.off += 12
        start, left = self.off, self.size - self.off
        if etype == _STRING:
            if count > left // 8:
                raise GGUFError(f"damaged or truncated GGUF file: '{key}' claims {count} strings in {left} bytes")
            u64, mm, off = self.u64, self.mm, self.off
            for _ in range(count):  # by length only: nothing is decoded or kept
                off += 8 + u64(mm, off)[0]
            if off > self.size:
                raise GGUFError(f"damaged or truncated GGUF file: '{key}' ({count} strings) runs past the end")
            self.off = off
        elif etype == _ARRAY:  # an array of arrays: walk each
            if count > left // 12:
                raise GGUFError(f"damaged or truncated GGUF file: '{key}' claims {count} arrays in {left} bytes")
            for _ in range(count):
                self._array(key)
        else:
            fmt = _FIXED.get(etype)
            if fmt is None:
                raise GGUFError(f"damaged GGUF metadata: '{key}' is an array of undefined type {etype}")
            n = count * struct.calcsize(fmt)
            if n > left:
                raise GGUFError(f"damaged or truncated GGUF file: '{key}' needs {n} bytes, {left} are left")
            self.off += n
        return GGUFArray(etype, count, start)

    def _tensor(self, i: int, n: int, alignment: int) -> int:
        """Read tensor i's entry; return the end of its data, relative to the data section."""
        name = self._string(f"the name of tensor {i + 1} of {n}")
        (n_dims,) = self.u32(self.mm, self.off)
        self.off += 4
        if not 1 <= n_dims <= MAX_DIMS:
            raise GGUFError(f"damaged GGUF tensor table: tensor '{name}' has {n_dims} dimensions (1 to 4 allowed)")
        dims = struct.unpack_from(f"<{n_dims}Q", self.mm, self.off)
        self.off += 8 * n_dims
        ttype, offset = struct.unpack_from("<IQ", self.mm, self.off)
        self.off += 12
        block = GGML_BLOCKS.get(ttype)
        if block is None:
            raise GGUFError(f"tensor '{name}' has ggml type {ttype}, which this reader and ggml do not know")
        per_block, block_bytes = block
        if dims[0] % per_block:
            raise GGUFError(f"damaged GGUF tensor table: tensor '{name}' has {dims[0]} columns, not whole blocks")
        if offset % alignment:
            raise GGUFError(f"damaged GGUF tensor table: tensor '{name}' starts at {offset}, not {alignment}-aligned")
        elements = 1
        for d in dims:
            elements *= d
        return offset + elements // per_block * block_bytes
