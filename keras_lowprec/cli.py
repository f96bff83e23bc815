"""The ``keras-lowprec`` command.

    keras-lowprec export MODEL.keras --data CALIBRATION.npy --out DIR [--timesteps T] [--mode stream]
    keras-lowprec export-c MODEL.keras --data CALIBRATION.npy --out DIR [--packing 2bit|trit5]
    keras-lowprec firmware DIR [--target host|cortex-m4|cortex-m4-cmsis-nn] [--tflm-dir TFLM]

Arguments are checked (files, array shape, values) before the exporter (TensorFlow Lite) is
imported, so that a mistake gives one clear line and a non-zero exit instead of a
traceback. (``import keras_lowprec`` imports Keras: it registers the layers for loading.)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zipfile

EXIT_USAGE = 2  # bad command line or input files
EXIT_EXPORT = 1  # the model could not be exported / verified

PROG = "keras-lowprec"


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tools for keras_lowprec models (RNNs with binary/ternary/pow2-ternary/exponential weights).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    exp = _model_command(
        sub, "export", "export a trained model to an int8 TFLite model for TensorFlow Lite Micro",
        "Export a trained .keras model to an int8 TFLite flatbuffer that runs on TensorFlow Lite Micro, "
        "with exact ternary/binary weights and shift-encoded pow2-ternary/exponential weights. Writes "
        "model.tflite, model_data.cc/.h, model_ops.h and report.json to --out, and verifies the model in "
        "LiteRT and TFLM against Keras.",
        "its last fifth (with >= 10 samples) is held out for verification")
    exp.add_argument("--timesteps", type=int, default=None, metavar="T",
                     help="sequence length (required for a model with a variable time axis in sequence mode)")
    exp.add_argument("--mode", choices=("sequence", "stream"), default="sequence",
                     help="sequence: whole sequence per invoke (default); stream: one step per invoke")
    exp.add_argument("--lstm-kernel", choices=("auto", "fused", "unrolled"), default="auto",
                     help="auto: TFLite's fused LSTM op (int16 cell state) when every RNN is an LSTM it can run "
                          "(default); fused: that or an error; unrolled: op by op, int8 cell state")
    exp.add_argument("--compress", choices=("auto", "flash"), default=None,
                     help="LUT-compress weights with few levels (TFLM DECODE; ternary at 2 bits): auto = only when "
                          "it saves more flash than it adds arena, flash = whenever it saves flash")
    exp.add_argument("--no-verify", action="store_true", help="skip the LiteRT/TFLM verification")
    exp.add_argument("--no-c-array", action="store_true", help="write only model.tflite and report.json")
    exp.add_argument("--quiet", action="store_true", help="no progress display")
    _export_c_parser(sub)
    fw = sub.add_parser(
        "firmware",
        help="build an export with TFLM's C++ sources and run its test vectors on a target",
        description=(
            "Build an export folder (model_data.cc, model_ops.h, model_test_data.h) with TFLM's core and exactly "
            "the kernels the model registers, run the exporter's test vectors on the target with the header's "
            "kTensorArenaSize, and print mismatches against TFLM's Python interpreter, arena, flash and "
            "instructions (Cortex-M targets run under QEMU; instruction counts, not cycles)."
        ),
    )
    fw.add_argument("export_dir", metavar="OUT_DIR",
                    help="folder written by 'keras-lowprec export' (with verification)")
    fw.add_argument("--target", choices=("host", "cortex-m4", "cortex-m4-cmsis-nn"), default="host",
                    help="host: g++; cortex-m4: QEMU mps2-an386, TFLM reference kernels; cortex-m4-cmsis-nn: the "
                         "same with CMSIS-NN kernels")
    fw.add_argument("--tflm-dir", default=None, metavar="DIR",
                    help="TFLM source tree (tflite-micro/ and third_party/); default $TFLM_DIR")
    fw.add_argument("--build-dir", default=None, metavar="DIR",
                    help="object cache (default $KERAS_LOWPREC_FIRMWARE_CACHE or ~/.cache/keras_lowprec/firmware)")
    return parser


def _model_command(sub, name: str, help: str, description: str, held_out: str):
    """A subcommand taking MODEL.keras, --data and --out."""
    cmd = sub.add_parser(name, help=help, description=description)
    cmd.add_argument("model", metavar="MODEL.keras", help="trained model saved with model.save('...keras')")
    cmd.add_argument("--data", required=True, metavar="CALIBRATION.npy",
                     help=f"float array (samples, timesteps, features) for calibration; {held_out}")
    cmd.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    return cmd


def _export_c_parser(sub) -> None:
    exc = _model_command(
        sub, "export-c", "export a trained model as C99 for the keras_lowprec C runtime (multiplier-free kernels)",
        "Export a trained .keras model as C99 source for the keras_lowprec C runtime: packed ternary weights "
        "(2 or 1.6 bits), 4-bit shift codes for exponential weights, int8 activations, no multiplication "
        "in any matrix-vector product. Writes <name>.c/.h, the runtime (klp.c, klp.h), test vectors "
        "(klp_test_data.h) and report.json to --out.",
        "its last fifth (with >= 10 samples) becomes the test vectors and the comparison with Keras")
    exc.add_argument("--packing", choices=("2bit", "trit5"), default="2bit",
                     help="ternary weights 4 per byte (2 bits, fastest; default) or 5 per byte (1.6 bits)")
    exc.add_argument("--name", default="model", help="C identifier of the model (file and symbol names)")
    exc.add_argument("--table-bytes", type=int, default=2048, metavar="N",
                     help="RAM for the partial-sum tables (built per block of inputs; default 2048)")
    exc.set_defaults(timesteps=None, mode="stream")


def _check_export_args(args) -> None:
    """Checks files and data with NumPy only; raises _UsageError with one line."""
    import numpy as np

    if not os.path.isfile(args.model):
        raise _UsageError(f"model file not found: {args.model}")
    if not args.model.endswith(".keras"):
        raise _UsageError(f"expected a .keras model file (model.save('model.keras')), got: {args.model}")
    if not zipfile.is_zipfile(args.model):
        raise _UsageError(f"{args.model} is not a valid .keras file (a .keras file is a zip archive; this one is "
                          "truncated or damaged: save the model again)")
    if not os.path.isfile(args.data):
        raise _UsageError(f"calibration data not found: {args.data}")
    try:
        data = np.load(args.data, allow_pickle=False)
    except Exception as err:  # noqa: BLE001
        raise _UsageError(f"cannot read {args.data} as a .npy array: {err}") from None
    if not hasattr(data, "ndim"):
        raise _UsageError(f"{args.data}: expected one array (.npy), got an archive")
    if data.ndim != 3:
        raise _UsageError(f"{args.data}: expected shape (samples, timesteps, features), got {data.shape}")
    if not np.issubdtype(data.dtype, np.number):
        raise _UsageError(f"{args.data}: expected a numeric array, got dtype {data.dtype}")
    if data.shape[0] < 1 or data.shape[1] < 1:
        raise _UsageError(f"{args.data}: empty array of shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise _UsageError(f"{args.data}: contains NaN or inf values")
    if args.timesteps is not None:
        if args.timesteps < 1:
            raise _UsageError(f"--timesteps must be a positive integer, got {args.timesteps}")
        if args.mode == "sequence" and data.shape[1] != args.timesteps:
            raise _UsageError(f"{args.data} has {data.shape[1]} timesteps but --timesteps is {args.timesteps}")
    from keras_lowprec.export import ExportError, check_output_dir

    try:
        check_output_dir(args.out, "--out")
    except ExportError as err:
        raise _UsageError(str(err)) from None
    args._data = data


class _Progress:
    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = (None, 0.0)
        # A private copy of stderr: the exporter silences file descriptor 2 while the
        # converter runs (its C++ chatter), and the progress display must stay visible.
        try:
            sys.stderr.flush()
            self.stream = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
        except (AttributeError, OSError, ValueError):  # e.g. a stderr without a file descriptor
            self.stream = sys.stderr

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        labels = {"calibrate": "calibrating", "litert": "verifying (LiteRT)", "tflm": "verifying (TFLM)"}
        now = time.monotonic()
        if self.tty:
            end = "\n" if done == total else ""
            print(f"\r{labels.get(stage, stage)}: {done}/{total}", end=end, file=self.stream, flush=True)
        elif done == total or stage != self.last[0] or now - self.last[1] > 2.0:
            print(f"{labels.get(stage, stage)}: {done}/{total}", file=self.stream, flush=True)
            self.last = (stage, now)


def _load_model(path: str):
    """The saved model, or None after printing why it cannot be loaded."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001
        print(f"{PROG}: error: cannot load {path}: {str(err).splitlines()[0] if str(err) else err}", file=sys.stderr)
        return None


