"""The C runtime (``export/c``, ``export.cruntime``): packing, the NumPy integer reference
against Keras, the C code bit for bit against the reference on the host (gcc, ``-std=c99
-O2 -Wall -Wextra -Werror``), on a Cortex-M4 (QEMU mps2-an386) and a Cortex-M0 (QEMU
microbit), no multiplication in the matrix-vector kernels, argument checks.

The Cortex-M tests need ``arm-none-eabi-gcc`` (with newlib) and ``qemu-system-arm``; without
them they skip and say why, with ``KERAS_LOWPREC_REQUIRE_FIRMWARE=1`` they fail instead.
The digits accuracy test is marked slow (it trains a 32-unit LSTM).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from conftest import skip_or_fail

from keras_lowprec import layers as L
from keras_lowprec.export.cruntime import build, codegen, packing, reference, to_c
from keras_lowprec.export.errors import ExportError, UnsupportedLayerError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T, F = 6, 5


def _require(target: str) -> None:
    """Skips (or, with KERAS_LOWPREC_REQUIRE_FIRMWARE=1, fails) when the target's tools are missing."""
    missing = build.missing_tools(target)
    if not missing:
        return
    skip_or_fail(f"{target} needs {', '.join(missing)} on PATH")


def _data(n=24, seed=0):
    return np.random.default_rng(seed).uniform(-1.0, 2.0, size=(n, T, F)).astype(np.float32)


