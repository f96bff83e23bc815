"""Export a trained keras_lowprec model to an int8 TFLite flatbuffer that runs on TFLM.

Main entry point: :func:`to_tflite`. See ``export/README.md`` (top level of the
repository) for how firmware consumes the files it writes.

How it works:

1. the model is read as a chain of layers (one handler per layer type, see ``graph``);
2. a float twin with the layers' **deterministic rounded weights** is built at batch 1.
   LSTM chains: a ``tf_keras`` model that converts to TFLM's fused integer LSTM op (see
   ``fused``; stream mode: the same graph with a time axis of 1, state in the op's variable
   tensors). Otherwise: one time step with explicit state inputs/outputs, which
   ``mode="sequence"`` repeats ``T`` times in the flatbuffer after conversion (``unroll``:
   one calibration, the same integers as ``T`` stream invokes); a model that cannot run
   step by step (e.g. ``Flatten`` over time) gets the whole sequence with the time loop
   unrolled in the twin instead;
3. the TFLite converter quantizes it to int8 (activations calibrated on the
   representative data; int8 input and output; builtin int8 ops only);
4. the flatbuffer is rewritten so that every weight tensor is **exact**: int8 code times
   scale equals the rounded weight in float32 (ternary/binary: codes 0/±64 and scale
   level/64; pow2-ternary/exponential: shift codes ±2^j and a power-of-two scale);
   a graph with any float tensor or non-builtin op is refused; the int8 range of every
   TANH / LOGISTIC input is narrowed to the inputs that change the int8 output;
5. the written model is run in LiteRT and in the TFLM interpreter on held-out sequences
   and compared with the Keras model (report: errors, argmax agreement and its ceiling
   set by the int8 output grid, weight exactness, bytes, arena, latency); a stream
   export is also compared with the sequence-mode export of the same model in TFLM
   (``verification.stream_vs_sequence``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from keras_lowprec.export.errors import ExactnessError, ExportError, TFLMError, UnsupportedLayerError

__all__ = [
    "to_tflite",
    "to_float_tflite",
    "ExportResult",
    "ExportError",
    "UnsupportedLayerError",
    "ExactnessError",
    "TFLMError",
    "read_metadata",
    "run_tflm",
    "MODES",
]

MODES = ("sequence", "stream")
_MAX_CALIBRATION_SAMPLES = 400
# Stream step graphs (and the sequence exports made of them) calibrate on single steps
# (cheap samples): more of them cover the range of the states. Digits benchmark (12 unrolled stream models, 300 calibration
# sequences): 400 steps -> 4,000 (all 2,400) lowered the max abs error vs Keras on 11 of 12
# (e.g. 1.09 -> 0.44, 0.65 -> 0.27); the lowest argmax agreement rose from 98.3% to 98.9%.
_MAX_STREAM_CALIBRATION_STEPS = 4000


@dataclass
class ExportResult:
    """What :func:`to_tflite` produced.

    Attributes:
        model_bytes: the flatbuffer (``model.tflite``).
        paths: files written, by kind (``tflite``, ``cc``, ``h``, ``ops``, ``report``).
        ops: TFLite builtin ops the model needs (what the op resolver must register).
        arena_bytes: tensor arena TFLM needed (host measurement; None if TFLM did not report it).
        report: the verification report (also ``report.json``).
    """

    model_bytes: bytes
    paths: dict[str, str] = field(default_factory=dict)
    ops: list[str] = field(default_factory=list)
    arena_bytes: int | None = None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def verification(self) -> dict[str, Any]:
        return self.report.get("verification", {})


def read_metadata(model_bytes: bytes) -> dict | None:
    """The exporter's metadata (weight encodings, mode, states) of an exported model."""
    from keras_lowprec.export import flatbuffer

    return flatbuffer.read_metadata(model_bytes)


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
        from keras_lowprec.export import graph

        x = graph.real_frames(x, meta["mask_value"])
        if any(len(seq) == 0 for seq in x):
            raise ExportError("x: a sequence has no real frames (every frame equals the model's mask_value).")
    verify_lib.probe_tflm(model_bytes, 1 + n_states if mode == "stream" else 1, arena)
    runner = verify_lib.TFLMRunner(model_bytes, arena)
    return verify_lib.run_sequences(runner, x, mode, n_states)


