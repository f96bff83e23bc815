"""Exporter: exact int8 / shift-encoded weights, TFLM agreement, files, clear errors.

Tiny models (3 features, 5 units, T=6) so that the whole file stays fast on 2 cores.
Exactness is checked independently of the exporter's own bookkeeping: every gate matrix
of every rounded weight must appear in the written model as an int8 tensor whose
``code * scale`` (float32) equals it bit for bit.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

pytest.importorskip("tflite_micro")
pytest.importorskip("ai_edge_litert")

from keras_lowprec import quantizers as q
from keras_lowprec import layers as L
from keras_lowprec.export import (
    ExactnessError,
    ExportError,
    TFLMError,
    UnsupportedLayerError,
    read_metadata,
    run_tflm,
    to_float_tflite,
    to_tflite,
)
from keras_lowprec.export import carray
from keras_lowprec.export.tflite import TFLiteModel, checks
from keras_lowprec.export.verify import TFLMRunner, dequantize, quantize

T, F, U, C = 6, 3, 5, 4
GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}
# int8 activations on these tiny untrained-ish models: max error vs Keras as a fraction of
# the largest output (measured 0.06-0.15; a wrong scale or bias gives ~1).
REL_TOL = 0.25


def _data(n=30, seed=0, t=T):
    return np.random.default_rng(seed).normal(size=(n, t, F)).astype(np.float32)


def _task(n=60, seed=0):
    """A learnable 4-class task: the signs of the mean of features 0 and 1."""
    x = _data(n, seed)
    y = 2 * (x[:, :, 0].mean(1) > 0) + (x[:, :, 1].mean(1) > 0)
    return x, y.astype(np.int64)


def _model(method: str, kind: str, seed: int = 1, train: bool = True, stochastic: bool = False,
           epochs: int = 2, **kw):
    keras.utils.set_random_seed(seed)
    rnn = getattr(L, f"{method}{kind}")(U, stochastic=stochastic, **kw)
    head = getattr(L, f"{method}Dense")(C)
    model = keras.Sequential([keras.Input((T, F)), rnn, head])
    if train:
        x, y = _task()
        model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=epochs, batch_size=10, verbose=0)
    return model


def _const_tensors(model_bytes):
    """(float32 code * scale, codes, scales) of every constant int8 tensor, read with LiteRT."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=model_bytes,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    out = []
    for d in it.get_tensor_details():
        if d["dtype"] != np.int8:
            continue
        try:
            codes = it.get_tensor(d["index"])
        except ValueError:
            continue
        qp = d["quantization_parameters"]
        if codes.ndim != 2 or len(qp["scales"]) == 0:
            continue
        scales = qp["scales"].astype(np.float32)
        if len(scales) > 1:
            value = codes.astype(np.float32) * scales.reshape(-1, 1)
        else:
            value = codes.astype(np.float32) * scales[0]
        out.append((value, codes, scales))
    return out


def _gates(layer):
    for kind, g in GATES.items():
        if isinstance(layer, getattr(keras.layers, kind)):
            return g
    return 1


def _assert_exact_pieces(model, model_bytes):
    consts = _const_tensors(model_bytes)
    checked = 0
    for layer in model.layers:
        if not hasattr(layer, "quantized_weights"):
            continue
        rounded = layer.quantized_weights(training=False)
        gates = _gates(layer)
        for name in ("kernel", "recurrent_kernel"):
            if name not in rounded:
                continue
            w = np.asarray(rounded[name], np.float32)
            u = w.shape[1] // gates
            for g in range(gates):
                piece = np.ascontiguousarray(w[:, g * u:(g + 1) * u].T)
                if not piece.any():
                    continue
                hits = [v for v, _, _ in consts if v.shape == piece.shape and np.array_equal(v, piece)]
                assert hits, f"{layer.name}/{name} gate {g} is not held exactly in the int8 model"
                checked += 1
    assert checked > 0


def _tflm_outputs(model_bytes, x):
    """Independent TFLM run (sequence mode): dequantized outputs, state reset per sequence."""
    runner = TFLMRunner(model_bytes)
    s_in, zp_in = runner.input_quant(0)
    s_out, zp_out = runner.output_quant(0)
    out = []
    for seq in x:
        runner.reset()
        (y,) = runner.run([quantize(seq[None], s_in, zp_in)])
        out.append(dequantize(y, s_out, zp_out)[0])
    return np.stack(out)


# -- priority 1: ternary / binary, sequence mode, TFLM-verified -----------------------------
@pytest.mark.parametrize("kind,kernel", [("LSTM", "auto"), ("LSTM", "unrolled"), ("GRU", "auto"),
                                         ("SimpleRNN", "auto")])
def test_ternary_sequence_exact_and_tflm(kind, kernel, tmp_path):
    model = _model("Ternary", kind, stochastic=True)
    x = _data()
    res = to_tflite(model, x, output_dir=str(tmp_path), lstm_kernel=kernel)
    _assert_exact_pieces(model, res.model_bytes)
    rep = res.report
    assert rep["exactness"]["all_exact"]
    assert {"FULLY_CONNECTED"} <= set(res.ops)
    assert not any(op.startswith(("CUSTOM", "FLEX", "WHILE")) for op in res.ops)
    # The exporter's report agrees with Keras on held-out data...
    v = rep["verification"]
    assert v["held_out"] and v["samples"] == 6
    assert v["tflm"]["argmax_agreement"] >= 0.8
    assert v["tflm"]["relative_max_abs_error"] < REL_TOL
    assert res.arena_bytes and res.arena_bytes > 0
    # ...and so does an independent TFLM run of the file that was written.
    with open(tmp_path / "model.tflite", "rb") as fh:
        written = fh.read()
    assert written == res.model_bytes
    ref = model.predict(x[-6:], verbose=0)
    got = _tflm_outputs(written, x[-6:])
    np.testing.assert_array_equal(run_tflm(written, x[-6:]), got)  # the public helper
    assert np.max(np.abs(got - ref)) < REL_TOL * np.max(np.abs(ref))
    assert np.mean(np.argmax(got, -1) == np.argmax(ref, -1)) >= 0.8
    # All tensors integer, int8 in and out.
    io = rep["io"]
    assert io["inputs"][0]["dtype"] == "int8" and io["outputs"][0]["dtype"] == "int8"
    fb = TFLiteModel.from_bytes(written)
    checks.check_integer_only(fb)
    # No float tensor anywhere (the fused LSTM's empty intermediates included).
    assert not [t.name for t in fb.tensors if t.type_name == "FLOAT32"]
    variables = [t for t in fb.tensors if t.raw.isVariable]
    if kind == "LSTM" and kernel == "auto":
        # The fused kernel: its h (int8) and c (int16) states are variable tensors, which
        # TFLM keeps between invokes; the report says so (firmware resets per sequence).
        assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in res.ops and rep["state"] == "variables"
        assert rep["lstm"]["kernel"] == "fused"
        assert sorted(t.type_name for t in variables) == ["INT16", "INT8"]
        assert sorted(int(np.prod(t.shape)) for t in variables) == [U, U]
        header = (tmp_path / "model_data.h").read_text()
        assert "Reset()" in header
    else:
        # Unrolled graph: nothing hidden is carried from one invoke to the next.
        assert not variables and rep["state"] is None
        assert rep["lstm"] == (None if kind != "LSTM" else
                               {"kernel": "unrolled", "cell_state": "int8", "why_not_fused": "lstm_kernel='unrolled'"})


