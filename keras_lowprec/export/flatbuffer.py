"""Reading, checking and rewriting a TFLite flatbuffer (schema that ships with TensorFlow).

What the rewrite does:

* **exact weight encoding**: every constant int8 tensor that holds one of the model's
  rounded weights gets codes ``q`` and scale ``s`` with ``q * s == Q(W)`` in float32
  (binary/ternary: ``q in {-64, 0, 64}``, ``s = level / 64``; pow2-ternary/exponential:
  ``s = 2^(max_exp - 6)``, ``q = ±2^j``); the int32 biases of the ops using such a weight
  are re-expressed in the new accumulator scale ``input_scale * weight_scale``;
* **integer-only check**: refuses a graph with any float tensor, a custom/Flex op or a
  control-flow subgraph;
* **state scales** (stream mode): an input state gets the quantization of the output state
  it is fed from, so that firmware copies int8 bytes between invokes;
* **metadata**: the encoding of each weight tensor as JSON (``keras_lowprec`` entry).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keras_lowprec.export.errors import ExactnessError, ExportError

METADATA_NAME = "keras_lowprec"


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema

    return schema


def read(model_bytes: bytes, name: str = "model_bytes"):
    """The flatbuffer as a mutable ``ModelT``; ``ExportError`` naming ``name`` if the bytes
    are not a TFLite model."""
    check_model_bytes(model_bytes, name)
    schema = _schema()
    try:
        return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(model_bytes), 0))
    except Exception as err:  # noqa: BLE001 - struct.error, IndexError... from a damaged buffer
        raise ExportError(f"{name}: not a readable TFLite flatbuffer ({type(err).__name__}: {err}).") from None


def check_model_bytes(model_bytes, name: str = "model_bytes") -> None:
    """Cheap checks before a flatbuffer is parsed or handed to an interpreter: bytes-like,
    at least a header, and TFLite's file identifier ``TFL3`` at offset 4."""
    if not isinstance(model_bytes, (bytes, bytearray, memoryview)):
        raise ExportError(f"{name}: expected the bytes of a .tflite model, got {type(model_bytes).__name__}.")
    data = bytes(model_bytes[:8])
    if len(model_bytes) < 16 or data[4:8] != b"TFL3":
        raise ExportError(f"{name}: not a TFLite flatbuffer ({len(model_bytes)} bytes without the 'TFL3' file "
                          "identifier); pass the bytes of a model written by to_tflite (model.tflite).")


def write(model) -> bytes:
    """Packs ``model`` (ModelT) and re-aligns the buffers to 16 bytes (TFLM's requirement)."""
    from tensorflow.lite.tools import flatbuffer_utils

    raw = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    try:
        from tflite_micro.tensorflow.lite.micro.tools import tflite_flatbuffer_align_wrapper as align
    except ImportError:  # pragma: no cover - tflite-micro is an export dependency
        return raw
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.tflite"), os.path.join(tmp, "out.tflite")
        with open(src, "wb") as fh:
            fh.write(raw)
        align.align_tflite_model(src, dst)
        with open(dst, "rb") as fh:
            return fh.read()


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def op_name(model, op) -> str:
    schema = _schema()
    code = model.operatorCodes[op.opcodeIndex]
    value = max(code.builtinCode, code.deprecatedBuiltinCode)
    name = _enum_names(schema.BuiltinOperator).get(value, str(value))
    if name == "CUSTOM":
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        return f"CUSTOM:{custom}"
    return name


def tensor_name(tensor) -> str:
    """A tensor's name as ``str`` (the flatbuffer object API gives ``bytes``)."""
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else str(name or "")


def op_names(model) -> list[str]:
    """Sorted distinct op names of every subgraph."""
    return sorted({op_name(model, op) for sg in model.subgraphs for op in sg.operators})


def type_name(t: int) -> str:
    return _enum_names(_schema().TensorType)[t]


