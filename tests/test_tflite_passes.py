"""The flatbuffer rewrite passes of ``keras_lowprec.export.tflite`` on tiny in-memory models.

Every model here is built directly with the schema's object API (no converter, no Keras):
a one-op FULLY_CONNECTED int8 model, a stream step graph with a state input/output, a
fused-LSTM graph, a graph with TFLM_DECODE ops. Each pass is checked on what it must
rewrite (arrays, scales, operator lists, tensor counts, names, buffer alignment), and
``test_same_bytes_as_the_old_pass`` checks that each ported pass writes byte for byte
what the function it replaces writes on the same input.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import flatbuffers
import numpy as np
import pytest

pytest.importorskip("tflite_micro")

from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as S  # noqa: E402

from keras_lowprec.export.errors import ExactnessError, ExportError  # noqa: E402
from keras_lowprec.export.tflite import TFLiteModel  # noqa: E402
from keras_lowprec.export.tflite import activations, checks, decode, exact_weights, fused_lstm, metadata  # noqa: E402
from keras_lowprec.export.tflite import state_io, unroll  # noqa: E402

# -- building tiny models -------------------------------------------------------------------
_NP = {"INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "FLOAT32": np.float32, "UINT8": np.uint8}


@dataclass
class T:
    """A tensor of a test model: ``data`` makes it a constant; ``share`` names a tensor
    whose buffer it points at (as the converter does for identical bytes)."""

    name: str
    type: str
    shape: list
    data: object = None
    scale: object = None
    zp: object = 0
    axis: int = 0
    sig: list | None = None
    share: str | None = None
    variable: bool = False


def build(tensors: list[T], ops: list[tuple], inputs: list[str], outputs: list[str], n_subgraphs: int = 1) -> bytes:
    """Packs a model: ``ops`` are ``(op name, input names or None, output names[, options,
    intermediates])``; ``CUSTOM:<code>`` names a custom op."""
    m = S.ModelT()
    m.version, m.description = 3, "test"
    m.buffers, m.operatorCodes = [S.BufferT()], []
    sg = S.SubGraphT()
    sg.tensors, sg.operators, sg.name = [], [], "main"
    index = {}
    for spec in tensors:
        t = S.TensorT()
        t.name, t.type, t.shape = spec.name, getattr(S.TensorType, spec.type), list(spec.shape)
        t.isVariable = spec.variable
        if spec.sig is not None:
            t.shapeSignature = list(spec.sig)
        if spec.share is not None:
            t.buffer = sg.tensors[index[spec.share]].buffer
        elif spec.data is not None:
            buf = S.BufferT()
            buf.data = np.frombuffer(np.asarray(spec.data, _NP[spec.type]).tobytes(), np.uint8).copy()
            m.buffers.append(buf)
            t.buffer = len(m.buffers) - 1
        if spec.scale is not None:
            q = S.QuantizationParametersT()
            q.scale = [float(s) for s in np.atleast_1d(spec.scale)]
            q.zeroPoint = [int(z) for z in np.broadcast_to(spec.zp, (len(q.scale),))]
            q.quantizedDimension = spec.axis
            t.quantization = q
        index[spec.name] = len(sg.tensors)
        sg.tensors.append(t)
    codes = {}
    for name, ins, outs, *rest in ops:
        if name not in codes:
            code = S.OperatorCodeT()
            if name.startswith("CUSTOM:"):
                code.builtinCode = code.deprecatedBuiltinCode = S.BuiltinOperator.CUSTOM
                code.customCode = name[len("CUSTOM:"):]
            else:
                code.builtinCode = code.deprecatedBuiltinCode = getattr(S.BuiltinOperator, name)
            code.version = 1
            codes[name] = len(m.operatorCodes)
            m.operatorCodes.append(code)
        op = S.OperatorT()
        op.opcodeIndex = codes[name]
        op.inputs = [-1 if n is None else index[n] for n in ins]
        op.outputs = [index[n] for n in outs]
        if rest and rest[0] is not None:
            op.builtinOptionsType = getattr(S.BuiltinOptions, type(rest[0]).__name__[:-1])
            op.builtinOptions = rest[0]
        if len(rest) > 1:
            op.intermediates = [index[n] for n in rest[1]]
        sg.operators.append(op)
    sg.inputs, sg.outputs = [index[n] for n in inputs], [index[n] for n in outputs]
    m.subgraphs = [sg] + [S.SubGraphT() for _ in range(n_subgraphs - 1)]
    for extra in m.subgraphs[1:]:
        extra.tensors, extra.operators, extra.inputs, extra.outputs = [], [], [], []
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@dataclass
class W:
    """What the passes read of ``plan.WeightInfo``."""

    layer: str
    name: str
    value: np.ndarray
    method: str | None
    encoding: str
    scale: float | None
    levels: object = None
    gates: int = 1
    channel_scale: object = None

    @property
    def key(self) -> str:
        return f"{self.layer}/{self.name}"


def _codes(w: np.ndarray, axis: int | None):
    """The converter's symmetric int8: codes and scales (per channel along ``axis``)."""
    if axis is None:
        s = np.float32(np.abs(w).max() / 127)
        return np.round(w / s).astype(np.int8), s
    s = (np.abs(w).max(axis=1 - axis) / 127).astype(np.float32)
    shape = [1, 1]
    shape[axis] = -1
    return np.round(w / s.reshape(shape)).astype(np.int8), s


