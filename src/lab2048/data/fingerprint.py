"""Content fingerprints: of a shard's data (sidecars), of a file (models), of a JSON object.

- `data128`: a 128-bit hash of the data bytes of a .npy shard (header excluded), a sum over its
  8-byte words of a position-dependent mix. Because it is a sum, each piece of a shard can be
  hashed while it is in memory and the pieces added up (`hash_piece`, `Hash.add`), in any
  order: the sidecar builder hashes every chunk's rows as it goes, and a reader hashes a whole
  memory-mapped shard (`fingerprint`). Written "data128:<32 hex>:<rows>".
- `file_sha256`: "sha256:<hex>" of a file's bytes; `weights_fingerprint` that of a model
  init's model.safetensors (a bootstrapping model, an annotating or playing one).
- `json_sha256`: "sha256:<hex>" of a JSON object's canonical text (sorted keys, no spaces):
  values.json stores it over its own fields so that a hand edit is refused.

Choices
- data128 is not cryptographic: it guards against stale, mixed or damaged files, vectorised to
  about a nanosecond a word. The two SHA-256s are cryptographic because they are cheap there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit

from lab2048.errors import UserError


@njit(cache=True, nogil=True)
def _hash_words(words, first, lanes):
    """Two 64-bit lanes of sum_i f_lane(word_i, i), i = first + position: each term an odd
    multiply and a rotation, position-dependent and free of summation order (so pieces add
    up)."""
    h1, h2 = np.uint64(0), np.uint64(0)
    for k in range(len(words)):
        i = np.uint64(first + k)
        x = (words[k] + i * lanes[0]) * lanes[1]
        h1 += (x << np.uint64(31)) | (x >> np.uint64(33))
        y = (words[k] ^ lanes[1]) * (np.uint64(2) * i + np.uint64(1))
        h2 += (y << np.uint64(27)) | (y >> np.uint64(37))
    return h1, h2


_LANES = np.array([0x2545F4914F6CDD1D, 0x9E6C63D0676A9A99], np.uint64)
_MASK64 = (1 << 64) - 1


@dataclass
class Hash:
    """A piece of a shard's hash: the sums over its whole words, and its bytes that share a
    word with a neighbouring piece (or end the shard), as {word index: [(byte position,
    bytes)]}."""

    h1: int = 0
    h2: int = 0
    edges: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)

    def add(self, other: Hash) -> None:
        self.h1, self.h2 = self.h1 + other.h1, self.h2 + other.h2
        for word, parts in other.edges.items():
            self.edges.setdefault(word, []).extend(parts)

    def fingerprint(self, rows: int) -> str:
        """The shard's fingerprint, once every piece is added."""
        h1, h2 = self.h1, self.h2
        for word, parts in self.edges.items():  # whole again once every piece is added
            buf = bytearray(8)
            for pos, data in parts:
                buf[pos:pos + len(data)] = data
            a, b = _hash_words(np.frombuffer(bytes(buf), "<u8"), word, _LANES)
            h1, h2 = h1 + int(a), h2 + int(b)
        return f"data128:{h1 & _MASK64:016x}{h2 & _MASK64:016x}:{rows}"


def hash_piece(rows: np.ndarray, first_row: int) -> Hash:
    """The Hash of contiguous rows that sit at row `first_row` of their shard."""
    data = rows.view(np.uint8).reshape(-1)
    start = first_row * rows.dtype.itemsize  # byte offsets in the shard's data
    stop = start + len(data)
    lo, hi = -(-start // 8), stop // 8  # the whole words inside: lo .. hi - 1
    out = Hash()
    if lo < hi:
        a, b = _hash_words(data[lo * 8 - start:hi * 8 - start].view("<u8"), lo, _LANES)
        out.h1, out.h2 = int(a), int(b)
    for a, b in ({(start, min(lo * 8, stop)), (max(hi * 8, start), stop)}):
        if a < b:
            out.edges.setdefault(a // 8, []).append((a % 8, data[a - start:b - start].tobytes()))
    return out


def fingerprint(rows: np.ndarray) -> str:
    """The data128 fingerprint of a whole shard's rows (a memory-mapped .npy, for instance)."""
    return hash_piece(rows, 0).fingerprint(len(rows))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    return f"sha256:{h.hexdigest()}"


def weights_fingerprint(init: str | Path) -> str:
    """file_sha256 of a model init's weights (what makes its outputs what they are)."""
    return file_sha256(Path(init) / "model.safetensors")


def json_sha256(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"
