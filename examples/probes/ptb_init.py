"""Probe, validation split only: does starting the rounded GRU's master weights from
U(-G, G) per gate (the range the paper's code initialized in) instead of Keras's defaults
(glorot_uniform over the fused kernel, orthogonal recurrent kernel) narrow the PTB gap to
float?

GRU 256 on PTB characters with the quick budget's settings (embedding 32, windows of 100,
batch 64, Adam 2e-3, clipnorm 1), STEPS training steps per variant (600 is about 0.8 of an
epoch), then bits per character on the first 100,000 validation characters (burn-in
windows, as ``common.ptb_bpc``). One seed. Writes ``results/probes/ptb_init_<STEPS>.json``
(``--units U`` / ``--lr LR`` / ``--variants`` (a subset): ``ptb_init_<STEPS>_u<U>_lr<LR>_<variants>.json``).
The probe also has one diagnostic variant outside the paper's method: ``ternary-floatbias``
(biases left in float).

    python examples/probes/ptb_init.py 600
    python examples/probes/ptb_init.py 600 --units 128 --variants float ternary-default exponential-default
"""
import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import common  # noqa: E402
from keras_lowprec import datasets  # noqa: E402

VARIANTS = {"float": ("float", False), "ternary-default": ("ternary", False), "ternary-uniformG": ("ternary", True),
            "exponential-default": ("exponential", False), "exponential-uniformG": ("exponential", True),
            # diagnostic, not the paper's method: biases left in float
            "ternary-floatbias": ("ternary", False)}
parser = argparse.ArgumentParser()
parser.add_argument("steps", type=int, nargs="?", default=600)
parser.add_argument("--units", type=int, default=256)
parser.add_argument("--lr", type=float, default=2e-3)
parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
args = parser.parse_args()
STEPS, UNITS, LR = args.steps, args.units, args.lr
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "results", "probes",
                   f"ptb_init_{STEPS}" + ("" if UNITS == 256 else f"_u{UNITS}") + ("" if LR == 2e-3 else f"_lr{LR:g}")
                   + ("" if args.variants == list(VARIANTS) else "_" + "+".join(args.variants)) + ".json")
data = datasets.ptb_chars(common.default_data_dir())
out = {}
for name in args.variants:
    method, init = VARIANTS[name]
    t0 = time.time()
    keras.utils.set_random_seed(0)
    kw = {"bias_quantizer": None} if name.endswith("floatbias") else {}
    if init:
        g_in, g_rec = math.sqrt(6 / (32 + UNITS)), math.sqrt(6 / (UNITS + UNITS))
        kw.update(kernel_initializer=keras.initializers.RandomUniform(-g_in, g_in, seed=0),
                  recurrent_initializer=keras.initializers.RandomUniform(-g_rec, g_rec, seed=1))
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(data.vocab_size, 32)(inputs)
    x = common.rnn_layer("gru", method, UNITS, False, seed=0, return_sequences=True, **kw)(x)
    outputs = keras.layers.Dense(data.vocab_size, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(LR, clipnorm=1.0), loss="sparse_categorical_crossentropy")
    train_b = common.PTBWindows(data.train, 100, 64, shuffle=True, seed=0)
    specs = (tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None, None), tf.int32))
    model.fit(common.as_dataset(train_b, *specs), steps_per_epoch=STEPS, epochs=1, verbose=0)
    bpc = common.ptb_bpc(model, data.valid[:100_000], 100)
    out[name] = {"val_bpc_100k": bpc, "seconds": time.time() - t0}
    print(name, round(bpc, 4), round(time.time() - t0), flush=True)
os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w") as fh:
    json.dump({"steps": STEPS, "units": UNITS, "lr": LR, "command": "python examples/probes/ptb_init.py " + " ".join(sys.argv[1:]),
               "results": out}, fh, indent=1)
