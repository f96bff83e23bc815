"""Probe, validation split only: which rounded part of a recurrent layer costs accuracy on the
conventional FSDD split?

Trains the quick budget's conventional-split model (96 units, 30 epochs, global
normalization, Gaussian noise 0.3, dropout 0.3, best validation epoch kept) of one cell
with every part rounded (the paper's setting) and, as diagnostics outside the paper's
method, with one part left in float: the biases (``floatbias``), the recurrent kernel
(``floatrec``) or the input kernel (``floatin``); plus the float layer as reference. Writes
validation accuracy (takes 5-9) to ``results/probes/fsdd_parts_<cell>_<method>.json``.

    python examples/probes/fsdd_parts.py --cell lstm --variants float rounded floatbias
    python examples/probes/fsdd_parts.py --cell simplernn
"""
import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import common  # noqa: E402

FLOAT_PART = {"rounded": {}, "floatbias": {"bias_quantizer": None}, "floatrec": {"recurrent_quantizer": None},
              "floatin": {"kernel_quantizer": None}}
parser = argparse.ArgumentParser()
parser.add_argument("--cell", choices=common.CELLS, required=True)
parser.add_argument("--method", default="ternary", choices=[m for m in common.METHODS if m != "float"])
parser.add_argument("--variants", nargs="+", choices=("float", *FLOAT_PART), default=["float", *FLOAT_PART])
args = parser.parse_args()
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "results", "probes",
                   f"fsdd_parts_{args.cell}_{args.method}.json")
SETTINGS = dict(cell=args.cell, units=96, epochs=30, batch_size=32, lr=2e-3, normalize="global", noise=0.3,
                dropout=0.3)
out = {}
for name in args.variants:
    method = "float" if name == "float" else args.method
    run = {**SETTINGS, "method": method, "rnn_kwargs": FLOAT_PART.get(name, {})}
    with tempfile.TemporaryDirectory() as scratch:
        result, _ = common.train_fsdd(run, common.default_data_dir(), scratch, verbose=0)
    out[name] = {"validation_accuracy": result["validation_accuracy"], "best_epoch": result["best_epoch"]}
    print(name, out[name], flush=True)
os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w") as fh:
    json.dump({"command": "python examples/probes/fsdd_parts.py " + " ".join(sys.argv[1:]), "settings": SETTINGS,
               "method": args.method, "results": out}, fh, indent=1)