# Dense 4 -> 3, ternary kernel (level 0.5: exact codes ±64, scale 0.5/64), float bias.
KERNEL = np.array([[0.5, 0, -0.5], [0, 0.5, 0.5], [-0.5, -0.5, 0], [0.5, 0, 0.5]], np.float32)
BIAS = np.array([0.3, -0.2, 0.05], np.float32)
X_SCALE, X_ZP = 0.05, -3
FC_WEIGHTS = [W("dense", "kernel", KERNEL, "ternary", "ternary", 0.5 / 64),
              W("dense", "bias", BIAS, None, "int8", None)]


def fc_model(kernel=KERNEL) -> bytes:
    """input -> FULLY_CONNECTED (per-channel int8 weight, int32 bias) -> MUL by a constant."""
    codes, w_s = _codes(kernel.T, axis=0)
    b_s = (X_SCALE * w_s.astype(np.float64)).astype(np.float32)
    return build([
        T("input", "INT8", [1, 4], scale=X_SCALE, zp=X_ZP),
        T("dense/kernel", "INT8", [3, 4], codes, w_s, 0, axis=0),
        T("dense/bias", "INT32", [3], np.round(BIAS / b_s).astype(np.int32), b_s, 0),
        T("dense/out", "INT8", [1, 3], scale=0.1, zp=2),
        T("const", "INT8", [3], [100, -100, 7], 0.5, 0),
        T("Identity", "INT8", [1, 3], scale=0.2, zp=0),
    ], [("FULLY_CONNECTED", ["input", "dense/kernel", "dense/bias"], ["dense/out"]),
        ("MUL", ["dense/out", "const"], ["Identity"])], ["input"], ["Identity"])


# Stream step graph: a SimpleRNN-like cell with 2 units and a Dense 4 head.
W1 = np.array([[0.5, -0.5], [0, 0.5], [0.5, 0]], np.float32)  # (inputs, units)
W2 = np.array([[0.25, 0], [-0.25, 0.25]], np.float32)
W3 = np.array([[0.5, 0, -0.5, 0.5], [0, 0.5, 0.5, -0.5]], np.float32)
B12 = np.array([0.1, -0.1], np.float32)
STEP_WEIGHTS = [W("rnn", "kernel", W1, "ternary", "ternary", 0.5 / 64),
                W("rnn", "recurrent_kernel", W2, "ternary", "ternary", 0.25 / 64),
                W("head", "kernel", W3, "ternary", "ternary", 0.5 / 64)]


def step_model() -> bytes:
    """``(state, x) -> (h, y)`` in the converter's order (state first) and names; the two
    int32 biases share one buffer; the ADD output has a range far wider than TANH needs."""
    c1, s1 = _codes(W1.T, None)
    c2, s2 = _codes(W2.T, None)
    c3, s3 = _codes(W3.T, None)
    b_s = np.float32(0.05 * s1)
    return build([
        T("serving_default_state_0:0", "INT8", [1, 2], scale=0.02, zp=1),
        T("serving_default_input:0", "INT8", [1, 3], scale=0.05, zp=-3),
        T("rnn/kernel", "INT8", [2, 3], c1, s1, 0),
        T("rnn/bias", "INT32", [2], np.round(B12 / b_s).astype(np.int32), b_s, 0),
        T("rnn/xw", "INT8", [1, 2], scale=0.04, zp=0),
        T("rnn/recurrent_kernel", "INT8", [2, 2], c2, s2, 0),
        T("rnn/recurrent_bias", "INT32", [2], share="rnn/bias", scale=np.float32(0.02 * s2), zp=0),
        T("rnn/hu", "INT8", [1, 2], scale=0.03, zp=-1),
        T("rnn/pre", "INT8", [1, 2], scale=0.08, zp=0),
        T("Identity_1", "INT8", [1, 2], scale=1 / 128, zp=0),
        T("head/kernel", "INT8", [4, 2], c3, s3, 0),
        T("head/bias", "INT32", [4], [5, -5, 0, 1], np.float32(s3 / 128), 0),
        T("Identity", "INT8", [1, 4], scale=0.1, zp=2),
    ], [("FULLY_CONNECTED", ["serving_default_input:0", "rnn/kernel", "rnn/bias"], ["rnn/xw"]),
        ("FULLY_CONNECTED", ["serving_default_state_0:0", "rnn/recurrent_kernel", "rnn/recurrent_bias"], ["rnn/hu"]),
        ("ADD", ["rnn/xw", "rnn/hu"], ["rnn/pre"]),
        ("TANH", ["rnn/pre"], ["Identity_1"]),
        ("FULLY_CONNECTED", ["Identity_1", "head/kernel", "head/bias"], ["Identity"])],
        ["serving_default_state_0:0", "serving_default_input:0"], ["Identity_1", "Identity"])


