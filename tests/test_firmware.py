"""Firmware truth: every export route built with TFLM's C++ sources and run on the host,
on a Cortex-M4 with TFLM's reference kernels and with CMSIS-NN (QEMU), with the header's
own arena, bit for bit against TFLM's Python interpreter.

Needs a TFLM source tree (``$TFLM_DIR`` or ``../shared/third_party/tflm``), g++, and for the
Cortex-M targets Debian's ``gcc-arm-none-eabi``, ``libnewlib-arm-none-eabi``,
``libstdc++-arm-none-eabi-newlib`` and ``qemu-system-arm``. Without them the tests skip
and say why; with ``KERAS_LOWPREC_REQUIRE_FIRMWARE=1`` (set by ``.ci/run``) they fail instead.
"""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from conftest import skip_or_fail

pytest.importorskip("tflite_micro")

from keras_lowprec import layers as L
from keras_lowprec.export import firmware, to_tflite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build", "firmware")
T, F, U, C = 6, 3, 5, 4


def _require(target: str) -> None:
    """Skips (or, in CI, fails) when the TFLM sources or the target's tools are missing."""
    try:
        firmware.find_tflm()
        missing = firmware.missing_tools(target)
        reason = f"{target} needs {', '.join(missing)}" if missing else None
    except firmware.FirmwareError as err:
        reason = str(err)
    if reason is not None:
        skip_or_fail(reason)


def _data(n=30, seed=0, t=T):
    return np.random.default_rng(seed).normal(size=(n, t, F)).astype(np.float32)


def _fit(model, x, epochs=2):
    y = 2 * (x[:, :, 0].mean(1) > 0) + (x[:, :, 1].mean(1) > 0)
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y.astype(np.int64), epochs=epochs, batch_size=10, verbose=0)
    return model


def _chain(rnn, *, inp=None, before=(), after=()):
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((T, F)) if inp is None else inp, *before, rnn, *after, L.TernaryDense(C)])


def _masked_data():
    """Right-padded sequences of 3 to 8 real frames (mask value 0)."""
    x = _data(40, t=8)
    lengths = np.random.default_rng(1).integers(3, 9, size=len(x))
    for i, n in enumerate(lengths):
        x[i, n:] = 0.0
    return x


# name -> (model factory, data, export keyword arguments, expected report["graph"])
ROUTES = {
    "lstm-fused-sequence": (lambda: _chain(L.TernaryLSTM(U)), _data, {}, "fused-lstm"),
    "lstm-fused-stream": (lambda: _chain(L.TernaryLSTM(U)), _data, {"mode": "stream", "lstm_kernel": "fused"},
                          "fused-lstm"),
    # Per-channel FULLY_CONNECTED weight scales (channel_scale=True: one per gate unit), shift
    # codes; the plain ternary LSTM step graph in stream mode is masked-lstm-stream's.
    "lstm-stream-channel-scale": (lambda: _chain(L.ExponentialLSTM(U, channel_scale=True)), _data,
                                  {"mode": "stream"}, "step"),
    "lstm-unrolled-sequence": (lambda: _chain(L.TernaryLSTM(U)), _data, {"lstm_kernel": "unrolled"},
                               "unrolled-step"),
    "gru-sequence": (lambda: _chain(L.TernaryGRU(U)), _data, {}, "unrolled-step"),
    "gru-stream": (lambda: _chain(L.TernaryGRU(U)), _data, {"mode": "stream"}, "step"),
    "simplernn-sequence": (lambda: _chain(L.TernarySimpleRNN(U)), _data, {}, "unrolled-step"),
    "simplernn-stream": (lambda: _chain(L.TernarySimpleRNN(U)), _data, {"mode": "stream"}, "step"),
    "exponential-gru-shift": (lambda: _chain(L.ExponentialGRU(U)), _data, {}, "unrolled-step"),
    "pow2-lstm-shift-fused": (lambda: _chain(L.Pow2TernaryLSTM(U)), _data, {}, "fused-lstm"),
    "normalization-stream": (
        lambda: _chain(L.TernaryGRU(U), before=[keras.layers.LayerNormalization()],
                       after=[keras.layers.BatchNormalization()]), _data, {"mode": "stream"}, "step"),
    # LUT compression with one value table per channel (channel scales); the per-tensor tables
    # of plain layers are lstm-fused-compressed's and gru-sequence-compressed's.
    "gru-stream-compressed-channel-scale": (lambda: _chain(L.TernaryGRU(64, channel_scale=True)), _data,
                                            {"mode": "stream", "compress": "flash"}, "step"),
    "lstm-fused-compressed": (lambda: _chain(L.TernaryLSTM(32)), _data, {"compress": "flash"}, "fused-lstm"),
    "gru-sequence-compressed": (lambda: _chain(L.ExponentialGRU(32)), _data, {"compress": "flash"}, "unrolled-step"),
    "masked-lstm-stream": (
        lambda: _chain(L.TernaryLSTM(U), inp=keras.Input((None, F)), before=[keras.layers.Masking(0.0)]),
        _masked_data, {"mode": "stream"}, "step"),
}