def _model(rnn, head=None, before=(), stacked=None, seed=1):
    """A chain with weights spread wide (saturating gates and clipped ranges get exercised)."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((T, F)), *before, *([stacked] if stacked is not None else []), rnn,
              head if head is not None else L.TernaryDense(4)]
    model = keras.Sequential(layers)
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.uniform(-0.9, 0.9, tuple(w.shape)).astype("float32"))
    return model


# name -> (model factory, to_c keyword arguments). Units 9..12: groups of 4 / 5 inputs and
# pairs of shift codes end padded; table_bytes=512 splits the recurrent products into blocks.
MODELS = {
    "lstm-ternary-2bit": (lambda: _model(L.TernaryLSTM(12)), {"table_bytes": 512}),
    "lstm-ternary-trit5": (lambda: _model(L.TernaryLSTM(11)), {"packing": "trit5", "table_bytes": 512}),
    "gru-exponential": (lambda: _model(L.ExponentialGRU(9), L.ExponentialDense(4)), {"table_bytes": 512}),
    "gru-reset-before-pow2": (lambda: _model(L.Pow2TernaryGRU(10, reset_after=False), L.BinaryDense(4)), {}),
    "simplernn-float-head": (lambda: _model(L.TernarySimpleRNN(10), keras.layers.Dense(4, activation="softmax"),
                                            before=(keras.layers.Dropout(0.2),)), {}),
    # channel_scale=True: one multiplier per output column (scales drawn like the weights: some negative)
    "lstm-channel-scale": (lambda: _model(L.TernaryLSTM(12, channel_scale=True),
                                          L.ExponentialDense(4, channel_scale=True)), {"table_bytes": 512}),
    "gru-exponential-channel-scale": (lambda: _model(L.ExponentialGRU(9, channel_scale=True)), {}),
    "gru-no-head": (lambda: keras.Sequential([keras.Input((T, F)), L.TernaryGRU(7, return_sequences=True)]), {}),
    "stacked-float-lstm-relu-dense": (
        lambda: keras.Sequential([keras.Input((T, F)), keras.layers.LSTM(8, return_sequences=True),
                                  L.ExponentialLSTM(10, return_sequences=True),
                                  keras.layers.Dense(6, activation="relu"), L.TernaryDense(3)]), {}),
}


def _export(name, tmp_path, verify=None):
    factory, kwargs = MODELS[name]
    model = factory()
    return model, to_c(model, _data(), str(tmp_path / name), verify_data=_data(6, seed=5) if verify is None
                       else verify, name="net", **kwargs)


# -- packing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["trit4", "trit5", "shift4", "int8"])
def test_packing_round_trip_and_density(kind):
    rng = np.random.default_rng(3)
    rows, cols = 13, 7
    values = {"trit4": rng.integers(-1, 2, (rows, cols)), "trit5": rng.integers(-1, 2, (rows, cols)),
              "shift4": rng.choice([0, 1, -1, 2, -4, 8, -16, 32, -64, 64], (rows, cols)),
              "int8": rng.integers(-127, 128, (rows, cols))}[kind]
    data = packing.pack(values, kind)
    assert len(data) == cols * -(-rows // packing.GROUP[kind])
    np.testing.assert_array_equal(packing.unpack(data, kind, rows, cols), values)
    # the density the format promises: 4 trits, 5 trits, 2 shift codes, 1 int8 per byte
    assert len(packing.pack(np.zeros((20, 1), int), kind)) == 20 // packing.GROUP[kind]


def test_packing_refuses_values_outside_its_codes():
    with pytest.raises(ValueError):
        packing.pack(np.array([[2]]), "trit4")
    with pytest.raises(ValueError):
        packing.pack(np.array([[3]]), "shift4")
    with pytest.raises(ValueError):
        packing.pack(np.array([[128]]), "shift4")


# -- the reference follows Keras -------------------------------------------------------------
def _fit(model, x, epochs=8):
    y = (x[:, :, 0].mean(1) > 0.5).astype(np.int64) + 2 * (x[:, :, 1].mean(1) > 0.5)
    model.compile(keras.optimizers.Adam(0.02), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


@pytest.mark.parametrize("rnn", ["TernaryLSTM", "ExponentialGRU", "GRU-reset-before", "TernarySimpleRNN",
                                 "ExponentialLSTM-channel-scale"])
def test_reference_follows_keras(rnn, tmp_path):
    """Gate order and formulas: the integer model's dequantized logits track Keras's."""
    keras.utils.set_random_seed(2)
    if rnn == "GRU-reset-before":
        layer = L.TernaryGRU(16, reset_after=False)
    elif rnn.endswith("-channel-scale"):
        layer = getattr(L, rnn.removesuffix("-channel-scale"))(16, channel_scale=True)
    else:
        layer = getattr(L, rnn)(16)
    model = keras.Sequential([keras.Input((T, F)), layer, L.TernaryDense(4)])
    x = _data(256, seed=3)
    _fit(model, x)
    im = to_c(model, x, str(tmp_path / "o"), name="net").model
    ours = reference.dequantize(im, reference.predict(im, x[:128]))
    theirs = model.predict(x[:128], verbose=0)
    spread = theirs.max() - theirs.min()
    assert np.abs(ours - theirs).max() < 0.08 * spread, (np.abs(ours - theirs).max(), spread)
    assert np.mean(ours.argmax(-1) == theirs.argmax(-1)) >= 0.95


# -- the C code, bit for bit ---------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_host_bit_exact(name, tmp_path):
    _require("host")
    _, res = _export(name, tmp_path)
    out = build.run(res.output_dir, "host")
    assert out.passed, out.log
    assert out.outputs == 6 * T * res.model.output_size and out.mismatches == 0 and out.state_mismatches == 0


def test_host_detects_a_wrong_reference(tmp_path):
    """The comparison can fail: one expected byte changed makes the program report it."""
    _require("host")
    _, res = _export("lstm-ternary-2bit", tmp_path)
    text = open(res.test_data).read()
    m = re.search(r"klp_test_expected\[\d+\] = \{\n  (-?\d+)", text)
    first = int(m.group(1))
    text = text[:m.start(1)] + str(first + 1 if first < 127 else first - 1) + text[m.end(1):]
    open(res.test_data, "w").write(text)
    out = build.run(res.output_dir, "host")
    assert not out.passed and out.mismatches == 1 and out.max_abs_diff == 1


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m0"])
@pytest.mark.parametrize("name", ["lstm-ternary-2bit", "gru-exponential", "lstm-ternary-trit5",
                                  "gru-reset-before-pow2", "stacked-float-lstm-relu-dense", "lstm-channel-scale"])
def test_qemu_bit_exact(name, target, tmp_path):
    _require(target)
    _, res = _export(name, tmp_path)
    out = build.run(res.output_dir, target)
    assert out.passed, out.log
    assert out.instructions_per_step and out.instructions_per_step > 100
    assert out.flash["weights"] == res.report["flash_bytes"]["weights"]


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m0"])
def test_no_multiplication_in_matvec_kernels(target, tmp_path):
    """The ternary and shift kernels (and what they inline) compile to no multiply
    instruction and no library call for Cortex-M; the int8 kernel (float layers) does multiply."""
    _require(target)
    obj = str(tmp_path / "klp.o")
    build.compile_object(os.path.join(build.C_DIR, "klp.c"), obj, target, [build.C_DIR])
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", obj], capture_output=True, text=True, check=True).stdout
    bodies = dict(re.findall(r"<(\w+)>:\n(.*?)(?=\n\n|\Z)", dis, flags=re.S))
    mul = re.compile(r"\t(u|s)?(mul|mla|mls|mull|mlal|smla\w*|smul\w*|smlad|smuad)s?\b|\tbl\s")
    checked = [f for f in bodies if f.startswith(("klp_matvec_trit", "klp_matvec_shift", "trit_table",
                                                  "shift_table"))]
    assert {"klp_matvec_trit", "klp_matvec_shift"} <= set(checked)
    for fn in checked:
        assert not mul.search(bodies[fn]), f"{fn} multiplies on {target}:\n{bodies[fn]}"
    assert mul.search(bodies["klp_matvec_int8"])  # the check can see a multiplication


def test_kernels_extreme_values_host(tmp_path):
    """Kernel level: all-(-128) / all-127 inputs, full-magnitude weights, odd sizes, small
    blocks: the C kernels give x @ W exactly (no int16 table or int32 overflow)."""
    _require("host")
    rng = np.random.default_rng(9)
    rows, cols = 37, 5
    # (packing, weights, groups in the first block: a multiple of 3 for trit4, as klp.h requires)
    cases = [("trit4", rng.integers(-1, 2, (rows, cols)), 3), ("trit5", np.ones((rows, cols), int), 3),
             ("shift4", rng.choice([64, -64, 1, 0], (rows, cols)), 4),
             ("int8", rng.integers(-127, 128, (rows, cols)), 1)]
    xs = np.stack([np.full(rows, -128), np.full(rows, 127), rng.integers(-128, 128, rows)])
    lines = ['#include <stdio.h>', '#include "klp.h"', 'static int16_t table[4096];', 'static int32_t acc[64];']
    calls = []
    for k, (kind, w, nb1) in enumerate(cases):
        stride, g = packing.stride(kind, rows), packing.GROUP[kind]
        lines.append(codegen.c_array("uint8_t", f"codes{k}", np.frombuffer(packing.pack(w, kind), np.uint8)))
        for i, x in enumerate(xs):
            xa = f"x{k}_{i}"
            lines.append(codegen.c_array("int8_t", xa, x))
            if kind == "int8":
                calls.append(f"  klp_matvec_int8(codes{k}, {stride}, {cols}, {xa}, {rows}, acc);")
            else:  # two blocks: nb1 groups, then the rest accumulated
                for first, nb, more in ((0, nb1, 0), (nb1, stride - nb1, 1)):
                    args = (f"codes{k} + {first}, {stride}, {cols}, {xa} + {first * g}, {rows - first * g}, {nb}")
                    calls.append(f"  klp_matvec_trit({args}, {g}, {more}, acc, table);" if kind != "shift4"
                                 else f"  klp_matvec_shift({args}, {more}, acc, table);")
            calls.append(f"  for (int j = 0; j < {cols}; j++) printf(\"%ld \", (long)acc[j]);\n  printf(\"\\n\");")
    lines.append("int main(void) {\n" + "\n".join(calls) + "\n  return 0;\n}\n")
    src = tmp_path / "kernels.c"
    src.write_text("\n".join(lines))
    exe = str(tmp_path / "kernels")
    subprocess.run(["gcc", *build.CFLAGS, f"-I{build.C_DIR}", str(src), os.path.join(build.C_DIR, "klp.c"),
                    "-o", exe], check=True)
    got = [list(map(int, line.split())) for line in subprocess.run([exe], capture_output=True, text=True,
                                                                   check=True).stdout.splitlines()]
    want = [list(x.astype(np.int64) @ w) for _, w, _ in cases for x in xs]
    assert got == want


# -- users' route: a saved model, to_c in a fresh process ------------------------------------
def test_saved_model_exported_in_a_fresh_process(tmp_path):
    _require("host")
    model = MODELS["lstm-ternary-2bit"][0]()
    path = tmp_path / "m.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", _data())
    np.save(tmp_path / "v.npy", _data(6, seed=5))
    code = ("import sys, numpy as np, keras; import keras_lowprec; from keras_lowprec.export.cruntime import to_c; "
            "d = sys.argv[1]; m = keras.models.load_model(d + '/m.keras'); "
            "r = to_c(m, np.load(d + '/x.npy'), d + '/fresh', verify_data=np.load(d + '/v.npy'), name='net', "
            "table_bytes=512); print('bits', r.report['bits_per_weight'])")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = build.run(str(tmp_path / "fresh"), "host")
    assert out.passed, out.log
    # the same files as an export of the in-memory model
    here = to_c(model, _data(), str(tmp_path / "here"), verify_data=_data(6, seed=5), name="net", table_bytes=512)
    for f in ("net.c", "net.h", "klp_test_data.h"):
        assert (tmp_path / "fresh" / f).read_text() == open(os.path.join(here.output_dir, f)).read(), f


# -- memory and sizes in the report ----------------------------------------------------------
def test_report_sizes_and_density(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8)), L.TernaryLSTM(32), L.TernaryDense(10)])
    x = np.random.default_rng(0).uniform(0, 1, (16, 8, 8)).astype(np.float32)
    two = to_c(model, x, str(tmp_path / "a")).report
    five = to_c(model, x, str(tmp_path / "b"), packing="trit5", table_bytes=4096).report
    assert two["bits_per_weight"] == 2.0  # 8 and 32 inputs: whole groups of 4
    # 5 trits per byte, each column's inputs padded to whole groups of 5 (8 -> 10, 32 -> 35)
    assert five["bits_per_weight"] == pytest.approx(8 * (128 * 2 + 128 * 7 + 10 * 7) / (8 * 128 + 32 * 128 + 32 * 10))
    assert two["ram_bytes"]["tables"] <= 2048 and two["ram_bytes"]["state"] == 32 + 64
    small = to_c(model, x, str(tmp_path / "c"), table_bytes=512).report
    assert small["ram_bytes"]["tables"] <= 512
    # 8 groups of 4 recurrent inputs in blocks of 3 (trit4 blocks start at multiples of 3 groups)
    assert small["layers"][0]["recurrent_kernel"]["table_block_groups"] == 3


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, arg", [
    ({"model": "not a model"}, "model"),
    ({"representative_data": np.zeros((4, T))}, "representative_data"),
    ({"representative_data": np.full((4, T, F), np.nan)}, "representative_data"),
    ({"representative_data": np.zeros((4, T, F + 1))}, "representative_data"),
    ({"verify_data": np.zeros((2, T, 3))}, "verify_data"),
    ({"verify_data": np.zeros((2, T + 1, F))}, "verify_data"),
    ({"packing": "3bit"}, "packing"),
    ({"name": "9lives"}, "name"),
    ({"name": "a-b"}, "name"),
    ({"table_bytes": 100}, "table_bytes"),
    ({"table_bytes": 1024.0}, "table_bytes"),
])
def test_bad_arguments_name_the_argument(kwargs, arg, tmp_path):
    model = MODELS["lstm-ternary-2bit"][0]()
    args = {"model": model, "representative_data": _data(), "output_dir": str(tmp_path / "o"), **kwargs}
    with pytest.raises(ExportError, match=rf"^{arg}:"):
        to_c(args.pop("model"), args.pop("representative_data"), args.pop("output_dir"), **args)


def test_output_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ExportError, match="^output_dir:"):
        to_c(MODELS["lstm-ternary-2bit"][0](), _data(), str(f))


@pytest.mark.parametrize("layers, match", [
    (lambda: [keras.layers.Dense(4), L.TernaryLSTM(4)], "Dense before the first recurrent"),
    (lambda: [L.TernaryLSTM(4, activation="relu")], "activation='relu'"),
    (lambda: [L.TernaryLSTM(4, return_sequences=True), keras.layers.LayerNormalization()], "LayerNormalization"),
    (lambda: [keras.layers.Bidirectional(L.TernaryLSTM(4))], "Bidirectional"),
    (lambda: [L.TernaryLSTM(4), keras.layers.Dense(4, activation="tanh")], "activation='tanh'"),
])
def test_unsupported_layers_are_named(layers, match, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((T, F)), *layers(), keras.layers.Dense(2)])
    with pytest.raises(UnsupportedLayerError, match=match):
        to_c(model, _data(), str(tmp_path / "o"))


# -- accuracy on the digits (slow) -------------------------------------------------------------
@pytest.mark.slow
def test_digits_accuracy_within_one_point_and_bit_exact(tmp_path):
    """The demo data (sklearn digits, 8 steps x 8 pixels): a 32-unit ternary LSTM; the integer
    model is within 1 point of Keras on the 360 held-out digits, and the host C program
    reproduces the reference's outputs on all of them."""
    pytest.importorskip("sklearn")
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from export_size_latency import build as build_model, digits

    x_train, y_train, x_test, y_test = digits()
    model = build_model("Ternary", "LSTM", 32)
    model.fit(x_train, y_train, epochs=15, batch_size=64, verbose=0)
    keras_acc = float(np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test))
    res = to_c(model, x_train[:400], str(tmp_path / "digits"), verify_data=x_test)
    ours = float(np.mean(reference.predict(res.model, x_test).argmax(-1) == y_test))
    assert keras_acc > 0.8, keras_acc  # the model learned something
    assert abs(ours - keras_acc) <= 0.01, (ours, keras_acc)
    if shutil.which("gcc"):
        out = build.run(res.output_dir, "host")
        assert out.passed and out.sequences == len(x_test), out.log


def test_masking_on_the_input_feeds_the_real_frames(tmp_path):
    """A model with Masking (variable-length sequences padded with zeros) runs on the real
    frames only, as firmware feeds them: the integer model agrees with Keras's masked model."""
    from keras_lowprec.export.cruntime import reference
    from keras_lowprec.export.targets.c import predict_real_frames

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((None, F)), keras.layers.Masking(0.0), L.TernaryGRU(16),
                              L.TernaryDense(4)])
    x = _data(40, seed=4)
    lengths = np.random.default_rng(1).integers(2, x.shape[1] + 1, size=len(x))
    for i, n in enumerate(lengths):
        x[i, n:] = 0.0
    res = to_c(model, x[:30], str(tmp_path / "m"), verify_data=x[30:])
    assert any("real frames" in d for d in res.report["dropped"])
    ours = predict_real_frames(res.model, 0.0, x[30:])
    assert ours.shape[0] == 10 and res.report["verify"]["argmax_agreement_with_keras"] >= 0.8
    # the real frames matter: the padded sequences give other outputs
    padded = reference.predict(res.model, x[30:])
    assert not np.array_equal(padded, ours)