def test_binary_exact_codes(tmp_path):
    model = _model("Binary", "GRU")
    res = to_tflite(model, _data(), verify=False)
    _assert_exact_pieces(model, res.model_bytes)
    codes = {c for t in res.report["tensors"] if t["encoding"] == "binary" for c in t["codes"]}
    assert codes <= {-64, 64}
    for t in res.report["tensors"]:
        if t["encoding"] == "binary":
            layer, name = t["weight"].split("/")
            assert t["scale"] == [res.report["weights"][t["weight"]]["scale"]]


# -- priority 2: shift encoding ---------------------------------------------------------------
@pytest.mark.parametrize("method,kind", [("Exponential", "LSTM"), ("Pow2Ternary", "GRU"), ("Exponential", "SimpleRNN")])
def test_shift_encoding_exact(method, kind):
    model = _model(method, kind, stochastic=True)
    res = to_tflite(model, _data())
    _assert_exact_pieces(model, res.model_bytes)
    shift = [t for t in res.report["tensors"] if t["encoding"] == "shift"]
    assert shift
    for t in shift:
        (scale,) = t["scale"]
        assert np.log2(scale) == np.round(np.log2(scale))  # power-of-two scale
        mags = {abs(c) for c in t["codes"]} - {0}
        assert mags <= {1, 2, 4, 8, 16, 32, 64}
    assert res.report["verification"]["tflm"]["relative_max_abs_error"] < REL_TOL
    meta = read_metadata(res.model_bytes)
    assert {t["encoding"] for t in meta["tensors"]} >= {"shift"}


@pytest.mark.parametrize(
    "method,kind",
    [("Binary", "LSTM"), ("Binary", "SimpleRNN"), ("Pow2Ternary", "LSTM"), ("Pow2Ternary", "SimpleRNN"),
     ("Exponential", "GRU")],
)
def test_other_method_kind_pairs_exact(method, kind):
    """The remaining preset pairs (untrained, stochastic): exact weights, integer-only graph."""
    model = _model(method, kind, train=False, stochastic=True)
    res = to_tflite(model, _data(12), verify=False)
    _assert_exact_pieces(model, res.model_bytes)
    assert res.report["exactness"]["all_exact"]
    checks.check_integer_only(TFLiteModel.from_bytes(res.model_bytes))


def test_exponential_too_many_levels_refused():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((T, F)),
        L.QuantLSTM(U, name="wide_lstm", kernel_quantizer=q.Exponential(num_levels=9),
                    recurrent_quantizer="exponential", bias_quantizer="exponential"),
        L.ExponentialDense(C),
    ])
    with pytest.raises(ExactnessError, match=r"wide_lstm.*num_levels=7"):
        to_tflite(model, _data(8), verify=False)


# -- files --------------------------------------------------------------------------------------
def test_files_written(tmp_path):
    model = _model("Ternary", "LSTM", train=False)
    res = to_tflite(model, _data(12), output_dir=str(tmp_path))
    names = sorted(os.listdir(tmp_path))
    assert names == ["model.tflite", "model_data.cc", "model_data.h", "model_ops.h", "model_test_data.h",
                     "report.json"]
    cc = (tmp_path / "model_data.cc").read_text()
    assert "alignas(16) const unsigned char g_model_data[]" in cc
    assert f"g_model_data_len = {len(res.model_bytes)};" in cc
    body = cc[cc.index("{") + 1:cc.index("};")]
    data = bytes(int(b, 16) for b in body.replace("\n", "").split(",") if b.strip())
    assert data == res.model_bytes
    ops_h = (tmp_path / "model_ops.h").read_text()
    for op in res.ops:
        assert carray.resolver_method(op) in ops_h
    assert f"kModelNumOps = {len(res.ops)}" in ops_h
    header = (tmp_path / "model_data.h").read_text()
    assert "kTensorArenaSize" in header and "kInputScale" in header
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["model_bytes"] == len(res.model_bytes)
    assert report["arena_bytes"] == res.arena_bytes
    for key in ("max_abs_error", "argmax_agreement", "output_grid_ceiling", "us_per_invoke", "arena_bytes"):
        assert key in report["verification"]["tflm"]
    assert report["weight_bytes"] < report["model_bytes"]


def test_compare_output_grid_ceiling():
    from keras_lowprec.export.verify import compare

    # step 0.5, zero point 0: rows 0 and 1 are separated by the grid, row 2's top two
    # logits (1.1 and 1.2, class 2 wins) both round to code 2 -> the tie goes to class 0
    ref = np.array([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0], [1.1, -1.0, 1.2]], np.float32)
    got = ref + np.float32(0.01)
    rep = compare(ref, got, output_grid=(0.5, 0))
    assert rep["argmax_agreement"] == 1.0
    assert rep["output_grid_ceiling"] == pytest.approx(2 / 3)
    assert "output_grid_ceiling" not in compare(ref, got)
    assert "output_grid_ceiling" not in compare(ref, got, output_grid=(0.0, 0))  # a float output


