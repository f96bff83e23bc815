"""Size, arena, TFLM latency and accuracy of exported models.

For LSTM / GRU / SimpleRNN at a few sizes, trained on the scikit-learn digits (each 8x8
image read as 8 time steps of 8 features, 10 classes), compares:

* ``float32``: the float32 TFLite of the same (rounded-weight) graph, ``to_float_tflite``
  (LSTM: the float fused LSTM op);
* ``int8 ternary``: a Ternary* model exported with ``to_tflite`` (exact ternary weights);
* ``int8 shift``: an Exponential* model exported with ``to_tflite`` (shift-encoded weights).

LSTM models are exported twice from the same trained model: with the fused
``UNIDIRECTIONAL_SEQUENCE_LSTM`` kernel (the default, int16 cell state) and unrolled op by
op (``lstm_kernel="unrolled"``, int8 cell state).

Also both int8 models in stream mode (one step per invoke), with their agreement with Keras
and with the sequence-mode export (both in TFLM) on the whole test set. Columns: model bytes,
weight bytes (constant weights and biases; ``int8_weight_bytes``: the int8 tensors only), TFLM arena bytes, TFLM µs per time step (host CPU,
TFLM reference kernels through the Python interpreter), Keras and TFLM test accuracy.

    python bench/export_size_latency.py --out results/export_size_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)  # (n, 8, 8): 8 steps of 8 features
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    x, y = x[idx], y[idx]
    n_test = 360
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def model_args(parser, out: str, kinds: list[str]) -> None:
    """The options shared by the benchmarks that train the digits models: --out, --units,
    --kinds, --methods, --epochs, --build-dir (the TFLM harness cache), --table."""
    parser.add_argument("--out", default=out)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--kinds", nargs="+", default=kinds)
    parser.add_argument("--methods", nargs="+", default=["Ternary", "Exponential"])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--build-dir", default="build/firmware", help="TFLM harness object cache")
    parser.add_argument("--table", metavar="JSON", help="print the table of a committed result file and stop")


def trained(args, x_train, y_train):
    """``(kind, method, model)`` for every ``--kinds`` x ``--methods`` model of the benchmarks,
    built with ``--units`` and trained ``--epochs`` epochs on the digits."""
    for kind in args.kinds:
        for method in args.methods:
            model = build(method, kind, args.units)
            model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
            yield kind, method, model


def build(method: str, kind: str, units: int):
    import keras

    from keras_lowprec import layers as L

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8)),
        getattr(L, f"{method}{kind}")(units),
        getattr(L, f"{method}Dense")(10),
    ])
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def tflm_run(model_bytes: bytes, x: np.ndarray):
    """Predictions, arena bytes and median µs per invoke of a (sequence-mode) model in TFLM."""
    from keras_lowprec.export import verify

    runner = verify.TFLMRunner(model_bytes, arena_size=4 << 20)
    timings: list[float] = []
    out = verify.run_sequences(runner, x, "sequence", timings=timings)
    return out.argmax(-1), runner.arena_bytes(), float(np.median(timings)) * 1e6


def grid_ceiling(keras_logits: np.ndarray, output: dict) -> float:
    """``output_grid_ceiling`` of ``verify.compare`` on the whole test set (see there)."""
    from keras_lowprec.export import verify

    grid = (output["scale"], output["zero_point"])
    return verify.compare(keras_logits, keras_logits, grid)["output_grid_ceiling"]


def weight_bytes_float(model_bytes: bytes) -> int:
    from tensorflow.lite.python import schema_py_generated as schema

    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(model_bytes), 0))
    total = 0
    for t in m.subgraphs[0].tensors:
        data = m.buffers[t.buffer].data
        if data is not None and len(data) and t.type == schema.TensorType.FLOAT32:
            total += len(data)
    return total


def export_rows(model, kind, units, method, label, kernel, keras_logits, keras_acc, x_train, x_test, y_test):
    """Sequence-mode and stream-mode rows of one trained model exported with one LSTM kernel."""
    from keras_lowprec.export import to_tflite

    keras_pred = keras_logits.argmax(-1)
    res = to_tflite(model, x_train[:300], verify=True, verify_data=x_test[:50], lstm_kernel=kernel)
    preds, arena, us = tflm_run(res.model_bytes, x_test)
    lstm = res.report["lstm"]["kernel"] if res.report["lstm"] else None
    row = {
        "kind": kind, "units": units, "encoding": label, "method": method.lower(), "lstm_kernel": lstm,
        "graph": res.report["graph"], "model_bytes": len(res.model_bytes),
        "weight_bytes": res.report["weight_bytes"], "int8_weight_bytes": res.report["int8_weight_bytes"],
        "arena_bytes": arena, "tflm_us_per_invoke": round(us, 1), "tflm_us_per_step": round(us / 8, 2),
        "keras_accuracy": keras_acc, "tflm_accuracy": float(np.mean(preds == y_test)),
        "tflm_argmax_agreement_with_keras": float(np.mean(preds == keras_pred)),
        "output_grid_ceiling": grid_ceiling(keras_logits, res.report["io"]["outputs"][0]),
        "weights_exact": res.report["exactness"]["all_exact"],
        "tflm_max_abs_error_vs_keras": res.verification["tflm"]["max_abs_error"],
    }
    st = to_tflite(model, x_train[:300], mode="stream", verify=True, verify_data=x_test, max_verify=len(x_test),
                   lstm_kernel=kernel)
    v = st.verification["tflm"]
    vs = st.verification.get("stream_vs_sequence", {})
    stream = {
        "kind": kind, "units": units, "encoding": f"{label}, stream mode", "method": method.lower(),
        "lstm_kernel": lstm, "graph": st.report["graph"], "state": st.report["state"],
        "model_bytes": len(st.model_bytes), "weight_bytes": st.report["weight_bytes"],
        "int8_weight_bytes": st.report["int8_weight_bytes"], "arena_bytes": v["arena_bytes"],
        "tflm_us_per_invoke": round(v["us_per_invoke"], 1), "tflm_us_per_step": round(v["us_per_step"], 2),
        "keras_accuracy": keras_acc, "tflm_accuracy": None,
        "tflm_argmax_agreement_with_keras": v["argmax_agreement"],
        "output_grid_ceiling": v["output_grid_ceiling"],  # verified on the whole test set
        "weights_exact": st.report["exactness"]["all_exact"],
        "tflm_max_abs_error_vs_keras": v["max_abs_error"],
        "stream_vs_sequence_argmax_agreement": vs.get("argmax_agreement"),
        "stream_vs_sequence_max_abs_difference": vs.get("max_abs_difference"),
        "sequence_vs_keras_argmax_agreement_test_set": vs.get("sequence_vs_keras_argmax_agreement"),
        "note": "one invoke per step; agreement on the whole test set (360), stream_vs_sequence: against "
                "the sequence-mode export (both in TFLM)",
    }
    print(f"{kind:9s} {units:3d} {label:28s} model {row['model_bytes']:6d} B weights {row['weight_bytes']:5d} B "
          f"arena {arena} B {us / 8:7.1f} us/step keras {keras_acc:.3f} tflm {row['tflm_accuracy']:.3f}; stream: "
          f"agreement with keras {v['argmax_agreement']:.4f}, with the sequence export {vs.get('argmax_agreement')}",
          flush=True)
    return [row, stream]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/export_size_latency.json")
    parser.add_argument("--units", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--kinds", nargs="+", default=["LSTM", "GRU", "SimpleRNN"])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)

    import tensorflow as tf

    from keras_lowprec.export import to_float_tflite

    x_train, y_train, x_test, y_test = digits()
    rows = []
    for kind in args.kinds:
        for units in args.units:
            for method, label in (("Ternary", "int8 ternary"), ("Exponential", "int8 shift")):
                t0 = time.time()
                model = build(method, kind, units)
                model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
                keras_logits = model.predict(x_test, verbose=0)
                keras_acc = float(np.mean(keras_logits.argmax(-1) == y_test))
                # LSTM: the fused kernel (stream mode too: reference kernels) and, beside it, the unrolled graph
                for kernel in (("fused", "unrolled") if kind == "LSTM" else ("auto",)):
                    suffix = ", unrolled LSTM" if kernel == "unrolled" else ""
                    rows += export_rows(model, kind, units, method, label + suffix, kernel, keras_logits, keras_acc,
                                        x_train, x_test, y_test)
                if method == "Ternary":
                    fbytes = to_float_tflite(model)
                    fpreds, farena, fus = tflm_run(fbytes, x_test)
                    rows.append({
                        "kind": kind, "units": units, "encoding": "float32", "method": "ternary (float32 weights)",
                        "lstm_kernel": "fused" if kind == "LSTM" else None,
                        "model_bytes": len(fbytes), "weight_bytes": weight_bytes_float(fbytes),
                        "arena_bytes": farena, "tflm_us_per_invoke": round(fus, 1),
                        "tflm_us_per_step": round(fus / 8, 2), "keras_accuracy": keras_acc,
                        "tflm_accuracy": float(np.mean(fpreds == y_test)), "weights_exact": None,
                        "tflm_max_abs_error_vs_keras": None,
                    })
                print(f"{kind:9s} {units:3d} {label:13s} ({time.time() - t0:.0f}s)", flush=True)
    for kind in args.kinds:
        for units in args.units:
            f = next(r for r in rows if r["kind"] == kind and r["units"] == units and r["encoding"] == "float32")
            for r in rows:
                if r["kind"] == kind and r["units"] == units:
                    r["weight_bytes_vs_float32"] = round(r["weight_bytes"] / f["weight_bytes"], 4)
                    if r.get("int8_weight_bytes") is not None:
                        r["int8_weight_bytes_vs_float32"] = round(r["int8_weight_bytes"] / f["weight_bytes"], 4)
    result = {
        "benchmark": "export_size_latency",
        "data": "sklearn digits as 8 steps x 8 features, 1437 train / 360 test",
        "epochs": args.epochs,
        "timing": "TFLM Python interpreter (reference kernels) on the host CPU, median over the test set; "
                  "per step = per invoke / 8. Host numbers: compare rows, not absolute MCU latency.",
        "arena": "RecordingMicroAllocator total on a 64-bit host",
        "host": {"machine": platform.machine(), "python": platform.python_version(), "tensorflow": tf.__version__},
        "rows": rows,
    }
    stream = [r for r in rows if r["encoding"].endswith("stream mode") and "unrolled" not in r["encoding"]]
    unrolled = [r for r in rows if r["encoding"].endswith("unrolled LSTM, stream mode")]
    result["stream_agreement"] = {
        "exports": "default kernels (LSTM fused); the unrolled LSTM exports separately below",
        "target": "issue 3: argmax agreement >= 0.99 of streaming T steps with the sequence model",
        "test_sequences": len(x_test),
        "min_with_keras": min(r["tflm_argmax_agreement_with_keras"] for r in stream),
        "min_with_sequence_export": min((r["stream_vs_sequence_argmax_agreement"] for r in stream
                                         if r["stream_vs_sequence_argmax_agreement"] is not None), default=None),
        "min_sequence_export_with_keras": min((r["sequence_vs_keras_argmax_agreement_test_set"] for r in stream
                                               if r["sequence_vs_keras_argmax_agreement_test_set"] is not None),
                                              default=None),
        "models_at_or_above_0.99_with_keras": sum(r["tflm_argmax_agreement_with_keras"] >= 0.99 for r in stream),
        "models": len(stream),
        "below_0.99": [{k: r[k] for k in ("kind", "units", "encoding", "keras_accuracy",
                                         "tflm_argmax_agreement_with_keras", "output_grid_ceiling")}
                       for r in stream if r["tflm_argmax_agreement_with_keras"] < 0.99],
        "output_grid_ceiling": "agreement with Keras of Keras's own outputs rounded to the export's int8 output "
                               "grid: what an export with no error before its output rounding reaches (the rest are "
                               "near-tied logits that the grid cannot separate)",
        "unrolled_lstm_min_with_keras": min((r["tflm_argmax_agreement_with_keras"] for r in unrolled), default=None),
        "unrolled_lstm_models_at_or_above_0.99_with_keras": sum(r["tflm_argmax_agreement_with_keras"] >= 0.99
                                                                for r in unrolled),
        "unrolled_lstm_models": len(unrolled),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