def _buffer_array(model, tensor) -> np.ndarray | None:
    data = model.buffers[tensor.buffer].data
    if data is None or len(data) == 0:
        return None
    dtype = {"INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "FLOAT32": np.float32,
             "INT64": np.int64, "UINT8": np.uint8}.get(type_name(tensor.type))
    if dtype is None:
        return None
    arr = np.frombuffer(np.asarray(data, dtype=np.uint8).tobytes(), dtype=dtype)
    shape = [int(s) for s in tensor.shape] if tensor.shape is not None else [arr.size]
    return arr.reshape(shape) if int(np.prod(shape)) == arr.size else arr


def _set_buffer(model, tensor, array: np.ndarray) -> None:
    model.buffers[tensor.buffer].data = np.frombuffer(np.ascontiguousarray(array).tobytes(), dtype=np.uint8).copy()


def _scales(tensor) -> tuple[np.ndarray, np.ndarray, int]:
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return np.array([], np.float32), np.array([], np.int64), 0
    return np.asarray(q.scale, np.float32), np.asarray(q.zeroPoint, np.int64), int(q.quantizedDimension)


def dequantize(tensor, q: np.ndarray) -> np.ndarray:
    scale, zp, axis = _scales(tensor)
    q = q.astype(np.float64)
    if scale.size <= 1:
        return ((q - (zp[0] if zp.size else 0)) * (scale[0] if scale.size else 1.0)).astype(np.float32)
    shape = [1] * q.ndim
    shape[axis] = -1
    return ((q - zp.reshape(shape)) * scale.reshape(shape).astype(np.float64)).astype(np.float32)


def check_integer_only(model) -> None:
    """Raises unless the graph is one subgraph of builtin ops with integer tensors only."""
    if len(model.subgraphs) != 1:
        raise ExportError(
            f"the converted model has {len(model.subgraphs)} subgraphs (control flow such as WHILE); "
            "TFLM int8 export needs a single unrolled graph."
        )
    sg = model.subgraphs[0]
    problems = []
    for op in sg.operators:
        name = op_name(model, op)
        if name.startswith("CUSTOM") or name.startswith("FLEX"):
            problems.append(f"{name} (custom/Flex op)")
            continue
        intermediates = [] if op.intermediates is None else list(op.intermediates)
        for idx in list(op.inputs) + list(op.outputs) + intermediates:
            if idx < 0:
                continue
            t = sg.tensors[idx]
            tname = type_name(t.type)
            if tname not in ("INT8", "INT16", "INT32", "BOOL"):
                tn = t.name.decode() if isinstance(t.name, bytes) else t.name
                problems.append(f"{name} with {tname} tensor '{tn}'")
                break
    for t in sg.tensors:
        sig = t.shapeSignature
        if sig is not None and any(int(d) < 0 for d in sig):
            tn = t.name.decode() if isinstance(t.name, bytes) else t.name
            problems.append(f"dynamic shape {list(map(int, sig))} of tensor '{tn}'")
            break
    for idx in list(sg.inputs) + list(sg.outputs):
        if type_name(sg.tensors[idx].type) != "INT8":
            problems.append(f"model input/output of type {type_name(sg.tensors[idx].type)}")
    if problems:
        raise ExportError(
            "the converter left non-integer parts in the graph, which TFLM int8 firmware cannot run: "
            + "; ".join(sorted(set(problems))[:8])
            + ". The model is refused (a layer or option that does not quantize to int8; "
            "try removing normalization/activation layers around the RNN)."
        )


# -- weight matching and exact encoding --------------------------------------------------
@dataclass
class TensorRecord:
    index: int
    name: str
    shape: list[int]
    used_by: str
    weight: str | None  # "layer/name" of the Keras weight it holds, None if derived/unknown
    encoding: str  # ternary / binary / shift / int8 / int32-bias
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


