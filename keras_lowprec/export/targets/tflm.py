"""TensorFlow Lite Micro: verification in LiteRT and TFLM's interpreter against Keras, the
arena TFLM needs, optional LUT compression, and the firmware files."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from keras_lowprec.export.errors import ExportError
from keras_lowprec.export.plan import ends_with_sequence, last_real_index, real_frames

COMPRESSED_FUSED_ON_CMSIS_NN = (
    "TFLM's CMSIS-NN LSTM kernel needs constant weights when it prepares (it pre-sums them), and compressed "
    "weights are decoded at run time; export without compress for CMSIS-NN")
_FILE_KEYS = {"model.tflite": "tflite", "model_data.cc": "cc", "model_data.h": "h", "model_ops.h": "ops",
              "model_test_data.h": "test_data", "report.json": "report"}


class TFLMTarget:
    name = "tflm"

    def requirements(self) -> None:
        from keras_lowprec.export import requirements

        requirements.check()

    def result(self, ctx):
        from keras_lowprec.export.pipeline import ExportResult

        return ExportResult(model_bytes=ctx.model_bytes, paths=dict(ctx.paths), ops=ctx.report["ops"],
                            arena_bytes=ctx.arena, report=ctx.report)

    def verify(self, ctx) -> None:
        """Verification (or, without it, one load in a child process: no file TFLM cannot
        run), then compression when asked, then the arena fields of the report."""
        if ctx.opts.verify:
            _verify(ctx)
        elif ctx.opts.probe:
            from keras_lowprec.export import verify as verify_lib

            ctx.arena, ctx.smallest = verify_lib.probe_tflm(ctx.model_bytes, ctx.n_inputs,
                                                            _generous_arena(ctx.model_bytes), smallest=True)
        if ctx.opts.compress:
            _compress(ctx)
        ctx.report["arena_bytes"] = ctx.arena
        ctx.report["arena_smallest_bytes"] = ctx.smallest
        ctx.report["arena_recommended"] = recommended_arena(ctx.smallest)

    def emit(self, ctx) -> dict[str, Any]:
        """``model.tflite``, with ``c_array`` the C files (and the test vectors when there
        are any), and ``report.json`` (written last by the pipeline, it lists the paths)."""
        from keras_lowprec.export import carray

        out: dict[str, Any] = {"model.tflite": ctx.model_bytes}
        if ctx.opts.c_array:
            out["model_data.cc"] = carray.model_data_cc(ctx.model_bytes)
            out["model_data.h"] = carray.model_data_h(ctx.model_bytes, _header_info(ctx))
            out["model_ops.h"] = carray.model_ops_h(ctx.report["ops"], ctx.report["not_on_cmsis_nn"])
            if ctx.vectors is not None:
                out["model_test_data.h"] = carray.model_test_data_h(*ctx.vectors)
        return out

    @staticmethod
    def file_key(name: str) -> str:
        return _FILE_KEYS[name]

    @staticmethod
    def owned_files() -> tuple[str, ...]:
        from keras_lowprec.export.files import EXPORT_FILES

        return EXPORT_FILES


def _header_info(ctx) -> dict:
    plan, report = ctx.plan, ctx.report
    return {"mode": ctx.opts.mode, "timesteps": plan.timesteps if ctx.opts.mode == "sequence" else None,
            "features": plan.features, "arena_recommended": report["arena_recommended"], "io": report["io"],
            "arena_smallest": ctx.smallest, "state": ctx.route.state, "state_names": plan.state_names}


def _generous_arena(model_bytes: bytes) -> int:
    from keras_lowprec.export import verify as verify_lib

    return max(verify_lib.DEFAULT_ARENA, 8 * len(model_bytes))  # the used size is measured


def recommended_arena(smallest: int | None) -> int:
    """``kTensorArenaSize``: the smallest arena TFLM's interpreter accepted on the 64-bit host,
    plus 1/32 and rounded up to 16 bytes (a 32-bit target needs less: TFLM's per-tensor
    structures hold pointers); 64 KiB when it was not measured."""
    if not smallest:
        return 64 * 1024
    return int(math.ceil(smallest * (1 + 1 / 32) / 16.0) * 16)


# -- verification ----------------------------------------------------------------------------
def _verify(ctx) -> None:
    """Runs the held-out sequences in LiteRT and TFLM and compares both with Keras (stream
    mode: the output after the last real frame); keeps TFLM's outputs for the comparison with
    the sequence export and the firmware test vectors."""
    from keras_lowprec.export import verify as verify_lib

    plan, mode, held = ctx.plan, ctx.opts.mode, ctx.held
    masked = mode == "stream" and plan.mask_value is not None
    held, last = _unmasked(held, plan) if masked else (held, None)
    reference = np.asarray(ctx.model.predict(held, verbose=0, batch_size=min(len(held), 64)), dtype=np.float32)
    if mode == "stream" and reference.ndim == 3 and ends_with_sequence(plan):
        reference = reference[np.arange(len(held)), last] if masked else reference[:, -1]
    frames = real_frames(held, plan.mask_value) if masked else held
    out: dict[str, Any] = {"samples": int(len(held)), "held_out": ctx.held_out}
    # In a child process first: TFLM and LiteRT abort the whole process on some models.
    _, smallest = verify_lib.probe_tflm(ctx.model_bytes, ctx.n_inputs, _generous_arena(ctx.model_bytes),
                                        smallest=True, litert=True)
    if masked:
        out["masked_frames"] = _frame_counts(plan, frames)
    got_lite, grid = _run_litert(ctx, frames)
    out["litert"] = verify_lib.compare(reference, got_lite, grid)
    tflm = verify_lib.TFLMRunner(ctx.model_bytes, _generous_arena(ctx.model_bytes))
    timings: list[float] = []
    got_tflm = verify_lib.run_sequences(tflm, frames, mode, ctx.n_states, ctx.opts.report_progress("tflm"), timings)
    out["tflm"] = verify_lib.compare(reference, got_tflm, grid)
    out["tflm"].update(_tflm_timing(tflm, smallest, timings, held.shape[1], mode))
    out["tflm_vs_litert"] = _agreement(got_lite, got_tflm, len(held))
    ctx.vectors = test_vectors(tflm, frames, mode, ctx.n_states)
    ctx.report["verification"] = out
    ctx.arena, ctx.smallest = out["tflm"]["arena_bytes"], smallest
    ctx.reference, ctx.got_tflm = reference, got_tflm


def _unmasked(held: np.ndarray, plan) -> tuple[np.ndarray, np.ndarray]:
    """Keras skips the masked frames; the stream model gets only the real ones."""
    last = last_real_index(held, plan.mask_value)
    held, last = held[last >= 0], last[last >= 0]
    if not len(held):
        raise ExportError("verification data: every frame equals the Masking layer's mask_value "
                          f"{plan.mask_value:g}; no real frame to verify on.")
    return held, last


def _frame_counts(plan, frames) -> dict:
    counts = [len(f) for f in frames]
    return {"mask_value": plan.mask_value, "real_frames_min": int(min(counts)),
            "real_frames_max": int(max(counts)), "real_frames_mean": float(np.mean(counts))}


def _run_litert(ctx, frames):
    from keras_lowprec.export import verify as verify_lib

    litert = verify_lib.LiteRTRunner(ctx.model_bytes)
    got = verify_lib.run_sequences(litert, frames, ctx.opts.mode, ctx.n_states, ctx.opts.report_progress("litert"))
    return got, litert.output_quant(0)


def _tflm_timing(tflm, smallest, timings: list[float], steps: int, mode: str) -> dict:
    per_invoke = float(np.median(timings)) * 1e6 if timings else None
    per_step = None if per_invoke is None else (per_invoke / steps if mode == "sequence" else per_invoke)
    return {"arena_bytes": tflm.arena_bytes(), "arena_smallest_bytes": smallest,
            "us_per_invoke": per_invoke, "us_per_step": per_step}


def _agreement(got_lite, got_tflm, n: int) -> dict:
    same = np.all(np.isclose(got_lite.reshape(n, -1), got_tflm.reshape(n, -1), atol=0), axis=1)
    return {"identical_outputs": float(np.mean(same)),
            "max_abs_difference": float(np.max(np.abs(got_lite - got_tflm)))}


def test_vectors(runner, frames, mode: str, n_states: int, count: int = 8) -> tuple[np.ndarray, ...]:
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


def compare_with_sequence(seq_bytes: bytes, held: np.ndarray, got_stream, reference) -> dict:
    """Streaming T steps vs the whole sequence at once: the stream export's TFLM outputs
    ``got_stream`` against the sequence export ``seq_bytes`` in TFLM, and how the sequence
    export agrees with Keras (``reference``)."""
    from keras_lowprec.export import verify as verify_lib

    arena = _generous_arena(seq_bytes)
    verify_lib.probe_tflm(seq_bytes, 1, arena)
    got_seq = verify_lib.run_sequences(verify_lib.TFLMRunner(seq_bytes, arena), held, "sequence")
    got_stream = np.asarray(got_stream)
    if got_seq.ndim == got_stream.ndim + 1:  # the model returns sequences: stream gives the last step
        got_seq = got_seq[:, -1]
    cmp = verify_lib.compare(got_seq, got_stream)
    out: dict[str, Any] = {"samples": int(len(held)), "timesteps": int(held.shape[1]),
                           "max_abs_difference": cmp["max_abs_error"], "mean_abs_difference": cmp["mean_abs_error"],
                           "sequence_model_bytes": len(seq_bytes)}
    if "argmax_agreement" in cmp:
        out["argmax_agreement"] = cmp["argmax_agreement"]
        out["sequence_vs_keras_argmax_agreement"] = float(np.mean(np.argmax(reference, -1) == np.argmax(got_seq, -1)))
    return out


# -- compression -----------------------------------------------------------------------------
def _compress(ctx) -> None:
    """LUT compression (``compress``), kept when TFLM gives the uncompressed model's int8
    outputs on up to 50 held-out sequences and it pays off as asked; fills
    ``report["compression"]`` and, when applied, replaces the model and its arena fields."""
    from keras_lowprec.export import compress as compress_lib
    from keras_lowprec.export.tflite import TFLiteModel, checks

    plan, report = ctx.plan, ctx.report
    comp, info = compress_lib.compress(ctx.model_bytes, report["tensors"], report["graph"])
    out = report["compression"] = {"requested": ctx.opts.compress, "applied": False, **info}
    if comp is None:
        return
    check = real_frames(ctx.held, plan.mask_value) if ctx.opts.mode == "stream" and plan.mask_value is not None \
        else ctx.held
    small, used = _judge(ctx, comp, info, check, out)
    if not out["applied"]:
        return
    ctx.model_bytes, ctx.smallest, ctx.arena = comp, small, used
    report["ops"] = checks.op_names(TFLiteModel.from_bytes(comp))
    report["model_bytes"] = len(comp)
    if ctx.route.fused:
        report["not_on_cmsis_nn"] = COMPRESSED_FUSED_ON_CMSIS_NN
        report["kernel_sets"] = "reference"


def _judge(ctx, comp: bytes, info: dict, x, out: dict) -> tuple[int | None, int | None]:
    """Measures the compressed model against the uncompressed one; sets ``out["applied"]``
    or ``out["reason"]``. Returns its ``(smallest arena, arena used)``."""
    from keras_lowprec.export import compress as compress_lib
    from keras_lowprec.export import verify as verify_lib

    used, small = verify_lib.probe_tflm(comp, ctx.n_inputs, _generous_arena(comp), smallest=True)
    runners = [verify_lib.TFLMRunner(b, verify_lib.DEFAULT_ARENA) for b in (ctx.model_bytes, comp)]
    s, zp = runners[0].input_quant(0)
    x_q = [verify_lib.quantize(np.asarray(seq), s, zp) for seq in list(x)[:50]]
    plain, packed = (verify_lib.run_sequences_int8(r, x_q, ctx.opts.mode, ctx.n_states) for r in runners)
    same = all(np.array_equal(a, b) for a, b in zip(plain, packed))
    saved, added = len(ctx.model_bytes) - len(comp), (small or 0) - (ctx.smallest or 0)
    out.update({"model_bytes": {"uncompressed": len(ctx.model_bytes), "compressed": len(comp)},
                "arena_smallest_bytes": {"uncompressed": ctx.smallest, "compressed": small},
                "bits_per_weight": compress_lib.bits_per_weight(comp, info["tensors"]),
                "same_outputs": {"sequences": len(x_q), "identical": same}})
    reason = _keep_uncompressed(ctx, same, saved, added)
    if reason:
        out["reason"] = reason
    else:
        out["applied"] = True
    return small, used


def _keep_uncompressed(ctx, same: bool, saved: int, added: int) -> str | None:
    how = ctx.opts.compress
    if not same:
        return "the compressed model's int8 outputs differ from the uncompressed model's in TFLM"
    if how == "auto" and ctx.route.fused:
        return ("the fused LSTM with compressed weights runs on TFLM's reference kernels only ("
                + COMPRESSED_FUSED_ON_CMSIS_NN + "); compress='flash' applies it anyway")
    if saved <= 0:
        return f"compression makes the file larger by {-saved} B (tables and DECODE ops)"
    if how == "auto" and added > saved:
        return (f"saves {saved} B of flash but adds {added} B of arena (decoded weights live in RAM); "
                "compress='flash' applies it anyway")
    return None
