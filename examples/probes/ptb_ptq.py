"""Probe: what does each rounding cost a trained float PTB model, without any training?

Every rounded PTB GRU at 256 units trails float by 0.10-0.21 BPC, and every recipe tried
(results/findings.md, items 10-14) speeds up the first epochs without raising that ceiling.
This probe measures the rounding itself: the trained float model's recurrent layer is
rounded after training (post-training quantization, no fine-tuning), each weight with the
layer's own Glorot bound ``G`` as the quantized layers use it, and the validation BPC of
the rounded copy is compared with the float model's. A variant is ``METHOD[+TOKEN]``:

* ``ternary+x<K>``: levels ``{-K*G, 0, K*G}`` (``ternary`` is ``K = 1``);
* ``exponential+o<K>``: the default 7-level window moved up by ``K`` exponents;
* ``pow2_ternary+e<E>``: levels ``{-2^E, 0, 2^E}`` (``pow2_ternary``: ``E = round(log2 G)``).

Validation only (the first ``--valid-chars`` characters). Writes
``results/probes/ptb_ptq_<model file stem>.json``.

    python examples/probes/ptb_ptq.py --model FLOAT.keras --variants exponential exponential+o2 ternary+x2
"""
import argparse
import json
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import keras  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402
import ptb_args  # noqa: E402
from keras_lowprec import datasets, quantizers  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True, help="trained float PTB model (.keras) of examples/ptb_char.py")
parser.add_argument("--variants", nargs="+", required=True)
parser.add_argument("--valid-chars", type=int, default=100_000)
parser.add_argument("--out", default=None, help="JSON to write (default under results/probes)")
args = parser.parse_args()
OUT = Path(args.out or ptb_args.RESULTS / f"ptb_ptq_{Path(args.model).stem}.json")


VARIANT = re.compile(r"(ternary|exponential|pow2_ternary)(?:\+([xoe])(-?[0-9.]+))?")
TOKEN = {"ternary": "x", "exponential": "o", "pow2_ternary": "e"}


def rounding(variant: str):
    """``f(w, G)``: the deterministic rounding of ``METHOD[+TOKEN]`` (see the module docstring)."""
    match = VARIANT.fullmatch(variant)
    if not match or match.group(2) not in (None, TOKEN[match.group(1)]):
        raise SystemExit(f"variant {variant!r}: expected ternary[+x<K>], exponential[+o<K>] or pow2_ternary[+e<E>]")
    method, value = match.group(1), match.group(3)
    if method == "ternary":
        k = float(value or 1.0)
        return lambda w, g: quantizers.Ternary(scale=k * g)(w, training=False)
    if method == "exponential":
        q = quantizers.Exponential(exponent_offset=int(value or 0))
    else:
        q = quantizers.Pow2Ternary(exponent=None if value is None else int(value))
    return lambda w, g: q(w, training=False, glorot_bound=g)


def rounded_weights(cell, variant: str) -> list:
    """The cell's kernel, recurrent kernel and bias rounded by ``variant``, each with its
    Glorot bound as the quantized layers use it."""
    f = rounding(variant)
    units, input_dim = cell.units, cell.kernel.shape[0]
    g_in, g_rec = quantizers.glorot_bound(input_dim, units), quantizers.glorot_bound(units, units)
    return [keras.ops.convert_to_numpy(f(keras.ops.convert_to_numpy(w), g))
            for w, g in ((cell.kernel, g_in), (cell.recurrent_kernel, g_rec), (cell.bias, g_in))]


plan = {v: rounding(v) for v in args.variants}  # all checked before anything is loaded
data = datasets.ptb_chars(common.default_data_dir())
valid = data.valid[:args.valid_chars]
model = keras.saving.load_model(args.model, compile=False)
cell = model.get_layer("rnn").cell
float_weights = [keras.ops.convert_to_numpy(v) for v in (cell.kernel, cell.recurrent_kernel, cell.bias)]
out = json.loads(OUT.read_text()) if OUT.exists() else {"model": args.model, "valid_chars": len(valid),
                                                        "variants": {}}
if "float" not in out:
    out["float"] = common.ptb_bpc(model, valid, 100)
for variant in [v for v in plan if v not in out["variants"]]:
    rounded = rounded_weights(cell, variant)
    for variable, value in zip((cell.kernel, cell.recurrent_kernel, cell.bias), rounded):
        variable.assign(value)
    bpc = common.ptb_bpc(model, valid, 100)
    nonzero = float(np.mean([np.mean(r != 0) for r in rounded[:2]]))
    out["variants"][variant] = {"validation_bpc": bpc, "gap": bpc - out["float"], "nonzero_fraction": nonzero}
    for variable, value in zip((cell.kernel, cell.recurrent_kernel, cell.bias), float_weights):
        variable.assign(value)
    out["command"] = "python examples/probes/ptb_ptq.py " + " ".join(sys.argv[1:])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1))
    print(variant, round(bpc, 4), f"gap {bpc - out['float']:+.4f}", flush=True)
