"""Probe: is the rounded range what limits the PTB GRU at the matrix's width?

A float GRU whose weights are clipped to the ternary range ``[-G, G]`` trails the float GRU
by about 0.10 validation BPC at every epoch, half of the ternary GRU's gap
(``ptb_clipped_ft.py``, results/findings.md item 14). The authors' code used wider levels
than the Glorot bound: pow2-ternary ``{-0.5, 0, 0.5}`` (``e = -1``; G is 0.11-0.14 here) and
binary ``+-1``. This probe trains the matrix's quick-budget GRU (256 units, embedding 32,
6 epochs at 2e-3, early stopping on validation, ``common.train_ptb``) with the levels
moved out. A variant is ``METHOD`` or ``METHOD+TOKEN+...``:

* ``x<K>`` (ternary, binary): level magnitude ``K`` times its default (ternary ``W0 = K*G``);
  float: every weight clipped to ``[-K*G, K*G]``;
* ``e<E>`` (pow2-ternary, e.g. ``e-1``): levels ``{-2^E, 0, 2^E}`` for every weight;
* ``bn``: batch normalization of the RNN's input, gamma starting at 0.1 (the authors' code).

Master weights are clipped to the largest level, as the quantized layers do by default.
Validation and test BPC are both recorded (decisions on validation only). Resumable:
finished variants are skipped, an interrupted one resumes from its last epoch.
Writes ``results/probes/ptb_range_<cell>_u<units>.json``.

    python examples/probes/ptb_range.py --variants ternary+x2 pow2_ternary+e-1 float+x1
"""
import json
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import common  # noqa: E402
import ptb_args  # noqa: E402
from keras_lowprec import constraints, quantizers  # noqa: E402

parser = ptb_args.parser("ptb_range")
parser.add_argument("--variants", nargs="+", required=True)
args = parser.parse_args()
name = ptb_args.run_name("ptb_range", args)
OUT = ptb_args.out_path(args, name)
SLOTS = {"kernel": "kernel", "recurrent_kernel": "recurrent", "bias": "bias"}


def glorot_bounds() -> dict:
    """``{weight name: G}`` of the recurrent layer (kernel, recurrent kernel, bias)."""
    layer = common.rnn_layer(args.cell, "ternary", args.units)
    layer.build((None, None, 32))
    return {w: layer.cell.glorot_bound_for(w) for w in SLOTS}


def rnn_kwargs(variant: str) -> tuple[str, dict, dict]:
    """``(method, layer arguments, JSON description)`` of one variant."""
    method, *tokens = variant.split("+")
    bounds, kwargs, described = glorot_bounds(), {}, {}
    for token in tokens:
        if re.fullmatch(r"x[0-9.]+", token) and method in ("ternary", "binary", "float"):
            k = float(token[1:])
            for w, slot in SLOTS.items():
                if method == "float":
                    kwargs[f"{slot}_constraint"] = constraints.Clip(k * bounds[w])
                else:
                    cls = quantizers.Ternary if method == "ternary" else quantizers.Binary
                    kwargs[f"{slot}_quantizer"] = cls(scale=k * cls.default_fraction_of_bound * bounds[w])
            described["range_factor"] = k
        elif re.fullmatch(r"e-?\d+", token) and method == "pow2_ternary":
            e = int(token[1:])
            for slot in SLOTS.values():
                kwargs[f"{slot}_quantizer"] = quantizers.Pow2Ternary(exponent=e)
            described["exponent"] = e
        elif token == "bn":
            described["input_bn"] = 0.1
        else:
            raise SystemExit(f"unknown token {token!r} in {variant!r}")
    return method, kwargs, described


out = json.loads(OUT.read_text()) if OUT.exists() else {"variants": {}}
out["glorot_bounds"] = glorot_bounds()
for variant in [v for v in args.variants if v not in out["variants"]]:
    method, kwargs, described = rnn_kwargs(variant)
    s = {"cell": args.cell, "method": method, "units": args.units, "embedding": 32, "epochs": args.epochs,
         "lr": 2e-3, "seed": args.seed, "patience": 2, "steps_per_epoch": args.steps_per_epoch,
         "max_eval_chars": args.max_eval_chars, "input_bn": described.get("input_bn", False), "rnn_kwargs": kwargs}
    result, _ = common.train_ptb(s, common.default_data_dir(), Path(args.scratch) / name / variant, verbose=2)
    result["settings"].pop("rnn_kwargs")
    result["settings"]["range"] = described
    keys = ("validation_bpc", "test_bpc", "best_epoch", "epochs_run", "train_seconds", "settings", "history",
            "weights")
    if OUT.exists():  # another process may have added variants meanwhile
        out["variants"] = {**json.loads(OUT.read_text())["variants"], **out["variants"]}
    out["variants"][variant] = {k: result[k] for k in keys} | {
        "command": "python examples/probes/ptb_range.py " + " ".join(sys.argv[1:])}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1))
    print(variant, "validation", round(result["validation_bpc"], 4), "test", round(result["test_bpc"], 4), flush=True)
