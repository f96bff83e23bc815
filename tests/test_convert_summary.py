"""quantize_model and summary."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_lowprec as kl
from keras_lowprec import layers as L
from keras_lowprec import quantizers as Q


def _float_model():
    return keras.Sequential([
        keras.Input((6, 4)),
        keras.layers.Masking(),
        keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True)),
        keras.layers.GRU(6, return_sequences=True),
        keras.layers.SimpleRNN(4),
        keras.layers.BatchNormalization(),
        keras.layers.Dense(3, activation="softmax"),
    ])


def _x():
    return np.random.RandomState(0).randn(3, 6, 4).astype("float32")


def test_quantize_model_without_quantizers_equals_float_model():
    model = _float_model()
    twin = kl.quantize_model(model, None, None, None)
    np.testing.assert_allclose(twin(_x()), model(_x()), atol=1e-6, rtol=0)
    assert [type(l).__name__ for l in twin.layers] == [
        "Masking", "Bidirectional", "QuantGRU", "QuantSimpleRNN", "BatchNormalization", "QuantDense"]
    assert type(twin.layers[1].forward_layer) is L.QuantLSTM
    assert type(twin.layers[1].backward_layer) is L.QuantLSTM


def test_quantize_model_carries_weights_and_rounds_them():
    model = _float_model()
    twin = kl.quantize_model(model, kernel_quantizer="ternary", recurrent_quantizer=Q.Ternary(scale=0.3),
                             bias_quantizer=None)
    gru_float, gru_q = model.layers[2], twin.layers[2]
    kernel = np.asarray(gru_float.cell.kernel)
    rounded = np.asarray(gru_q.quantized_weights()["kernel"])
    w0 = np.float32(Q.glorot_bound(10, 6))  # GRU input width: 2 x 5 LSTM units
    expected = np.where(kernel > w0 / 2, w0, np.where(kernel < -w0 / 2, -w0, 0)).astype("float32")
    np.testing.assert_array_equal(rounded, expected)
    assert set(np.unique(gru_q.quantized_weights()["recurrent_kernel"])) <= {np.float32(-0.3), 0, np.float32(0.3)}
    # biases stay full precision and equal the float model's
    np.testing.assert_array_equal(gru_q.cell.bias, gru_float.cell.bias)
    # float constraint None became "auto" for quantized weights only
    assert gru_q.get_config()["kernel_constraint"] == "auto"
    assert gru_q.cell.bias_constraint is None


def test_quantize_model_trains_and_saves(tmp_path):
    twin = kl.quantize_model(_float_model(), "stochastic_exponential", "stochastic_ternary", "pow2_ternary")
    twin.compile("adam", "sparse_categorical_crossentropy")
    twin.fit(_x(), np.array([0, 1, 2]), epochs=1, verbose=0)
    twin.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(_x(), verbose=0), twin.predict(_x(), verbose=0))


def test_quantize_model_with_channel_scales_carries_weights_and_starts_the_scales_at_one():
    model = keras.Sequential([keras.Input((6, 4)), keras.layers.Bidirectional(keras.layers.GRU(5)),
                              keras.layers.Dense(3)])
    plain = kl.quantize_model(model)
    twin = kl.quantize_model(model, channel_scale=True)
    owners = [o for layer in twin.layers for o in kl.convert.quantized_owners(layer)]
    assert len(owners) == 3 and all(o.channel_scale for o in owners)
    for owner in owners:
        for name, scale in owner.channel_scales().items():
            assert tuple(scale.shape) == (getattr(owner, name).shape[-1],) and scale.trainable
            np.testing.assert_array_equal(scale, np.ones(scale.shape, np.float32))
    scales = {id(v) for o in owners for v in o.channel_scales().values()}
    carried = [np.asarray(v) for v in twin.weights if id(v) not in scales]
    assert all(np.array_equal(a, b) for a, b in zip(carried, plain.get_weights(), strict=True))
    np.testing.assert_array_equal(twin(_x()), plain(_x()))
    # a layer left without a rounded kernel gets no scales
    mixed = kl.quantize_model(model, kernel_quantizer=None, channel_scale=True)
    assert mixed.layers[0].forward_layer.cell.channel_scale and not mixed.layers[-1].channel_scale


def test_quantize_model_errors():
    with pytest.raises(ValueError, match="kernel_quantizer.*Valid names"):
        kl.quantize_model(_float_model(), kernel_quantizer="quaternary")

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="Functional and Sequential"):
        kl.quantize_model(Sub())


def test_summary_counts_bits_and_bytes():
    model = keras.Sequential([keras.Input((5, 3)), L.TernaryLSTM(4, bias_quantizer=None),
                              L.ExponentialDense(2), keras.layers.Dense(2)])
    lines = []
    result = kl.summary(model, print_fn=lines.append)
    lstm, dense_q, dense_f = result.layers
    n_kernel, n_rec, n_bias = 3 * 16, 4 * 16, 16
    assert lstm.params == n_kernel + n_rec + n_bias
    assert lstm.float32_bytes == 4 * lstm.params
    assert lstm.tflite_int8_bytes == n_kernel + n_rec + 4 * n_bias
    assert lstm.packed_bytes == -(-(2 * (n_kernel + n_rec) + 32 * n_bias) // 8)
    assert lstm.quantizer == "ternary"
    assert dense_q.levels == "15/4b"
    assert dense_q.packed_bytes == -(-(4 * 10) // 8)
    assert dense_f.quantizer == "float" and dense_f.packed_bytes == 4 * 6
    rounded = model.layers[0].quantized_weights()
    zeros = sum(int((np.asarray(rounded[k]) == 0).sum()) for k in ("kernel", "recurrent_kernel"))
    assert lstm.zero_fraction == pytest.approx(zeros / (n_kernel + n_rec))
    assert result.totals["params"] == sum(r.params for r in result.layers)
    text = "\n".join(lines)
    assert "ternary" in text and "Total" in text and "smaller than float32" in text


def test_summary_needs_built_model():
    with pytest.raises(ValueError, match="not built"):
        kl.summary(keras.Sequential([L.TernaryDense(2)]))
