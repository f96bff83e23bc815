"""Rewrites of a graph with TFLite's fused ``UNIDIRECTIONAL_SEQUENCE_LSTM`` op.

The op lists five intermediate tensors without data (shape ``[0]``); the converter types
four of them float32. :func:`integer_intermediates` retypes those int16 (the gate
pre-activation type of the integer kernel), so that no tensor of the graph is float;
TFLM gives bit-identical outputs either way. Stream mode uses the sequence graph with its
time axis set to 1 (:func:`to_single_step`), so both share every activation scale.
"""

from __future__ import annotations

import numpy as np

from keras_lowprec.export.errors import ExportError
from keras_lowprec.export.tflite.checks import op_names
from keras_lowprec.export.tflite.model import TFLiteModel

LSTM_OP = "UNIDIRECTIONAL_SEQUENCE_LSTM"
# Ops a fused graph may contain for its time axis to be set to 1 (stream mode).
STREAMABLE_OPS = {LSTM_OP, "STRIDED_SLICE", "FULLY_CONNECTED", "SOFTMAX", "LOGISTIC",
                  "TANH", "RELU", "RELU6", "QUANTIZE", "MUL", "ADD", "SUB", "MEAN", "RSQRT"}


def prepare(model: TFLiteModel, n_lstm: int, stream_timesteps: int | None) -> None:
    """Checks and rewrites of a converted fused graph, before the integer-only check:
    empty intermediates retyped, one fused op per LSTM layer, and (stream mode) the time
    axis of a graph converted with ``stream_timesteps`` steps set to 1."""
    integer_intermediates(model)
    check_fused(model, n_lstm)
    if stream_timesteps is not None:
        to_single_step(model, stream_timesteps)


def check_fused(model: TFLiteModel, n_lstm: int) -> None:
    """Raises ``ExportError`` unless the converter produced one fused op per LSTM layer."""
    got = sum(op.name == LSTM_OP for op in model.operators)
    if got != n_lstm:
        raise ExportError(
            f"the converter produced {got} UNIDIRECTIONAL_SEQUENCE_LSTM ops for {n_lstm} LSTM layers; "
            "export with lstm_kernel='unrolled'."
        )


def _check_streamable(model: TFLiteModel) -> None:
    """Raises unless every op is one whose parameters cannot depend on T, and every
    STRIDED_SLICE takes the last step (begin -1 on the time axis)."""
    extra = sorted(set(op_names(model)) - STREAMABLE_OPS)
    if extra:
        raise ExportError(f"stream export with the fused LSTM: ops {extra} may depend on the sequence length; "
                          "export with lstm_kernel='unrolled'.")
    tensors = model.tensors
    for op in model.operators:
        if op.name == "STRIDED_SLICE":  # the last step: begin -1, end 0 (masked)
            begin = tensors[op.inputs[1]].array
            if begin is None or int(begin.reshape(-1)[1]) != -1:
                raise ExportError("stream export with the fused LSTM: unexpected STRIDED_SLICE; "
                                  "export with lstm_kernel='unrolled'.")


def to_single_step(model: TFLiteModel, timesteps: int) -> None:
    """Sets the time axis of a fused graph to 1: every ``[1, T, n]`` tensor becomes
    ``[1, 1, n]`` (and its shape signature, when it has one). Refuses (``ExportError``)
    graphs with ops whose parameters could depend on T."""
    _check_streamable(model)
    if timesteps == 1:
        return
    for t in model.tensors:
        shape = t.shape
        if len(shape) == 3 and shape[0] == 1 and shape[1] == timesteps:
            t.shape = np.array([1, 1, shape[2]], np.int32)
            if t.raw.shapeSignature is not None and len(t.raw.shapeSignature):
                t.raw.shapeSignature = np.array([1, 1, shape[2]], np.int32)


def integer_intermediates(model: TFLiteModel) -> int:
    """Retypes the fused LSTM's empty float32 intermediates (no data, zero elements) int16;
    returns how many."""
    tensors = model.tensors
    n = 0
    for op in model.operators:
        if op.name != LSTM_OP or op.intermediates is None:
            continue
        for i in op.intermediates:
            t = tensors[i]
            if t.type_name == "FLOAT32" and int(np.prod(t.shape)) == 0 and not t.is_constant:
                t.type_name = "INT16"
                n += 1
    return n

