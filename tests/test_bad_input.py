"""Bad and unusual input, swept: every case gets an error that names the argument (or the
layer and option) and what is allowed; nothing crashes the process; nothing is silently
wrong. Cases whose point is a crash or an exit code run in a child process. An export
killed at several points leaves the complete old set of files or the complete new one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

import keras_lowprec as kl
from keras_lowprec import datasets
from keras_lowprec import layers as L
from keras_lowprec import quantizers as q

T, F = 6, 3
W = np.ones((4, 3), np.float32) * 0.3


def _model():
    keras.utils.set_random_seed(0)
    # Named layers: exports of two instances are then byte-identical (names are in the file).
    return keras.Sequential([keras.Input((T, F)), L.TernaryGRU(4, name="gru"), L.TernaryDense(3, name="head")],
                            name="m")


def _x(n=12):
    return np.random.default_rng(0).normal(size=(n, T, F)).astype(np.float32)


QUANTIZER_CASES = [
    (lambda: q.Ternary(scale=-1.0), ValueError, r"Ternary: `scale` must be a positive finite number, got -1"),
    (lambda: q.Binary(scale=float("nan")), ValueError, r"Binary: `scale` must be a positive finite number"),
    (lambda: q.Ternary(stochastic="yes"), TypeError, r"`stochastic` must be a bool, got 'yes'"),
    (lambda: q.Ternary(seed=-3), ValueError, r"Ternary: `seed` must be >= 0, got -3"),
    (lambda: q.Exponential(seed=1.5), ValueError, r"Exponential: `seed` must be an integer, got 1.5"),
    (lambda: q.Ternary()(W, glorot_bound=-1.0), ValueError, r"`glorot_bound` must be a positive finite number, got -1"),
    (lambda: q.Ternary()(W, glorot_bound=0.0), ValueError, r"`glorot_bound` must be a positive finite number, got 0"),
    (lambda: q.Pow2Ternary()(W, glorot_bound=float("nan")), ValueError, r"`glorot_bound` must be a positive finite"),
    (lambda: q.Ternary().levels(glorot_bound=-2.0), ValueError, r"`glorot_bound` must be a positive finite"),
    (lambda: q.get({"unknown": 1}), ValueError, r"does not describe a keras_lowprec quantizer"),
    (lambda: q.get({"class_name": "Nope", "config": {}}), ValueError, r"Could not deserialize quantizer"),
    (lambda: q.get("quinary"), ValueError, r"Unknown quantizer 'quinary'. Valid names: binary"),
    (lambda: q.get(3), ValueError, r"Could not interpret quantizer 3"),
    (lambda: L.TernaryLSTM(4, kernel_quantizer="quinary"), ValueError, r"Unknown quantizer 'quinary'"),
    (lambda: kl.quantize_model("model"), TypeError, r"quantize_model expects a keras.Model, got str"),
    (lambda: kl.quantize_model(_model(), bias_quantizer="x"), ValueError, r"quantize_model `bias_quantizer`"),
    (lambda: kl.quantize_model(_model(), channel_scale=1), TypeError,
     r"quantize_model `channel_scale`: expected True or False, got 1"),
    (lambda: kl.quantize_model(_model(), None, None, channel_scale=True), ValueError,
     r"quantize_model `channel_scale=True` scales rounded kernels, but `kernel_quantizer` and `recurrent_quantizer`"),
    (lambda: kl.summary("model"), TypeError, r"summary: expected a keras.Model, got str"),
    (lambda: kl.summary(_model(), print_fn="stdout"), TypeError, r"summary: print_fn must be callable"),
    (lambda: q.Exponential(num_levels=0), ValueError, r"Exponential: `num_levels` must be >= 1, got 0"),
]

DATASET_CASES = [
    (lambda: datasets.sequential_digits(test_fraction=1.5), ValueError, r"test_fraction must be in \[0.01, 0.99\]"),
    (lambda: datasets.sequential_digits(seed=-1), ValueError, r"seed must be in"),
    (lambda: datasets.sequential_digits(seed="0"), TypeError, r"seed must be an integer, got '0'"),
    (lambda: datasets.fsdd("/nonexistent", num_mel_bins=0), ValueError, r"num_mel_bins must be in \[1, 128\]"),
    (lambda: datasets.fsdd("/nonexistent", num_mfcc=50), ValueError, r"num_mfcc must be in \[1, 40\]"),
    (lambda: datasets.fsdd("/nonexistent", frame_length_ms=-25.0), ValueError, r"frame_length_ms must be in"),
    (lambda: datasets.fsdd("/nonexistent", frame_step_ms=30.0), ValueError, r"frame_step_ms must be in \[0.125, 25\]"),
    (lambda: datasets.fsdd("/nonexistent", features="wav"), ValueError, r"features must be 'logmel' or 'mfcc'"),
    (lambda: datasets.fsdd("/nonexistent"), FileNotFoundError, r"data_dir '/nonexistent' is not a folder"),
]


@pytest.mark.parametrize("case", QUANTIZER_CASES + DATASET_CASES, ids=lambda c: c[2][:40])
def test_constructor_and_function_arguments(case):
    call, exc, match = case
    with pytest.raises(exc, match=match):
        call()


def _export_cases(tmp_path):
    from keras_lowprec.export import to_tflite

    a_file = tmp_path / "file"
    a_file.write_text("x")
    m = _model()
    return [
        (lambda: to_tflite(m, _x(), mode="batch"), r"mode must be one of sequence, stream; got 'batch'"),
        (lambda: to_tflite(m, _x(), timesteps=0), r"timesteps must be a positive integer, got 0"),
        (lambda: to_tflite(m, _x(), max_verify=0), r"max_verify must be a positive integer, got 0"),
        (lambda: to_tflite(m, _x(), lstm_kernel="cudnn"), r"lstm_kernel must be one of auto, fused, unrolled"),
        (lambda: to_tflite(m, _x(), output_dir=str(a_file)), r"output_dir: .*file exists and is not a folder"),
        (lambda: to_tflite(m, _x(), output_dir=str(a_file / "sub")), r"output_dir: cannot create .*is a file"),
        (lambda: to_tflite(m, _x(), output_dir=3), r"output_dir: expected a folder path"),
        (lambda: to_tflite(m, np.zeros((4, T), np.float32)), r"representative_data: expected shape \(samples"),
        (lambda: to_tflite(m, np.full((4, T, F), np.nan, np.float32)), r"representative_data: contains NaN"),
        (lambda: to_tflite(m, _x()[..., :2]), r"representative_data: 2 features per step, but the model expects 3"),
        (lambda: to_tflite("model", _x()), r"to_tflite expects a keras.Model, got str"),
        (lambda: to_tflite(m, _x(), verify="no"), r"verify must be True or False, got 'no'"),
        (lambda: to_tflite(m, _x(), c_array=1), r"c_array must be True or False, got 1"),
        (lambda: to_tflite(m, _x(), progress="bar"), r"progress must be a callable"),
    ]


def test_exporter_arguments_are_checked_before_conversion(tmp_path, monkeypatch):
    """Each bad argument raises ExportError naming it, and no conversion was started."""
    from keras_lowprec import export
    from keras_lowprec.export import routes

    def no_conversion(*args, **kwargs):
        raise AssertionError("the converter ran before the argument check")

    monkeypatch.setattr(routes, "convert", no_conversion)
    for call, match in _export_cases(tmp_path):
        with pytest.raises(export.ExportError, match=match):
            call()


@pytest.mark.parametrize("data,match", [
    (b"garbage", r"model_bytes: not a TFLite flatbuffer \(7 bytes without the 'TFL3' file identifier\)"),
    (b"\x1c\x00\x00\x00TFL3" + b"\xff" * 40, r"model_bytes: not a readable TFLite flatbuffer"),
    (123, r"model_bytes: expected the bytes of a .tflite model, got int"),
])
def test_bad_model_bytes(data, match):
    from keras_lowprec.export import ExportError, read_metadata, run_tflm

    with pytest.raises(ExportError, match=match):
        run_tflm(data, _x(2))
    with pytest.raises(ExportError, match=match):
        read_metadata(data)


def test_run_tflm_arena_size_checked():
    from keras_lowprec.export import ExportError, run_tflm, to_tflite

    model_bytes = to_tflite(_model(), _x(), verify=False).model_bytes
    with pytest.raises(ExportError, match=r"arena_size must be an integer number of bytes >= 1024"):
        run_tflm(model_bytes, _x(2), arena_size=-5)


def test_quantize_model_reaches_wrappers_and_nested_models_and_says_what_it_left():
    inner = keras.Sequential([keras.Input((T, F)), keras.layers.LSTM(4, return_sequences=True)])
    model = keras.Sequential([keras.Input((T, F)), inner, keras.layers.TimeDistributed(keras.layers.Dense(5)),
                              keras.layers.RNN(keras.layers.GRUCell(3), name="generic"), keras.layers.Dense(2)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantized = kl.quantize_model(model)
    messages = [str(w.message) for w in caught if "left these layers in float" in str(w.message)]
    assert len(messages) == 1 and "GRUCell" in messages[0]
    kinds = {type(layer).__name__ for layer in quantized._flatten_layers(include_self=False)}
    assert {"QuantLSTM", "QuantDense"} <= kinds and "LSTM" not in kinds and "Dense" not in kinds
    # The nested LSTM is quantized in place: its rounded output differs from the float one.
    inner_q = quantized.layers[0]
    assert not np.allclose(inner_q(_x(2)), inner(_x(2)))
    assert np.all(np.isfinite(quantized(_x(2)))) and tuple(quantized(_x(2)).shape) == (2, 2)


def _run(code: str, *args: str, timeout: int = 600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


_HUGE = """
import sys
import numpy as np, keras
from keras_lowprec import layers as L
from keras_lowprec.export import ExportError, to_tflite
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((6, 3)), L.TernaryGRU(4), L.TernaryDense(3)])
x = np.random.default_rng(0).normal(size=(12, 6, 3)).astype(np.float32) * 3e10
try:
    to_tflite(model, x, mode=sys.argv[1])
