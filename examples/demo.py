"""`make demo`: low-precision LSTMs on scikit-learn's bundled digits (no download).

Each 8x8 digit is a sequence of 8 time steps of 8 pixels. Trains a float
``keras.layers.LSTM`` and the four presets (binary, ternary, pow2-ternary,
exponential), prints test accuracy for each and the bit/memory summary of the
ternary model. Then exports the ternary model to an int8 ``.tflite`` for TensorFlow Lite
Micro, runs it in the TFLM interpreter and compares accuracy and size with Keras and a
float32 TFLite export.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF start-up and tf.data notices

import keras  # noqa: E402

import keras_lowprec as kl  # noqa: E402
from keras_lowprec import layers as L  # noqa: E402
from keras_lowprec.datasets import sequential_digits  # noqa: E402

RNNS = {
    "float": keras.layers.LSTM,
    "binary": L.BinaryLSTM,
    "ternary": L.TernaryLSTM,
    "pow2_ternary": L.Pow2TernaryLSTM,
    "exponential": L.ExponentialLSTM,
}


def build(method: str, units: int) -> keras.Model:
    return keras.Sequential(
        [keras.Input((8, 8)), RNNS[method](units, name=f"{method}_lstm"), keras.layers.Dense(10, activation="softmax")],
        name=f"{method}_digits",
    )


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--methods", nargs="+", default=list(RNNS), choices=list(RNNS))
    parser.add_argument("--out", default="build/demo_tflm", help="folder for the exported TFLM files")
    parser.add_argument("--no-export", action="store_true", help="skip the TFLite Micro export")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    if keras.backend.backend() == "tensorflow":  # same numbers on every run
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    (x_train, y_train), (x_test, y_test) = sequential_digits()
    print(f"digits: {len(x_train)} train / {len(x_test)} test sequences of 8 steps x 8 pixels")
    accuracy, models = {}, {}
    for method in args.methods:
        model = build(method, args.units)
        model.compile(keras.optimizers.Adam(0.005), "sparse_categorical_crossentropy", metrics=["accuracy"])
        start = time.time()
        model.fit(x_train, y_train, batch_size=32, epochs=args.epochs, verbose=0)
        accuracy[method] = model.evaluate(x_test, y_test, verbose=0)[1]
        models[method] = model
        print(f"{method:>13} LSTM({args.units}): test accuracy {accuracy[method]:.2%}  ({time.time() - start:.0f} s)")
    if "ternary" in models:
        print("\nWeights of the ternary model:")
        kl.summary(models["ternary"])
        if not args.no_export:
            export_ternary(models["ternary"], accuracy["ternary"], x_train, x_test, y_test, args.out)
    return accuracy


def export_ternary(model, keras_accuracy, x_train, x_test, y_test, out_dir) -> None:
    """int8 export for TFLM, verified there; accuracy and bytes against Keras / float32."""
    from keras_lowprec.export import run_tflm, to_float_tflite, to_tflite

    print(f"\nExporting the ternary model for TensorFlow Lite Micro to {out_dir}/ ...")
    result = to_tflite(model, x_train[:300], output_dir=out_dir, verify_data=x_test[:100])
    tflm_accuracy = float((run_tflm(result.model_bytes, x_test).argmax(-1) == y_test).mean())
    float_bytes = len(to_float_tflite(model))
    report = result.report
    exact = report["exactness"]["all_exact"]
    print(f"  accuracy on {len(x_test)} test sequences: Keras {keras_accuracy:.2%}, TFLM int8 {tflm_accuracy:.2%}")
    print(f"  model: {len(result.model_bytes):,} B int8 .tflite vs {float_bytes:,} B float32 .tflite")
    print(f"  weights: {report['int8_weight_bytes']:,} B of int8 codes (+ int32 biases: "
          f"{report['weight_bytes']:,} B in all); {report['exactness']['exact_tensors']} ternary tensors, all exact: {exact}")
    print(f"  TFLM arena: {result.arena_bytes:,} B; ops: {', '.join(result.ops)}")
    for name, path in sorted(result.paths.items()):
        print(f"  wrote {path}")
    print(f"  build and check it on a board model: keras-lowprec firmware {out_dir} --target cortex-m4")


if __name__ == "__main__":
    main()
