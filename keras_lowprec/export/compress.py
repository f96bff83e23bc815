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
and kept until its last step (:func:`share_decodes`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from keras_lowprec.export.errors import ExportError

# Encodings whose tensors hold few levels (see flatbuffer.encode_weights).
_LEVELED = ("ternary", "binary", "shift")
DECODE_OP = "TFLM_DECODE"


def check_mode(compress) -> Any:
    """``False`` (off), ``True``/``"auto"`` (only when it saves more flash than it adds
    arena), ``"flash"`` (whenever it saves flash)."""
    if isinstance(compress, (bool, np.bool_)):
        return "auto" if compress else False
    if isinstance(compress, str) and compress in ("auto", "flash"):
        return compress
    raise ExportError(f"compress must be False, True, 'auto' or 'flash'; got {compress!r}.")


def plan_specs(model_bytes: bytes, tensors: list[dict]) -> tuple[list, list[dict]]:
    """TFLM compression specs for the exact weight tensors of an export: the smallest index
    width that holds each tensor's distinct values, a value table per tensor or per channel
    as its scales are. Returns ``(specs, rows)``, rows describing each tensor."""
    from tflite_micro import compression
    from tflite_micro.tensorflow.lite.micro.compression import spec

    from keras_lowprec.export import flatbuffer

    fb = flatbuffer.read(model_bytes)
    sg = fb.subgraphs[0]
    builder, rows = compression.SpecBuilder(), []
    for t in tensors:
        if t["encoding"] not in _LEVELED:
            continue
        tensor = sg.tensors[t["index"]]
        values = np.unique(np.frombuffer(bytes(fb.buffers[tensor.buffer].data), np.int8))
        q = tensor.quantization
        if q is None or q.scale is None or not len(q.scale):
            continue
        # The value tables must follow the scales (one table per channel for per-channel
        # scales), or TFLM decodes wrong values without an error.
        mode = spec.PerTensor() if len(q.scale) == 1 else spec.PerChannel(axis=int(q.quantizedDimension))
        bits = max(1, math.ceil(math.log2(len(values))))
        builder.add_tensor(subgraph=0, tensor=int(t["index"])).with_lut(index_bitwidth=bits, mode=mode)
        rows.append({"index": int(t["index"]), "name": t["name"], "levels": int(len(values)), "bits": bits,
                     "weights": int(np.prod(tensor.shape))})
    return builder.build(), rows


def compress(model_bytes: bytes, tensors: list[dict], graph: str) -> tuple[bytes | None, dict]:
    """The LUT-compressed model (or ``None`` with the reason) and a report of what was done."""
    model_bytes = _per_tensor_where_equal(model_bytes, tensors)
    specs, rows = plan_specs(model_bytes, tensors)
    if not specs:
        return None, {"reason": "no weight tensor with few levels"}
    import warnings

    from tflite_micro import compression

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = bytes(compression.compress(model_bytes, specs))
    out, shared = share_decodes(out)
    weights = sum(r["weights"] for r in rows)
    return out, {"tensors": rows, "warnings": sorted({str(w.message) for w in caught}),
                 "weights": weights, "decodes_shared": shared}


def share_decodes(model_bytes: bytes) -> tuple[bytes, int]:
    """One ``TFLM_DECODE`` per set of compressed tensors: TFLM's tool puts a DECODE before
    every consumer, so a sequence graph that repeats the step would decode each weight once
    per time step (and grow by one operator and tensor each). Later DECODEs of the same
    tensors (same encoded and table buffers) are dropped and their consumers read the first
    one's outputs, which the memory planner then keeps until the last of them: each weight is
    decoded once per invoke. Returns the model and the number of DECODEs dropped."""
    from keras_lowprec.export import flatbuffer, unroll

    fb = flatbuffer.read(model_bytes)
    sg = fb.subgraphs[0]
    first: dict[tuple, list[int]] = {}
    remap: dict[int, int] = {}
    kept = []
    for op in sg.operators:
        op.inputs = [remap.get(int(i), int(i)) for i in op.inputs]
        if flatbuffer.op_name(fb, op) == "CUSTOM:" + DECODE_OP:
            key = tuple(int(sg.tensors[int(i)].buffer) for i in op.inputs)
            if key in first:
                remap.update({int(a): b for a, b in zip(op.outputs, first[key])})
                continue
            first[key] = [int(o) for o in op.outputs]
        kept.append(op)
    dropped = len(sg.operators) - len(kept)
    if not dropped:
        return model_bytes, 0
    sg.operators = kept
    sg.outputs = [remap.get(int(i), int(i)) for i in sg.outputs]
    unroll.drop_unused_tensors(fb)
    return flatbuffer.write(fb), dropped


def _per_tensor_where_equal(model_bytes: bytes, tensors: list[dict]) -> bytes:
    """Weight tensors whose per-channel scales are all one value (the exporter writes one
    level scale per weight; the converter may still store it per output channel) get one
    per-tensor scale: then one value table serves the whole tensor instead of one per channel."""
    from keras_lowprec.export import flatbuffer

    fb = flatbuffer.read(model_bytes)
    sg, changed = fb.subgraphs[0], False
    for t in tensors:
        q = sg.tensors[t["index"]].quantization if t["encoding"] in _LEVELED else None
        if q is None or q.scale is None or len(q.scale) < 2:
            continue
        if len(set(np.asarray(q.scale).tolist())) == 1 and len(set(np.asarray(q.zeroPoint).tolist())) == 1:
            q.scale, q.zeroPoint, q.quantizedDimension = [q.scale[0]], [q.zeroPoint[0]], 0
            changed = True
    return flatbuffer.write(fb) if changed else model_bytes


def bits_per_weight(compressed: bytes, rows: list[dict]) -> float:
    """Bits per compressed weight in the file: the packed indices and the value tables
    (DECODE's ancillary data) of the compressed tensors, over their number of weights."""
    from keras_lowprec.export import flatbuffer

    fb = flatbuffer.read(compressed)
    sg = fb.subgraphs[0]
    names = {flatbuffer.tensor_name(sg.tensors[r["index"]]) for r in rows}
    buffers = {t.buffer for t in sg.tensors
               if flatbuffer.tensor_name(t) in names or flatbuffer.tensor_name(t).removesuffix("_ancillary") in names}
    size = sum(len(fb.buffers[b].data) for b in buffers if fb.buffers[b].data is not None)
    return 8.0 * size / sum(r["weights"] for r in rows)