except ExportError as err:
    print("ExportError:", err)
"""


@pytest.mark.parametrize("mode", ["sequence", "stream"])
def test_huge_calibration_values_give_an_error_not_an_abort(mode):
    """LiteRT aborts the whole process on such a model; the exporter tries it in a child first."""
    proc = _run(_HUGE, mode)
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert "ExportError: LiteRT cannot run the model" in proc.stdout
    assert "inputs so large that int8 requantization overflows" in proc.stdout


def test_cli_bad_files(tmp_path):
    command = os.path.join(os.path.dirname(sys.executable), "keras-lowprec")
    data = tmp_path / "d.npy"
    np.save(data, _x())
    model = tmp_path / "m.keras"
    _model().save(model)
    truncated = tmp_path / "t.keras"
    truncated.write_bytes(model.read_bytes()[:200])
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        ([str(truncated), "--data", str(data), "--out", str(tmp_path / "o")], "is not a valid .keras file"),
        ([str(model), "--data", str(data), "--out", str(a_file)], "--out: "),
        ([str(model), "--data", str(model), "--out", str(tmp_path / "o")], "expected one array (.npy)"),
    ]
    for args, message in cases:
        proc = subprocess.run([command, "export", *args], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-800:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("keras-lowprec: error: ") and message in last and "Traceback" not in proc.stderr


# -- an export killed at several points -------------------------------------------------------
_KILLED = """
import os, signal, sys
import numpy as np, keras
from keras_lowprec import layers as L
from keras_lowprec.export import files, to_tflite
point = sys.argv[2]
calls = {"n": 0}
write, swap = files._write_synced, files._swap

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def killing_write(path, data):
    calls["n"] += 1
    if point == f"write{calls['n']}":
        die()
    write(path, data)