def test_runner_handles_float_models():
    """The float32 TFLite (no quantization parameters) runs through the same runner: inputs
    and outputs pass unchanged, TFLM matches Keras to float rounding."""
    from keras_lowprec.export.verify import run_sequences

    model = _model("Ternary", "GRU", train=False)
    x = _data(4)
    runner = TFLMRunner(to_float_tflite(model))
    assert runner.input_quant(0) == (0.0, 0) and runner.output_quant(0) == (0.0, 0)
    timings: list[float] = []
    got = run_sequences(runner, x, "sequence", timings=timings)
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-4)
    assert len(timings) == len(x) and all(t > 0 for t in timings)
    assert np.array_equal(quantize(x, 0.0, 0), x) and np.array_equal(dequantize(x, 0.0, 0), x)


def test_write_folder_keeps_the_old_set_on_failure_and_the_users_files(tmp_path, monkeypatch):
    from keras_lowprec.export import files

    out = tmp_path / "model"
    files.write_folder(str(out), {"model.tflite": b"old", "report.json": "{}"})
    (out / "main.cc").write_text("mine")
    (out / "src").mkdir()
    (out / "src" / "app.c").write_text("also mine")

    def boom(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "_swap", boom)
    with pytest.raises(KeyboardInterrupt):
        files.write_folder(str(out), {"model.tflite": b"new", "model_data.cc": "x", "report.json": "{}"})
    assert sorted(os.listdir(out)) == ["main.cc", "model.tflite", "report.json", "src"]
    assert (out / "model.tflite").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model"]  # no staging folder left behind
    monkeypatch.undo()
    files.write_folder(str(out), {"model.tflite": b"new", "model_data.cc": "x", "report.json": "{}"})
    assert sorted(os.listdir(out)) == ["main.cc", "model.tflite", "model_data.cc", "report.json", "src"]
    assert (out / "src" / "app.c").read_text() == "also mine" and (out / "model.tflite").read_bytes() == b"new"
    with pytest.raises(ValueError, match="not export files"):
        files.write_folder(str(out), {"notes.txt": "x"})


# -- priority 3: clear errors -------------------------------------------------------------------
def test_unsupported_layer_named():
    model = keras.Sequential([keras.Input((T, F)), keras.layers.Conv1D(4, 2, name="my_conv"),
                              L.TernaryLSTM(U), L.TernaryDense(C)])
    with pytest.raises(UnsupportedLayerError, match=r"my_conv.*Conv1D.*Supported"):
        to_tflite(model, _data(4), verify=False)


def test_go_backwards_and_bidirectional_refused():
    model = keras.Sequential([keras.Input((T, F)), L.TernaryGRU(U, go_backwards=True, name="back"), L.TernaryDense(C)])
    with pytest.raises(UnsupportedLayerError, match="back.*go_backwards"):
        to_tflite(model, _data(4), verify=False)
    model = keras.Sequential([keras.Input((T, F)), keras.layers.Bidirectional(L.TernaryGRU(U), name="bi"),
                              L.TernaryDense(C)])
    with pytest.raises(UnsupportedLayerError, match="bi.*Bidirectional"):
        to_tflite(model, _data(4), verify=False)


def _padded(n, seed, t=8):
    """Right-padded (all-zero frames) random sequences of 3..t real frames; class = sign pattern
    of the mean of features 0 and 1 over the real frames."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, F)).astype(np.float32)
    lengths = rng.integers(3, t + 1, size=n)
    for i, n_real in enumerate(lengths):
        x[i, n_real:] = 0.0
    mean = x.sum(1) / lengths[:, None]
    y = 2 * (mean[:, 0] > 0) + (mean[:, 1] > 0)
    return x, y.astype(np.int64), lengths


def _masked_model(seed=3):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, F))
    h = keras.layers.Masking(0.0, name="mask")(inp)
    h = keras.layers.GaussianNoise(0.05)(h)
    h = keras.layers.GRU(8)(h)
    out = keras.layers.Dense(C, activation="softmax")(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    x, y, _ = _padded(128, seed)
    model.fit(x, y, epochs=10, batch_size=32, verbose=0)
    return model


def test_masking_stream_export(tmp_path):
    model = _masked_model()
    calib, _, _ = _padded(40, 10)
    held, _, lengths = _padded(40, 11)
    res = to_tflite(model, calib, mode="stream", verify_data=held, output_dir=str(tmp_path))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["masking"].startswith("Masking 'mask' dropped")
    v = res.verification
    assert v["tflm"]["argmax_agreement"] >= 0.95, v["tflm"]
    assert v["litert"]["argmax_agreement"] >= 0.95, v["litert"]
    assert v["masked_frames"]["real_frames_min"] == lengths.min()
    assert v["masked_frames"]["real_frames_max"] == lengths.max()
    assert "Masking" in v["stream_vs_sequence"]["skipped"]
    assert read_metadata(res.model_bytes)["mask_value"] == 0.0
    # run_tflm feeds only the real frames too, and so does a hand-written stream loop.
    probs = run_tflm(res.model_bytes, held)
    ref = model.predict(held, verbose=0)
    assert np.mean(probs.argmax(-1) == ref.argmax(-1)) >= 0.95
    unpadded = run_tflm(res.model_bytes, held[:1, :lengths[0]])
    np.testing.assert_array_equal(unpadded, probs[:1])


def test_fused_lstm_stack_with_sequence_head():
    """Stacked LSTMs of two methods and a per-step head: one fused op per LSTM, exact
    weights, TFLM agrees with Keras; streaming gives the sequence export's outputs (the
    exporter's own sequence export of the stack, run in TFLM, is the reference)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((T, F)), keras.layers.Dropout(0.1),
                              L.TernaryLSTM(U, return_sequences=True), L.ExponentialLSTM(U, return_sequences=True),
                              L.TernaryDense(C), keras.layers.Activation("softmax")])
    x, y = _task()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, np.repeat(y[:, None], T, 1), epochs=2, verbose=0)
    res = to_tflite(model, _data(40), mode="stream", lstm_kernel="fused")
    fb = TFLiteModel.from_bytes(res.model_bytes)
    assert [op.name for op in fb.operators].count("UNIDIRECTIONAL_SEQUENCE_LSTM") == 2
    assert res.report["state"] == "variables"
    _assert_exact_pieces(model, res.model_bytes)
    v = res.report["verification"]
    # (Softmax outputs of a 2-epoch model: near ties, so the error, not argmax, is the check.)
    assert v["tflm"]["relative_max_abs_error"] < REL_TOL
    assert v["stream_vs_sequence"]["timesteps"] == T and v["stream_vs_sequence"]["max_abs_difference"] == 0.0, v


