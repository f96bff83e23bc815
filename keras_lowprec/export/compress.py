"""Weights at their own bit width inside stock TFLM: look-up-table (LUT) compression.

TFLM's compression (``tflite_micro.compression``) rewrites a constant tensor as packed
indices of ``b`` bits plus a value table, and inserts a ``TFLM_DECODE`` operator that
restores the int8 tensor in the arena just before the operator that reads it. A ternary
tensor (codes -64, 0, 64) needs 2-bit indices, a binary one 1 bit, a 15-level exponential
one 4 bits. The values in the table are the tensor's own int8 codes, so the decoded tensor
is the uncompressed one byte for byte; :func:`compress` still checks that the compressed
model gives the same int8 outputs as the uncompressed one in TFLM before it is used.

Costs, measured by :func:`compress` for each export: the decoded weights live in the arena
while their consumers run (RAM up, flash down), and DECODE runs at every invoke. In a
sequence graph that repeats the step ``T`` times, every weight is decoded once per invoke
and kept until its last step (``tflite.decode.share_decodes``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_lowprec.export.errors import ExportError



def check_mode(compress) -> Any:
    """``False`` (off), ``True``/``"auto"`` (only when it saves more flash than it adds
    arena), ``"flash"`` (whenever it saves flash)."""
    if isinstance(compress, (bool, np.bool_)):
        return "auto" if compress else False
    if isinstance(compress, str) and compress in ("auto", "flash"):
        return compress
    raise ExportError(f"compress must be False, True, 'auto' or 'flash'; got {compress!r}.")


def compress(model_bytes: bytes, tensors: list[dict], graph: str) -> tuple[bytes | None, dict]:
    """The LUT-compressed model (or ``None`` with the reason) and a report of what was done:
    per-tensor scales where one value repeats, TFLM's compression with the planned specs,
    then one DECODE per set of compressed tensors (``tflite.decode``)."""
    import warnings

    from tflite_micro import compression

    from keras_lowprec.export.tflite import TFLiteModel, decode

    model_bytes = decode.per_tensor_where_equal_bytes(model_bytes, tensors)
    specs, rows = decode.plan_specs(TFLiteModel.from_bytes(model_bytes), tensors)
    if not specs:
        return None, {"reason": "no weight tensor with few levels"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = bytes(compression.compress(model_bytes, specs))
    out, shared = decode.share_decodes_bytes(out)
    weights = sum(r["weights"] for r in rows)
    return out, {"tensors": rows, "warnings": sorted({str(w.message) for w in caught}),
                 "weights": weights, "decodes_shared": shared}


def bits_per_weight(compressed: bytes, rows: list[dict]) -> float:
    """Bits per compressed weight in the file (``tflite.decode.bits_per_weight``)."""
    from keras_lowprec.export.tflite import TFLiteModel, decode

    return decode.bits_per_weight(TFLiteModel.from_bytes(compressed), rows)
