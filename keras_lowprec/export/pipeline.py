"""The export as a pipeline of small steps over one context:

validate → analyze → choose route → calibrate → convert → rewrite → verify → emit
(TFLM; a stream export also compares itself with the sequence export before emitting), and
for the C runtime validate → analyze → build → verify → emit.

Each step reads what the earlier ones left in :class:`Context` and adds its own part;
the target (``targets``) verifies and emits. ``to_tflite`` is ``run`` with the TFLM target.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keras_lowprec.export.errors import ExportError
from keras_lowprec.export.options import ExportOptions, check_representative_data


@dataclass
class ExportResult:
    """What an export produced.

    Attributes:
        model_bytes: the flatbuffer (``model.tflite``).
        paths: files written, by kind (``tflite``, ``cc``, ``h``, ``ops``, ``test_data``, ``report``).
        ops: TFLite builtin ops the model needs (what the op resolver must register).
        arena_bytes: tensor arena TFLM used (host measurement; None if not measured).
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


@dataclass
class Context:
    """Everything the steps share. Filled in order: ``plan`` (analyze), ``route``,
    ``calib`` / ``held`` / ``samples`` (calibrate), ``raw`` (convert), ``model_bytes`` /
    ``tensors`` / ``n_states`` / ``report`` (rewrite), ``arena`` / ``smallest`` / ``vectors``
    (verify), ``result`` (emit)."""

    model: Any
    data: Any
    opts: ExportOptions
    target: Any
    started: float = field(default_factory=time.perf_counter)
    plan: Any = None
    route: Any = None
    calib: np.ndarray | None = None
    held: np.ndarray | None = None
    held_out: bool = False
    samples: list | None = None
    fused_timesteps: int | None = None
    raw: bytes | None = None
    model_bytes: bytes | None = None
    n_states: int = 0
    report: dict = field(default_factory=dict)
    arena: int | None = None
    smallest: int | None = None
    vectors: tuple | None = None
    reference: np.ndarray | None = None
    got_tflm: np.ndarray | None = None
    artifact: Any = None  # a target's own model (the C runtime's integer model)
    layout: Any = None
    paths: dict = field(default_factory=dict)
    result: Any = None

    @property
    def n_inputs(self) -> int:
        """Inputs of one invoke: x, plus the state inputs of a stream step graph."""
        return 1 + self.n_states if self.opts.mode == "stream" else 1


def validate(ctx: Context) -> None:
    ctx.opts.check()
    ctx.data = check_representative_data(ctx.data)


def analyze(ctx: Context) -> None:
    from keras_lowprec.export import analysis

    ctx.plan = analysis.analyze(ctx.model, ctx.opts.timesteps, ctx.opts.mode)


def choose_route(ctx: Context) -> None:
    from keras_lowprec.export import routes

    ctx.route = routes.choose(ctx.plan, ctx.opts.mode, ctx.opts.lstm_kernel)


def calibrate(ctx: Context) -> None:
    """The calibration / verification split and the calibration samples of the route."""
    from keras_lowprec.export import data, fused

    ctx.calib, ctx.held, ctx.held_out = data.split(ctx.data, ctx.plan, ctx.opts)
    if ctx.route.fused:  # stream mode: the sequence model, calibrated on whole sequences, then T -> 1
        seqs = list(ctx.calib) if ctx.opts.mode == "sequence" else fused.calibration_windows(
            data.real_sequences(ctx.plan, ctx.calib, "representative_data"))
        ctx.fused_timesteps = int(seqs[0].shape[0])
        ctx.samples = data.fused_samples(seqs)
    elif ctx.route.build == "sequence":
        ctx.samples = data.sequence_samples(ctx.calib)
    else:
        ctx.samples = data.step_samples(ctx.plan, ctx.calib)


def convert(ctx: Context) -> None:
    from keras_lowprec.export import routes

    converter = routes.converter(ctx.route, ctx.plan, ctx.fused_timesteps)
    progress = ctx.opts.report_progress("calibrate")

    def representative():
        for i, s in enumerate(ctx.samples):
            if progress is not None:
                progress(i + 1, len(ctx.samples))
            yield s

    ctx.raw = routes.convert(converter, representative, int8=True)


