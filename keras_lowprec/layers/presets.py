"""Ready-made layers: ``{Binary,Ternary,Pow2Ternary,Exponential}{SimpleRNN,GRU,LSTM,Dense}``.

Each is the corresponding ``Quant*`` layer with every weight (kernel, recurrent
kernel, biases) rounded by the method, e.g. ``TernaryLSTM(64, stochastic=True)`` is
``QuantLSTM(64, kernel_quantizer=Ternary(stochastic=True), recurrent_quantizer=...,
bias_quantizer=...)``. A quantizer passed explicitly overrides the preset's.
"""

from __future__ import annotations

import keras

from keras_lowprec import quantizers as q
from keras_lowprec.layers.dense import QuantDense
from keras_lowprec.layers.recurrent import QuantGRU, QuantLSTM, QuantSimpleRNN

METHODS = {"Binary": q.Binary, "Ternary": q.Ternary, "Pow2Ternary": q.Pow2Ternary, "Exponential": q.Exponential}
BASES = {"SimpleRNN": QuantSimpleRNN, "GRU": QuantGRU, "LSTM": QuantLSTM, "Dense": QuantDense}
_RNN_QUANTIZERS = ("kernel_quantizer", "recurrent_quantizer", "bias_quantizer")
QUANTIZER_ARGS = {"SimpleRNN": _RNN_QUANTIZERS, "GRU": _RNN_QUANTIZERS, "LSTM": _RNN_QUANTIZERS,
                  "Dense": ("kernel_quantizer", "bias_quantizer")}


def _make_preset(method: str, kind: str) -> type:
    quantizer_cls = METHODS[method]
    base = BASES[kind]

    def __init__(self, *args, stochastic: bool = False, **kwargs):
        for name in QUANTIZER_ARGS[kind]:
            kwargs.setdefault(name, quantizer_cls(stochastic=stochastic))
        super(cls, self).__init__(*args, **kwargs)
        self.stochastic = stochastic

    def get_config(self):
        return {**super(cls, self).get_config(), "stochastic": self.stochastic}

    name = f"{method}{kind}"
    doc = (
        f"``{base.__name__}`` with kernel, recurrent kernel and bias rounded by "
        f"``keras_lowprec.quantizers.{quantizer_cls.__name__}``.\n\n"
        f"Args:\n    stochastic: stochastic rounding during training (deterministic at inference).\n"
        f"    *args, **kwargs: as for ``{base.__name__}`` / ``keras.layers.{kind}``."
    )
    cls = type(name, (base,), {"__init__": __init__, "get_config": get_config, "__doc__": doc, "__module__": __name__})
    return keras.saving.register_keras_serializable(package="keras_lowprec")(cls)


PRESETS = {f"{m}{k}": _make_preset(m, k) for m in METHODS for k in BASES}
globals().update(PRESETS)
__all__ = sorted(PRESETS)