def _bias_links(model, op):
    """``(bias, weight, input)`` tensor indices of ``op``'s int32 biases."""
    for b, w, x in _BIAS_LINKS.get(op_name(model, op), ()):
        if len(op.inputs) > b and op.inputs[b] >= 0:
            yield op.inputs[b], op.inputs[w], op.inputs[x]


def _int32_biases(model) -> dict[int, np.ndarray]:
    """Float values of every linked int32 bias (to re-express them after scale changes)."""
    sg = model.subgraphs[0]
    out = {}
    for op in sg.operators:
        for b, _, _ in _bias_links(model, op):
            arr = _buffer_array(model, sg.tensors[b])
            if arr is not None and type_name(sg.tensors[b].type) == "INT32":
                out[b] = dequantize(sg.tensors[b], arr).astype(np.float64)
    return out


def _consumers(sg) -> dict[int, list[tuple[Any, int]]]:
    out: dict[int, list] = {}
    for op in sg.operators:
        for pos, idx in enumerate(op.inputs):
            if idx >= 0:
                out.setdefault(idx, []).append((op, pos))
    return out


def _pieces(w):
    """The arrays a weight can appear as in the graph: whole, or one gate (and one bias row)."""
    v = w.value
    rows = [v] if not (v.ndim == 2 and w.name == "bias") else list(v)  # GRU bias: (input, recurrent)
    for row in rows:
        yield row
        if w.gates > 1:
            u = row.shape[-1] // w.gates
            for g in range(w.gates):
                yield row[..., g * u:(g + 1) * u]


def _candidates(weights, shape: tuple[int, ...], as_fc_weight: bool):
    """(weight, layout array) pairs whose layout has ``shape``."""
    size = int(np.prod(shape)) if shape else 1
    for w in weights:
        for piece in _pieces(w):
            if as_fc_weight:
                if piece.ndim == 2 and piece.T.shape == tuple(shape):
                    yield w, np.ascontiguousarray(piece.T)
            elif piece.ndim == 1 and piece.size == size:
                yield w, piece.reshape(shape)


def _match(weights, tensor, deq: np.ndarray, as_fc_weight: bool):
    scale, _, axis = _scales(tensor)
    best = None
    for w, layout in _candidates(weights, tuple(deq.shape), as_fc_weight):
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
                best = (w, layout, e)
    return best


def unshare_buffers(model) -> int:
    """Gives every constant tensor a buffer of its own; returns how many were copied.

    The converter points tensors with identical bytes at one buffer, e.g. the same gate
    weight at every unrolled step, each tensor with its own quantization. Rewriting the
    codes of one of them (or requantizing one int32 bias) through a shared buffer would
    silently change the values all the others compute with. ``dedupe_buffers`` shares
    identical bytes again once every rewrite is done.
    """
    schema = _schema()
    seen: set[int] = set()
    copied = 0
    for sg in model.subgraphs:
        for t in sg.tensors:
            data = model.buffers[t.buffer].data
            if data is None or len(data) == 0:
                continue
            if t.buffer in seen:
                buf = schema.BufferT()
                buf.data = np.array(data, dtype=np.uint8, copy=True)
                model.buffers.append(buf)
                t.buffer = len(model.buffers) - 1
                copied += 1
            seen.add(t.buffer)
    return copied


