"""Weight packings of the C runtime (``klp.h``), column by column.

A matrix ``w`` of integer weight codes, shape ``(rows, cols)`` (inputs x outputs), is stored
as ``cols`` columns of ``stride`` bytes each; byte ``b`` of column ``j`` covers a *group* of
inputs:

* ``trit4``: 4 ternary weights ``t_k`` in {-1, 0, 1}, byte ``sum_k (t_k + 1) 3^k + 81 (b mod 3)``
  for the column's group b (81 codes, 2 bits per weight; the offset lets the runtime index
  three consecutive tables from one pointer);
* ``trit5``: 5 ternary weights, 243 codes (1.6 bits per weight);
* ``shift4``: 2 power-of-two weights ``s * 2^e`` (e in 0..6) or 0, one nibble each (input 2b in
  the low nibble): 0 = zero, ``1 + e`` = +2^e, ``9 + e`` = -2^e (4 bits per weight);
* ``int8``: one int8 weight per byte (float layers).

Inputs past ``rows`` (padding of the last group) get weight 0.
"""

from __future__ import annotations

import numpy as np

GROUP = {"trit4": 4, "trit5": 5, "shift4": 2, "int8": 1}
# int16 entries of the table one group needs at run time (0: no table).
TABLE_ENTRIES = {"trit4": 81, "trit5": 243, "shift4": 32, "int8": 0}
C_NAME = {"trit4": "KLP_TRIT4", "trit5": "KLP_TRIT5", "shift4": "KLP_SHIFT4", "int8": "KLP_INT8"}


def stride(packing: str, rows: int) -> int:
    """Bytes per column: ``ceil(rows / group)``."""
    return -(-rows // GROUP[packing])


def _padded(w: np.ndarray, packing: str) -> np.ndarray:
    """``w.T`` with zero rows appended up to whole groups: shape ``(cols, stride, group)``."""
    rows, cols = w.shape
    g = GROUP[packing]
    out = np.zeros((cols, stride(packing, rows) * g), dtype=np.int64)
    out[:, :rows] = w.T
    return out.reshape(cols, -1, g)


def pack(w: np.ndarray, packing: str) -> bytes:
    """Packs integer weight codes (see the module docstring) into the runtime's bytes."""
    w = np.asarray(w, dtype=np.int64)
    if packing in ("trit4", "trit5"):
        if not np.isin(w, (-1, 0, 1)).all():
            raise ValueError(f"{packing} packs ternary codes -1, 0, 1 only")
        digits = _padded(w, packing) + 1
        powers = 3 ** np.arange(GROUP[packing], dtype=np.int64)
        return ((digits * powers).sum(-1) + _offsets(packing, digits.shape[1])).astype(np.uint8).tobytes()
    if packing == "shift4":
        mag = np.abs(w)
        exps = np.where(mag > 0, np.log2(np.maximum(mag, 1)).round(), 0).astype(np.int64)
        if not (np.all((mag == 0) | (2 ** exps == mag)) and exps.max(initial=0) <= 6):
            raise ValueError("shift4 packs 0 and +-2^e with e in 0..6 only")
        nib = np.where(mag == 0, 0, np.where(w > 0, 1 + exps, 9 + exps))
        pairs = _padded(nib, "shift4")
        return (pairs[..., 0] | (pairs[..., 1] << 4)).astype(np.uint8).tobytes()
    if packing == "int8":
        if w.min(initial=0) < -127 or w.max(initial=0) > 127:
            raise ValueError("int8 packs -127..127 only")
        return _padded(w, "int8")[..., 0].astype(np.int8).tobytes()
    raise ValueError(f"unknown packing {packing!r}")


def _offsets(packing: str, groups: int) -> np.ndarray:
    """trit4: group g's byte is its code + 81 (g mod 3) (an index into three consecutive
    81-entry tables, see klp.c trit4_lookups); 0 for the other packings."""
    if packing != "trit4":
        return np.zeros(groups, np.int64)
    return 81 * (np.arange(groups) % 3)


def unpack(data: bytes, packing: str, rows: int, cols: int) -> np.ndarray:
    """Inverse of :func:`pack`: the ``(rows, cols)`` integer codes."""
    raw = np.frombuffer(data, dtype=np.int8 if packing == "int8" else np.uint8).astype(np.int64)
    raw = raw.reshape(cols, stride(packing, rows))
    if packing in ("trit4", "trit5"):
        g = GROUP[packing]
        raw = raw - _offsets(packing, raw.shape[1])
        digits = (raw[..., None] // 3 ** np.arange(g)) % 3 - 1
        flat = digits.reshape(cols, -1)
    elif packing == "shift4":
        nib = np.stack([raw & 15, raw >> 4], -1).reshape(cols, -1)
        e = (nib & 7) - 1
        flat = np.where(nib & 7 == 0, 0, np.where(nib & 8, -1, 1) * (1 << np.maximum(e, 0)))
    else:
        flat = raw
    return flat[:, :rows].T.copy()