def test_stream_lstm_defaults_to_the_step_graph(tmp_path):
    """In stream mode ``auto`` writes the step graph (state as explicit inputs/outputs, correct
    on every TFLM kernel set); ``fused`` keeps the state in variable tensors, which only the
    reference kernels carry between invokes: its model_ops.h refuses a CMSIS-NN build."""
    model = _model("Ternary", "LSTM", train=False)
    auto = to_tflite(model, _data(12), mode="stream", verify=False, output_dir=str(tmp_path / "auto"))
    assert auto.report["graph"] == "step" and auto.report["state"] == "io"
    assert auto.report["kernel_sets"] == "any" and "CMSIS-NN" in auto.report["lstm"]["why_not_fused"]
    assert "CMSIS_NN" not in (tmp_path / "auto" / "model_ops.h").read_text()
    fused = to_tflite(model, _data(12), mode="stream", verify=False, lstm_kernel="fused",
                      output_dir=str(tmp_path / "fused"))
    assert fused.report["graph"] == "fused-lstm" and fused.report["kernel_sets"] == "reference"
    assert "#if defined(CMSIS_NN)" in (tmp_path / "fused" / "model_ops.h").read_text()
    seq = to_tflite(model, _data(12), verify=False)
    assert seq.report["graph"] == "fused-lstm" and seq.report["kernel_sets"] == "any"


def test_lstm_kernel_choice():
    # An LSTM next to a GRU: unrolled, and the report says why.
    mixed = keras.Sequential([keras.Input((T, F)), L.TernaryLSTM(U, return_sequences=True), L.TernaryGRU(U),
                              L.TernaryDense(C)])
    res = to_tflite(mixed, _data(12), verify=False)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in res.ops
    assert res.report["lstm"]["kernel"] == "unrolled" and "GRU" in res.report["lstm"]["why_not_fused"]
    with pytest.raises(UnsupportedLayerError, match=r"lstm_kernel='fused'.*GRU"):
        to_tflite(mixed, _data(12), verify=False, lstm_kernel="fused")
    # The fused kernel computes tanh / sigmoid only.
    relu = keras.Sequential([keras.Input((T, F)), L.TernaryLSTM(U, activation="relu"), L.TernaryDense(C)])
    res = to_tflite(relu, _data(12), verify=False)
    assert res.report["lstm"]["kernel"] == "unrolled" and "tanh" in res.report["lstm"]["why_not_fused"]
    with pytest.raises(ExportError, match="lstm_kernel must be one of auto, fused, unrolled"):
        to_tflite(relu, _data(12), lstm_kernel="cudnn")


def test_masking_refused():
    model = keras.Sequential([keras.Input((T, F)), keras.layers.Masking(), L.TernaryLSTM(U), L.TernaryDense(C)])
    with pytest.raises(UnsupportedLayerError, match=r"Masking.*mode='sequence'.*mode='stream'"):
        to_tflite(model, _data(4), verify=False)
    # Masking anywhere but on the input stays refused, in stream mode too.
    model = keras.Sequential([keras.Input((T, F)), keras.layers.Dense(F), keras.layers.Masking(),
                              L.TernaryLSTM(U), L.TernaryDense(C)])
    with pytest.raises(UnsupportedLayerError, match="Masking.*model input"):
        to_tflite(model, _data(4), mode="stream", verify=False)


@pytest.mark.parametrize(
    "data,match",
    [
        (None, "required"),
        (np.zeros((4, T)), "shape"),
        (np.zeros((4, T, F + 1)), "features"),
        (np.zeros((4, T + 1, F)), "timesteps"),
        (np.full((4, T, F), np.nan), "NaN"),
        (np.array([["a"]]), "numeric"),
        (np.zeros((0, T, F)), "empty"),
    ],
)
def test_bad_representative_data(data, match):
    model = _model("Ternary", "SimpleRNN", train=False)
    with pytest.raises(ExportError, match=match):
        to_tflite(model, data, verify=False)


def test_non_finite_weights_refused():
    model = _model("Ternary", "LSTM", train=False)
    kernel = model.layers[0].cell.kernel
    value = kernel.numpy()
    value[0, 0] = np.nan
    kernel.assign(value)
    with pytest.raises(ExportError, match=r"ternary_lstm.*non-finite"):
        to_tflite(model, _data(4), verify=False)


def test_variable_time_axis_needs_timesteps():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, F)), L.TernaryGRU(U), L.TernaryDense(C)])
    with pytest.raises(ExportError, match="timesteps"):
        to_tflite(model, _data(4), verify=False)
    res = to_tflite(model, _data(12, t=4), timesteps=4)
    assert res.report["timesteps"] == 4
    assert res.report["io"]["inputs"][0]["shape"] == [1, 4, F]
    assert res.verification["tflm"]["relative_max_abs_error"] < REL_TOL


def test_bad_mode_and_float_graph_refused():
    model = _model("Ternary", "SimpleRNN", train=False)
    with pytest.raises(ExportError, match="mode"):
        to_tflite(model, _data(4), mode="batch")
    float_bytes = to_float_tflite(model)
    with pytest.raises(ExportError, match="FLOAT32"):
        checks.check_integer_only(TFLiteModel.from_bytes(float_bytes))


# -- coverage: stacks, float layers around, sequence heads ----------------------------------------
def _normalized(x, **kw):
    norm = keras.layers.Normalization(**kw)
    norm.adapt(x)
    return norm