def encode_weights(model, weights, optional: tuple[str, ...] = ()) -> list[TensorRecord]:
    """Finds the model's rounded weights in the graph and rewrites them exactly.

    Returns one record per constant int8/int32 weight-like tensor. Raises
    ``ExactnessError`` if a quantized weight cannot be found or held exactly.
    """
    unshare_buffers(model)
    sg = model.subgraphs[0]
    consumers = _consumers(sg)
    records: list[TensorRecord] = []
    old_bias = _int32_biases(model)
    found: set[str] = set()
    for idx, tensor in enumerate(sg.tensors):
        if type_name(tensor.type) != "INT8":
            continue
        q = _buffer_array(model, tensor)
        if q is None or idx not in consumers:
            continue
        uses = consumers[idx]
        fc = any(pos in _TRANSPOSED_WEIGHTS.get(op_name(model, op), ()) for op, pos in uses)
        used_by = ",".join(sorted({op_name(model, op) for op, _ in uses}))
        deq = dequantize(tensor, q)
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
        match = _match(weights, tensor, deq, as_fc_weight=fc)
        if match is None:
            # Not one of the model's weights: a constant of the cell math (e.g. the 1 of
            # GRU's 1 - z) or one the converter derived; plain int8 as converted.
            records.append(TensorRecord(idx, name, list(q.shape), used_by, None, "int8-constant"))
            continue
        w, layout, err = match
        found.add(w.key)
        scale, zp, axis = _scales(tensor)
        if w.scale is None:  # full-precision weight: the converter's plain int8
            records.append(TensorRecord(idx, name, list(q.shape), used_by, w.key, "int8",
                                        [float(s) for s in np.unique(scale)], False, err))
            continue
        s = np.float32(w.scale)
        codes = layout / s
        if not (np.all(codes == np.round(codes)) and np.all(np.abs(codes) <= 127)):
            raise ExactnessError(
                f"layer '{w.layer}' weight '{w.name}': its levels are not integer multiples of "
                f"{float(s)!r} within ±127, so int8 cannot hold them exactly."
            )
        codes = codes.astype(np.int8)
        back = codes.astype(np.float32) * s
        if not np.array_equal(back, layout):
            raise ExactnessError(f"layer '{w.layer}' weight '{w.name}': code * scale != rounded weight in float32.")
        _set_buffer(model, tensor, codes)
        n = max(1, scale.size)
        tensor.quantization.scale = [float(s)] * n
        tensor.quantization.zeroPoint = [0] * n
        tensor.quantization.quantizedDimension = axis
        records.append(TensorRecord(idx, name, list(q.shape), used_by, w.key, w.encoding, [float(s)],
                                    True, 0.0, sorted({int(c) for c in np.unique(codes)})))
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


