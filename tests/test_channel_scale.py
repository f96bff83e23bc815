"""``channel_scale=True``: a learned float scale per output column of the rounded kernels.

Layers: the float twin's math on ``s * Q(W)``, Keras's layer harness, config and saving,
the summary. Export: the rounded levels stay int8 codes and each output channel gets the
int8 scale ``|s_j| * level scale`` (per-channel FULLY_CONNECTED), bit for bit; the fused LSTM
kernel (one scale per gate matrix) refuses such a layer; the C runtime takes one multiplier
per output column.
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
from absl.testing import parameterized
from keras.src.testing import TestCase

import keras_lowprec as kl
from keras_lowprec import layers as L

T, F, U, C = 6, 3, 5, 4
TWINS = {"SimpleRNN": keras.layers.SimpleRNN, "GRU": keras.layers.GRU, "LSTM": keras.layers.LSTM}


def _data(n=30, seed=0):
    return np.random.default_rng(seed).normal(size=(n, T, F)).astype(np.float32)


def _spread_scales(layer, seed=1):
    """Scales far from 1, one negative and one zero per vector: what training may leave."""
    rng = np.random.default_rng(seed)
    for v in layer.channel_scales().values():
        s = rng.uniform(0.3, 3.0, v.shape).astype(np.float32)
        s[0], s[1] = -s[0], 0.0
        v.assign(s)


@pytest.mark.parametrize("kind", sorted(TWINS))
def test_rnn_computes_the_float_twin_on_scaled_rounded_weights(kind):
    x = _data(4)
    layer = getattr(L, f"Ternary{kind}")(U, channel_scale=True, return_sequences=True)
    layer(x)
    _spread_scales(layer)
    rounded = layer.quantized_weights(training=False, apply_channel_scale=False)
    scales = {k: v.numpy() for k, v in layer.channel_scales().items()}
    assert sorted(scales) == ["kernel", "recurrent_kernel"]
    twin = TWINS[kind](U, return_sequences=True)
    twin(x)
    twin.set_weights([np.asarray(rounded["kernel"]) * scales["kernel"],
                      np.asarray(rounded["recurrent_kernel"]) * scales["recurrent_kernel"],
                      np.asarray(rounded["bias"])])
    np.testing.assert_allclose(layer(x), twin(x), rtol=1e-6, atol=1e-6)
    # quantized_weights() gives the scaled weights the cell computes with
    np.testing.assert_array_equal(layer.quantized_weights()["kernel"], np.asarray(rounded["kernel"]) * scales["kernel"])


def test_dense_scales_its_kernel_per_output():
    x = np.random.default_rng(0).normal(size=(4, 7)).astype(np.float32)
    layer = L.ExponentialDense(3, channel_scale=True)
    layer(x)
    _spread_scales(layer)
    levels = np.asarray(layer.quantized_weights(apply_channel_scale=False)["kernel"])
    s = layer.channel_scales()["kernel"].numpy()
    want = x @ (levels * s) + np.asarray(layer.quantized_weights()["bias"])
    np.testing.assert_allclose(layer(x), want, rtol=1e-5, atol=1e-6)


def test_scales_learn_and_levels_stay_on_the_grid():
    x, y = _data(40), np.random.default_rng(2).integers(0, C, 40)
    keras.utils.set_random_seed(0)
    rnn = L.ExponentialGRU(U, channel_scale=True)
    model = keras.Sequential([keras.Input((T, F)), rnn, L.TernaryDense(C)])
    model.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=10, verbose=0)
    s = rnn.channel_scales()["kernel"].numpy()
    assert s.shape == (3 * U,) and np.ptp(s) > 0.01  # trained, one value per gate unit
    levels = rnn.kernel_quantizer.levels(rnn.cell.glorot_bound_for("kernel"))
    assert np.isin(np.asarray(rnn.quantized_weights(apply_channel_scale=False)["kernel"]), levels).all()


class ChannelScaleHarnessTest(TestCase):
    @parameterized.named_parameters(("TernaryLSTM", "TernaryLSTM"), ("ExponentialGRU", "ExponentialGRU"),
                                    ("Pow2TernarySimpleRNN", "Pow2TernarySimpleRNN"))
    def test_rnn(self, name):
        self.run_layer_test(
            L.PRESETS[name],
            init_kwargs={"units": 3, "channel_scale": True, "stochastic": True, "return_sequences": True},
            input_shape=(2, 4, 5),
            expected_output_shape=(2, 4, 3),
            expected_num_trainable_weights=5,  # kernel, recurrent kernel, bias and two scale vectors
            expected_num_non_trainable_weights=0,
            expected_num_seed_generators=1,
            supports_masking=True,
        )

    def test_dense(self):
        self.run_layer_test(
            L.TernaryDense,
            init_kwargs={"units": 3, "channel_scale": True},
            input_shape=(2, 5),
            expected_output_shape=(2, 3),
            expected_num_trainable_weights=3,
            expected_num_non_trainable_weights=0,
            expected_num_seed_generators=1,
        )


def test_config_round_trip_and_default():
    layer = L.TernaryLSTM(4, channel_scale=True)
    config = layer.get_config()
    assert config["channel_scale"] is True
    assert type(layer).from_config(config).get_config() == config
    assert L.TernaryLSTM(4).get_config()["channel_scale"] is False
    assert L.QuantDense(2, kernel_quantizer="ternary", channel_scale=True).get_config()["channel_scale"] is True


def test_bad_arguments_name_the_argument():
    with pytest.raises(TypeError, match="`channel_scale`: expected True or False, got 'yes'"):
        L.TernaryGRU(3, channel_scale="yes")
    with pytest.raises(ValueError, match="channel_scale=True.*no kernel of this layer has a quantizer"):
        L.QuantLSTM(3, channel_scale=True)


def test_summary_counts_scales_as_float(capsys):
    model = keras.Sequential([keras.Input((T, F)), L.TernaryLSTM(U, channel_scale=True), L.TernaryDense(C)])
    row = kl.summary(model, print_fn=lambda s: None).layers[0]
    assert row.quantizer == "ternary + channel scales"
    rounded = 4 * U * (F + U) + 4 * U
    assert row.params == rounded + 2 * 4 * U
    assert row.packed_bytes == -(-(2 * rounded + 32 * 2 * 4 * U) // 8)  # 2-bit levels, float32 scales


# -- saving and export, each in its own process --------------------------------------------
_TRAIN_AND_SAVE = r"""
import sys
import numpy as np, keras
from keras_lowprec import layers as L
sys.path.insert(0, sys.argv[3])
from test_channel_scale import _data, _spread_scales, T, F, U, C
keras.utils.set_random_seed(0)
x = _data()
model = keras.Sequential([keras.Input((T, F)), L.ExponentialLSTM(U, channel_scale=True, return_sequences=True),
                          L.TernaryGRU(U, channel_scale=True), L.TernaryDense(C, channel_scale=True)])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x, np.arange(len(x)) % C, epochs=1, verbose=0)