N = 2  # LSTM units
LSTM_K = np.where(np.arange(3 * 4 * N).reshape(3, 4 * N) % 3 == 0, 0.5, -0.5).astype(np.float32)
LSTM_R = np.where(np.arange(N * 4 * N).reshape(N, 4 * N) % 2 == 0, 0.25, 0).astype(np.float32)
LSTM_B = np.linspace(-0.4, 0.4, 4 * N).astype(np.float32)
LSTM_WEIGHTS = [W("lstm", "kernel", LSTM_K, "ternary", "ternary", 0.5 / 64, gates=4),
                W("lstm", "recurrent_kernel", LSTM_R, "ternary", "ternary", 0.25 / 64, gates=4),
                W("lstm", "bias", LSTM_B, None, "int8", None, gates=4)]


def fused_model(steps: int = 4, extra_op: str | None = None, begin: int = -1) -> bytes:
    """input (1, T, 3) -> UNIDIRECTIONAL_SEQUENCE_LSTM (4 float32 intermediates) ->
    STRIDED_SLICE (last step) -> [extra op]."""
    x_s = 0.05
    tensors = [T("input", "INT8", [1, steps, 3], scale=x_s, zp=0, sig=[1, steps, 3])]
    ins = ["input"]
    for kind, value in (("k", LSTM_K), ("r", LSTM_R)):
        for g in range(4):
            codes, s = _codes(value[:, g * N:(g + 1) * N].T, None)
            tensors.append(T(f"lstm/{kind}{g}", "INT8", [N, value.shape[0]], codes, s, 0))
            ins.append(f"lstm/{kind}{g}")
            if kind == "k":
                tensors.append(T(f"lstm/b{g}", "INT32", [N],
                                 np.round(LSTM_B[g * N:(g + 1) * N] / np.float32(x_s * s)).astype(np.int32),
                                 np.float32(x_s * s), 0))
    ins += [None] * 3 + [f"lstm/b{g}" for g in range(4)] + [None] * 2 + ["h", "c"] + [None] * 4
    tensors += [T("h", "INT8", [1, N], scale=1 / 128, zp=0, variable=True),
                T("c", "INT16", [1, N], scale=2 ** -11, zp=0, variable=True),
                T("seq", "INT8", [1, steps, N], scale=1 / 128, zp=0),
                *[T(f"inter{i}", "FLOAT32" if i < 4 else "INT8", [0]) for i in range(5)],
                T("begin", "INT32", [3], [0, begin, 0]), T("end", "INT32", [3], [0, 0, 0]),
                T("strides", "INT32", [3], [1, 1, 1]), T("last", "INT8", [1, N], scale=1 / 128, zp=0),
                T("out", "INT8", [1, N], scale=1 / 128, zp=0)]
    ops = [("UNIDIRECTIONAL_SEQUENCE_LSTM", ins, ["seq"], None, [f"inter{i}" for i in range(5)]),
           ("STRIDED_SLICE", ["seq", "begin", "end", "strides"], ["last"])]
    ops.append((extra_op or "TANH", ["last"], ["out"]))
    return build(tensors, ops, ["input"], ["out"])


def decode_model() -> bytes:
    """x -> FC(w_a) -> FC(w_b) -> FC(w_c) where w_a and w_b are decoded by two DECODEs of
    the same buffers (TFLM's tool inserts one per consumer) and w_c by its own."""
    table = np.array([-64, 0, 64], np.int8)
    tensors = [T("x", "INT8", [1, 4], scale=0.05, zp=0),
               T("enc", "UINT8", [4], [1, 2, 3, 4]), T("enc_ancillary", "UINT8", [3], table.view(np.uint8)),
               T("enc#2", "UINT8", [4], share="enc"), T("enc_ancillary#2", "UINT8", [3], share="enc_ancillary"),
               T("enc_c", "UINT8", [4], [4, 3, 2, 1]), T("enc_c_ancillary", "UINT8", [3], share="enc_ancillary")]
    for name in ("w_a", "w_b", "w_c", "h_a", "h_b", "y"):
        tensors.append(T(name, "INT8", [4, 4] if name.startswith("w") else [1, 4], scale=0.1, zp=0))
    ops = [("CUSTOM:TFLM_DECODE", ["enc", "enc_ancillary"], ["w_a"]),
           ("FULLY_CONNECTED", ["x", "w_a", None], ["h_a"]),
           ("CUSTOM:TFLM_DECODE", ["enc#2", "enc_ancillary#2"], ["w_b"]),
           ("FULLY_CONNECTED", ["h_a", "w_b", None], ["h_b"]),
           ("CUSTOM:TFLM_DECODE", ["enc_c", "enc_c_ancillary"], ["w_c"]),
           ("FULLY_CONNECTED", ["h_b", "w_c", None], ["y"])]
    return build(tensors, ops, ["x"], ["y"])