@pytest.mark.parametrize("invert", [False, True])
def test_affine_of_matches_keras(invert):
    """BatchNormalization (trained statistics, gamma, beta) and Normalization as x * scale + offset."""
    from keras_lowprec.export.handlers.normalization import affine_of

    x = np.random.default_rng(0).normal(3.0, 2.0, size=(64, T, F)).astype(np.float32)
    bn = keras.layers.BatchNormalization(momentum=0.0)
    bn(x, training=True)  # moving statistics = this batch's
    bn.gamma.assign(np.array([0.5, -2.0, 1.5], np.float32))
    bn.beta.assign(np.array([0.1, 0.2, -0.3], np.float32))
    for layer in (bn, _normalized(x, invert=invert)):
        scale, offset = affine_of(layer)
        assert scale.shape == offset.shape == (F,)
        np.testing.assert_allclose(x * scale + offset, keras.ops.convert_to_numpy(layer(x, training=False)),
                                   rtol=1e-5, atol=1e-5)
    assert affine_of(_normalized(x, axis=1)) is None  # statistics per time step
    bn_t = keras.layers.BatchNormalization(axis=1)
    keras.Sequential([keras.Input((T, F)), bn_t])
    assert affine_of(bn_t) is None


@pytest.mark.parametrize("mode", ["sequence", "stream"])
def test_normalization_layers_around_gru(mode):
    """Normalization on the input and BatchNormalization between the layers: per-feature
    MUL/ADD in int8, the rounded weights still exact, TFLM close to Keras."""
    x = np.random.default_rng(5).normal(3.0, 2.0, size=(40, T, F)).astype(np.float32)
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((T, F)), _normalized(x), L.TernaryGRU(U, return_sequences=True),
                              keras.layers.BatchNormalization(), L.ExponentialGRU(U),
                              keras.layers.BatchNormalization(), L.TernaryDense(C)])
    model.compile("adam", "mse")
    model.fit(x, np.random.default_rng(6).normal(size=(len(x), C)), epochs=2, verbose=0)
    res = to_tflite(model, x, mode=mode)
    _assert_exact_pieces(model, res.model_bytes)
    assert "MUL" in res.ops
    assert res.verification["tflm"]["relative_max_abs_error"] < REL_TOL


@pytest.mark.parametrize("mode", ["sequence", "stream"])
def test_normalization_before_fused_lstm(mode):
    """A Normalization in front of an LSTM keeps the fused kernel (its MUL/ADD run before the
    op); one right before a rounded Dense would be folded into that Dense's weights by the
    converter, so that chain exports unrolled and says why."""
    x = np.random.default_rng(7).normal(-1.0, 3.0, size=(40, T, F)).astype(np.float32)
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((T, F)), _normalized(x), L.TernaryLSTM(U), L.TernaryDense(C)])
    res = to_tflite(model, x, mode=mode, lstm_kernel="fused")
    assert res.report["lstm"]["kernel"] == "fused"
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in res.ops and "MUL" in res.ops
    _assert_exact_pieces(model, res.model_bytes)
    assert res.verification["tflm"]["relative_max_abs_error"] < REL_TOL
    folded = keras.Sequential([keras.Input((T, F)), L.TernaryLSTM(U), keras.layers.BatchNormalization(),
                               L.TernaryDense(C)])
    res = to_tflite(folded, x, mode="sequence", verify=False)
    assert res.report["lstm"]["kernel"] == "unrolled"
    assert "fold" in res.report["lstm"]["why_not_fused"]
    _assert_exact_pieces(folded, res.model_bytes)


def _ln_model(rnn, units, **ln_kw):
    x, y = _task()
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((T, F)), rnn(units, return_sequences=True),
                              keras.layers.LayerNormalization(**ln_kw), rnn(units),
                              keras.layers.LayerNormalization(**ln_kw), keras.layers.Dense(C)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=5, verbose=0)
    return model, x


@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")
@pytest.mark.parametrize("mode", ["sequence", "stream"])
@pytest.mark.parametrize("rms", [False, True])
def test_layer_normalization_around_gru(mode, rms):
    """LayerNormalization in int8 builtins (MEAN, SUB, MUL, RSQRT, ADD): no float NEG left,
    the rounded weights exact (gamma is not folded into them), TFLM close to Keras. (8 units:
    with 5 the int8 hidden state is too coarse for normalizing across so few features.)"""
    model, x = _ln_model(L.TernaryGRU, 8, rms_scaling=rms)
    res = to_tflite(model, x, mode=mode)
    assert {"MEAN", "RSQRT"} <= set(res.ops)
    _assert_exact_pieces(model, res.model_bytes)
    assert res.verification["tflm"]["relative_max_abs_error"] < REL_TOL


def test_layer_normalization_keeps_fused_lstm():
    """Between LSTMs and before a float Dense the fused kernel stays. int8 LayerNormalization
    of 8 features after an LSTM is coarser than after the GRU above: the bound only catches
    a wrong scale or a broken graph (relative error ~1)."""
    model, x = _ln_model(L.TernaryLSTM, 8)
    res = to_tflite(model, x, mode="stream", lstm_kernel="fused")
    assert res.report["lstm"]["kernel"] == "fused"
    assert {"UNIDIRECTIONAL_SEQUENCE_LSTM", "MEAN", "RSQRT"} <= set(res.ops)
    _assert_exact_pieces(model, res.model_bytes)
    assert res.verification["tflm"]["relative_max_abs_error"] < 0.6
    # right before a rounded Dense too: its gamma multiplies before the data-dependent
    # factor, so the converter has no constant to fold into the Dense weights
    head = keras.Sequential([keras.Input((T, F)), L.TernaryLSTM(8), keras.layers.LayerNormalization(),
                             L.TernaryDense(C)])
    res = to_tflite(head, x, verify=False)
    assert res.report["lstm"]["kernel"] == "fused"
    _assert_exact_pieces(head, res.model_bytes)


def test_layer_normalization_over_time_refused():
    model = keras.Sequential([keras.Input((T, F)), keras.layers.LayerNormalization(axis=[1, 2]), L.TernaryGRU(U)])
    with pytest.raises(UnsupportedLayerError, match="last axis"):
        to_tflite(model, _data(8))