for i, layer in enumerate(model.layers):
    _spread_scales(layer, seed=i)
model.save(sys.argv[1])
np.save(sys.argv[2], x)
np.save(sys.argv[2].replace(".npy", "_y.npy"), model.predict(x, verbose=0))
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A model with spread channel scales, trained and saved by another process."""
    d = tmp_path_factory.mktemp("channel_scale")
    model, data = d / "m.keras", d / "x.npy"
    subprocess.run([sys.executable, "-c", _TRAIN_AND_SAVE, str(model), str(data), os.path.dirname(__file__)],
                   check=True, capture_output=True, timeout=300)
    return d


def _float32_columns(layer):
    """``(name, float32 s_j * level)`` of each scaled kernel, as the exporter must hold them."""
    levels = layer.quantized_weights(training=False, apply_channel_scale=False)
    for name, s in layer.channel_scales().items():
        yield name, np.asarray(levels[name], np.float32) * s.numpy()


def test_saved_model_loads_and_exports_exactly_in_another_process(saved, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = tmp_path / "out"
    command = os.path.join(os.path.dirname(sys.executable), "keras-lowprec")
    proc = subprocess.run([command, "export", str(saved / "m.keras"), "--data", str(saved / "x.npy"), "--out",
                           str(out), "--mode", "stream", "--quiet"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "weights exact: True" in proc.stdout

    from keras_lowprec.export.tflite import TFLiteModel

    model = keras.saving.load_model(saved / "m.keras")
    np.testing.assert_array_equal(model.predict(np.load(saved / "x.npy"), verbose=0), np.load(saved / "x_y.npy"))
    fb = TFLiteModel.from_bytes((out / "model.tflite").read_bytes())
    held = [t.array.astype(np.float32) * t.scales.reshape(-1, 1) for t in fb.tensors
            if t.type_name == "INT8" and t.array is not None and t.array.ndim == 2 and t.scales.size > 1]
    for layer in model.layers:
        gates = {"LSTM": 4, "GRU": 3}.get(type(layer).__name__.removeprefix("Exponential").removeprefix("Ternary"), 1)
        for name, w in _float32_columns(layer):
            u = w.shape[1] // gates
            for g in range(gates):
                piece = np.ascontiguousarray(w[:, g * u:(g + 1) * u].T)
                assert any(h.shape == piece.shape and np.array_equal(h, piece) for h in held), \
                    f"{layer.name}/{name} gate {g} is not held exactly"


def test_fused_lstm_refuses_and_c_runtime_takes_one_multiplier_per_column(saved, tmp_path):
    from keras_lowprec.export import UnsupportedLayerError, to_tflite
    from keras_lowprec.export.cruntime import build, to_c

    model = keras.saving.load_model(saved / "m.keras")
    x = np.load(saved / "x.npy")
    with pytest.raises(UnsupportedLayerError, match="channel_scale=True: the fused kernel takes one weight scale"):
        to_tflite(model, x, lstm_kernel="fused", verify=False)
    res = to_c(model, x[:24], str(tmp_path / "c"), verify_data=x[24:], name="net")
    assert [layer.mult_per_column for layer in res.model.layers] == [True, True, True]
    assert len(res.model.layers[0].mult_x) == 4 * U
    missing = build.missing_tools("host")
    if missing:
        skip_or_fail(f"the host build needs {', '.join(missing)} on PATH")
    run = build.run(res.output_dir, "host")
    assert run.passed and run.mismatches == 0, run.log


def test_auto_route_takes_the_step_graph_and_says_why():
    from keras_lowprec.export import to_tflite

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((T, F)), L.TernaryLSTM(U, channel_scale=True), L.TernaryDense(C)])
    _spread_scales(model.layers[0])
    res = to_tflite(model, _data())
    assert res.report["lstm"]["kernel"] == "unrolled" and "channel_scale=True" in res.report["lstm"]["why_not_fused"]
    assert res.report["exactness"]["all_exact"]
    assert res.report["weights"][f"{model.layers[0].name}/kernel"]["channel_scale"] is True
    assert res.report["verification"]["tflm"]["argmax_agreement"] >= 0.8


def test_underflowing_channel_scale_is_refused():
    from keras_lowprec.export import ExactnessError, to_tflite

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((T, F)), L.TernaryGRU(U, channel_scale=True), L.TernaryDense(C)])
    s = model.layers[0].channel_scales()["kernel"]
    s.assign(np.full(s.shape, 1e-40, np.float32))
    with pytest.raises(ExactnessError, match="channel scale is so small"):
        to_tflite(model, _data(), verify=False)