# -- argument checks (no TensorFlow) ------------------------------------------------------
def check_representative_data(data, features: int | None = None, timesteps: int | None = None,
                              name: str = "representative_data") -> np.ndarray:
    """Returns ``data`` as float32 (N, T, F) or raises ``ExportError`` saying what is wrong."""
    if data is None:
        raise ExportError(f"{name} is required: an array of shape (samples, timesteps, features).")
    try:
        arr = np.asarray(data)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"{name}: cannot be read as an array ({err}).") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ExportError(f"{name}: expected a numeric array, got dtype {arr.dtype}.")
    if arr.ndim != 3:
        raise ExportError(f"{name}: expected shape (samples, timesteps, features), got shape {arr.shape}.")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ExportError(f"{name}: empty array of shape {arr.shape}.")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise ExportError(f"{name}: contains NaN or inf values.")
    if features is not None and arr.shape[2] != features:
        raise ExportError(f"{name}: {arr.shape[2]} features per step, but the model expects {features}.")
    if timesteps is not None and arr.shape[1] != timesteps:
        raise ExportError(f"{name}: {arr.shape[1]} timesteps, but the export uses timesteps={timesteps}.")
    return arr


def check_output_dir(output_dir, name: str = "output_dir") -> None:
    """Raises ``ExportError`` unless ``output_dir`` is a folder path that can be created or
    written (checked before any conversion, so a bad path does not cost a whole export)."""
    import os

    if not isinstance(output_dir, (str, os.PathLike)):
        raise ExportError(f"{name}: expected a folder path (str or os.PathLike), got {type(output_dir).__name__}.")
    path = os.path.abspath(os.fspath(output_dir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ExportError(f"{name}: {output_dir!s} exists and is not a folder.")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ExportError(f"{name}: cannot create {output_dir!s}: {parent} is a file.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"{name}: {output_dir!s} is not writable ({parent} does not allow writing).")


def _check_args(mode, timesteps, output_dir):
    if output_dir is not None:
        check_output_dir(output_dir)
    if mode not in MODES:
        raise ExportError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")
    if timesteps is not None and (isinstance(timesteps, bool) or not isinstance(timesteps, (int, np.integer))
                                  or timesteps < 1):
        raise ExportError(f"timesteps must be a positive integer, got {timesteps!r}.")


# -- conversion ----------------------------------------------------------------------------
def _function_converter(fn) -> Any:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)


def _convert(converter, samples: Callable[[], Any] | None, int8: bool = True) -> bytes:
    import tensorflow as tf

    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    import warnings

    from keras_lowprec.export.verify import capture_stderr

    # The converter's C++ chatter ("fully_quantize: ...") and its warning about input
    # statistics (irrelevant: the input quantization comes from calibration) are hidden
    # unless the conversion fails.
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


def _spread(n: int, k: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, num=min(n, k)).round().astype(int))


STREAM_FUSED_ON_CMSIS_NN = (
    "this stream export keeps the LSTM state in variable tensors between invokes, which TFLM's CMSIS-NN LSTM "
    "kernel resets at every invoke; export with lstm_kernel='unrolled' (the default in stream mode) for CMSIS-NN")
COMPRESSED_FUSED_ON_CMSIS_NN = (
    "TFLM's CMSIS-NN LSTM kernel needs constant weights when it prepares (it pre-sums them), and compressed "
    "weights are decoded at run time; export without compress for CMSIS-NN")
STREAM_UNFUSED_REASON = (
    "stream mode: the step graph keeps the state in explicit inputs/outputs, which every TFLM kernel set "
    "runs (TFLM's CMSIS-NN LSTM kernel resets the fused op's state at every invoke); "
    "lstm_kernel='fused' streams with the reference kernels only")


def _lstm_kernel(plan, lstm_kernel: str, mode: str = "sequence") -> tuple[bool, str | None]:
    """``(fused, reason it is not)`` for the plan, the requested LSTM kernel and the mode.

    In stream mode ``"auto"`` takes the step graph: the fused op keeps h and c in variable
    tensors between invokes, which TFLM's CMSIS-NN LSTM kernel resets at every invoke, so
    only the step graph streams correctly on every kernel set.
    """
    from keras_lowprec.export import fused

    if lstm_kernel not in fused.LSTM_KERNELS:
        raise ExportError(f"lstm_kernel must be one of {', '.join(fused.LSTM_KERNELS)}; got {lstm_kernel!r}.")
    if lstm_kernel == "unrolled":
        return False, "lstm_kernel='unrolled'"
    if lstm_kernel == "auto" and mode == "stream":
        return False, STREAM_UNFUSED_REASON
    reason = fused.unfusable_reason(plan)
    if reason is not None and lstm_kernel == "fused":
        raise UnsupportedLayerError(f"lstm_kernel='fused' is not possible for this model: {reason}.")
    return reason is None, reason


def to_float_tflite(model, *, timesteps: int | None = None, mode: str = "sequence",
                    lstm_kernel: str = "auto") -> bytes:
    """Float32 TFLite of the same twin graph (rounded weights in float32): the baseline
    the benchmark compares bytes and latency with. Not for firmware. LSTM chains use the
    same kernel as :func:`to_tflite` (float fused LSTM)."""
    from keras_lowprec.export import fused, graph

    _check_args(mode, timesteps, None)
    plan = graph.analyze(model, timesteps, mode)
    if _lstm_kernel(plan, lstm_kernel, mode)[0]:
        converter = fused.converter(plan, plan.timesteps if mode == "sequence" else 1)
    else:
        fn = graph.sequence_function(plan) if mode == "sequence" else graph.step_function(plan)
        converter = _function_converter(fn)
    return _convert(converter, None, int8=False)


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
    _probe: bool = True,
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
    _check_args(mode, timesteps, output_dir)
    if isinstance(max_verify, bool) or not isinstance(max_verify, (int, np.integer)) or max_verify < 1:
        raise ExportError(f"max_verify must be a positive integer, got {max_verify!r}.")
    from keras_lowprec.export import compress as compress_lib

    compress = compress_lib.check_mode(compress)
    for name, value in (("c_array", c_array), ("verify", verify)):
        if not isinstance(value, (bool, np.bool_)):
            raise ExportError(f"{name} must be True or False, got {value!r}.")
    if progress is not None and not callable(progress):
        raise ExportError(f"progress must be a callable progress(stage, done, total) or None, got {progress!r}.")
    data = check_representative_data(representative_data)
    from keras_lowprec.export import flatbuffer, fused, graph, unroll

    t0 = time.perf_counter()
    plan = graph.analyze(model, timesteps, mode)
    use_fused, unfused_reason = _lstm_kernel(plan, lstm_kernel, mode)
    # A sequence export without the fused LSTM is the stream step graph unrolled in the
    # flatbuffer (see ``unroll``) when the model can stream: one calibration shared by every
    # step, bit-identical to T stream invokes. Otherwise the converter unrolls the twin.
    via_stream = mode == "sequence" and not use_fused and _streamable(plan)
    build = "stream" if via_stream else mode
    data = check_representative_data(data, plan.features, plan.timesteps if mode == "sequence" else None)
    if mode == "stream" and plan.timesteps is not None and data.shape[1] != plan.timesteps:
        raise ExportError(
            f"representative_data: {data.shape[1]} timesteps, but the model's time axis is {plan.timesteps}."
        )
    if verify_data is not None:
        # Stream mode runs any length unless the model fixes it.
        t_verify = plan.timesteps if (mode == "sequence" or plan.timesteps is not None) else None
        held = check_representative_data(verify_data, plan.features, t_verify, name="verify_data")
        calib, held_out = data, True
    elif len(data) >= 10:
        k = max(1, len(data) // 5)
        calib, held, held_out = data[:-k], data[-k:], True
    else:
        calib, held, held_out = data, data, False
    held = held[:max_verify]

    # 1. twin graph and calibration samples
    if use_fused:  # stream mode: the sequence model, calibrated on whole sequences, then T -> 1
        seqs = list(calib) if mode == "sequence" else fused.calibration_windows(
            _real_sequences(plan, calib, "representative_data"))
        t_fused = int(seqs[0].shape[0])
        converter = fused.converter(plan, t_fused)
        samples = [[seqs[i][None]] for i in _spread(len(seqs), _MAX_CALIBRATION_SAMPLES)]
    elif build == "sequence":
        converter = _function_converter(graph.sequence_function(plan))
        idx = _spread(len(calib), _MAX_CALIBRATION_SAMPLES)
        samples = [[calib[i:i + 1]] for i in idx]
    else:
        converter = _function_converter(graph.step_function(plan))
        # Masking: only the real frames of each sequence (what firmware feeds).
        calib_seqs = _real_sequences(plan, calib, "representative_data")
        per_seq = max(1.0, float(np.mean([len(s) for s in calib_seqs])))
        pick = _spread(len(calib_seqs), max(1, int(_MAX_STREAM_CALIBRATION_STEPS // per_seq)))
        steps, _ = graph.stream_reference(plan, [calib_seqs[i] for i in pick])
        samples = [steps[i] for i in _spread(len(steps), _MAX_STREAM_CALIBRATION_STEPS)]

    def representative():
        for i, s in enumerate(samples):
            if progress is not None:
                progress("calibrate", i + 1, len(samples))
            yield s

    raw = _convert(converter, representative, int8=True)

    # 2. checks and exact rewrite
    fb = flatbuffer.read(raw)
    if use_fused:
        fused.prepare(fb, sum(s.kind == "rnn" for s in plan.stages), t_fused if mode == "stream" else None)
    flatbuffer.check_integer_only(fb)
    # With one time step the recurrent kernels multiply the zero initial state: folded away.
    optional = tuple(w.key for w in plan.weights if w.name == "recurrent_kernel") if (
        build == "sequence" and plan.timesteps == 1) else ()
    records = flatbuffer.encode_weights(fb, plan.weights, optional)
    n_states = 0 if use_fused else len(plan.state_sizes)  # fused: the op's variable tensors
    if build == "stream" and not use_fused:
        _order_stream_io(fb, plan)
        flatbuffer.share_state_quantization(fb, [(1 + i, 1 + i) for i in range(n_states)])
    # Inputs of TANH / LOGISTIC: no wider than the range that changes their int8 output
    # (same outputs, finer input step; digits benchmark: stream mean abs error -3 to -10%).
    saturating_inputs = flatbuffer.tighten_saturating_inputs(fb)
    encodings = [r.as_dict() for r in records]
    if via_stream:
        remap = unroll.unroll_stream(fb, plan.timesteps, n_states, graph.ends_with_sequence(plan))
        encodings = [dict(r, index=remap[r["index"]]) for r in encodings if r["index"] in remap]
        n_states = 0
    flatbuffer.dedupe_buffers(fb)
    # Where the recurrent state lives between invokes: "variables" (the fused LSTM's variable
    # tensors, kept by TFLM: Reset() before every new sequence, in both modes), "io" (stream
    # mode: inputs/outputs 1..), None (unrolled sequence graph: nothing is carried).
    state = "variables" if use_fused else ("io" if mode == "stream" else None)
    # Why a model runs correctly only on TFLM's reference kernels (model_ops.h then refuses
    # a CMSIS-NN build): the CMSIS-NN LSTM kernel starts from zero state at every invoke.
    not_on_cmsis_nn = STREAM_FUSED_ON_CMSIS_NN if use_fused and mode == "stream" else None
    has_lstm = any(s.kind == "rnn" and graph._base_name(s.layer) == "LSTM" for s in plan.stages)
    lstm_info = None if not has_lstm else (
        {"kernel": "fused", "op": "UNIDIRECTIONAL_SEQUENCE_LSTM", "cell_state": "int16"} if use_fused
        else {"kernel": "unrolled", "cell_state": "int8", "why_not_fused": unfused_reason})
    metadata = {
        "format": "keras_lowprec.export/1",
        "mode": mode,
        "timesteps": plan.timesteps if mode == "sequence" else None,
        "features": plan.features,
        "state": state,
        "state_names": plan.state_names,
        "lstm": lstm_info,
        "tensors": [{k: r[k] for k in ("index", "name", "weight", "encoding", "scale")} for r in encodings],
    }
    if plan.mask_value is not None:
        metadata["mask_value"] = plan.mask_value
    flatbuffer.add_metadata(fb, flatbuffer.METADATA_NAME, metadata)
    model_bytes = flatbuffer.write(fb)
    fb = flatbuffer.read(model_bytes)
    flatbuffer.check_integer_only(fb)
    ops = flatbuffer.op_names(fb)
    io = flatbuffer.io_quantization(fb)

    weights_report = {}
    for w in plan.weights:
        holders = [r for r in encodings if r["weight"] == w.key]
        weights_report[w.key] = {
            "method": w.method, "encoding": w.encoding, "scale": w.scale,
            "levels": None if w.levels is None else [float(v) for v in w.levels],
            "tensors": [r["index"] for r in holders],
            # exact: every tensor holding (a gate of) it is exact; None when the converter
            # kept no tensor of it (all-zero, or a bias folded away).
            "exact": (all(bool(r["exact"]) for r in holders) if holders else None),
            "max_abs_error": max((r["max_abs_error"] or 0.0 for r in holders), default=None),
        }
    exact_tensors = [r for r in encodings if r["encoding"] in ("ternary", "binary", "shift")]
    report: dict[str, Any] = {
        "mode": mode,
        # How the graph was made: "fused-lstm" (TFLite's LSTM op), "step" (stream: one
        # step), "unrolled-step" (sequence: the stream step repeated, scales shared by every
        # step), "unrolled" (sequence: the converter's unrolled twin, scales per step).
        "graph": "fused-lstm" if use_fused else ("step" if mode == "stream" else
                                                 ("unrolled-step" if via_stream else "unrolled")),
        "timesteps": plan.timesteps if mode == "sequence" else None,
        "features": plan.features,
        "state": state,
        "state_names": plan.state_names,
        "lstm": lstm_info,
        "kernel_sets": "reference" if not_on_cmsis_nn else "any",
        "not_on_cmsis_nn": not_on_cmsis_nn,
        "ops": ops,
        "io": io,
        "model_bytes": len(model_bytes),
        "weight_bytes": flatbuffer.weight_bytes(fb),
        "int8_weight_bytes": flatbuffer.weight_bytes(fb, int8_only=True),
        "weights": weights_report,
        "tensors": encodings,
        "exactness": {
            "all_exact": all(r["exact"] for r in exact_tensors),
            "exact_tensors": len(exact_tensors),
            "plain_int8_tensors": sum(r["encoding"] == "int8" for r in encodings),
            "constant_tensors": sum(r["encoding"] == "int8-constant" for r in encodings),
            "int32_bias_tensors": sum(r["encoding"] == "int32-bias" for r in encodings),
        },
        "tightened_activation_ranges": saturating_inputs,
        "masking": plan.masking,
        "convert_seconds": round(time.perf_counter() - t0, 3),
    }

    # 3. verification
    if verify:
        report["verification"], got_tflm, reference, vectors = _verify(model, plan, model_bytes, held, held_out,
                                                                        mode, n_states, progress)
        arena = report["verification"]["tflm"]["arena_bytes"]
        smallest = report["verification"]["tflm"]["arena_smallest_bytes"]
        if mode == "stream" and plan.mask_value is not None:
            report["verification"]["stream_vs_sequence"] = {
                "skipped": "the model has a Masking layer: a sequence export cannot skip masked frames "
                           "(Masking is refused in mode='sequence')"}
        elif mode == "stream":
            report["verification"]["stream_vs_sequence"] = _stream_vs_sequence(
                model, calib, held, got_tflm, reference, "fused" if use_fused else "unrolled")
    elif not _probe:  # internal: the sequence export a stream export is compared with
        arena = smallest = vectors = None
    else:  # still load and invoke it once in TFLM (child process): no file TFLM cannot run
        from keras_lowprec.export import verify as verify_lib

        vectors = None
        arena, smallest = verify_lib.probe_tflm(model_bytes, 1 + n_states if mode == "stream" else 1,
                                                max(verify_lib.DEFAULT_ARENA, 8 * len(model_bytes)), smallest=True)
    if compress:
        check = graph.real_frames(held, plan.mask_value) if mode == "stream" and plan.mask_value is not None \
            else held
        comp = _compressed(model_bytes, report, compress, check, mode, n_states, smallest)
        if comp is not None:
            model_bytes, smallest, arena = comp
            ops = report["ops"] = flatbuffer.op_names(flatbuffer.read(model_bytes))
            report["model_bytes"] = len(model_bytes)
            if use_fused:
                not_on_cmsis_nn = report["not_on_cmsis_nn"] = COMPRESSED_FUSED_ON_CMSIS_NN
                report["kernel_sets"] = "reference"
    report["arena_bytes"] = arena
    report["arena_smallest_bytes"] = smallest
    report["arena_recommended"] = recommended = _recommended_arena(smallest)

    result = ExportResult(model_bytes=model_bytes, ops=ops, arena_bytes=arena, report=report)
    if output_dir is not None:
        info = {"mode": mode, "timesteps": plan.timesteps if mode == "sequence" else None,
                "features": plan.features, "arena_recommended": recommended, "io": io,
                "arena_smallest": smallest, "state": state, "state_names": plan.state_names}
        paths = _emit(output_dir, model_bytes, report, info if c_array else None, ops, not_on_cmsis_nn, vectors)
        result.paths = paths
    return result


def _emit(output_dir, model_bytes: bytes, report: dict, info: dict | None, ops: list[str],
          not_on_cmsis_nn: str | None, vectors) -> dict[str, str]:
    """Writes the export folder as one set (``files.write_folder``): the model, the C files
    when ``info`` is given (with the test vectors when there are any), the report."""
    import os

    from keras_lowprec.export import carray, files

    out = {"model.tflite": model_bytes}
    if info is not None:
        out["model_data.cc"] = carray.model_data_cc(model_bytes)
        out["model_data.h"] = carray.model_data_h(model_bytes, info)
        out["model_ops.h"] = carray.model_ops_h(ops, not_on_cmsis_nn)
        if vectors is not None:
            out["model_test_data.h"] = carray.model_test_data_h(*vectors)
    keys = {"model.tflite": "tflite", "model_data.cc": "cc", "model_data.h": "h", "model_ops.h": "ops",
            "model_test_data.h": "test_data", "report.json": "report"}
    paths = {keys[name]: os.path.join(os.fspath(output_dir), name) for name in [*out, "report.json"]}
    report["paths"] = dict(paths)
    out["report.json"] = carray.report_json(report)
    files.write_folder(output_dir, out)
    return paths


def _compressed(model_bytes: bytes, report: dict, how: str, x: np.ndarray, mode: str, n_states: int,
                smallest: int | None) -> tuple[bytes, int | None, int | None] | None:
    """LUT compression of the export (``compress``), kept when it gives TFLM's int8 outputs
    of the uncompressed model on ``x`` and pays off as ``how`` asks; fills
    ``report["compression"]``. Returns ``(model bytes, smallest arena, arena used)`` or None."""
    from keras_lowprec.export import compress as compress_lib
    from keras_lowprec.export import verify as verify_lib

    comp, info = compress_lib.compress(model_bytes, report["tensors"], report["graph"])
    out = report["compression"] = {"requested": how, "applied": False, **info}
    if comp is None:
        return None
    n_inputs = 1 + n_states if mode == "stream" else 1
    used, small = verify_lib.probe_tflm(comp, n_inputs, max(verify_lib.DEFAULT_ARENA, 8 * len(comp)), smallest=True)
    runners = [verify_lib.TFLMRunner(b, verify_lib.DEFAULT_ARENA) for b in (model_bytes, comp)]
    s, zp = runners[0].input_quant(0)
    x_q = [verify_lib.quantize(np.asarray(seq), s, zp) for seq in list(x)[:50]]
    plain, packed = (verify_lib.run_sequences_int8(r, x_q, mode, n_states) for r in runners)
    same = all(np.array_equal(a, b) for a, b in zip(plain, packed))
    saved, added = len(model_bytes) - len(comp), (small or 0) - (smallest or 0)
    out.update({"model_bytes": {"uncompressed": len(model_bytes), "compressed": len(comp)},
                "arena_smallest_bytes": {"uncompressed": smallest, "compressed": small},
                "bits_per_weight": compress_lib.bits_per_weight(comp, info["tensors"]),
                "same_outputs": {"sequences": len(x_q), "identical": same}})
    if not same:
        out["reason"] = "the compressed model's int8 outputs differ from the uncompressed model's in TFLM"
    elif how == "auto" and report["graph"] == "fused-lstm":
        out["reason"] = ("the fused LSTM with compressed weights runs on TFLM's reference kernels only ("
                         + COMPRESSED_FUSED_ON_CMSIS_NN + "); compress='flash' applies it anyway")
    elif saved <= 0:
        out["reason"] = f"compression makes the file larger by {-saved} B (tables and DECODE ops)"
    elif how == "auto" and added > saved:
        out["reason"] = (f"saves {saved} B of flash but adds {added} B of arena (decoded weights live in RAM); "
                         "compress='flash' applies it anyway")
    else:
        out["applied"] = True
        return comp, small, used
    return None


def _recommended_arena(smallest: int | None) -> int:
    """``kTensorArenaSize``: the smallest arena TFLM's interpreter accepted on the 64-bit host,
    plus 1/32 and rounded up to 16 bytes (a 32-bit target needs less: TFLM's per-tensor
    structures hold pointers); 64 KiB when it was not measured."""
    if not smallest:
        return 64 * 1024
    return int(math.ceil(smallest * (1 + 1 / 32) / 16.0) * 16)


def _order_stream_io(fb, plan) -> None:
    """Puts the stream model's inputs/outputs in the documented order: x/y first, then states.

    The converter names the function's inputs after the TensorSpec names (``input``,
    ``state_0``...) and keeps the returned tuple order for the outputs; this checks the
    shapes and fixes the input order by name when needed.
    """
    sg = fb.subgraphs[0]
    n = len(plan.state_sizes)
    if len(sg.inputs) != 1 + n or len(sg.outputs) != 1 + n:
        raise ExportError(
            f"stream export: expected {1 + n} inputs and outputs, the converter produced "
            f"{len(sg.inputs)} inputs and {len(sg.outputs)} outputs."
        )

    def name(i):
        t = sg.tensors[i].name
        return t.decode() if isinstance(t, bytes) else str(t)

    by_name = {}
    for i in sg.inputs:
        nm = name(i)
        key = "input" if "input" in nm else next((f"state_{k}" for k in range(n) if nm.endswith(f"state_{k}")
                                                 or f"state_{k}:" in nm), nm)
        by_name[key] = i
    order = ["input"] + [f"state_{k}" for k in range(n)]
    if all(k in by_name for k in order):
        sg.inputs = [by_name[k] for k in order]
    # Outputs are the returned tuple (y, *states), named Identity, Identity_1, ...: sort by
    # that number (a name sort would put Identity_10 before Identity_2).
    import re

    numbers = [re.fullmatch(r"Identity(?:_(\d+))?", name(i)) for i in sg.outputs]
    if all(numbers):
        keyed = sorted(zip([int(m.group(1) or 0) for m in numbers], sg.outputs))
        sg.outputs = [i for _, i in keyed]
    for k in range(n):
        for tensors in (sg.inputs, sg.outputs):
            shape = [int(s) for s in sg.tensors[tensors[1 + k]].shape]
            if shape != [1, plan.state_sizes[k]]:
                raise ExportError(f"stream export: state {k} has shape {shape}, expected [1, {plan.state_sizes[k]}].")


def _verify(model, plan, model_bytes, held, held_out, mode, n_states, progress) -> tuple[dict, Any, Any]:
    """``(report, TFLM outputs, Keras outputs)`` on the held-out sequences (stream mode: the
    output after the last real frame)."""
    from keras_lowprec.export import verify as verify_lib

    from keras_lowprec.export import graph

    masked = mode == "stream" and plan.mask_value is not None
    if masked:  # Keras skips the masked frames; the stream model gets only the real ones
        last = graph.last_real_index(held, plan.mask_value)
        held = held[last >= 0]
        last = last[last >= 0]
        if not len(held):
            raise ExportError("verification data: every frame equals the Masking layer's mask_value "
                              f"{plan.mask_value:g}; no real frame to verify on.")
    reference = np.asarray(model.predict(held, verbose=0, batch_size=min(len(held), 64)), dtype=np.float32)
    if mode == "stream" and reference.ndim == 3 and graph.ends_with_sequence(plan):
        reference = reference[np.arange(len(held)), last] if masked else reference[:, -1]
    frames = graph.real_frames(held, plan.mask_value) if masked else held

    def prog(stage):
        return None if progress is None else (lambda i, n: progress(stage, i, n))

    out: dict[str, Any] = {"samples": int(len(held)), "held_out": held_out}
    arena = max(verify_lib.DEFAULT_ARENA, 8 * len(model_bytes))  # generous; the used size is measured
    # In a child process first: TFLM and LiteRT abort the whole process on some models.
    _, smallest = verify_lib.probe_tflm(model_bytes, 1 + n_states if mode == "stream" else 1, arena,
                                        smallest=True, litert=True)
    litert = verify_lib.LiteRTRunner(model_bytes)
    if masked:
        out["masked_frames"] = {"mask_value": plan.mask_value,
                                "real_frames_min": int(min(len(f) for f in frames)),
                                "real_frames_max": int(max(len(f) for f in frames)),
                                "real_frames_mean": float(np.mean([len(f) for f in frames]))}
    got_lite = verify_lib.run_sequences(litert, frames, mode, n_states, prog("litert"))
    grid = litert.output_quant(0)
    out["litert"] = verify_lib.compare(reference, got_lite, grid)
    tflm = verify_lib.TFLMRunner(model_bytes, arena)
    timings: list[float] = []
    got_tflm = verify_lib.run_sequences(tflm, frames, mode, n_states, prog("tflm"), timings)
    out["tflm"] = verify_lib.compare(reference, got_tflm, grid)
    out["tflm"]["arena_bytes"] = tflm.arena_bytes()
    out["tflm"]["arena_smallest_bytes"] = smallest
    vectors = _test_vectors(tflm, frames, mode, n_states)
    steps = held.shape[1]
    per_invoke = float(np.median(timings)) * 1e6 if timings else None
    out["tflm"]["us_per_invoke"] = per_invoke
    out["tflm"]["us_per_step"] = None if per_invoke is None else (per_invoke / steps if mode == "sequence" else per_invoke)
    out["tflm_vs_litert"] = {
        "identical_outputs": float(np.mean(np.all(np.isclose(got_lite.reshape(len(held), -1),
                                                             got_tflm.reshape(len(held), -1), atol=0), axis=1))),
        "max_abs_difference": float(np.max(np.abs(got_lite - got_tflm))),
    }
    return out, got_tflm, reference, vectors


def _test_vectors(runner, frames, mode: str, n_states: int, count: int = 8) -> tuple[np.ndarray, ...]:
    """``(inputs, steps, expected)`` for the firmware harness: the first ``count``
    verification sequences quantized to int8 (padded with zeros to the longest), their real
    lengths, and TFLM's int8 output 0 after each (its final step in stream mode)."""
    from keras_lowprec.export import verify as verify_lib

    in_s, in_zp = runner.input_quant(0)
    x_q = [verify_lib.quantize(np.asarray(seq), in_s, in_zp) for seq in list(frames)[:count]]
    expected = verify_lib.run_sequences_int8(runner, x_q, mode, n_states)
    steps = np.array([len(q) for q in x_q])
    inputs = np.zeros((len(x_q), int(steps.max()), x_q[0].shape[-1]), np.int8)
    for i, q in enumerate(x_q):
        inputs[i, :len(q)] = q
    return inputs, steps, np.stack([y.reshape(-1) for y in expected])


def _stream_vs_sequence(model, calib, held, got_stream, reference, lstm_kernel: str = "auto") -> dict:
    """Streaming T steps vs the whole sequence at once: the stream export against the
    sequence-mode export of the same model, calibrated on the same sequences, both in TFLM.
    Both are one calibrated graph (the fused LSTM op with ``T`` steps and with one, or the
    stream step and that step unrolled), so they are expected to give the same int8 outputs.

    Returns argmax agreement and max / mean abs difference of the dequantized outputs, and
    how the sequence export itself agrees with Keras (``reference``, the Keras outputs the
    stream export was verified against). ``{"skipped": reason}`` when no sequence export can
    be made.
    """
    from keras_lowprec.export import verify as verify_lib

    T = int(held.shape[1])
    if calib.shape[1] != T:
        return {"skipped": f"calibration sequences have {calib.shape[1]} steps, verification sequences {T}"}
    try:
        seq = to_tflite(model, calib, timesteps=T, mode="sequence", verify=False, c_array=False,
                        verify_data=held, lstm_kernel=lstm_kernel, _probe=False)
        arena = max(verify_lib.DEFAULT_ARENA, 8 * len(seq.model_bytes))
        verify_lib.probe_tflm(seq.model_bytes, 1, arena)
    except ExportError as err:  # includes its subclasses (TFLMError: TFLM cannot run it)
        return {"skipped": f"no sequence export: {err}"}
    got_seq = verify_lib.run_sequences(verify_lib.TFLMRunner(seq.model_bytes, arena), held, "sequence")
    got_stream = np.asarray(got_stream)
    if got_seq.ndim == got_stream.ndim + 1:  # the model returns sequences: stream gives the last step
        got_seq = got_seq[:, -1]
    cmp = verify_lib.compare(got_seq, got_stream)
    out: dict[str, Any] = {
        "samples": int(len(held)),
        "timesteps": T,
        "max_abs_difference": cmp["max_abs_error"],
        "mean_abs_difference": cmp["mean_abs_error"],
        "sequence_model_bytes": len(seq.model_bytes),
    }
    if "argmax_agreement" in cmp:
        out["argmax_agreement"] = cmp["argmax_agreement"]
        out["sequence_vs_keras_argmax_agreement"] = float(np.mean(np.argmax(reference, -1) == np.argmax(got_seq, -1)))
    return out


def _streamable(plan) -> bool:
    from keras_lowprec.export import graph

    try:
        graph.check_streamable(plan)
    except UnsupportedLayerError:
        return False
    return True


def _real_sequences(plan, x: np.ndarray, name: str) -> list:
    """Stream mode: the sequences of ``x`` as firmware feeds them (Masking: real frames only,
    sequences without any real frame left out)."""
    from keras_lowprec.export import graph

    seqs = graph.real_frames(x, plan.mask_value)
    if plan.mask_value is not None:
        seqs = [s for s in seqs if len(s)]
        if not seqs:
            raise ExportError(f"{name}: every frame equals the Masking layer's mask_value {plan.mask_value:g}; "
                              "no real frame to calibrate or verify on.")
    return seqs