def test_normalization_along_time_refused():
    x = _data(8)
    model = keras.Sequential([keras.Input((T, F)), _normalized(x, axis=1), L.TernaryGRU(U)])
    with pytest.raises(UnsupportedLayerError, match="per-feature"):
        to_tflite(model, x)
    bn_time = keras.Sequential([keras.Input((T, F)), keras.layers.BatchNormalization(axis=1), L.TernaryGRU(U)])
    with pytest.raises(UnsupportedLayerError, match="mixes time steps"):
        to_tflite(bn_time, x, mode="stream")


def test_stacked_with_float_layers():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((T, F)),
        keras.layers.BatchNormalization(),
        L.TernaryGRU(U, return_sequences=True),
        keras.layers.Dropout(0.2),
        L.ExponentialLSTM(U),
        keras.layers.Dense(6, activation="relu"),
        L.TernaryDense(C),
        keras.layers.Activation("softmax"),
    ])
    x = _data()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, np.random.default_rng(2).integers(0, C, len(x)), epochs=1, verbose=0)
    res = to_tflite(model, x)
    _assert_exact_pieces(model, res.model_bytes)
    assert "SOFTMAX" in res.ops
    assert res.verification["tflm"]["argmax_agreement"] >= 0.8
    assert res.verification["tflm"]["relative_max_abs_error"] < REL_TOL


def test_tflm_abort_becomes_error():
    """A model TFLM aborts on (softmax after all-zero activations) raises TFLMError, the
    process survives."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((T, F)), L.TernaryLSTM(U), L.TernaryDense(C),
                              keras.layers.Activation("softmax")])
    for w in model.layers[1].weights:
        w.assign(np.zeros(w.shape, np.float32))
    with pytest.raises(TFLMError, match="TFLM cannot run"):
        to_tflite(model, _data(12))


# -- stream mode ----------------------------------------------------------------------------------
# Streaming vs the whole sequence on 300 held-out sequences (not used to calibrate or train),
# argmax agreement with Keras. Measured (TFLM): LSTM with the fused kernel (int16 cell
# state, the default) 0.997; LSTM unrolled op by op (int8 cell state, one scale for every
# step) 0.987 (0.977 when the stream graph was calibrated on 400 instead of up to 4,000
# steps); GRU 0.997. The issue asks for 0.99: the unrolled LSTM misses it (sequences whose
# two top Keras logits differ by less than a few output steps), which is why LSTM chains
# export fused by default. Against the sequence-mode export the stream export is exact: both
# are one calibrated graph (the fused op with T set to 1, or the stream step unrolled).
STREAM_AGREEMENT = {("LSTM", "fused"): 0.99, ("LSTM", "unrolled"): 0.98, ("GRU", "auto"): 0.99}


@pytest.mark.parametrize("kind,kernel", list(STREAM_AGREEMENT))
def test_stream_mode_agrees_with_sequence(kind, kernel):
    model = _model("Ternary", kind, epochs=40)
    x = _data(100, seed=5)
    held = _data(300, seed=7)
    res = to_tflite(model, x, mode="stream", verify_data=held, max_verify=len(held), lstm_kernel=kernel)
    _assert_exact_pieces(model, res.model_bytes)
    io = res.report["io"]
    if kernel == "fused":
        # States in the fused op's variable tensors: x in, y out, one step per invoke.
        assert res.report["state"] == "variables" and "UNIDIRECTIONAL_SEQUENCE_LSTM" in res.ops
        assert len(io["inputs"]) == 1 == len(io["outputs"])
        assert io["inputs"][0]["shape"] == [1, 1, F]
    else:
        n_states = 2 if kind == "LSTM" else 1
        assert res.report["state"] == "io"
        assert len(io["inputs"]) == 1 + n_states == len(io["outputs"])
        for i in range(1, 1 + n_states):  # state in/out share quantization: firmware copies bytes
            assert io["inputs"][i]["scale"] == io["outputs"][i]["scale"]
            assert io["inputs"][i]["zero_point"] == io["outputs"][i]["zero_point"]
            assert io["inputs"][i]["shape"] == [1, U]
        assert io["inputs"][0]["shape"] == [1, F]
    v = res.verification
    assert v["samples"] == 300 and v["held_out"]
    # Keras (whole sequence) vs TFLM streaming.
    assert v["tflm"]["argmax_agreement"] >= STREAM_AGREEMENT[kind, kernel]
    assert v["tflm"]["relative_max_abs_error"] < REL_TOL
    # The stream export vs the sequence-mode export of the same model (both in TFLM): the
    # same int8 outputs, so the same argmax, and the sequence export agrees with Keras as
    # the stream export does.
    vs = v["stream_vs_sequence"]
    assert vs["samples"] == 300 and vs["timesteps"] == T
    assert vs["argmax_agreement"] == 1.0 and vs["max_abs_difference"] == 0.0
    assert vs["sequence_vs_keras_argmax_agreement"] == v["tflm"]["argmax_agreement"]
    # The public helper streams the same way (zero states, one invoke per step).
    got = run_tflm(res.model_bytes, held[:20])
    ref = model.predict(held[:20], verbose=0)
    assert got.shape == ref.shape
    assert np.mean(np.argmax(got, -1) == np.argmax(ref, -1)) >= 0.9
    assert res.report["timesteps"] is None


def test_sequence_export_is_the_stream_step_unrolled():
    """GRU / SimpleRNN sequence exports are the calibrated stream step repeated T times
    (UNPACK in, PACK out for a model that returns sequences): the output at step t equals
    the stream export's output after t + 1 invokes, bit for bit, and the weights are stored
    once (the one-step graph's weight bytes plus the int8 zero initial states)."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((T, F)), L.TernaryGRU(U, return_sequences=True),
                              L.ExponentialSimpleRNN(U, return_sequences=True), L.TernaryDense(C)])
    x, held = _data(40, seed=1), _data(12, seed=2)
    seq = to_tflite(model, x, verify_data=held)
    stream = to_tflite(model, x, mode="stream", verify=False, verify_data=held)  # same calibration data
    assert seq.report["graph"] == "unrolled-step" and stream.report["graph"] == "step"
    assert {"UNPACK", "PACK"} <= set(seq.ops)
    assert seq.report["io"]["outputs"][0]["shape"] == [1, T, C]
    assert stream.report["weight_bytes"] < seq.report["weight_bytes"] <= stream.report["weight_bytes"] + 2 * U
    _assert_exact_pieces(model, seq.model_bytes)
    got = run_tflm(seq.model_bytes, held)
    assert got.shape == (len(held), T, C)
    for t in range(T):
        np.testing.assert_array_equal(got[:, t], run_tflm(stream.model_bytes, held[:, :t + 1]))
    assert seq.verification["tflm"]["relative_max_abs_error"] < REL_TOL


