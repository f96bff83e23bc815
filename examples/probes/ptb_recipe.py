"""Probe, validation split only: which training recipe narrows the PTB gap between rounded
and float GRUs at the matrix's settings?

GRU 256 on PTB characters with the quick budget's settings (embedding 32, windows of 100,
batch 64, Adam 2e-3, clipnorm 1), ``--steps`` training steps per variant (800 is about one
epoch), then bits per character on the first ``--valid-chars`` validation characters
(burn-in windows, as ``common.ptb_bpc``). One seed. A variant is ``METHOD`` or
``METHOD+TOKEN+...`` with tokens:

* ``cos``: cosine decay of the rate to 0 over the run;
* ``bn``: batch normalization of the GRU's input (the embedding) over batch and time,
  gamma starting at 0.1 (the authors' code);
* ``lrscale``: BinaryConnect's per-layer rate scaling, 1/G for every rounded weight;
* ``lr<RATE>`` (e.g. ``lr2.5e-4``): the base rate;
* ``win<K>`` (exponential, e.g. ``win2``): the window of exponents moved up by K (``max_exponent`` =
  ceil(log2 G) + K, 7 levels); ``uncapped``: window moved up by 4 with 14 levels, so that
  neither the largest level nor the clip at it binds (the authors' quantizer has no cap).

Writes ``results/probes/ptb_recipe_<steps>.json`` after every variant; finished variants
are skipped when the probe is started again.

    python examples/probes/ptb_recipe.py --variants float ternary ternary+cos ...
"""
import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import common  # noqa: E402
from keras_lowprec import datasets, quantizers  # noqa: E402


def settings_for(variant: str, steps: int) -> dict:
    method, *tokens = variant.split("+")
    if method not in common.METHODS:
        raise SystemExit(f"unknown method in {variant!r}")
    s = {**common.PTB_DEFAULTS, "cell": "gru", "method": method, "units": args.units, "embedding": 32,
         "epochs": 1, "lr": 2e-3}
    for token in tokens:
        if token == "cos":
            s["lr_schedule"] = "cosine"
        elif token == "bn":
            s["input_bn"] = 0.1
        elif token == "lrscale":
            s["lr_scale"] = "glorot"
        elif re.fullmatch(r"lr[0-9.e-]+", token):
            s["lr"] = float(token[2:])
        elif re.fullmatch(r"win\d", token) or token == "uncapped":
            shift, levels = (4, 14) if token == "uncapped" else (int(token[3:]), 7)
            s["window"] = {"shift": shift, "num_levels": levels}
        else:
            raise SystemExit(f"unknown token {token!r} in {variant!r}")
    return s


def train(s: dict, steps: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    if "window" in s:
        q = {k: quantizers.Exponential(exponent_offset=s["window"]["shift"], num_levels=s["window"]["num_levels"])
             for k in ("kernel_quantizer", "recurrent_quantizer", "bias_quantizer")}
        s = {**s, "rnn_kwargs": q}
    model = common.ptb_model(data.vocab_size, s, steps_per_epoch=steps)
    train_b = common.PTBWindows(data.train, 100, 64, shuffle=True, seed=0)
    specs = (tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None, None), tf.int32))
    model.fit(common.as_dataset(train_b, *specs), steps_per_epoch=steps, epochs=1, verbose=0)
    return model


parser = argparse.ArgumentParser()
parser.add_argument("--variants", nargs="+", required=True)
parser.add_argument("--steps", type=int, default=800)
parser.add_argument("--units", type=int, default=256)
parser.add_argument("--valid-chars", type=int, default=100_000)
args = parser.parse_args()
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "results", "probes",
                   f"ptb_recipe_{args.steps}" + ("" if args.units == 256 else f"_u{args.units}") + ".json")
data = datasets.ptb_chars(common.default_data_dir())
out = json.load(open(OUT)) if os.path.exists(OUT) else {"variants": {}}
out["settings"] = {"cell": "gru", "units": args.units, "embedding": 32, "seq_len": 100, "batch_size": 64,
                   "clipnorm": 1.0, "steps": args.steps, "validation_chars": args.valid_chars, "seed": 0}
for variant in [v for v in args.variants if v not in out["variants"]]:
    s = settings_for(variant, args.steps)
    t0 = time.time()
    model = train(s, args.steps)
    bpc = common.ptb_bpc(model, data.valid[:args.valid_chars], 100)
    out["variants"][variant] = {"val_bpc": bpc, "seconds": time.time() - t0,
                                "settings": {k: s[k] for k in ("method", "lr", "lr_schedule", "input_bn",
                                                               "lr_scale") if k in s} | (
                                    {"window": s["window"]} if "window" in s else {}),
                                "command": "python examples/probes/ptb_recipe.py " + " ".join(sys.argv[1:])}
    print(variant, round(bpc, 4), round(time.time() - t0), flush=True)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as fh:
        json.dump(out, fh, indent=1)