def _export(name: str, tmp_path) -> tuple[str, dict]:
    make, data, kwargs, graph = ROUTES[name]
    x = data()
    model = _fit(make(), x)
    res = to_tflite(model, x, output_dir=str(tmp_path / name), **kwargs)
    assert res.report["graph"] == graph
    if "compress" in kwargs:
        assert res.report["compression"]["applied"] and "CUSTOM:TFLM_DECODE" in res.ops
    return str(tmp_path / name), res.report


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ROUTES))
def test_route_bit_exact_on_every_target(name, tmp_path):
    for target in firmware.TARGETS:
        _require(target)
    out, report = _export(name, tmp_path)
    for target in firmware.TARGETS:
        if target == "cortex-m4-cmsis-nn" and report["kernel_sets"] == "reference":
            # A fused stream LSTM keeps its state in variable tensors, which CMSIS-NN's LSTM
            # kernel resets; a fused LSTM with compressed weights fails its Prepare there: the
            # export must refuse to build for CMSIS-NN, not run wrongly.
            with pytest.raises(firmware.FirmwareError, match="Not for TFLM's CMSIS-NN kernels"):
                firmware.build(out, target, build_dir=BUILD)
            continue
        r = firmware.run(out, target, build_dir=BUILD)
        assert r.passed, f"{name} on {target}: {r.mismatches} of {r.outputs} outputs differ\n{r.log[-2000:]}"
        assert r.outputs == r.sequences * C and r.sequences >= 6
        assert r.arena_used_bytes <= r.arena_bytes
        if target == "host":
            assert r.instructions_per_invoke is None
        else:
            assert r.instructions_per_invoke > 0 and r.flash["model"] >= report["model_bytes"]
            assert r.flash["tflm"] > 0


@pytest.mark.slow
def test_fused_stream_lstm_is_wrong_on_cmsis_nn_when_forced(tmp_path):
    """Why the guard exists: built anyway, CMSIS-NN's LSTM kernel starts every invoke from
    zero state, so a stream of several steps gives other outputs than the reference kernels."""
    _require("cortex-m4-cmsis-nn")
    out, _ = _export("lstm-fused-stream", tmp_path)
    exe = firmware.build(out, "cortex-m4-cmsis-nn", build_dir=BUILD,
                         extra_defines=("KERAS_LOWPREC_ALLOW_WRONG_KERNELS",))
    r = firmware.run_program(exe, out, "cortex-m4-cmsis-nn")
    assert not r.passed and r.mismatches > 0


def test_header_arena_is_the_measured_smallest_plus_margin(tmp_path):
    out, report = _export("gru-stream", tmp_path)
    header = open(os.path.join(out, "model_data.h")).read()
    assert f"kTensorArenaSize = {report['arena_recommended']};" in header
    assert report["arena_smallest_bytes"] >= report["arena_bytes"]  # the planner's scratch space
    assert report["arena_smallest_bytes"] <= report["arena_recommended"] <= 1.05 * report["arena_smallest_bytes"] + 16
    # TFLM's Python interpreter accepts the header's arena, and not much less.
    from keras_lowprec.export import verify

    with pytest.raises(Exception):
        verify.TFLMRunner(open(os.path.join(out, "model.tflite"), "rb").read(), report["arena_smallest_bytes"] - 64)
    verify.TFLMRunner(open(os.path.join(out, "model.tflite"), "rb").read(), report["arena_recommended"])