def test_sequence_export_of_a_model_that_cannot_stream():
    """Flatten over the time axis cannot run one step per invoke: the converter unrolls the
    twin instead (scales per step), and the export is still exact and close to Keras."""
    x, y = _task(200)
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((T, F)), L.TernaryGRU(U, return_sequences=True),
                              keras.layers.Flatten(), L.TernaryDense(C)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=40, verbose=0)
    res = to_tflite(model, x, verify_data=_data(300, seed=7), max_verify=300)
    assert res.report["graph"] == "unrolled" and "UNPACK" not in res.ops
    _assert_exact_pieces(model, res.model_bytes)
    # Measured: agreement 0.983 on 300 held-out sequences, relative max abs error 0.074.
    assert res.verification["tflm"]["argmax_agreement"] >= 0.97
    assert res.verification["tflm"]["relative_max_abs_error"] < REL_TOL
    with pytest.raises(UnsupportedLayerError, match="mixes time steps"):
        to_tflite(model, x, mode="stream")


def test_long_stream_compared_with_sequence_export():
    """70-step sequences: the stream export is still compared with the sequence export (the
    step graph repeated 70 times), and they give the same int8 outputs."""
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((None, F)), L.TernarySimpleRNN(U), L.TernaryDense(C)])
    res = to_tflite(model, _data(20, t=70), mode="stream", max_verify=4)
    vs = res.verification["stream_vs_sequence"]
    assert vs["timesteps"] == 70 and vs["samples"] == 4
    assert vs["argmax_agreement"] == 1.0 and vs["max_abs_difference"] == 0.0


def test_stream_graph_does_not_grow_with_T():
    keras.utils.set_random_seed(0)
    short = to_tflite(_model("Ternary", "SimpleRNN", train=False), _data(6), mode="stream", verify=False)
    model = keras.Sequential([keras.Input((None, F)), L.TernarySimpleRNN(U), L.TernaryDense(C)])
    model.layers[0].set_weights(_model("Ternary", "SimpleRNN", train=False).layers[0].get_weights())
    long = to_tflite(model, _data(6, t=24), mode="stream", verify=False)
    assert abs(len(long.model_bytes) - len(short.model_bytes)) < 256


@pytest.mark.skipif(__import__("shutil").which("g++") is None, reason="needs g++")
def test_c_array_compiles_and_matches(tmp_path):
    """model_data.cc / model_data.h compile, and the array holds the model bytes, 16-byte aligned."""
    import subprocess

    model = _model("Ternary", "SimpleRNN", train=False)
    res = to_tflite(model, _data(12), output_dir=str(tmp_path), verify=False)
    (tmp_path / "check.cc").write_text(
        '#include <cstdint>\n#include <cstdio>\n#include "model_data.h"\n'
        "int main() {\n"
        "  if (reinterpret_cast<std::uintptr_t>(g_model_data) % 16 != 0) return 2;\n"
        "  unsigned long sum = 0;\n"
        "  for (unsigned i = 0; i < g_model_data_len; ++i) sum = (sum * 31 + g_model_data[i]) % 1000000007UL;\n"
        '  std::printf("%u %lu %d %d\\n", g_model_data_len, sum, kModelFeatures, kTensorArenaSize > 0);\n'
        "  return 0;\n}\n"
    )
    exe = tmp_path / "check"
    subprocess.run(["g++", "-std=c++17", "-O0", "-o", str(exe), str(tmp_path / "check.cc"),
                    str(tmp_path / "model_data.cc")], check=True, capture_output=True, timeout=120)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=30).stdout.split()
    expected = 0
    for b in res.model_bytes:
        expected = (expected * 31 + b) % 1000000007
    assert out == [str(len(res.model_bytes)), str(expected), str(F), "1"]
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(tmp_path / "model.tflite").st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600


def test_unbuilt_model_refused():
    model = keras.Sequential([L.TernaryLSTM(U), L.TernaryDense(C)])
    with pytest.raises(ExportError, match="keras.Input"):
        to_tflite(model, _data(4), verify=False)


def test_fused_lstm_intermediates_retyped_without_effect():
    """The fused LSTM's empty float32 intermediates are retyped int16: TFLM computes the
    same outputs with the converter's original typing."""
    model = _model("Ternary", "LSTM", epochs=5)
    res = to_tflite(model, _data(30), verify=False)
    fb = TFLiteModel.from_bytes(res.model_bytes)
    retyped = [i for op in fb.operators if op.intermediates is not None for i in op.intermediates
               if fb.tensors[i].type_name == "INT16"]
    assert len(retyped) == 4
    for i in retyped:
        fb.tensors[i].type_name = "FLOAT32"
    original = fb.to_bytes()
    x = _data(20, seed=3)
    np.testing.assert_array_equal(run_tflm(res.model_bytes, x), run_tflm(original, x))


def test_reexport_removes_files_it_does_not_write(tmp_path):
    """A second export into the same folder without C files or verification leaves no file
    of the first one (e.g. its test vectors) beside the new model."""
    model = _model("Ternary", "GRU", train=False)
    to_tflite(model, _data(12), output_dir=str(tmp_path))
    assert (tmp_path / "model_test_data.h").exists()
    (tmp_path / "notes.txt").write_text("mine")
    to_tflite(model, _data(12), output_dir=str(tmp_path), verify=False, c_array=False)
    assert sorted(os.listdir(tmp_path)) == ["model.tflite", "notes.txt", "report.json"]