def load(model_bytes: bytes) -> TFLiteModel:
    return TFLiteModel.from_bytes(model_bytes)


def names(model: TFLiteModel) -> list[str]:
    return [op.name for op in model.operators]


def by_name(model: TFLiteModel, name: str):
    return next(t for t in model.tensors if t.name == name)


def buffer_offsets(model_bytes: bytes) -> list[int]:
    """File offsets of the data of every non-empty buffer (read with the table API)."""
    root = S.Model.GetRootAs(model_bytes, 0)
    out = []
    for i in range(root.BuffersLength()):
        buf = root.Buffers(i)
        o = buf._tab.Offset(4)  # field 0: data
        if o and buf.DataLength():
            out.append(buf._tab.Vector(o))
    return out


# -- the wrapper ----------------------------------------------------------------------------
def test_reading_refuses_what_is_not_a_model():
    with pytest.raises(ExportError, match="x: expected the bytes of a .tflite model, got str"):
        TFLiteModel.from_bytes("model", name="x")
    with pytest.raises(ExportError, match="model_bytes: not a TFLite flatbuffer"):
        TFLiteModel.from_bytes(b"\0" * 32)
    damaged = bytearray(fc_model())[:40]
    with pytest.raises(ExportError, match="not a readable TFLite flatbuffer"):
        TFLiteModel.from_bytes(bytes(damaged))


def test_views_give_names_arrays_shapes_and_quantization():
    m = load(fc_model())
    sg = m.subgraph
    assert len(m.subgraphs) == 1 and len(sg.tensors) == 6
    w = sg.tensors[1]
    assert (w.index, w.name, w.type_name, w.shape, w.buffer) == (1, "dense/kernel", "INT8", [3, 4], 1)
    assert w.array.dtype == np.int8 and w.array.shape == (3, 4)
    assert set(np.unique(w.array).tolist()) == {-127, 0, 127}
    np.testing.assert_allclose(w.scales, [0.5 / 127] * 3, rtol=1e-6)
    assert w.zero_points.tolist() == [0, 0, 0] and w.axis == 0
    np.testing.assert_allclose(w.dequantize(), KERNEL.T, atol=1e-7)
    x = sg.tensors[0]
    assert x.array is None and not x.is_constant and x.scales.tolist() == [np.float32(X_SCALE)]
    assert names(m) == ["FULLY_CONNECTED", "MUL"] == [op.name for op in sg.operators]
    fc = m.operators[0]
    assert (fc.inputs, fc.outputs, fc.intermediates) == ([0, 1, 2], [3], None)
    assert m.consumers(3) == [(m.operators[1], 0)] and m.consumers(0) == [(fc, 0)] and m.consumers(5) == []
    assert m.producer(3) == fc and m.producer(0) is None
    assert checks.op_names(m) == ["FULLY_CONNECTED", "MUL"]


def test_array_setter_checks_dtype_and_size():
    m = load(fc_model())
    w = m.tensors[1]
    with pytest.raises(ValueError, match="INT8"):
        w.array = np.zeros((3, 4), np.int32)
    with pytest.raises(ValueError, match="shape"):
        w.array = np.zeros(5, np.int8)
    w.array = np.full((3, 4), 9, np.int8)
    assert load(m.to_bytes()).tensors[1].array.tolist() == [[9] * 4] * 3


def test_opcode_index_add_tensor_and_new_operator():
    m = load(fc_model())
    assert m.opcode_index("FULLY_CONNECTED", 1) == 0
    n_codes = len(m.raw.operatorCodes)
    pack = m.opcode_index("PACK", 2)
    assert pack == n_codes and m.opcode_index("PACK", 2) == pack and len(m.raw.operatorCodes) == n_codes + 1
    idx = m.add_tensor(0, "input_copy", shape=[1, 2, 4])
    t = m.tensors[idx]
    assert (idx, t.name, t.shape, t.buffer, t.scales.tolist()) == (6, "input_copy", [1, 2, 4], 0, [np.float32(X_SCALE)])
    op = m.new_operator("PACK", 2, [0, 0], [idx], S.PackOptionsT())
    m.subgraph.operators = m.operators + [op]
    back = load(m.to_bytes())
    assert names(back) == ["FULLY_CONNECTED", "MUL", "PACK"]
    assert back.operators[2].raw.builtinOptionsType == S.BuiltinOptions.PackOptions
    assert back.tensors[6].name == "input_copy"


def test_to_bytes_aligns_every_buffer_to_16_bytes():
    m = load(fc_model())
    m.add_buffer(b"\1\2\3")  # odd sizes shift what follows
    m.tensors[4].buffer = m.add_buffer(np.array([1, 2, 3], np.int8))
    plain, aligned = m.to_bytes(align=False), m.to_bytes()
    assert any(o % 16 for o in buffer_offsets(plain)), "the test needs a model packed unaligned"
    offsets = buffer_offsets(aligned)
    assert len(offsets) == len(buffer_offsets(plain)) and all(o % 16 == 0 for o in offsets)
    assert load(aligned).to_bytes() == aligned  # idempotent
    assert load(aligned).tensors[4].array.tolist() == [1, 2, 3]