def requantize_biases(model, old_bias: dict[int, np.ndarray], weights=()) -> list[TensorRecord]:
    """Re-expresses int32 biases in ``input_scale * weight_scale`` after scale changes."""
    sg = model.subgraphs[0]
    records = []
    done = set()
    links = [(op_name(model, op), link) for op in sg.operators for link in _bias_links(model, op)]
    for used_by, (b, w_idx, x_idx) in links:
        if b not in old_bias or b in done:
            continue
        done.add(b)
        t_in, t_w, t_b = sg.tensors[x_idx], sg.tensors[w_idx], sg.tensors[b]
        in_scale = float(_scales(t_in)[0][0])
        w_scale, _, _ = _scales(t_w)
        n = old_bias[b].size
        ws = np.broadcast_to(w_scale.astype(np.float64), (n,)) if w_scale.size in (1, n) else None
        if ws is None:
            raise ExportError(f"bias tensor {b}: {n} channels but {w_scale.size} weight scales.")
        new_scale = (in_scale * ws).astype(np.float32)
        value = old_bias[b].reshape(-1)
        q = np.clip(np.round(value / new_scale.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int32)
        _set_buffer(model, t_b, q.reshape(old_bias[b].shape))
        t_b.quantization.scale = [float(s) for s in new_scale] if w_scale.size > 1 else [float(new_scale[0])]
        t_b.quantization.zeroPoint = [0] * len(t_b.quantization.scale)
        deq = q.astype(np.float64) * new_scale.astype(np.float64)
        name = t_b.name.decode() if isinstance(t_b.name, bytes) else str(t_b.name)
        # The bias in float the graph computes with, compared to a Keras bias when it is one.
        best = None
        for w in weights:
            if w.name != "bias":
                continue
            for row in _pieces(w):
                if row.size == n:
                    e = float(np.max(np.abs(deq - row.astype(np.float64))))
                    if best is None or e < best[1]:
                        best = (w.key, e)
        key, err = (best if best is not None and best[1] <= float(new_scale.max()) else (None, None))
        records.append(TensorRecord(b, name, [n], used_by, key, "int32-bias",
                                    [float(new_scale.min()), float(new_scale.max())], err == 0.0 if key else None, err))
    return records


# -- stream mode: shared state scales ----------------------------------------------------
def share_state_quantization(model, pairs: list[tuple[int, int]]) -> None:
    """For each (input position, output position) pair, give the input state the output's
    quantization, so firmware copies the output's int8 bytes into the input unchanged."""
    unshare_buffers(model)
    sg = model.subgraphs[0]
    old_bias = _int32_biases(model)
    consumers = _consumers(sg)
    # Ops that read their input scale at Prepare (no "same scale in and out" requirement).
    safe = {"FULLY_CONNECTED", "MUL", "ADD", "SUB", "LOGISTIC", "TANH"}
    for in_pos, out_pos in pairs:
        t_in = sg.tensors[sg.inputs[in_pos]]
        t_out = sg.tensors[sg.outputs[out_pos]]
        for op, _ in consumers.get(sg.inputs[in_pos], []):
            if op_name(model, op) not in safe:
                raise ExportError(
                    f"stream mode: a state input feeds {op_name(model, op)}, whose output must share the "
                    "input's scale; cannot give the state a common scale."
                )
        t_in.quantization.scale = list(t_out.quantization.scale)
        t_in.quantization.zeroPoint = list(t_out.quantization.zeroPoint)
    requantize_biases(model, old_bias)


def json_default(obj):
    """JSON for numpy scalars and arrays."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


# -- metadata and io ---------------------------------------------------------------------
def add_metadata(model, name: str, payload: dict) -> None:
    schema = _schema()
    buf = schema.BufferT()
    buf.data = np.frombuffer(json.dumps(payload, sort_keys=True, default=json_default).encode(), dtype=np.uint8).copy()
    model.buffers.append(buf)
    meta = schema.MetadataT()
    meta.name = name
    meta.buffer = len(model.buffers) - 1
    if model.metadata is None:
        model.metadata = []
    model.metadata = [m for m in model.metadata if (m.name.decode() if isinstance(m.name, bytes) else m.name) != name]
    model.metadata.append(meta)


def read_metadata(model_bytes: bytes, name: str = METADATA_NAME) -> dict | None:
    """The JSON metadata entry ``name`` of a model, or None."""
    model = read(model_bytes)
    for m in model.metadata or []:
        mname = m.name.decode() if isinstance(m.name, bytes) else m.name
        if mname == name:
            data = model.buffers[m.buffer].data
            return json.loads(np.asarray(data, dtype=np.uint8).tobytes().decode())
    return None


def io_quantization(model) -> dict[str, list[dict]]:
    sg = model.subgraphs[0]

    def info(idx):
        t = sg.tensors[idx]
        scale, zp, _ = _scales(t)
        return {"shape": [int(s) for s in t.shape], "dtype": type_name(t.type).lower(),
                "scale": float(scale[0]) if scale.size else None, "zero_point": int(zp[0]) if zp.size else None}

    return {"inputs": [info(i) for i in sg.inputs], "outputs": [info(i) for i in sg.outputs]}


def dedupe_buffers(model) -> int:
    """Points constant tensors with identical bytes at one buffer; returns bytes saved.

    The unrolled graph gives every time step its own copy of some constants (e.g. the same
    int32 bias of the input-side FULLY_CONNECTED): one copy is enough.
    """
    sg = model.subgraphs[0]
    first: dict[tuple, int] = {}
    saved = 0
    for t in sg.tensors:
        data = model.buffers[t.buffer].data
        if data is None or len(data) == 0:
            continue
        key = (int(t.type), np.asarray(data, dtype=np.uint8).tobytes())
        if key in first and first[key] != t.buffer:
            saved += len(data)
            t.buffer = first[key]
        else:
            first.setdefault(key, t.buffer)
    used = {t.buffer for t in sg.tensors}
    for i, buf in enumerate(model.buffers):
        if i and i not in used and buf.data is not None and len(buf.data) and not _is_metadata_buffer(model, i):
            buf.data = None  # unreferenced now
    return saved


def _is_metadata_buffer(model, index: int) -> bool:
    return any(m.buffer == index for m in (model.metadata or []))


def weight_bytes(model, int8_only: bool = False) -> int:
    """Bytes of the constant data of weights and biases (each buffer once; shape vectors and
    other unquantized int32 constants excluded). ``int8_only``: the int8 weight tensors only."""
    sg = model.subgraphs[0]
    seen = set()
    total = 0
    for t in sg.tensors:
        if t.buffer in seen:
            continue
        arr = _buffer_array(model, t)
        if arr is None:
            continue
        kind = type_name(t.type)
        if int8_only and kind != "INT8":
            continue
        if kind == "INT32" and (t.quantization is None or t.quantization.scale is None
                                or len(t.quantization.scale) == 0):
            continue  # shape/index constants
        seen.add(t.buffer)
        total += arr.nbytes
    return total


# -- saturating activations: input ranges no wider than what changes the int8 output -------
# Int8 TANH has the output scale 1/128 (zero point 0) and LOGISTIC 1/256 (zero point -128)
# in TFLite. Beyond these input bounds the int8 output is already at its end code
# (tanh: 127 above atanh(126.5/128) = 2.57, -128 below atanh(-127.5/128) = -3.09; logistic:
# 127 above logit(254.5/256) = 5.14, -128 below logit(0.5/256) = -6.24), so an input range
# clipped there gives the same outputs with a finer input step. Small margins kept.
_SATURATION_BOUNDS = {"TANH": (-3.2, 2.7), "LOGISTIC": (-6.4, 5.3)}


def tighten_saturating_inputs(model) -> int:
    """Narrows the int8 range of each tensor read only by TANH / LOGISTIC to the bounds above
    (never widens it); returns how many tensors changed. Only tensors produced by ops that
    read their output scale at Prepare (FULLY_CONNECTED, ADD, SUB, MUL) are touched."""
    sg = model.subgraphs[0]
    consumers = _consumers(sg)
    producers = {o: op for op in sg.operators for o in op.outputs}
    graph_io = set(sg.inputs) | set(sg.outputs)
    changed = 0
    for idx, t in enumerate(sg.tensors):
        if idx in graph_io or idx not in producers or type_name(t.type) != "INT8":
            continue
        names = {op_name(model, op) for op, _ in consumers.get(idx, [])}
        if len(names) != 1 or not names <= set(_SATURATION_BOUNDS):
            continue
        if op_name(model, producers[idx]) not in ("FULLY_CONNECTED", "ADD", "SUB", "MUL"):
            continue
        scale, zp, _ = _scales(t)
        if scale.size != 1:
            continue
        s, z = float(scale[0]), int(zp[0])
        lo, hi = (-128 - z) * s, (127 - z) * s
        b_lo, b_hi = _SATURATION_BOUNDS[names.pop()]
        new_lo, new_hi = max(lo, b_lo), min(hi, b_hi)
        if new_hi - new_lo > 0.97 * (hi - lo):
            continue  # already (almost) inside the bounds
        new_lo, new_hi = min(new_lo, 0.0), max(new_hi, 0.0)  # zero stays representable
        new_s = np.float32((new_hi - new_lo) / 255.0)
        new_z = int(np.clip(np.round(-128 - new_lo / float(new_s)), -128, 127))
        t.quantization.scale = [float(new_s)]
        t.quantization.zeroPoint = [new_z]
        changed += 1
    return changed
