"""Probe: does a learned scale per output column close the PTB gap at the same width?

Half of the 256-unit ternary GRU's 0.21-BPC gap is the rounded range, half the three levels
(results/findings.md, item 14); widening the levels for every weight at once (W0 = 2G) gave
the range back and took it away again in coarser steps. Trained ternary weights with a
scale per output unit (Zhu et al. 2017, "Trained ternary quantization"; Ardakani et al.
2019 reach float PTB accuracy with ternary LSTMs through batch normalization of each
matrix product, which at inference is such a per-unit scale) let each gate unit choose its
own range while its weights keep three levels. Here each column ``j`` of the kernel and of
the recurrent kernel (one gate unit) gets a trainable float scale ``s_j``, starting at 1
(the layers' ``channel_scale=True``; the first runs used an equivalent cell mixin here):

    W_eff[:, j] = s_j * Q(W)[:, j]

with ``Q`` the layer's own rounding (levels, clip constraint and straight-through gradient
unchanged); biases are rounded as before. ``s`` costs one float per gate unit (2 x 768 for
the GRU), applied once per output in an integer kernel (a per-channel scale), never per
weight. The model has the matrix's quick-budget settings (256 units, embedding 32, 6 epochs
at 2e-3, patience 2, ``common.train_ptb``). A variant is a method (``ternary``,
``exponential``, ``pow2_ternary``, ``binary``), optionally ``+cos``: the rate decayed to 0 by
a cosine over the run (``--lr-schedule cosine`` of the examples). Validation and test BPC
are recorded (decisions on validation only) with the learned scales' quantiles. Resumable:
finished variants are skipped, an interrupted one resumes from its last epoch.

Writes ``results/probes/ptb_scaled_<cell>_u<units>[_s<seed>].json``.

    python examples/probes/ptb_scaled.py --variants ternary exponential
"""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import keras  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402
import ptb_args  # noqa: E402

parser = ptb_args.parser("ptb_scaled")
parser.add_argument("--variants", nargs="+", required=True, help="METHOD or METHOD+cos")
args = parser.parse_args()
name = ptb_args.run_name("ptb_scaled", args)
OUT = ptb_args.out_path(args, name)
METHODS = ("ternary", "exponential", "pow2_ternary", "binary")


def parse_variant(variant: str) -> tuple[str, str]:
    """``(method, lr_schedule)`` of ``METHOD[+cos]``."""
    method, _, schedule = variant.partition("+")
    if method not in METHODS or schedule not in ("", "cos"):
        raise SystemExit(f"variant {variant!r}: expected METHOD or METHOD+cos, METHOD one of {METHODS}")
    return method, "cosine" if schedule else "constant"


def scale_summary(model) -> dict:
    """Quantiles of each learned scale vector."""
    q = (0.0, 0.1, 0.5, 0.9, 1.0)
    return {w: dict(zip(("min", "p10", "median", "p90", "max"),
                        np.quantile(keras.ops.convert_to_numpy(v), q).round(4).tolist()))
            for w, v in model.get_layer("rnn").channel_scales().items()}


out = json.loads(OUT.read_text()) if OUT.exists() else {"variants": {}}
plan = {v: parse_variant(v) for v in args.variants}  # all checked before the first run
for variant, (method, schedule) in [(v, plan[v]) for v in args.variants if v not in out["variants"]]:
    s = {"cell": args.cell, "method": method, "units": args.units, "embedding": 32, "epochs": args.epochs,
         "lr": 2e-3, "lr_schedule": schedule, "seed": args.seed, "patience": 2,
         "steps_per_epoch": args.steps_per_epoch, "max_eval_chars": args.max_eval_chars,
         "channel_scale": True}
    result, model = common.train_ptb(s, common.default_data_dir(), Path(args.scratch) / name / variant, verbose=2)
    keys = ("validation_bpc", "test_bpc", "best_epoch", "epochs_run", "train_seconds", "settings", "history",
            "weights", "num_params")
    if OUT.exists():  # another process may have added variants meanwhile
        out["variants"] = {**json.loads(OUT.read_text())["variants"], **out["variants"]}
    out["variants"][variant] = {k: result[k] for k in keys} | {
        "scales": scale_summary(model), "command": "python examples/probes/ptb_scaled.py " + " ".join(sys.argv[1:])}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1))
    print(variant, "validation", round(result["validation_bpc"], 4), "test", round(result["test_bpc"], 4), flush=True)