def test_to_bytes_refuses_to_skip_alignment(monkeypatch):
    from tflite_micro.tensorflow.lite.micro import tools

    monkeypatch.delattr(tools, "tflite_flatbuffer_align_wrapper", raising=False)
    monkeypatch.setitem(sys.modules, tools.__name__ + ".tflite_flatbuffer_align_wrapper", None)
    with pytest.raises(ExportError, match="align"):
        load(fc_model()).to_bytes()


def test_metadata_round_trip_and_replacement():
    m = load(fc_model())
    assert metadata.read_metadata(m) is None
    metadata.add_metadata(m, metadata.METADATA_NAME, {"mode": "stream", "n": np.int64(3), "a": np.arange(2)})
    metadata.add_metadata(m, metadata.METADATA_NAME, {"mode": "sequence"})
    out = m.to_bytes()
    assert metadata.read_metadata(out) == {"mode": "sequence"}
    assert [e.name for e in load(out).raw.metadata] == [b"keras_lowprec"]
    m2 = load(out)
    metadata.add_metadata(m2, "other", {"x": 1})
    assert metadata.read_metadata(m2, "other") == {"x": 1} and m2.metadata("missing") is None


# -- exact weights ----------------------------------------------------------------------------
def test_encode_weights_rewrites_codes_scales_and_biases():
    m = load(fc_model())
    records = exact_weights.encode_weights(m, FC_WEIGHTS)
    out = load(m.to_bytes())
    w, b = out.tensors[1], out.tensors[2]
    assert w.array.tolist() == (KERNEL.T * 128).astype(np.int8).tolist()  # 0.5 -> 64
    assert w.scales.tolist() == [np.float32(0.5 / 64)] * 3 and w.axis == 0
    np.testing.assert_array_equal(w.array.astype(np.float32) * np.float32(0.5 / 64), KERNEL.T)
    new_b_s = np.float32(np.float32(X_SCALE) * np.float64(np.float32(0.5 / 64)))
    assert b.scales.tolist() == [new_b_s] * 3
    value = load(fc_model()).tensors[2].dequantize().astype(np.float64)  # the real bias before
    assert b.array.tolist() == np.round(value / np.float64(new_b_s)).astype(np.int32).tolist()
    assert np.abs(b.array * np.float64(new_b_s) - BIAS).max() <= new_b_s
    assert [(r.index, r.name, r.weight, r.encoding) for r in records] == [
        (1, "dense/kernel", "dense/kernel", "ternary"), (4, "const", None, "int8-constant"),
        (2, "dense/bias", "dense/bias", "int32-bias")]
    assert records[0].exact is True and records[0].codes == [-64, 0, 64] and records[0].scale == [0.5 / 64]
    assert records[1].as_dict()["shape"] == [3] and out.tensors[4].array.tolist() == [100, -100, 7]
    assert records[2].used_by == "FULLY_CONNECTED" and records[2].max_abs_error <= float(new_b_s)


def test_encode_weights_keeps_full_precision_weights_as_converted():
    m = load(fc_model())
    weights = [W("dense", "kernel", KERNEL, None, "int8", None)]
    before = m.tensors[1].array.copy()
    rec = exact_weights.encode_weights(m, weights)[0]
    assert (rec.encoding, rec.exact, rec.weight) == ("int8", False, "dense/kernel")
    assert np.array_equal(m.tensors[1].array, before)


def test_encode_weights_refuses_inexact_or_missing_weights():
    with pytest.raises(ExactnessError, match="not integer multiples"):
        exact_weights.encode_weights(load(fc_model()), [W("dense", "kernel", KERNEL, "ternary", "ternary", 0.3 / 64)])
    other = W("dense_2", "kernel", np.full((5, 2), 0.5, np.float32), "ternary", "ternary", 0.5 / 64)
    with pytest.raises(ExactnessError, match="could not locate these rounded weights.*dense_2/kernel"):
        exact_weights.encode_weights(load(fc_model()), FC_WEIGHTS + [other])
    assert exact_weights.encode_weights(load(fc_model()), FC_WEIGHTS + [other], optional=("dense_2/kernel",))


def test_unshare_then_dedupe_buffers():
    m = load(step_model())
    b1, b2 = by_name(m, "rnn/bias"), by_name(m, "rnn/recurrent_bias")
    assert b1.buffer == b2.buffer
    n_buffers = m.num_buffers
    assert exact_weights.unshare_buffers(m) == 1
    assert b1.buffer != b2.buffer and m.num_buffers == n_buffers + 1 and b1.data == b2.data
    assert exact_weights.dedupe_buffers(m) == 8  # two int32
    assert b1.buffer == b2.buffer and m.buffer_data(n_buffers) is None  # the copy emptied