def _export(args) -> int:
    from keras_lowprec.export import ExportError, to_tflite

    model = _load_model(args.model)
    if model is None:
        return EXIT_USAGE
    try:
        result = to_tflite(model, args._data, timesteps=args.timesteps, mode=args.mode, output_dir=args.out,
                           c_array=not args.no_c_array, verify=not args.no_verify, lstm_kernel=args.lstm_kernel,
                           compress=args.compress or False,
                           progress=_Progress(args.quiet))
    except ExportError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_EXPORT
    rep = result.report
    lines = [
        f"wrote {', '.join(sorted(os.path.basename(p) for p in result.paths.values()))} to {args.out}",
        f"model {rep['model_bytes']} bytes, weights {rep['weight_bytes']} bytes, ops: {', '.join(result.ops)}",
        *(["state: variable tensors of the fused LSTM; call Reset() before each sequence"]
          if rep["state"] == "variables" else []),
        f"weights exact: {rep['exactness']['all_exact']} ({rep['exactness']['exact_tensors']} exact tensors, "
        f"{rep['exactness']['plain_int8_tensors']} plain int8)",
    ]
    comp = rep.get("compression")
    if comp and "model_bytes" in comp:
        lines.append(
            f"compression ({comp['requested']}): {'applied' if comp['applied'] else 'not applied'}; model "
            f"{comp['model_bytes']['uncompressed']} -> {comp['model_bytes']['compressed']} bytes, smallest arena "
            f"{comp['arena_smallest_bytes']['uncompressed']} -> {comp['arena_smallest_bytes']['compressed']} bytes, "
            f"{comp['bits_per_weight']:.2f} bits per compressed weight" + (f" ({comp['reason']})" if "reason" in comp
                                                                          else ""))
    elif comp:
        lines.append(f"compression ({comp['requested']}): not applied ({comp['reason']})")
    if "verification" in rep:
        v = rep["verification"]["tflm"]
        agree, ceiling = v.get("argmax_agreement"), v.get("output_grid_ceiling")
        lines.append(
            f"TFLM vs Keras on {rep['verification']['samples']} sequences: max abs error {v['max_abs_error']:.4g}"
            + (f", argmax agreement {agree:.1%}" if agree is not None else "")
            + (f" (Keras outputs on the int8 output grid: {ceiling:.1%})" if ceiling is not None else "")
            + f"; arena {v['arena_bytes']} bytes, {v['us_per_invoke']:.1f} us per invoke"
        )
        vs = rep["verification"].get("stream_vs_sequence", {})
        if "argmax_agreement" in vs:
            lines.append(f"stream vs the sequence export (TFLM, {vs['samples']} sequences): argmax agreement "
                         f"{vs['argmax_agreement']:.1%}, max abs difference {vs['max_abs_difference']:.4g}")
    print("\n".join(lines))
    return 0


