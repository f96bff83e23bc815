"""Exact weight encoding: the model's rounded weights found in the graph and rewritten so
that int8 code times scale equals the rounded weight in float32.

Binary/ternary weights get codes ``q in {-64, 0, 64}`` and scale ``level / 64``;
pow2-ternary/exponential ones ``q = ±2^j`` and the power-of-two scale ``2^(max_exp - 6)``
(the scale each weight object carries). The int32 biases of the ops reading such a weight
are re-expressed in the new accumulator scale ``input_scale * weight_scale``.

Weights are described by objects with the attributes of ``graph.WeightInfo`` (``layer``,
``name``, ``value``, ``method``, ``encoding``, ``scale``, ``levels``, ``gates``, ``channel_scale``,
``key``). A weight with channel scales ``s`` (``value = s * levels`` by column) keeps the
level codes and gets one scale per output channel, ``|s_j| * scale`` (sign in the codes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keras_lowprec.export.errors import ExactnessError, ExportError
from keras_lowprec.export.tflite.model import Operator, Tensor, TFLiteModel


@dataclass
class TensorRecord:
    """What the rewrite did to one constant tensor (the exporter's report rows)."""

    index: int
    name: str
    shape: list[int]
    used_by: str
    weight: str | None  # "layer/name" of the Keras weight it holds, None if derived/unknown
    encoding: str  # ternary / binary / shift / int8 / int8-constant / int32-bias
    scale: list[float] = field(default_factory=list)
    exact: bool | None = None
    max_abs_error: float | None = None
    codes: list[int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


# int8 weight inputs stored transposed, (units, inputs): FULLY_CONNECTED's, and the fused
# LSTM's input-to-gate (1-4) and recurrent-to-gate (5-8) weights, gate order i, f, c, o.
_TRANSPOSED_WEIGHTS = {"FULLY_CONNECTED": (1,), "UNIDIRECTIONAL_SEQUENCE_LSTM": tuple(range(1, 9))}
# (bias, weight, input) positions of int32 biases held in input_scale * weight_scale: the
# fused LSTM's gate biases (12-15) go with its input-to-gate weights (1-4).
_BIAS_LINKS = {"FULLY_CONNECTED": ((2, 1, 0),),
               "UNIDIRECTIONAL_SEQUENCE_LSTM": tuple((12 + g, 1 + g, 0) for g in range(4))}


def _bias_links(op: Operator):
    """``(bias, weight, input)`` tensor indices of ``op``'s int32 biases."""
    inputs = op.inputs
    for b, w, x in _BIAS_LINKS.get(op.name, ()):
        if len(inputs) > b and inputs[b] >= 0:
            yield inputs[b], inputs[w], inputs[x]


def int32_biases(model: TFLiteModel) -> dict[int, np.ndarray]:
    """Real values (float64) of every linked int32 bias, keyed by tensor index: taken before
    scales change, so that :func:`requantize_biases` can re-express them afterwards."""
    tensors = model.tensors
    out = {}
    for op in model.operators:
        for b, _, _ in _bias_links(op):
            t = tensors[b]
            arr = t.array
            if arr is not None and t.type_name == "INT32":
                out[b] = t.dequantize(arr).astype(np.float64)
    return out


def _column_slices(w):
    """The column ranges a weight can appear as in the graph: whole, or one gate."""
    n = w.value.shape[-1]
    yield slice(0, n)
    if w.gates > 1:
        u = n // w.gates
        for g in range(w.gates):
            yield slice(g * u, (g + 1) * u)


def _pieces(w):
    """``(array, channel scales or None)`` a weight can appear as in the graph: whole, or
    one gate (and one bias row)."""
    v = w.value
    rows = [v] if not (v.ndim == 2 and w.name == "bias") else list(v)  # GRU bias: (input, recurrent)
    for row in rows:
        for cols in _column_slices(w):
            yield row[..., cols], None if w.channel_scale is None else w.channel_scale[cols]


def _candidates(weights, shape: tuple[int, ...], as_fc_weight: bool):
    """``(weight, layout array, channel scales of its rows or None)`` whose layout has ``shape``."""
    size = int(np.prod(shape)) if shape else 1
    for w in weights:
        for piece, column_scale in _pieces(w):
            if as_fc_weight:
                if piece.ndim == 2 and piece.T.shape == tuple(shape):
                    yield w, np.ascontiguousarray(piece.T), column_scale
            elif piece.ndim == 1 and piece.size == size and column_scale is None:
                yield w, piece.reshape(shape), None


def _match(weights, tensor: Tensor, deq: np.ndarray, as_fc_weight: bool):
    """``(weight, layout, max abs error, channel scales)`` of the weight piece closest to the dequantized
    tensor ``deq`` within half a quantization step everywhere; None if there is none."""
    scale, axis = tensor.scales, tensor.axis
    best = None
    for w, layout, column_scale in _candidates(weights, tuple(deq.shape), as_fc_weight):
        if scale.size > 1:
            shape = [1] * deq.ndim
            shape[axis] = -1
            tol = 0.5 * scale.reshape(shape) * 1.001 + 1e-7
        else:
            tol = 0.5 * (scale[0] if scale.size else 0.0) * 1.001 + 1e-7
        err = np.abs(deq - layout)
        if np.all(err <= tol):
            e = float(err.max()) if err.size else 0.0
            if best is None or e < best[2]:
                best = (w, layout, e, column_scale)
    return best


def unshare_buffers(model: TFLiteModel) -> int:
    """Gives every constant tensor a buffer of its own; returns how many were copied.

    The converter points tensors with identical bytes at one buffer, e.g. the same gate
    weight at every unrolled step, each tensor with its own quantization. Rewriting the
    codes of one of them (or requantizing one int32 bias) through a shared buffer would
    silently change the values all the others compute with. :func:`dedupe_buffers` shares
    identical bytes again once every rewrite is done.
    """
    seen: set[int] = set()
    copied = 0
    for sg in model.subgraphs:
        for t in sg.tensors:
            data = t.data
            if data is None:
                continue
            if t.buffer in seen:
                t.buffer = model.add_buffer(data)
                copied += 1
            seen.add(t.buffer)
    return copied


def channel_scales(w, column_scale: np.ndarray) -> np.ndarray:
    """float32 int8 scales of a channel-scaled weight's output channels: ``|s_j| * w.scale``
    (``w.scale`` where ``s_j = 0``, whose codes are all 0). The codes carry the sign of
    ``s_j``; they are the level codes, so ``code * scale`` equals ``s_j * level`` exactly
    when the encoding's codes are powers of two (binary, ternary, shift)."""
    magnitude = np.abs(column_scale.astype(np.float32)) * np.float32(w.scale)
    if np.any((column_scale != 0) & (magnitude < np.finfo(np.float32).tiny)):
        raise ExactnessError(f"layer '{w.layer}' weight '{w.name}': a channel scale is so small that its int8 "
                             "scale underflows float32; retrain, or set such scales to 0.")
    return np.where(column_scale == 0, np.float32(w.scale), magnitude).astype(np.float32)


def _exact_codes(w, layout: np.ndarray, scale: np.ndarray | np.float32) -> np.ndarray:
    """int8 codes ``c`` with ``c * scale == layout`` in float32 (``scale``: one, or one per
    row of ``layout``); ``ExactnessError`` if none."""
    s = np.float32(scale) if np.ndim(scale) == 0 else np.asarray(scale, np.float32)[:, None]
    codes = layout / s
    if not (np.all(codes == np.round(codes)) and np.all(np.abs(codes) <= 127)):
        raise ExactnessError(
            f"layer '{w.layer}' weight '{w.name}': its levels are not integer multiples of its int8 "
            "scale within ±127, so int8 cannot hold them exactly."
        )
    codes = codes.astype(np.int8)
    if not np.array_equal(codes.astype(np.float32) * s, layout):
        raise ExactnessError(f"layer '{w.layer}' weight '{w.name}': code * scale != rounded weight in float32.")
    return codes


def _encode_tensor(tensor: Tensor, weights, uses: list[tuple[Operator, int]]) -> TensorRecord:
    """Matches one constant int8 tensor with a weight and rewrites it exactly when the
    weight is a rounded one; returns its record."""
    q = tensor.array
    fc = any(pos in _TRANSPOSED_WEIGHTS.get(op.name, ()) for op, pos in uses)
    used_by = ",".join(sorted({op.name for op, _ in uses}))
    match = _match(weights, tensor, tensor.dequantize(q), as_fc_weight=fc)
    if match is None:
        # Not one of the model's weights: a constant of the cell math (e.g. the 1 of
        # GRU's 1 - z) or one the converter derived; plain int8 as converted.
        return TensorRecord(tensor.index, tensor.name, list(q.shape), used_by, None, "int8-constant")
    w, layout, err, column_scale = match
    scale, axis = tensor.scales, tensor.axis
    if w.scale is None:  # full-precision weight: the converter's plain int8
        return TensorRecord(tensor.index, tensor.name, list(q.shape), used_by, w.key, "int8",
                            [float(s) for s in np.unique(scale)], False, err)
    if column_scale is None:
        # One scale per channel as before (per-channel ops expect as many), all equal.
        new_scales = np.full(max(1, scale.size), np.float32(w.scale), np.float32)
        codes = _exact_codes(w, layout, new_scales[0])
    else:
        new_scales = channel_scales(w, column_scale)
        if scale.size != len(new_scales) or axis != 0:
            raise ExactnessError(
                f"layer '{w.layer}' weight '{w.name}': it has channel scales, but {used_by} holds it with "
                f"{scale.size} scale(s) on axis {axis}, not one per output channel; such a model needs an op "
                "with per-channel weight scales (FULLY_CONNECTED of the step graph).")
        codes = _exact_codes(w, layout, new_scales)
    tensor.array = codes
    tensor.set_quantization([float(v) for v in new_scales], [0] * len(new_scales), axis)
    return TensorRecord(tensor.index, tensor.name, list(q.shape), used_by, w.key, w.encoding,
                        sorted({float(v) for v in new_scales}), True, 0.0,
                        sorted({int(c) for c in np.unique(codes)}))


def encode_weights(model: TFLiteModel, weights, optional: tuple[str, ...] = ()) -> list[TensorRecord]:
    """Finds the model's rounded weights in the graph and rewrites them exactly.

    Returns one record per constant int8 tensor read by an operator (weight or other
    constant) and per linked int32 bias, in tensor order then bias order. Raises
    ``ExactnessError`` if a rounded weight (other than a bias, an all-zero one or one of
    ``optional``, keys) cannot be found, or cannot be held exactly.
    """
    unshare_buffers(model)
    consumers = model.subgraph.consumer_map()
    old_bias = int32_biases(model)
    records: list[TensorRecord] = []
    for tensor in model.tensors:
        if tensor.type_name != "INT8" or tensor.array is None or tensor.index not in consumers:
            continue
        records.append(_encode_tensor(tensor, weights, consumers[tensor.index]))
    found = {r.weight for r in records if r.weight is not None}
    missing = [w.key for w in weights if w.scale is not None and w.key not in found and w.name != "bias"
               and w.key not in optional and np.any(w.value != 0)]
    if missing:
        raise ExactnessError(
            "could not locate these rounded weights in the converted graph (the converter folded them "
            "into other constants, e.g. with a normalization layer), so their exactness cannot be "
            f"guaranteed: {', '.join(missing)}."
        )
    records.extend(requantize_biases(model, old_bias, weights))
    return records


def _bias_weight(weights, deq: np.ndarray, n: int):
    """``(key, max abs error)`` of the Keras bias (row) closest to ``deq``, or None."""
    best = None
    for w in weights:
        if w.name != "bias":
            continue
        for row, _ in _pieces(w):
            if row.size == n:
                e = float(np.max(np.abs(deq - row.astype(np.float64))))
                if best is None or e < best[1]:
                    best = (w.key, e)
    return best


def requantize_biases(model: TFLiteModel, old_bias: dict[int, np.ndarray], weights=()) -> list[TensorRecord]:
    """Re-expresses the int32 biases of ``old_bias`` (real values from :func:`int32_biases`)
    in ``input_scale * weight_scale`` after scale changes; one record per bias, matched
    with the Keras bias of ``weights`` it holds when within one step."""
    tensors = model.tensors
    records = []
    done = set()
    links = [(op.name, link) for op in model.operators for link in _bias_links(op)]
    for used_by, (b, w_idx, x_idx) in links:
        if b not in old_bias or b in done:
            continue
        done.add(b)
        t_b, w_scale = tensors[b], tensors[w_idx].scales
        in_scale = float(tensors[x_idx].scales[0])
        n = old_bias[b].size
        if w_scale.size not in (1, n):
            raise ExportError(f"bias tensor {b}: {n} channels but {w_scale.size} weight scales.")
        new_scale = (in_scale * np.broadcast_to(w_scale.astype(np.float64), (n,))).astype(np.float32)
        value = old_bias[b].reshape(-1)
        q = np.clip(np.round(value / new_scale.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int32)
        t_b.array = q.reshape(old_bias[b].shape)
        scales = [float(s) for s in new_scale] if w_scale.size > 1 else [float(new_scale[0])]
        t_b.set_quantization(scales, [0] * len(scales))
        # The bias in float the graph computes with, compared to a Keras bias when it is one.
        best = _bias_weight(weights, q.astype(np.float64) * new_scale.astype(np.float64), n)
        key, err = (best if best is not None and best[1] <= float(new_scale.max()) else (None, None))
        records.append(TensorRecord(b, t_b.name, [n], used_by, key, "int32-bias",
                                    [float(new_scale.min()), float(new_scale.max())], err == 0.0 if key else None, err))
    return records


def dedupe_buffers(model: TFLiteModel) -> int:
    """Points constant tensors with identical bytes (and type) at one buffer; returns the
    bytes saved. Buffers no tensor or metadata entry refers to any more are emptied.

    The unrolled graph gives every time step its own copy of some constants (e.g. the same
    int32 bias of the input-side FULLY_CONNECTED): one copy is enough.
    """
    first: dict[tuple, int] = {}
    saved = 0
    for t in model.tensors:
        data = t.data
        if data is None:
            continue
        key = (int(t.raw.type), data)
        if key in first and first[key] != t.buffer:
            saved += len(data)
            t.buffer = first[key]
        else:
            first.setdefault(key, t.buffer)
    used = {t.buffer for t in model.tensors}
    for i in range(1, model.num_buffers):  # buffer 0 is the empty buffer of activations
        if i not in used and model.buffer_data(i) is not None and not model.is_metadata_buffer(i):
            model.set_buffer_data(i, None)  # unreferenced now
    return saved