def test_dedupe_keeps_metadata_and_different_types_apart():
    m = load(fc_model())
    m.tensors[4].buffer = m.add_buffer(np.array([1, 2, 3], np.int8))
    metadata.add_metadata(m, "meta", {})
    idx = m.add_tensor(4, "u8")
    m.tensors[idx].type_name, m.tensors[idx].buffer = "UINT8", m.add_buffer(np.array([1, 2, 3], np.uint8))
    assert exact_weights.dedupe_buffers(m) == 0
    assert metadata.read_metadata(m, "meta") == {} and m.tensors[idx].array.tolist() == [1, 2, 3]


# -- stream step graphs -----------------------------------------------------------------------
def stream_ready(model_bytes: bytes | None = None) -> TFLiteModel:
    """The step graph after the exporter's stream passes, ready to unroll."""
    m = load(model_bytes or step_model())
    exact_weights.encode_weights(m, STEP_WEIGHTS)
    state_io.order_stream_io(m, [2])
    state_io.share_state_quantization(m, [(1, 1)])
    return m


def test_order_stream_io_puts_x_and_y_first():
    m = load(step_model())
    state_io.order_stream_io(m, [2])
    sg = m.subgraph
    assert [sg.tensors[i].name for i in sg.inputs] == ["serving_default_input:0", "serving_default_state_0:0"]
    assert [sg.tensors[i].name for i in sg.outputs] == ["Identity", "Identity_1"]
    with pytest.raises(ExportError, match=r"state 0 has shape \[1, 2\], expected \[1, 3\]"):
        state_io.order_stream_io(load(step_model()), [3])
    with pytest.raises(ExportError, match="expected 3 inputs and outputs"):
        state_io.order_stream_io(load(step_model()), [2, 2])


def test_share_state_quantization_gives_the_input_state_the_output_scale():
    m = load(step_model())
    state_io.order_stream_io(m, [2])
    bias_before = by_name(m, "rnn/recurrent_bias").dequantize().astype(np.float64)
    kept_bias = by_name(m, "rnn/bias").array.copy()
    state_io.share_state_quantization(m, [(1, 1)])
    out = load(m.to_bytes())
    s_in, s_out = by_name(out, "serving_default_state_0:0"), by_name(out, "Identity_1")
    assert s_in.scales.tolist() == s_out.scales.tolist() == [np.float32(1 / 128)]
    assert s_in.zero_points.tolist() == [0]
    # the recurrent bias, read with the state, is re-expressed in the new input scale...
    rb = by_name(out, "rnn/recurrent_bias")
    w_s = by_name(out, "rnn/recurrent_kernel").scales[0]
    assert rb.scales.tolist() == [np.float32(np.float64(np.float32(1 / 128)) * np.float64(w_s))]
    assert rb.array.tolist() == np.round(bias_before / np.float64(rb.scales[0])).astype(np.int32).tolist()
    # ...without touching the input bias that shared its buffer
    assert by_name(out, "rnn/bias").array.tolist() == kept_bias.tolist()


def test_share_state_quantization_refuses_scale_bound_readers():
    m = load(step_model())
    m.operators[1].raw.opcodeIndex = m.opcode_index("MAX_POOL_2D", 1)  # reads the state, keeps its scale
    state_io.order_stream_io(m, [2])
    with pytest.raises(ExportError, match="a state input feeds MAX_POOL_2D"):
        state_io.share_state_quantization(m, [(1, 1)])


def test_tighten_saturating_inputs_narrows_only_the_tanh_input():
    m = load(step_model())
    before = {t.name: (t.scales.tolist(), t.zero_points.tolist()) for t in m.tensors}
    assert activations.tighten_saturating_inputs(m) == 1
    pre = by_name(m, "rnn/pre")
    s = np.float32((2.7 + 3.2) / 255)
    assert pre.scales.tolist() == [s]
    assert pre.zero_points.tolist() == [int(np.round(-128 + 3.2 / float(s)))]
    lo, hi = (-128 - pre.zero_points[0]) * pre.scales[0], (127 - pre.zero_points[0]) * pre.scales[0]
    assert abs(lo + 3.2) < s and abs(hi - 2.7) < s  # the bounds, up to the zero point's rounding
    assert {t.name: (t.scales.tolist(), t.zero_points.tolist()) for t in m.tensors if t.name != "rnn/pre"} == \
        {k: v for k, v in before.items() if k != "rnn/pre"}
    assert activations.tighten_saturating_inputs(m) == 0  # already inside the bounds


