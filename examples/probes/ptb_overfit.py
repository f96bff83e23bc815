"""Probe, validation split only: in a regime where the float model over-fits, does stochastic
rounding beat it (the paper's PTB claim: the best low-precision model 0.133 BPC better than
float, in a "slightly over-fitting" setting)?

A GRU (``--cell lstm``: an LSTM) on PTB characters trained on the first ``--train-chars`` characters of the training text
only (embedding 32, windows of 100, batch 64, Adam 2e-3, clipnorm 1), ``--epochs`` epochs; after
every epoch, bits per character on the first ``--valid-chars`` validation characters. Per variant: the
validation curve, the best epoch and its BPC, and whether float over-fitted (its last epoch
worse than its best). One seed per variant. Resumable: finished variants are skipped.
Writes ``results/probes/ptb_overfit_<chars>_u<units>_e<epochs>.json`` (``ptb_overfit_lstm_...`` for
the LSTM; ``..._s<seed>.json`` for ``--seed`` other than 0).

    python examples/probes/ptb_overfit.py --variants float ternary ternary+sto exponential exponential+sto
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import common  # noqa: E402
from keras_lowprec import datasets  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--variants", nargs="+", required=True, help="METHOD or METHOD+sto")
parser.add_argument("--train-chars", type=int, default=200_000)
parser.add_argument("--units", type=int, default=256)
parser.add_argument("--epochs", type=int, default=25)
parser.add_argument("--valid-chars", type=int, default=100_000)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--cell", choices=("gru", "lstm"), default="gru")
args = parser.parse_args()
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "results", "probes",
                   f"ptb_overfit_{'' if args.cell == 'gru' else args.cell + '_'}{args.train_chars}_u{args.units}_e{args.epochs}"
                   + ("" if args.seed == 0 else f"_s{args.seed}") + ".json")
data = datasets.ptb_chars(common.default_data_dir())
out = json.load(open(OUT)) if os.path.exists(OUT) else {"variants": {}}
out["settings"] = {"cell": args.cell, "train_chars": args.train_chars, "units": args.units, "epochs": args.epochs, "seed": args.seed,
                   "embedding": 32, "seq_len": 100, "batch_size": 64, "lr": 2e-3, "clipnorm": 1.0,
                   "validation_chars": args.valid_chars}


def model_for(method: str, stochastic: bool) -> keras.Model:
    keras.utils.set_random_seed(args.seed)
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(data.vocab_size, 32)(inputs)
    x = common.rnn_layer(args.cell, method, args.units, stochastic, seed=args.seed, return_sequences=True)(x)
    outputs = keras.layers.Dense(data.vocab_size, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(2e-3, clipnorm=1.0), loss="sparse_categorical_crossentropy")
    return model


for variant in args.variants:
    if variant in out["variants"]:
        continue
    method, _, flag = variant.partition("+")
    model = model_for(method, flag == "sto")
    train_b = common.PTBWindows(data.train[:args.train_chars], 100, 64, shuffle=True, seed=args.seed)
    specs = (tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None, None), tf.int32))
    curve, t0 = [], time.time()
    for epoch in range(args.epochs):
        model.fit(common.as_dataset(train_b, *specs), epochs=1, verbose=0)
        curve.append(common.ptb_bpc(model, data.valid[:args.valid_chars], 100))
        print(variant, epoch + 1, round(curve[-1], 4), flush=True)
    best = min(range(len(curve)), key=curve.__getitem__)
    out["variants"][variant] = {"validation_bpc": curve, "best_epoch": best + 1, "best_bpc": curve[best],
                                "overfits": curve[-1] > curve[best] + 0.01, "seconds": time.time() - t0}
    out["command"] = "python examples/probes/ptb_overfit.py " + " ".join(sys.argv[1:])
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as fh:
        json.dump(out, fh, indent=1)