def test_header_comments_match_the_mode(tmp_path):
    seq, _ = _export("gru-sequence", tmp_path)
    text = open(os.path.join(seq, "model_data.h")).read()
    assert "kNumStates = 0;" in text and "// state 0" not in text
    stream, _ = _export("gru-stream", tmp_path)
    text = open(os.path.join(stream, "model_data.h")).read()
    assert "kNumStates = 1;" in text and "// state 0:" in text
    ops = open(os.path.join(stream, "model_ops.h")).read()
    assert "#ifndef TF_LITE_STATIC_MEMORY" in ops and "CMSIS_NN" not in ops


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lstm-fused-sequence", "simplernn-stream"])
def test_example_program_builds_with_warnings_as_errors_and_runs(name, tmp_path):
    _require("host")
    example = os.path.join(ROOT, "export", "example", "main.cc")
    out, report = _export(name, tmp_path)
    stream = ("KERAS_LOWPREC_STREAM",) if report["mode"] == "stream" else ()
    # -Wall -Wextra -Werror -Wdouble-promotion, as the harness builds every program
    exe = firmware.build(out, "host", build_dir=BUILD, app=example, extra_defines=stream)
    proc = subprocess.run([exe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "arena used:" in proc.stdout and "class " in proc.stdout


def test_programs_refuse_to_build_without_static_memory(tmp_path):
    """Without -DTF_LITE_STATIC_MEMORY TFLM's tensors have another layout: a build error,
    not wrong numbers."""
    _require("host")
    tflm = firmware.find_tflm()
    out, _ = _export("gru-sequence", tmp_path)
    includes = [f"-I{tflm}/tflite-micro", f"-I{tflm}/third_party/flatbuffers/include", f"-I{out}"]
    for program in (os.path.join(ROOT, "export", "example", "main.cc"), os.path.join(firmware.HARNESS, "runner.cc")):
        proc = subprocess.run(["g++", "-std=c++17", "-fsyntax-only", *includes, program], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode != 0
        assert "TF_LITE_STATIC_MEMORY" in proc.stderr


def test_missing_sources_and_bad_arguments_are_clear(tmp_path, monkeypatch):
    with pytest.raises(firmware.FirmwareError, match="tflm_dir: no TFLM source tree at"):
        firmware.find_tflm(str(tmp_path))
    with pytest.raises(firmware.FirmwareError, match="target must be one of host, cortex-m4, cortex-m4-cmsis-nn"):
        firmware.missing_tools("esp32")
    with pytest.raises(firmware.FirmwareError, match="lacks model_data.cc"):
        firmware.build(str(tmp_path), "host")
    with pytest.raises(firmware.FirmwareError, match="not a folder"):
        firmware.build(str(tmp_path / "nope"), "host")


@pytest.mark.slow
def test_cli_firmware_command(tmp_path):
    """``keras-lowprec firmware`` (the installed command, in a fresh process) builds and runs an
    export's test vectors and prints mismatches, arena, flash and instructions."""
    _require("cortex-m4")
    out, _ = _export("gru-stream", tmp_path)
    command = os.path.join(os.path.dirname(sys.executable), "keras-lowprec")
    env = dict(os.environ, KERAS_LOWPREC_FIRMWARE_CACHE=BUILD)
    proc = subprocess.run([command, "firmware", out, "--target", "cortex-m4"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "cortex-m4: 6 test sequences, 24 int8 outputs: 0 differ from TFLM's Python interpreter" in proc.stdout
    assert "instructions (QEMU -icount, not cycles)" in proc.stdout and "flash: model" in proc.stdout
    # A corrupted expectation is reported as a mismatch with exit status 1.
    data = os.path.join(out, "model_test_data.h")
    text = open(data).read()
    head, _, tail = text.partition("kTestExpected[24] = {\n    ")
    first, _, rest = tail.partition(",")
    open(data, "w").write(f"{head}kTestExpected[24] = {{\n    {int(first) ^ 1},{rest}")
    proc = subprocess.run([command, "firmware", out, "--target", "host"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 1 and "1 differ" in proc.stdout
    proc = subprocess.run([command, "firmware", str(tmp_path / "nope")], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 1 and "keras-lowprec: error: export_dir: not a folder" in proc.stderr