@pytest.mark.parametrize("return_sequences", [False, True])
def test_unroll_stream_repeats_the_step(return_sequences):
    m = stream_ready()
    n_step_tensors = len(m.tensors)
    remap = unroll.unroll_stream(m, 3, 1, return_sequences)
    out = load(m.to_bytes())
    ops = names(out)
    step = ["FULLY_CONNECTED", "FULLY_CONNECTED", "ADD", "TANH"]
    if return_sequences:
        assert ops == ["UNPACK"] + (step + ["FULLY_CONNECTED"]) * 3 + ["PACK"]
    else:  # the head only after the last step
        assert ops == ["UNPACK"] + step * 3 + ["FULLY_CONNECTED"]
    sg = out.subgraph
    assert len(sg.inputs) == len(sg.outputs) == 1
    assert sg.tensors[sg.inputs[0]].shape == [1, 3, 3] and sg.tensors[sg.inputs[0]].name == "input"
    y = sg.tensors[sg.outputs[0]]
    assert (y.name, y.shape) == (("output", [1, 3, 4]) if return_sequences else ("Identity_t2", [1, 4]))
    # the weights are stored once: every step's FC reads the same tensors
    fcs = [op for op in out.operators if op.name == "FULLY_CONNECTED"]
    assert len({op.inputs[1] for op in fcs}) == 3 and len({op.inputs[2] for op in fcs}) == 3
    # step 0 reads the initial state: a constant holding the zero point
    init = by_name(out, "initial_state_0")
    assert init.array.tolist() == [[0, 0]] and out.operators[2].inputs[0] == init.index
    # each later step reads the state the previous one wrote
    tanhs = [op for op in out.operators if op.name == "TANH"]
    recurrent = [op for op in fcs if sg.tensors[op.inputs[1]].name == "rnn/recurrent_kernel"]
    assert [op.inputs[0] for op in recurrent[1:]] == [t.outputs[0] for t in tanhs[:-1]]
    assert [sg.tensors[t.outputs[0]].name for t in tanhs] == ["Identity_1_t0", "Identity_1_t1", "Identity_1_t2"]
    assert set(remap) <= set(range(n_step_tensors + 100)) and len(set(remap.values())) == len(sg.tensors)
    unpack = out.operators[0].raw.builtinOptions
    assert (unpack.num, unpack.axis) == (3, 1)


def test_unroll_stream_checks_the_step_graph():
    m = load(step_model())
    state_io.order_stream_io(m, [2])
    with pytest.raises(ExportError, match="not quantized like its output state"):
        unroll.unroll_stream(m, 3, 1, False)
    with pytest.raises(ExportError, match="expected 3 inputs and outputs"):
        unroll.unroll_stream(stream_ready(), 3, 2, False)


def test_drop_unused_tensors_renumbers():
    m = load(fc_model())
    m.add_tensor(0, "orphan")
    m.subgraph.operators = m.operators[:1]  # MUL gone: const and Identity unused but Identity is an output
    m.subgraph.outputs = [3]
    remap = unroll.drop_unused_tensors(m)
    assert remap == {0: 0, 1: 1, 2: 2, 3: 3}
    assert [t.name for t in m.tensors] == ["input", "dense/kernel", "dense/bias", "dense/out"]
    assert load(m.to_bytes()).subgraph.outputs == [3]


# -- fused LSTM ---------------------------------------------------------------------------------
def test_integer_intermediates_then_integer_only():
    m = load(fused_model())
    with pytest.raises(ExportError, match="UNIDIRECTIONAL_SEQUENCE_LSTM with FLOAT32 tensor 'inter0'"):
        checks.check_integer_only(m)
    assert fused_lstm.integer_intermediates(m) == 4
    assert [by_name(m, f"inter{i}").type_name for i in range(5)] == ["INT16"] * 4 + ["INT8"]
    checks.check_integer_only(load(m.to_bytes()))
    assert fused_lstm.integer_intermediates(m) == 0


def test_to_single_step_sets_the_time_axis_to_one():
    m = load(fused_model(steps=4))
    fused_lstm.prepare(m, 1, 4)
    out = load(m.to_bytes())
    assert by_name(out, "input").shape == [1, 1, 3] and by_name(out, "input").shape_signature == [1, 1, 3]
    assert by_name(out, "seq").shape == [1, 1, N] and by_name(out, "seq").shape_signature is None
    assert by_name(out, "lstm/k0").shape == [N, 3] and by_name(out, "begin").array.tolist() == [0, -1, 0]
    with pytest.raises(ExportError, match=r"ops \['RESHAPE'\] may depend on the sequence length"):
        fused_lstm.to_single_step(load(fused_model(extra_op="RESHAPE")), 4)
    with pytest.raises(ExportError, match="unexpected STRIDED_SLICE"):
        fused_lstm.to_single_step(load(fused_model(begin=0)), 4)
    with pytest.raises(ExportError, match="produced 1 UNIDIRECTIONAL_SEQUENCE_LSTM ops for 2 LSTM layers"):
        fused_lstm.check_fused(load(fused_model()), 2)


