"""Export a trained keras_lowprec model to an int8 TFLite flatbuffer that runs on TFLM.

Main entry point: :func:`to_tflite`. See ``export/README.md`` (top level of the
repository) for how firmware consumes the files it writes.

Public names only; the work is done by ``pipeline`` (validate → analyze → choose route →
calibrate → convert → rewrite → verify → emit, see ``docs/extending.md``):

1. the model is read as a chain of stages, one handler per layer family (``handlers``);
2. a float twin with the layers' **deterministic rounded weights** is built at batch 1
   (``routes``: TFLM's fused LSTM op through ``tf_keras``, or the step graph, repeated ``T``
   times in the flatbuffer for a sequence export, or the converter's unrolled sequence);
3. the TFLite converter quantizes it to int8 (activations calibrated on the representative
   data; int8 input and output; builtin int8 ops only);
4. the flatbuffer is rewritten (``tflite``) so that every weight tensor is **exact**: int8 code
   times scale equals the rounded weight in float32 (``encodings``); a graph with any float
   tensor or non-builtin op is refused;
5. the target (``targets.tflm``) runs the model in LiteRT and in the TFLM interpreter on
   held-out sequences, compares with Keras and writes the files.

:func:`to_c` exports the same analysis to the project's C runtime instead (``targets.c``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from keras_lowprec.export.cruntime.api import CExport, to_c
from keras_lowprec.export.errors import ExactnessError, ExportError, TFLMError, UnsupportedLayerError
from keras_lowprec.export.options import MODES, ExportOptions, check_output_dir, check_representative_data
from keras_lowprec.export.pipeline import ExportResult

__all__ = [
    "to_tflite",
    "to_float_tflite",
    "to_c",
    "CExport",
    "ExportResult",
    "ExportError",
    "UnsupportedLayerError",
    "ExactnessError",
    "TFLMError",
    "read_metadata",
    "run_tflm",
    "check_output_dir",
    "check_representative_data",
    "MODES",
]


def to_tflite(
    model,
    representative_data,
    *,
    timesteps: int | None = None,
    mode: str = "sequence",
    output_dir: str | None = None,
    c_array: bool = True,
    verify: bool = True,
    verify_data=None,
    max_verify: int = 200,
    progress: Callable[[str, int, int], None] | None = None,
    lstm_kernel: str = "auto",
    compress: bool | str = False,
) -> ExportResult:
    """Exports ``model`` to an int8 TFLite flatbuffer for TensorFlow Lite Micro.

    Args:
        model: a Keras model made of a chain of supported layers (keras_lowprec
            recurrent/dense layers and presets, Keras RNN/Dense, dropout, activation and
            normalization layers).
        representative_data: float array (samples, timesteps, features) for calibrating
            activation ranges. Unless ``verify_data`` is given, its last fifth (when it
            has at least 10 samples) is held out for verification and not used to calibrate.
        timesteps: fixed sequence length for ``mode="sequence"``; required when the
            model's time axis is variable.
        mode: ``"sequence"`` (batch 1, whole sequence per invoke) or ``"stream"`` (one time
            step per invoke). Both are made of one calibrated graph (the fused LSTM op, or
            the stream step, which a sequence export repeats ``timesteps`` times) and give
            the same int8 outputs; ``report["graph"]`` says which. Stream state: with the
            fused LSTM kernel, the op's variable tensors, kept by TFLM between invokes
            (``Reset()`` between sequences); otherwise explicit int8 inputs 1.. / outputs
            1.. that share their quantization, so firmware copies outputs into inputs
            between invokes.
        output_dir: when given, writes ``model.tflite``, ``model_data.cc``/``.h``,
            ``model_ops.h`` and ``report.json`` there (each file atomically).
        c_array: write the C array and headers (with ``output_dir``).
        verify: run the model in LiteRT and TFLM and compare with Keras. Without it the
            model is still loaded and invoked once in TFLM (in a child process) so that a
            model TFLM cannot run raises and the arena size is measured.
        verify_data: held-out sequences for verification (default: see above).
        max_verify: at most this many verification sequences.
        progress: ``progress(stage, done, total)`` called during calibration
            (``"calibrate"``) and verification (``"litert"``, ``"tflm"``).
        lstm_kernel: ``"auto"`` (default): TFLite's fused ``UNIDIRECTIONAL_SEQUENCE_LSTM``
            (int16 cell state, see ``fused``) when every recurrent layer is an LSTM the
            kernel can run, else the unrolled graph; ``"fused"``: that op or an error;
            ``"unrolled"``: every LSTM written out op by op with int8 tensors.
        compress: ``False`` (default); ``True`` or ``"auto"``: weight tensors with few levels
            as TFLM LUT-compressed tensors (2-bit ternary indices, 4-bit exponential ones;
            a ``TFLM_DECODE`` op restores them in the arena) when that saves more flash
            than it adds arena; ``"flash"``: whenever it saves flash. Applied only when the
            compressed model gives the same int8 outputs in TFLM; ``report["compression"]``
            gives both sizes and arenas and the decision.

    Returns:
        :class:`ExportResult`.

    Raises:
        ExportError: bad data/arguments, non-finite weights, a graph that is not integer-only.
        UnsupportedLayerError: a layer or option without a handler.
        ExactnessError: rounded weights that int8 cannot hold exactly.
        TFLMError: TFLM cannot load or run the model (with TFLM's message).
    """
    from keras_lowprec.export import pipeline

    opts = ExportOptions(timesteps=timesteps, mode=mode, output_dir=output_dir, c_array=c_array, verify=verify,
                         verify_data=verify_data, max_verify=max_verify, progress=progress,
                         lstm_kernel=lstm_kernel, compress=compress)
    return pipeline.run(model, representative_data, opts)


def to_float_tflite(model, *, timesteps: int | None = None, mode: str = "sequence",
                    lstm_kernel: str = "auto") -> bytes:
    """Float32 TFLite of the same twin graph (rounded weights in float32): the baseline
    the benchmark compares bytes and latency with. Not for firmware. LSTM chains use the
    same kernel as :func:`to_tflite` (float fused LSTM)."""
    from keras_lowprec.export import analysis, requirements, routes

    requirements.check()
    opts = ExportOptions(timesteps=timesteps, mode=mode, lstm_kernel=lstm_kernel).check()
    plan = analysis.analyze(model, opts.timesteps, opts.mode)
    route = routes.choose(plan, opts.mode, opts.lstm_kernel)
    if route.fused:
        converter = routes.converter(route, plan, plan.timesteps if mode == "sequence" else 1)
    else:
        # the whole-sequence twin in sequence mode (the float baseline is not unrolled from the step)
        from keras_lowprec.export import twin

        fn = twin.sequence_function(plan) if mode == "sequence" else twin.step_function(plan)
        converter = routes.function_converter(fn)
    return routes.convert(converter, None, int8=False)


def read_metadata(model_bytes: bytes) -> dict | None:
    """The exporter's metadata (weight encodings, mode, states) of an exported model."""
    from keras_lowprec.export.tflite import metadata

    return metadata.read_metadata(model_bytes)


def run_tflm(model_bytes: bytes, x, *, arena_size: int | None = None) -> np.ndarray:
    """Runs an exported model in the TFLM interpreter on sequences ``x`` (N, T, F).

    Quantizes the inputs, resets TFLM between sequences (stream mode: zero states, one
    invoke per step, output states copied into the input states unless the state is in
    variable tensors (fused LSTM); a model exported with
    Masking gets only the frames that are not masked) and returns the
    dequantized outputs (N, ...) as float32: ``argmax(-1)`` gives the predicted classes.
    Raises ``TFLMError`` with TFLM's message if TFLM cannot run the model.
    """
    from keras_lowprec.export import verify as verify_lib

    meta = read_metadata(model_bytes) or {}
    mode = meta.get("mode", "sequence")
    # State inputs/outputs only where the state is not held in variable tensors.
    n_states = len(meta.get("state_names", [])) if meta.get("state", "io") == "io" else 0
    x = check_representative_data(x, meta.get("features"), meta.get("timesteps"), name="x")
    if arena_size is not None and (isinstance(arena_size, bool) or not isinstance(arena_size, (int, np.integer))
                                   or arena_size < 1024):
        raise ExportError(f"arena_size must be an integer number of bytes >= 1024 (or None), got {arena_size!r}.")
    arena = arena_size or max(verify_lib.DEFAULT_ARENA, 8 * len(model_bytes))
    if mode == "stream" and meta.get("mask_value") is not None:
        from keras_lowprec.export.plan import real_frames

        x = real_frames(x, meta["mask_value"])
        if any(len(seq) == 0 for seq in x):
            raise ExportError("x: a sequence has no real frames (every frame equals the model's mask_value).")
    verify_lib.probe_tflm(model_bytes, 1 + n_states if mode == "stream" else 1, arena)
    runner = verify_lib.TFLMRunner(model_bytes, arena)
    return verify_lib.run_sequences(runner, x, mode, n_states)
