"""Quantization-aware layers: float-twin equality, Keras harness, saving, rounding
once per call, inference determinism, clipping and error messages."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from absl.testing import parameterized
from keras.src.testing import TestCase

from keras_lowprec import layers as L
from keras_lowprec import quantizers as Q
from keras_lowprec.constraints import Clip

RNN_TWINS = [
    (L.QuantSimpleRNN, keras.layers.SimpleRNN),
    (L.QuantGRU, keras.layers.GRU),
    (L.QuantLSTM, keras.layers.LSTM),
]
METHODS = ["Binary", "Ternary", "Pow2Ternary", "Exponential"]
KINDS = ["SimpleRNN", "GRU", "LSTM"]


def _data(batch=4, steps=6, features=5, seed=0):
    return np.random.RandomState(seed).randn(batch, steps, features).astype("float32")


def _pair(quant_cls, float_cls, input_shape, **kwargs):
    """A quantized layer with all quantizers None and its float twin, same weights."""
    q = quant_cls(7, **kwargs)
    f = float_cls(7, **kwargs)
    q.build(input_shape)
    f.build(input_shape)
    # Random weights everywhere (also non-zero biases), copied to the twin.
    rng = np.random.RandomState(1)
    q.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in q.get_weights()])
    f.set_weights(q.get_weights())
    return q, f


# -- with quantization off, each layer is its Keras float twin ----------------------
TWIN_CASES = {
    "last_output": {},
    "return_sequences": {"return_sequences": True},
    "return_state": {"return_state": True},
    "go_backwards": {"go_backwards": True, "return_sequences": True},
    "unroll": {"unroll": True, "return_sequences": True},
}


@pytest.mark.parametrize("quant_cls,float_cls", RNN_TWINS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", sorted(TWIN_CASES))
def test_rnn_without_quantizers_equals_float_twin(quant_cls, float_cls, case):
    x = _data()
    q, f = _pair(quant_cls, float_cls, x.shape, **TWIN_CASES[case])
    for a, b in zip(keras.tree.flatten(q(x)), keras.tree.flatten(f(x))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)


@pytest.mark.parametrize("quant_cls,float_cls", RNN_TWINS, ids=lambda c: c.__name__)
def test_rnn_without_quantizers_equals_float_twin_masked(quant_cls, float_cls):
    x = _data()
    x[0, 4:] = 0.0  # right padding
    x[2, 2:] = 0.0
    models = []
    q, f = _pair(quant_cls, float_cls, x.shape, return_sequences=True)
    for layer in (q, f):
        inp = keras.Input((None, x.shape[-1]))
        models.append(keras.Model(inp, layer(keras.layers.Masking()(inp))))
    np.testing.assert_allclose(models[0](x), models[1](x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("quant_cls,float_cls", RNN_TWINS, ids=lambda c: c.__name__)
def test_rnn_without_quantizers_equals_float_twin_stateful(quant_cls, float_cls):
    x = _data(batch=2)
    q, f = _pair(quant_cls, float_cls, x.shape, stateful=True)
    for _ in range(3):  # state carried across calls
        np.testing.assert_allclose(q(x), f(x), atol=1e-6, rtol=0)
    q.reset_state()
    f.reset_state()
    np.testing.assert_allclose(q(x), f(x), atol=1e-6, rtol=0)


def test_gru_reset_before_without_quantizers_equals_float_twin():
    x = _data()
    q, f = _pair(L.QuantGRU, keras.layers.GRU, x.shape, reset_after=False, return_sequences=True)
    np.testing.assert_allclose(q(x), f(x), atol=1e-6, rtol=0)


def test_dense_without_quantizers_equals_float_twin():
    x = _data()[:, 0]
    q, f = L.QuantDense(3, activation="tanh"), keras.layers.Dense(3, activation="tanh")
    q.build(x.shape)
    f.build(x.shape)
    f.set_weights(q.get_weights())
    np.testing.assert_allclose(q(x), f(x), atol=1e-6, rtol=0)


# -- with quantization on: the float twin on the rounded weights ---------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", KINDS + ["Dense"])
def test_preset_computes_float_twin_on_rounded_weights(method, kind):
    x = _data()
    if kind == "Dense":
        x = x[:, 0]
    layer = L.PRESETS[f"{method}{kind}"](7)
    y = layer(x)
    twin = getattr(keras.layers, kind)(7)
    twin.build(x.shape)
    rounded = layer.quantized_weights(training=False)
    owner = layer if kind == "Dense" else layer.cell
    names = list(owner.master_weights())
    twin.set_weights([np.asarray(rounded[n]) for n in names])
    np.testing.assert_allclose(y, twin(x), atol=1e-6, rtol=0)
    # and the rounded weights are in each weight's level set
    for name in names:
        levels = owner.quantizer_for(name).levels(owner.glorot_bound_for(name))
        assert np.isin(np.asarray(rounded[name]), levels).all(), name


# -- Keras's own layer harness ---------------------------------------------------------
class KerasHarnessTest(TestCase):
    @parameterized.named_parameters(
        *[
            (f"{m}{k}", m, k)
            for m in METHODS
            for k in KINDS
        ]
    )
    def test_rnn_presets(self, method, kind):
        cls = L.PRESETS[f"{method}{kind}"]
        weights = {"SimpleRNN": 3, "GRU": 3, "LSTM": 3}[kind]
        self.run_layer_test(
            cls,
            init_kwargs={"units": 3, "stochastic": method == "Ternary", "return_sequences": True},
            input_shape=(2, 4, 5),
            expected_output_shape=(2, 4, 3),
            expected_num_trainable_weights=weights,
            expected_num_non_trainable_weights=0,
            expected_num_seed_generators=1,
            supports_masking=True,
        )

    @parameterized.named_parameters(*[(m, m) for m in METHODS])
    def test_dense_presets(self, method):
        self.run_layer_test(
            L.PRESETS[f"{method}Dense"],
            init_kwargs={"units": 3, "stochastic": True},
            input_shape=(2, 5),
            expected_output_shape=(2, 3),
            expected_num_trainable_weights=2,
            expected_num_non_trainable_weights=0,
            expected_num_seed_generators=1,
        )

    def test_quant_lstm_with_mixed_quantizers(self):
        self.run_layer_test(
            L.QuantLSTM,
            init_kwargs={
                "units": 3,
                "kernel_quantizer": "exponential",
                "recurrent_quantizer": Q.Ternary(scale=0.25),
                "bias_quantizer": None,
                "dropout": 0.2,
                "recurrent_dropout": 0.1,
                "seed": 3,
            },
            input_shape=(2, 4, 5),
            expected_output_shape=(2, 3),
            expected_num_trainable_weights=3,
            supports_masking=True,
        )


# -- config and saving -----------------------------------------------------------------
def _all_layers():
    yield "QuantLSTM", lambda: L.QuantLSTM(4, kernel_quantizer="stochastic_exponential",
                                           recurrent_quantizer=Q.Pow2Ternary(exponent=-1),
                                           bias_quantizer=None, recurrent_constraint=None,
                                           kernel_constraint=keras.constraints.MaxNorm(2.0),
                                           return_sequences=True)
    for name, cls in sorted(L.PRESETS.items()):
        yield name, lambda cls=cls: cls(4, stochastic=True, **({} if "Dense" in cls.__name__ else {"return_sequences": True}))


@pytest.mark.parametrize("name,make", list(_all_layers()), ids=[n for n, _ in _all_layers()])
def test_config_round_trip(name, make):
    layer = make()
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    # configs stay JSON-like: quantizers are serialized dicts, "auto" stays "auto"
    assert isinstance(config["kernel_quantizer"], (dict, type(None)))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", KINDS)
def test_keras_save_and_load_safe_mode(tmp_path, method, kind):
    x = _data(batch=3, steps=5, features=4)
    model = keras.Sequential([
        keras.Input((5, 4)),
        L.PRESETS[f"{method}{kind}"](6, stochastic=True, return_sequences=True),
        L.PRESETS[f"{method}{kind}"](5),
        L.PRESETS[f"{method}Dense"](2),
    ])
    model.compile("adam", "mse")
    model.fit(x, np.zeros((3, 2)), epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert type(loaded.layers[0]) is type(model.layers[0])
    assert loaded.layers[0].kernel_quantizer == model.layers[0].kernel_quantizer


# -- rounding happens once per layer call ------------------------------------------------
class CountingTernary(Q.Ternary):
    calls = 0

    def __call__(self, w, *args, **kwargs):
        CountingTernary.calls += 1
        return super().__call__(w, *args, **kwargs)


@pytest.mark.parametrize("quant_cls", [c for c, _ in RNN_TWINS], ids=lambda c: c.__name__)
@pytest.mark.parametrize("unroll", [False, True])
def test_weights_rounded_once_per_call_not_per_step(quant_cls, unroll):
    x = _data(steps=9)
    layer = quant_cls(3, kernel_quantizer=CountingTernary(), recurrent_quantizer=CountingTernary(),
                      bias_quantizer=CountingTernary(), unroll=unroll)
    layer.build(x.shape)
    CountingTernary.calls = 0
    layer(x)
    assert CountingTernary.calls == 3  # kernel, recurrent kernel, bias: once each, not 9x
    CountingTernary.calls = 0
    layer(x, training=True)
    assert CountingTernary.calls == 3


def test_bound_weights_are_restored_after_call():
    layer = L.TernaryLSTM(3)
    layer(_data())
    assert isinstance(layer.cell.kernel, keras.Variable)
    assert isinstance(layer.cell.recurrent_kernel, keras.Variable)
    assert isinstance(layer.cell.bias, keras.Variable)


# -- training vs inference ---------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_stochastic_layer_is_deterministic_in_inference(method):
    x = _data()
    stoch = L.PRESETS[f"{method}GRU"](5, stochastic=True)
    det = L.PRESETS[f"{method}GRU"](5)
    stoch.build(x.shape)
    det.build(x.shape)
    det.set_weights(stoch.get_weights())
    np.testing.assert_array_equal(stoch(x), stoch(x))
    np.testing.assert_array_equal(stoch(x, training=False), det(x))


@pytest.mark.parametrize("method", ["Binary", "Ternary", "Pow2Ternary", "Exponential"])
def test_stochastic_training_draws_new_noise_each_call(method):
    x = _data()
    layer = L.PRESETS[f"{method}LSTM"](16, stochastic=True)
    layer.build(x.shape)
    a, b = layer(x, training=True), layer(x, training=True)
    assert not np.allclose(a, b)


def test_stochastic_training_reproducible_under_set_random_seed():
    x = _data()

    def run():
        keras.utils.set_random_seed(123)
        model = keras.Sequential([keras.Input((6, 5)), L.TernaryLSTM(8, stochastic=True), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.1), "mse")
        model.fit(x, np.ones((4, 1)), epochs=3, verbose=0, shuffle=False)
        return [np.asarray(w) for w in model.get_weights()]

    for a, b in zip(run(), run()):
        np.testing.assert_array_equal(a, b)


# -- clipping constraints ----------------------------------------------------------------
def test_auto_constraint_clips_to_quantizer_range_and_initial_forget_bias():
    layer = L.TernaryLSTM(4)
    layer.build((None, 3, 10))
    bound_in = Q.glorot_bound(10, 4)
    assert isinstance(layer.cell.bias_constraint, Clip)
    assert layer.cell.bias_constraint.max_value == pytest.approx(bound_in, rel=1e-6)
    bias = np.asarray(layer.cell.bias)
    # unit forget bias of 1 was clipped to the bias quantizer's range
    np.testing.assert_allclose(bias[4:8], np.float32(bound_in))
    assert layer.get_config()["bias_constraint"] == "auto"


def test_constraint_none_turns_clipping_off():
    layer = L.TernaryLSTM(4, bias_constraint=None)
    layer.build((None, 3, 10))
    assert layer.cell.bias_constraint is None
    np.testing.assert_array_equal(np.asarray(layer.cell.bias)[4:8], 1.0)


def test_training_keeps_master_weights_in_range_and_learns():
    rng = np.random.RandomState(0)
    x = rng.randn(64, 6, 3).astype("float32")
    y = (x[:, :, 0].sum(axis=1) > 0).astype("float32")
    model = keras.Sequential([keras.Input((6, 3)), L.TernaryGRU(8), L.TernaryDense(1, activation="sigmoid")])
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=15, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    cell = model.layers[0].cell
    for name, variable in cell.master_weights().items():
        limit = cell.quantizer_for(name).clip_value(cell.glorot_bound_for(name))
        assert np.abs(np.asarray(variable)).max() <= limit * (1 + 1e-6), name


# -- bad input ---------------------------------------------------------------------------
def test_unknown_quantizer_names_layer_argument_and_choices():
    with pytest.raises(ValueError, match=r"QuantLSTMCell `recurrent_quantizer`.*ternary"):
        L.QuantLSTM(3, recurrent_quantizer="trinary")


def test_invalid_use_cudnn():
    with pytest.raises(ValueError, match="use_cudnn"):
        L.QuantGRU(3, use_cudnn="sometimes")


def test_unknown_input_width_is_a_clear_error():
    layer = L.TernaryDense(3)
    with pytest.raises(ValueError, match="last input dimension"):
        layer.build((None, None))


def test_compiled_training_steps_draw_fresh_noise():
    x = _data()
    model = keras.Sequential([keras.Input((6, 5)), L.ExponentialGRU(8, stochastic=True), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.0), "mse")  # weights never change
    losses = [float(model.train_on_batch(x, np.ones((4, 1)))) for _ in range(3)]
    assert len(set(losses)) == 3, losses
    deterministic = [float(model.test_on_batch(x, np.ones((4, 1)))) for _ in range(2)]
    assert deterministic[0] == deterministic[1]
