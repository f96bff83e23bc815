"""The ways a plan becomes a converted int8 graph, and the choice between them.

* ``fused-lstm``: every recurrent layer an LSTM the fused kernel can run: a ``tf_keras``
  twin that converts to TFLite's ``UNIDIRECTIONAL_SEQUENCE_LSTM`` (``fused``); stream mode
  sets its time axis to 1;
* ``step``: stream mode: the step twin, state as explicit inputs/outputs;
* ``unrolled-step``: sequence mode of a model that can stream: the step twin, repeated
  ``T`` times in the flatbuffer after conversion (one calibration, the same integers as
  ``T`` stream invokes);
* ``unrolled``: sequence mode of a model that cannot stream (e.g. ``Flatten`` over time):
  the converter unrolls the whole-sequence twin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from keras_lowprec.export.errors import ExportError, UnsupportedLayerError
from keras_lowprec.export.plan import streamable

STREAM_FUSED_ON_CMSIS_NN = (
    "this stream export keeps the LSTM state in variable tensors between invokes, which TFLM's CMSIS-NN LSTM "
    "kernel resets at every invoke; export with lstm_kernel='unrolled' (the default in stream mode) for CMSIS-NN")
STREAM_UNFUSED_REASON = (
    "stream mode: the step graph keeps the state in explicit inputs/outputs, which every TFLM kernel set "
    "runs (TFLM's CMSIS-NN LSTM kernel resets the fused op's state at every invoke); "
    "lstm_kernel='fused' streams with the reference kernels only")


@dataclass(frozen=True)
class Route:
    """How the graph is built. ``graph`` is ``report["graph"]``; ``build`` the mode of the
    converted twin ("stream": the step graph); ``state`` where the recurrent state lives
    between invokes: "variables" (the fused LSTM's variable tensors, kept by TFLM: Reset()
    before every new sequence), "io" (stream: inputs/outputs 1..) or None (nothing carried)."""

    graph: str
    fused: bool
    build: str
    state: str | None
    unfused_reason: str | None
    not_on_cmsis_nn: str | None

    @property
    def via_stream(self) -> bool:
        return self.graph == "unrolled-step"


def choose(plan, mode: str, lstm_kernel: str) -> Route:
    """The route of ``plan`` for ``mode`` and the requested ``lstm_kernel``."""
    fused, reason = _lstm_kernel(plan, lstm_kernel, mode)
    if fused:
        return Route("fused-lstm", True, mode, "variables", None,
                     STREAM_FUSED_ON_CMSIS_NN if mode == "stream" else None)
    if mode == "stream":
        return Route("step", False, "stream", "io", reason, None)
    if streamable(plan):
        return Route("unrolled-step", False, "stream", None, reason, None)
    return Route("unrolled", False, "sequence", None, reason, None)


def _lstm_kernel(plan, lstm_kernel: str, mode: str) -> tuple[bool, str | None]:
    """``(fused, reason it is not)``. In stream mode ``"auto"`` takes the step graph: the
    fused op keeps h and c in variable tensors between invokes, which TFLM's CMSIS-NN LSTM
    kernel resets at every invoke, so only the step graph streams correctly on every kernel set."""
    from keras_lowprec.export import fused

    if lstm_kernel == "unrolled":
        return False, "lstm_kernel='unrolled'"
    if lstm_kernel == "auto" and mode == "stream":
        return False, STREAM_UNFUSED_REASON
    reason = fused.unfusable_reason(plan)
    if reason is not None and lstm_kernel == "fused":
        raise UnsupportedLayerError(f"lstm_kernel='fused' is not possible for this model: {reason}.")
    return reason is None, reason


def converter(route: Route, plan, timesteps: int | None = None) -> Any:
    """The TFLite converter of the route's twin (``timesteps``: the fused graph's length)."""
    from keras_lowprec.export import fused, twin

    if route.fused:
        return fused.converter(plan, timesteps)
    fn = twin.step_function(plan) if route.build == "stream" else twin.sequence_function(plan)
    return function_converter(fn)


def function_converter(fn) -> Any:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)


def convert(converter, samples: Callable[[], Any] | None, int8: bool = True) -> bytes:
    """Runs the converter: int8 (builtin int8 ops, int8 input and output, activations
    calibrated on ``samples``) or float32. The converter's C++ chatter and its warning about
    input statistics (irrelevant: the input quantization comes from calibration) are shown
    only when the conversion fails."""
    import warnings

    from keras_lowprec.export.verify import capture_stderr

    _configure(converter, samples, int8)
    with warnings.catch_warnings(), capture_stderr() as chatter:
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs", category=UserWarning)
        try:
            return bytes(converter.convert())
        except Exception as err:  # noqa: BLE001
            failure = err
    msg = str(failure).strip().splitlines()
    detail = " ".join("".join(chatter).split())[-500:]
    raise ExportError(
        f"the TFLite converter failed: {msg[-1] if msg else failure}" + (f" ({detail})" if detail else "")
    ) from None


def _configure(converter, samples, int8: bool) -> None:
    import tensorflow as tf

    if not int8:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