def rewrite(ctx: Context) -> None:
    from keras_lowprec.export import report, rewrite as rewrite_lib

    done = rewrite_lib.run(ctx.raw, ctx.plan, ctx.route, ctx.opts.mode, ctx.fused_timesteps)
    ctx.model_bytes, ctx.n_states = done.model_bytes, done.n_states
    ctx.report = report.build(ctx.plan, ctx.route, ctx.opts.mode, done, time.perf_counter() - ctx.started)


def verify(ctx: Context) -> None:
    ctx.target.verify(ctx)


def compare_with_sequence(ctx: Context) -> None:
    """A verified TFLM stream export: streaming ``T`` steps against the sequence export."""
    if not ctx.opts.verify or ctx.opts.mode != "stream":
        return
    if ctx.plan.mask_value is not None:
        skipped = ("the model has a Masking layer: a sequence export cannot skip masked frames "
                   "(Masking is refused in mode='sequence')")
        ctx.report["verification"]["stream_vs_sequence"] = {"skipped": skipped}
    else:
        ctx.report["verification"]["stream_vs_sequence"] = _stream_vs_sequence(ctx)


def _stream_vs_sequence(ctx: Context) -> dict:
    """The stream export against the sequence export of the same model, calibrated on the
    same sequences, both in TFLM. Both are one calibrated graph (the fused LSTM op with ``T``
    steps and with one, or the stream step and that step unrolled), so they are expected to
    give the same int8 outputs. ``{"skipped": reason}`` when no sequence export can be made."""
    from keras_lowprec.export.targets import tflm

    T = int(ctx.held.shape[1])
    if ctx.calib.shape[1] != T:
        return {"skipped": f"calibration sequences have {ctx.calib.shape[1]} steps, verification sequences {T}"}
    opts = ExportOptions(timesteps=T, mode="sequence", verify=False, c_array=False, verify_data=ctx.held,
                         lstm_kernel="fused" if ctx.route.fused else "unrolled", probe=False)
    try:
        seq = run(ctx.model, ctx.calib, opts, ctx.target)
        return tflm.compare_with_sequence(seq.model_bytes, ctx.held, ctx.got_tflm, ctx.reference)
    except ExportError as err:  # includes its subclasses (TFLMError: TFLM cannot run it)
        return {"skipped": f"no sequence export: {err}"}


def build(ctx: Context) -> None:
    """A target's own model from the plan (targets that do not go through TFLite)."""
    ctx.target.build(ctx)


def emit(ctx: Context) -> None:
    """With ``output_dir`` the target's files plus ``report.json``, written as one set
    (``files.write_folder``); then the target's result."""
    if ctx.opts.output_dir is not None:
        from keras_lowprec.export import carray, files

        out = ctx.target.emit(ctx)
        names = [*out, "report.json"]
        ctx.paths = {ctx.target.file_key(n): os.path.join(os.fspath(ctx.opts.output_dir), n) for n in names}
        ctx.report["paths"] = dict(ctx.paths)
        out["report.json"] = carray.report_json(ctx.report)
        files.write_folder(ctx.opts.output_dir, out, ctx.target.owned_files())
    ctx.result = ctx.target.result(ctx)


# The steps of each target: TFLM goes through TFLite's converter, the C runtime builds its
# integer model from the plan directly.
STEPS = {
    "tflm": (validate, analyze, choose_route, calibrate, convert, rewrite, verify, compare_with_sequence, emit),
    "c": (validate, analyze, build, verify, emit),
}


def run(model, representative_data, opts: ExportOptions, target=None):
    """Runs every step of the export of ``model`` for ``target`` (default: TFLM) and returns
    the target's result (``ExportResult`` for TFLM)."""
    from keras_lowprec.export import targets

    target = target or targets.get("tflm")
    target.requirements()
    ctx = Context(model, representative_data, opts, target)
    for step in STEPS[target.name]:
        step(ctx)
    return ctx.result
