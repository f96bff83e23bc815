"""`make demo`: low-precision LSTMs on scikit-learn's bundled digits (no download).

Each 8x8 digit is a sequence of 8 time steps of 8 pixels. Trains a float
``keras.layers.LSTM`` and the four presets (binary, ternary, pow2-ternary,
exponential), prints test accuracy for each and the bit/memory summary of the
ternary model.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
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
    return accuracy


if __name__ == "__main__":
    main()
