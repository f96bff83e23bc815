"""Look-up-table (LUT) compressed weights: the passes around TFLM's compression tool.

TFLM's compression (``tflite_micro.compression``) rewrites a constant tensor as packed
indices of ``b`` bits plus a value table, and inserts a ``TFLM_DECODE`` operator that
restores the int8 tensor in the arena just before the operator that reads it. This module
plans the specs (:func:`plan_specs`), gives weight tensors with one repeated per-channel
scale a per-tensor one first (:func:`per_tensor_where_equal`), keeps one DECODE per set
of compressed tensors afterwards (:func:`share_decodes`) and measures the result
(:func:`bits_per_weight`).

``tensors`` below are the exporter's tensor records as dicts (``index``, ``name``,
``encoding``... see ``exact_weights.TensorRecord``).
"""

from __future__ import annotations

import math

import numpy as np

from keras_lowprec.export.tflite.model import TFLiteModel
from keras_lowprec.export.tflite.unroll import drop_unused_tensors

# Encodings whose tensors hold few levels (see exact_weights.encode_weights).
LEVELED = ("ternary", "binary", "shift")
DECODE_OP = "TFLM_DECODE"


def per_tensor_where_equal(model: TFLiteModel, tensors: list[dict]) -> bool:
    """Weight tensors whose per-channel scales are all one value (the exporter writes one
    level scale per weight; the converter may still store it per output channel) get one
    per-tensor scale (quantized dimension 0): then one value table serves the whole tensor
    instead of one per channel. Returns whether any tensor changed."""
    changed = False
    for rec in tensors:
        if rec["encoding"] not in LEVELED:
            continue
        t = model.tensors[rec["index"]]
        scales, zps = t.scales, t.zero_points
        if scales.size < 2:
            continue
        if len(set(scales.tolist())) == 1 and len(set(zps.tolist())) == 1:
            t.set_quantization(scales[:1], zps[:1], axis=0)
            changed = True
    return changed


def per_tensor_where_equal_bytes(model_bytes: bytes, tensors: list[dict]) -> bytes:
    """:func:`per_tensor_where_equal` on the bytes of a model; the same bytes when nothing changed."""
    model = TFLiteModel.from_bytes(model_bytes)
    return model.to_bytes() if per_tensor_where_equal(model, tensors) else model_bytes


def share_decodes(model: TFLiteModel) -> int:
    """One ``TFLM_DECODE`` per set of compressed tensors: TFLM's tool puts a DECODE before
    every consumer, so a sequence graph that repeats the step would decode each weight once
    per time step (and grow by one operator and tensor each). Later DECODEs of the same
    tensors (same encoded and table buffers) are dropped and their consumers read the first
    one's outputs, which the memory planner then keeps until the last of them: each weight is
    decoded once per invoke. Returns the number of DECODEs dropped; the model is left
    untouched when it is 0."""
    sg = model.subgraph
    ops = sg.operators
    first: dict[tuple, list[int]] = {}
    remap: dict[int, int] = {}
    kept = []
    for op in ops:
        rewired = [remap.get(i, i) for i in op.inputs]
        if op.name == "CUSTOM:" + DECODE_OP:
            key = tuple(sg.tensors[i].buffer for i in rewired)
            if key in first:
                remap.update(zip(op.outputs, first[key]))
                continue
            first[key] = op.outputs
        kept.append((op, rewired))
    dropped = len(ops) - len(kept)
    if not dropped:
        return 0
    for op, rewired in kept:
        op.inputs = rewired
    sg.operators = [op for op, _ in kept]
    sg.outputs = [remap.get(i, i) for i in sg.outputs]
    drop_unused_tensors(model)
    return dropped


def share_decodes_bytes(model_bytes: bytes) -> tuple[bytes, int]:
    """:func:`share_decodes` on the bytes of a model: ``(bytes, DECODEs dropped)``, the
    same bytes when none was dropped."""
    model = TFLiteModel.from_bytes(model_bytes)
    dropped = share_decodes(model)
    return (model.to_bytes(), dropped) if dropped else (model_bytes, 0)


def plan_specs(model: TFLiteModel, tensors: list[dict]) -> tuple[list, list[dict]]:
    """TFLM compression specs for the exact weight tensors of an export: the smallest index
    width that holds each tensor's distinct values, a value table per tensor or per channel
    as its scales are. Returns ``(specs, rows)``, rows describing each tensor."""
    from tflite_micro import compression
    from tflite_micro.tensorflow.lite.micro.compression import spec

    builder, rows = compression.SpecBuilder(), []
    for rec in tensors:
        if rec["encoding"] not in LEVELED:
            continue
        t = model.tensors[rec["index"]]
        values = np.unique(np.frombuffer(t.data or b"", np.int8))
        if t.scales.size == 0:
            continue
        # The value tables must follow the scales (one table per channel for per-channel
        # scales), or TFLM decodes wrong values without an error.
        mode = spec.PerTensor() if t.scales.size == 1 else spec.PerChannel(axis=t.axis)
        bits = max(1, math.ceil(math.log2(len(values))))
        builder.add_tensor(subgraph=0, tensor=int(rec["index"])).with_lut(index_bitwidth=bits, mode=mode)
        rows.append({"index": int(rec["index"]), "name": rec["name"], "levels": int(len(values)), "bits": bits,
                     "weights": int(np.prod(t.shape))})
    return builder.build(), rows


def bits_per_weight(model: TFLiteModel, rows: list[dict]) -> float:
    """Bits per compressed weight in the compressed ``model``: the packed indices and the
    value tables (DECODE's ancillary data) of the compressed tensors (``rows`` of
    :func:`plan_specs`), over their number of weights."""
    tensors = model.tensors
    names = {tensors[r["index"]].name for r in rows}
    buffers = {t.buffer for t in tensors if t.name in names or t.name.removesuffix("_ancillary") in names}
    size = sum(len(model.buffer_data(b) or b"") for b in buffers)
    return 8.0 * size / sum(r["weights"] for r in rows)