def _export_c(args) -> int:
    from keras_lowprec.export import ExportError, to_c

    model = _load_model(args.model)
    if model is None:
        return EXIT_USAGE
    data = args._data.astype("float32")
    k = max(1, len(data) // 5) if len(data) >= 10 else 0
    try:
        res = to_c(model, data[:len(data) - k], args.out, packing=args.packing, name=args.name,
                   table_bytes=args.table_bytes, verify_data=data[len(data) - k:] if k else None)
    except ExportError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_EXPORT
    rep = res.report
    lines = [f"wrote {', '.join(sorted(os.listdir(args.out)))} to {args.out}",
             f"weights {rep['flash_bytes']['weights']} B ({rep['bits_per_weight']:.2f} bits per weight), "
             f"parameters {rep['flash_bytes']['params']} B, tables {rep['flash_bytes']['tables']} B; "
             f"RAM {rep['ram_bytes']['total']} B (state {rep['ram_bytes']['state']} B)"]
    if "verify" in rep:
        v = rep["verify"]
        lines.append(f"integer reference vs Keras on {v['sequences']} held-out sequences: argmax agreement "
                     f"{v['argmax_agreement_with_keras']:.1%}")
    print("\n".join(lines))
    return 0


def _firmware(args) -> int:
    from keras_lowprec.export import firmware

    try:
        r = firmware.run(args.export_dir, args.target, tflm_dir=args.tflm_dir, build_dir=args.build_dir)
    except firmware.FirmwareError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_EXPORT
    lines = [f"{r.target}: {r.sequences} test sequences, {r.outputs} int8 outputs: {r.mismatches} differ from "
             f"TFLM's Python interpreter (max abs difference {r.max_abs_diff})",
             f"arena: {r.arena_used_bytes:,} B used of kTensorArenaSize {r.arena_bytes:,} B"]
    if r.instructions_per_invoke is not None:
        lines.append(f"instructions (QEMU -icount, not cycles): {r.instructions_per_invoke:,.0f} per invoke, "
                     f"{r.instructions_per_step:,.0f} per time step")
    if r.flash:
        lines.append(f"flash: model {r.flash['model']:,} B, TFLM and kernels {r.flash['tflm']:,} B, "
                     f"rest of the program {r.flash['program']:,} B")
    print("\n".join(lines))
    return 0 if r.passed else EXIT_EXPORT


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "firmware":
        return _firmware(args)
    try:
        _check_export_args(args)
    except _UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _export_c(args) if args.command == "export-c" else _export(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (no partial files are left: each is written atomically)", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - one line, no traceback
        print(f"{PROG}: error: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_EXPORT


if __name__ == "__main__":
    sys.exit(main())
