"""The exporter's extension seams: a new rounding method is one ``Quantizer`` class (alias,
deserialization and an exact int8 encoding follow from it), a new layer type is one handler."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from keras import ops

from keras_lowprec import layers as L
from keras_lowprec import quantizers as Q
from keras_lowprec.export import encodings

pytest.importorskip("tflite_micro")


class TwoBitUniform(Q.Quantizer):
    """A 2-bit uniform rounding, levels ``{-3, -1, 1, 3} * s`` with ``s = G / 4`` (test only)."""

    precision = 2

    def step(self, bound):
        return np.float32(bound / 4.0)

    def levels(self, glorot_bound=None):
        s = self.step(glorot_bound)
        return np.array([-3, -1, 1, 3], np.float32) * s

    def _round(self, w, bound, noise):
        s = float(self.step(bound))
        k = ops.clip(2.0 * ops.floor(w / (2.0 * s)) + 1.0, -3.0, 3.0)
        return ops.cast(k, "float32") * np.float32(s)


def test_a_new_quantizer_class_registers_its_aliases():
    assert TwoBitUniform.method == "two_bit_uniform"
    assert isinstance(Q.get("two_bit_uniform"), TwoBitUniform)
    assert Q.get("stochastic_two_bit_uniform").stochastic
    assert Q.deserialize(Q.serialize(TwoBitUniform())) == TwoBitUniform()


@pytest.mark.parametrize("quantizer,name,scale", [
    (Q.Ternary(), "ternary", np.float32(0.5) / 64),
    (Q.Binary(), "binary", np.float32(0.25) / 64),
    (Q.Pow2Ternary(), "shift", 2.0 ** (-1 - 6)),
    (Q.Exponential(), "shift", 2.0 ** (-1 - 6)),  # max exponent ceil(log2 G) = -1
    (TwoBitUniform(), "linear", np.float32(0.125) / 32),
])
def test_encodings_come_from_the_levels(quantizer, name, scale):
    enc = encodings.encoding_for(quantizer, 0.5, "w")
    assert enc.name == name and enc.exact and enc.scale == pytest.approx(float(scale), rel=0, abs=0)
    codes = enc.levels / np.float32(enc.scale)
    assert np.array_equal(np.round(codes), codes) and np.max(np.abs(codes)) <= 127
    assert np.array_equal(codes.astype(np.float32) * np.float32(enc.scale), enc.levels)


def test_levels_int8_cannot_hold_are_refused():
    class Wide(TwoBitUniform):
        def levels(self, glorot_bound=None):
            return np.array([-1.0, 0.0, 0.3, 1.0], np.float32)

    with pytest.raises(encodings.ExactnessError, match="layer 'x' weight 'kernel'.*not integer multiples"):
        encodings.encoding_for(Wide(), 0.5, "layer 'x' weight 'kernel'")
    with pytest.raises(encodings.ExactnessError, match="8 exponent levels"):
        encodings.encoding_for(Q.Exponential(num_levels=8), 0.5, "w")


def test_a_model_with_the_new_quantizer_exports_exact_weights():
    from keras_lowprec.export import to_tflite

    keras.utils.set_random_seed(0)
    q = {"kernel_quantizer": TwoBitUniform(), "recurrent_quantizer": TwoBitUniform(), "bias_quantizer": None}
    model = keras.Sequential([keras.Input((5, 3)), L.QuantGRU(6, **q), L.TernaryDense(4)])
    x = np.random.default_rng(0).normal(size=(20, 5, 3)).astype(np.float32)
    res = to_tflite(model, x, verify=False)
    rows = [w for k, w in res.report["weights"].items() if w["method"] == "two_bit_uniform"]
    assert len(rows) == 2 and all(w["encoding"] == "linear" and w["exact"] for w in rows)
    assert res.report["exactness"]["all_exact"]


def test_a_new_layer_type_is_one_handler():
    from keras_lowprec.export import UnsupportedLayerError, handlers, to_tflite
    from keras_lowprec.export.handlers.base import Handler
    from keras_lowprec.export.plan import Stage

    model = keras.Sequential([keras.Input((5, 3)), keras.layers.Rescaling(0.5, offset=0.1),
                              keras.layers.Activation("tanh"), L.TernaryGRU(6),
                              L.TernaryDense(4)])
    x = np.random.default_rng(0).normal(size=(20, 5, 3)).astype(np.float32)
    with pytest.raises(UnsupportedLayerError, match=r"\(Rescaling\) is not supported.*Supported: .*LayerNormalization"):
        to_tflite(model, x, verify=False)

    class RescalingHandler(Handler):
        classes = ("Rescaling",)
        kind = "apply"
        description = "Rescaling"

        def analyze(self, layer, plan, mode):
            return Stage(self.kind, layer, layer.name, self)

        def apply(self, stage, x):
            return x * float(stage.layer.scale) + float(stage.layer.offset)

    handlers.register(RescalingHandler)
    try:
        assert "Rescaling" in handlers.supported_layers()
        res = to_tflite(model, x, mode="stream")
        assert res.verification["tflm"]["argmax_agreement"] >= 0.75
    finally:
        del handlers._REGISTRY["Rescaling"]
        handlers._ORDER.remove(next(h for h in handlers._ORDER if isinstance(h, RescalingHandler)))