@pytest.mark.parametrize("kernel", ["fused", "unrolled"])
@pytest.mark.parametrize("keras_lstm", [False, True])
def test_lstm_without_bias_exports(kernel, keras_lstm):
    """``use_bias=False`` (ours and Keras's LSTM): the fused twin gets zero gate biases (the
    converter's calibration crashed on a fused LSTM without them)."""
    keras.utils.set_random_seed(1)
    layer = keras.layers.LSTM(U, use_bias=False) if keras_lstm else L.TernaryLSTM(U, use_bias=False)
    model = keras.Sequential([keras.Input((T, F)), layer, keras.layers.Dense(C)])
    res = to_tflite(model, _data(), lstm_kernel=kernel)
    assert res.report["lstm"]["kernel"] == kernel
    assert res.verification["tflm"]["relative_max_abs_error"] < REL_TOL
    if not keras_lstm:
        _assert_exact_pieces(model, res.model_bytes)


@pytest.mark.parametrize("activation,ok", [("gelu", False), ("elu", False), ("softplus", False),
                                           ("hard_silu", True), ("leaky_relu", True)])
def test_activations_checked_at_analysis(activation, ok):
    """An activation without an int8 TFLM kernel is refused before conversion, naming the
    layer and the activation; the ones that convert to int8 builtins export."""
    model = keras.Sequential([keras.Input((T, F)), L.TernaryGRU(U), keras.layers.Dense(C, activation=activation)])
    if ok:
        assert to_tflite(model, _data(12), verify=False).ops
    else:
        with pytest.raises(UnsupportedLayerError, match=rf"layer 'dense\w*' \(Dense\): activation='{activation}'"):
            to_tflite(model, _data(12))


def test_return_state_blamed_on_its_layer():
    inp = keras.Input((T, F))
    out, _ = keras.layers.GRU(U, return_state=True, name="encoder")(inp)
    model = keras.Model(inp, keras.layers.Dense(C)(out))
    with pytest.raises(UnsupportedLayerError, match=r"layer 'encoder' \(GRU\): return_state=True"):
        to_tflite(model, _data(12))


def _wide_model(kind: str, units: int = 32, features: int = 8):
    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input((T, features)), getattr(L, f"Ternary{kind}")(units, name="rnn"),
                             L.TernaryDense(C, name="head")], name="wide")


def test_compress_stream_step_graph(tmp_path):
    """Ternary weights as 2-bit LUT indices (TFLM DECODE): the same int8 outputs as the
    uncompressed export, about 2 bits per weight in the file, DECODE registered."""
    model = _wide_model("GRU")
    x = np.random.default_rng(0).normal(size=(30, T, 8)).astype(np.float32)
    plain = to_tflite(model, x, mode="stream", verify=False)
    res = to_tflite(model, x, mode="stream", compress="flash", output_dir=str(tmp_path))
    comp = res.report["compression"]
    assert comp["applied"] and comp["same_outputs"]["identical"], comp
    assert {r["bits"] for r in comp["tensors"]} == {2}
    assert comp["bits_per_weight"] <= 2.1
    assert comp["model_bytes"] == {"uncompressed": len(plain.model_bytes), "compressed": len(res.model_bytes)}
    assert len(res.model_bytes) < 0.8 * len(plain.model_bytes)
    assert "CUSTOM:TFLM_DECODE" in res.ops and "AddDecode()" in (tmp_path / "model_ops.h").read_text()
    held = np.random.default_rng(9).normal(size=(5, T, 8)).astype(np.float32)
    np.testing.assert_array_equal(run_tflm(res.model_bytes, held), run_tflm(plain.model_bytes, held))
    assert res.report["kernel_sets"] == "any"
    # summary(export=...) reports the bytes the file holds: 2 bits per ternary weight when compressed.
    import keras_lowprec as kl

    packed = kl.summary(model, print_fn=lambda _: None, export=res).layers[0]
    unpacked = kl.summary(model, print_fn=lambda _: None, export=plain).layers[0]
    assert unpacked.shipped_bytes >= 8 * packed.shipped_bytes // 2 - 64
    assert packed.shipped_bytes <= packed.packed_bytes + 64


def test_compress_decisions():
    """auto keeps the uncompressed model where compression does not pay or restricts the
    kernel sets, and says why; flash applies it to the fused LSTM and restricts it to the
    reference kernels (CMSIS-NN's LSTM pre-sums constant weights when it prepares)."""
    x = np.random.default_rng(0).normal(size=(30, T, 8)).astype(np.float32)
    tiny = to_tflite(_model("Ternary", "GRU", train=False), _data(12), mode="stream", compress=True, verify=False)
    assert not tiny.report["compression"]["applied"] and "larger" in tiny.report["compression"]["reason"]
    lstm = _wide_model("LSTM")
    auto = to_tflite(lstm, x, compress="auto", verify=False)
    assert not auto.report["compression"]["applied"] and "CMSIS-NN" in auto.report["compression"]["reason"]
    flash = to_tflite(lstm, x, compress="flash", verify=False)
    assert flash.report["compression"]["applied"] and flash.report["kernel_sets"] == "reference"
    assert "pre-sums" in flash.report["not_on_cmsis_nn"]
    # The sequence graph repeats the step: each weight decoded once per invoke, not per step.
    seq = to_tflite(_wide_model("GRU"), x, compress="flash", verify=False)
    comp = seq.report["compression"]
    # 6 gate matrices read at every step, the head's kernel once: 7 DECODEs, not 6 * T + 1.
    assert comp["applied"] and comp["same_outputs"]["identical"] and comp["decodes_shared"] == 6 * (T - 1)
    names = [op.name for op in TFLiteModel.from_bytes(seq.model_bytes).operators]
    assert names.count("CUSTOM:TFLM_DECODE") == 7 and names.count("FULLY_CONNECTED") == 6 * T + 1
    with pytest.raises(ExportError, match="compress must be False, True, 'auto' or 'flash'; got 'yes'"):
        to_tflite(lstm, x, compress="yes")
