"""Quantization-aware Keras layers and their presets."""

from keras_lowprec.layers.dense import QuantDense
from keras_lowprec.layers.presets import PRESETS
from keras_lowprec.layers.recurrent import (
    QuantGRU,
    QuantGRUCell,
    QuantLSTM,
    QuantLSTMCell,
    QuantSimpleRNN,
    QuantSimpleRNNCell,
)

globals().update(PRESETS)

__all__ = [
    "QuantDense",
    "QuantSimpleRNN",
    "QuantSimpleRNNCell",
    "QuantGRU",
    "QuantGRUCell",
    "QuantLSTM",
    "QuantLSTMCell",
    *sorted(PRESETS),
]