def test_encode_weights_on_the_fused_lstm_gates():
    m = load(fused_model())
    records = exact_weights.encode_weights(m, LSTM_WEIGHTS)
    by_enc = {}
    for r in records:
        by_enc.setdefault(r.encoding, []).append(r)
    assert len(by_enc["ternary"]) == 8 and len(by_enc["int32-bias"]) == 4
    for g in range(4):
        k = by_name(m, f"lstm/k{g}")
        np.testing.assert_array_equal(k.array * np.float32(0.5 / 64), LSTM_K[:, g * N:(g + 1) * N].T)
        b = by_name(m, f"lstm/b{g}")
        assert b.scales.tolist() == [np.float32(np.float64(np.float32(0.05)) * np.float64(np.float32(0.5 / 64)))]
    assert {r.weight for r in by_enc["int32-bias"]} == {"lstm/bias"}


# -- integer-only check and summaries -------------------------------------------------------------
def test_check_integer_only_names_each_problem():
    with pytest.raises(ExportError, match=r"CUSTOM:TFLM_DECODE \(custom/Flex op\)"):
        checks.check_integer_only(load(decode_model()))
    with pytest.raises(ExportError, match="has 2 subgraphs"):
        checks.check_integer_only(load(build([T("x", "INT8", [1])], [], ["x"], ["x"], n_subgraphs=2)))
    with pytest.raises(ExportError, match=r"dynamic shape \[-1, 4\] of tensor 'x'"):
        checks.check_integer_only(load(build([T("x", "INT8", [1, 4], sig=[-1, 4])], [], ["x"], ["x"])))
    with pytest.raises(ExportError, match="model input/output of type FLOAT32"):
        checks.check_integer_only(load(build([T("x", "FLOAT32", [1])], [], ["x"], ["x"])))
    checks.check_integer_only(load(fc_model()))


def test_io_quantization_and_weight_bytes():
    m = load(fc_model())
    assert checks.io_quantization(m) == {
        "inputs": [{"shape": [1, 4], "dtype": "int8", "scale": float(np.float32(X_SCALE)), "zero_point": X_ZP}],
        "outputs": [{"shape": [1, 3], "dtype": "int8", "scale": float(np.float32(0.2)), "zero_point": 0}]}
    assert checks.weight_bytes(m) == 12 + 12 + 3 and checks.weight_bytes(m, int8_only=True) == 15
    m.tensors[2].raw.quantization = None  # an unquantized int32: a shape vector, not a bias
    assert checks.weight_bytes(m) == 15


# -- compressed weights ---------------------------------------------------------------------------
def test_share_decodes_keeps_one_decode_per_buffers():
    m = load(decode_model())
    assert decode.share_decodes(m) == 1
    out = load(m.to_bytes())
    assert names(out) == ["CUSTOM:TFLM_DECODE", "FULLY_CONNECTED", "FULLY_CONNECTED", "CUSTOM:TFLM_DECODE",
                          "FULLY_CONNECTED"]
    fc = [op for op in out.operators if op.name == "FULLY_CONNECTED"]
    assert [out.tensors[op.inputs[1]].name for op in fc] == ["w_a", "w_a", "w_c"]
    assert len(out.tensors) == 13 - 3 and {"w_b", "enc#2", "enc_ancillary#2"}.isdisjoint(t.name for t in out.tensors)
    assert decode.share_decodes(out) == 0
    same = decode_model()
    assert decode.share_decodes_bytes(out.to_bytes())[1] == 0
    assert decode.share_decodes_bytes(same)[1] == 1


def test_per_tensor_where_equal_and_specs():
    m = load(fc_model())
    rows = [{"index": 1, "name": "dense/kernel", "encoding": "ternary"},
            {"index": 4, "name": "const", "encoding": "int8-constant"}]
    exact_weights.encode_weights(m, FC_WEIGHTS)
    assert m.tensors[1].scales.size == 3
    specs, spec_rows = decode.plan_specs(m, rows)
    assert spec_rows == [{"index": 1, "name": "dense/kernel", "levels": 3, "bits": 2, "weights": 12}]
    assert type(specs[0].compression[0].mode).__name__ == "PerChannel"
    assert decode.per_tensor_where_equal(m, rows) is True
    assert m.tensors[1].scales.tolist() == [np.float32(0.5 / 64)] and m.tensors[1].axis == 0
    assert type(decode.plan_specs(m, rows)[0][0].compression[0].mode).__name__ == "PerTensor"
    assert decode.per_tensor_where_equal(m, rows) is False
    b = m.to_bytes()
    assert decode.per_tensor_where_equal_bytes(b, rows) is b
    assert decode.bits_per_weight(load(decode_model()), [{"index": 5, "weights": 16}]) == 8.0 * (4 + 3) / 16


def test_the_passes_import_neither_keras_nor_tensorflow():
    import ast
    import os

    import keras_lowprec.export.tflite as package

    folder = os.path.dirname(package.__file__)
    for fname in sorted(os.listdir(folder)):
        if not fname.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(folder, fname)).read())
        for node in ast.walk(tree):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for mod in mods:
                assert mod.split(".")[0] not in ("tensorflow", "keras", "tf_keras"), (fname, mod)
                own = ("keras_lowprec.export.tflite", "keras_lowprec.export.errors")
                assert not mod.startswith("keras_lowprec") or mod.startswith(own), (fname, mod)