def killing_swap(a, b):
    if point == "before-swap":
        die()
    swap(a, b)
    if point == "after-swap":
        die()

files._write_synced, files._swap = killing_write, killing_swap
keras.utils.set_random_seed(1)
model = keras.Sequential([keras.Input((6, 3)), L.TernaryGRU(4), L.TernaryDense(2)])
x = np.random.default_rng(1).normal(size=(12, 6, 3)).astype(np.float32)
to_tflite(model, x, output_dir=sys.argv[1], verify=False)
print("finished")
"""


def _snapshot(folder) -> dict:
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name != "report.json":
            out[name] = open(path, "rb").read()
        else:  # paths differ between folders; the rest must match the model
            report = json.load(open(path))
            out[name] = (report["model_bytes"], report["graph"])
    return out


@pytest.mark.slow
def test_killed_export_leaves_the_old_set_or_the_new_one(tmp_path):
    from keras_lowprec.export import to_tflite

    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    to_tflite(_model(), _x(), output_dir=str(old_dir))  # GRU, with verification: 6 files
    # another GRU (a step graph converts in half the time of a fused LSTM), no test vectors: 5 files
    assert _run(_KILLED, str(new_dir), "none").stdout.strip() == "finished"
    old, new = _snapshot(old_dir), _snapshot(new_dir)
    assert len(old) == 6 and len(new) == 5
    seen = set()
    # mid-way through the new files, all of them written, and swapped in before clean-up
    for point in ("write3", "before-swap", "after-swap"):
        out = tmp_path / point
        shutil.copytree(old_dir, out)  # the old set (files are owned by name, not by path)
        (out / "main.cc").write_text("user file")
        proc = _run(_KILLED, str(out), point)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-800:]
        got = _snapshot(out)
        assert got.pop("main.cc") == b"user file"
        assert got in (old, new), f"killed at {point}: a mixed folder {sorted(got)}"
        seen.add("new" if got == new else "old")
        # The next export to the folder cleans up whatever the killed one left beside it.
        to_tflite(_model(), _x(), output_dir=str(out), verify=False)
        assert not [n for n in os.listdir(tmp_path) if n.startswith(f".{point}.")]
    assert seen == {"old", "new"}
