"""Probe: fine-tuning on PTB from a float model kept inside the rounded range.

Fine-tuning from the float model closed the LSTM gap on spoken digits but made the PTB GRU
worse (results/findings.md, item 12): most of the float GRU's weights lie beyond the
rounded range (62% of its kernel beyond G), so rounding discards the float solution. Here
the first stage is a float model whose weights are clipped after every step to the range
of the method's quantizers (``Clip(quantizer.clip_value(G))`` per weight, the constraint
the rounded layer itself uses), so that the solution it finds is one rounding can keep.

Stage 1: the float model of the matrix's quick-budget settings (``--epochs`` epochs at
2e-3), clipped to ``--method``'s range. Stage 2: the rounded model (``--method``) from its
weights, ``--ft-epochs`` epochs at ``--ft-lr``. With ``--control``, stage 2 also runs for a
float model from the same start (the same total schedule for float). Early stopping and
best-epoch restore on validation as in ``common.train_ptb``; validation and test BPC are
reported for each stage (decisions on validation only). Resumable: finished stages are
skipped, and an interrupted stage resumes from its last epoch.

Writes ``results/probes/ptb_clipped_ft_<cell>_<method>_u<units>[_s<seed>].json``.

    python examples/probes/ptb_clipped_ft.py --cell gru --method ternary --control
"""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import keras  # noqa: E402

import common  # noqa: E402
import ptb_args  # noqa: E402
import keras_lowprec  # noqa: E402

parser = ptb_args.parser("ptb_clipped_ft", epochs_help="stage 1 (clipped float) epochs")
parser.add_argument("--method", choices=("ternary", "pow2_ternary", "exponential", "binary"), default="ternary")
parser.add_argument("--ft-epochs", type=int, default=3, help="stage 2 (rounded) epochs")
parser.add_argument("--ft-lr", type=float, default=5e-4)
parser.add_argument("--control", action="store_true", help="also fine-tune a float model from stage 1")
args = parser.parse_args()

name = ptb_args.run_name("ptb_clipped_ft", args, args.method)
OUT = ptb_args.out_path(args, name)
SCRATCH = Path(args.scratch) / name
COMMAND = "python examples/probes/ptb_clipped_ft.py " + " ".join(sys.argv[1:])
BASE = {"cell": args.cell, "units": args.units, "embedding": 32, "seed": args.seed, "patience": 2,
        "steps_per_epoch": args.steps_per_epoch, "max_eval_chars": args.max_eval_chars}


def clip_values(cell: str, method: str, units: int, input_dim: int) -> dict:
    """``{constraint argument: clip value}`` of the rounded layer ``method`` builds."""
    layer = common.rnn_layer(cell, method, units)
    layer.build((None, None, input_dim))
    return {arg: getattr(layer.cell, arg).max_value
            for arg in ("kernel_constraint", "recurrent_constraint", "bias_constraint")}


def stage(key: str, settings: dict, clip: dict | None = None) -> dict:
    """Trains one stage unless ``out`` has it; saves its model to the scratch folder."""
    if key in out["stages"]:
        return out["stages"][key]
    s = {**settings}
    if clip:
        s["rnn_kwargs"] = {arg: keras_lowprec.constraints.Clip(v) for arg, v in clip.items()}
    result, model = common.train_ptb(s, common.default_data_dir(), SCRATCH / key, verbose=2)
    result["settings"].pop("rnn_kwargs", None)
    result["settings"]["float_clip"] = clip
    model.save(SCRATCH / f"{key}.keras")
    keys = ("validation_bpc", "test_bpc", "best_epoch", "epochs_run", "train_seconds", "settings", "history")
    out["stages"][key] = {k: result[k] for k in keys} | {"command": COMMAND}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1))
    print(key, "validation", round(result["validation_bpc"], 4), "test", round(result["test_bpc"], 4), flush=True)
    return out["stages"][key]


out = json.loads(OUT.read_text()) if OUT.exists() else {"stages": {}}
out["note"] = (f"stage 1: float {args.cell.upper()} clipped to the {args.method} range, {args.epochs} epochs at 2e-3; "
               f"stage 2: {args.method} (and with --control float) from it, {args.ft_epochs} epochs at {args.ft_lr}")
SCRATCH.mkdir(parents=True, exist_ok=True)
clip = clip_values(args.cell, args.method, args.units, 32)
stage("clipped_float", {**BASE, "method": "float", "epochs": args.epochs, "lr": 2e-3}, clip)
start = str(SCRATCH / "clipped_float.keras")
keras.utils.clear_session()
stage(args.method, {**BASE, "method": args.method, "epochs": args.ft_epochs, "lr": args.ft_lr, "init_from": start})
if args.control:
    keras.utils.clear_session()
    stage("float", {**BASE, "method": "float", "epochs": args.ft_epochs, "lr": args.ft_lr, "init_from": start})
