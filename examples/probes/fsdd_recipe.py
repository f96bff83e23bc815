"""Probe, validation split only: which training recipe closes the gap between rounded and
float recurrent layers on the conventional FSDD split?

The quick budget's conventional-split model (96 units, 30 epochs, global normalization,
Gaussian noise 0.3, dropout 0.3, best validation epoch kept), trained with three seeds per
variant. Variants change one or two things: batch normalization of the recurrent layer's
input (``bn``: over batch and real frames, gamma starting at 0.1 as in the authors' code;
``bn1``: gamma starting at 1), a cosine learning-rate decay to 0 (``cos``), both;
BinaryConnect's per-layer rate scaling (``lrscale``: 1/G for every rounded weight) at the
default base rate or a lower one (``lrscale+lr5e-4``: rounded weights step about as far as
at 2e-3 without scaling, the float head 4x slower); a wider recurrent layer (``u128``,
``u192``: the rounded layer given more units than the 96-unit float baseline); fine-tuning
(``ft``: the float model of the same seed trained first, its weights copied into the rounded
model, which then trains its 30 epochs at 5e-4; the classifier stays float) and its two
controls: the same second stage started from the rounded model itself (``ftself``: is it the
float start or the second stage at a lower rate?) and 30 epochs at 5e-4 from scratch
(``lr5e-4``). Writes
validation accuracy per seed, mean and sd, and the command that ran them, to
``results/probes/fsdd_recipe_<cell>.json`` after every run; finished runs are skipped when
the probe is started again.

    python examples/probes/fsdd_recipe.py --cell lstm --variants float ternary ternary+bn ...
"""
import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import common  # noqa: E402

RECIPES = {"": {}, "bn": {"input_bn": 0.1}, "bn1": {"input_bn": 1.0}, "cos": {"lr_schedule": "cosine"},
           "bn+cos": {"input_bn": 0.1, "lr_schedule": "cosine"}, "bn1+cos": {"input_bn": 1.0, "lr_schedule": "cosine"},
           "sto": {"stochastic": True}, "long": {"epochs": 60}, "long+cos": {"epochs": 60, "lr_schedule": "cosine"},
           "lr5e-3": {"lr": 5e-3}, "lr5e-3+cos": {"lr": 5e-3, "lr_schedule": "cosine"},
           "lrscale": {"lr_scale": "glorot"}, "lrscale+lr5e-4": {"lr_scale": "glorot", "lr": 5e-4},
           "lrscale+lr2.5e-4": {"lr_scale": "glorot", "lr": 2.5e-4},
           "u128": {"units": 128}, "u192": {"units": 192}, "ft": {"finetune": "float", "lr": 5e-4},
           "ftself": {"finetune": "self", "lr": 5e-4}, "lr5e-4": {"lr": 5e-4}}
parser = argparse.ArgumentParser()
parser.add_argument("--cell", choices=common.CELLS, required=True)
parser.add_argument("--variants", nargs="+", required=True,
                    help="METHOD or METHOD+RECIPE, RECIPE one of " + ", ".join(r for r in RECIPES if r))
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
parser.add_argument("--test", action="store_true",
                    help="final runs of recipes already chosen on validation: also record test accuracy, "
                         "in results/fsdd_test_<cell>.json")
args = parser.parse_args()
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "results",
                   *(("fsdd_test_" + args.cell + ".json",) if args.test else ("probes", f"fsdd_recipe_{args.cell}.json")))
SETTINGS = dict(cell=args.cell, units=96, epochs=30, batch_size=32, lr=2e-3, normalize="global", noise=0.3,
                dropout=0.3)
out = json.load(open(OUT)) if os.path.exists(OUT) else {}
FIRST_STAGES = tempfile.TemporaryDirectory(prefix="fsdd_recipe_stage1_")  # removed at exit


def first_stage(method: str, seed: int) -> str:
    """Path of the default-recipe ``method`` model of ``seed`` (trained once per process)."""
    path = os.path.join(FIRST_STAGES.name, f"{method}_{seed}.keras")
    if not os.path.exists(path):
        with tempfile.TemporaryDirectory() as scratch:
            _, model = common.train_fsdd({**SETTINGS, "method": method, "seed": seed},
                                         common.default_data_dir(), scratch, verbose=0)
        model.save(path)
    return path


out.pop("command", None)
for variant in args.variants:
    method, _, recipe = variant.partition("+")
    if method not in common.METHODS or recipe not in RECIPES:
        raise SystemExit(f"unknown variant {variant!r}")
    entry = out.setdefault(variant, {"settings": {**SETTINGS, "method": method, **RECIPES[recipe]}, "seeds": {}})
    for seed in args.seeds:
        if str(seed) in entry["seeds"]:
            continue
        run = {**entry["settings"], "seed": seed}
        with tempfile.TemporaryDirectory() as scratch:
            start = run.pop("finetune", None)
            if start:
                run["init_from"] = first_stage("float" if start == "float" else method, seed)
            result, _ = common.train_fsdd(run, common.default_data_dir(), scratch + "/run", verbose=0)
        entry["seeds"][str(seed)] = {"validation_accuracy": result["validation_accuracy"],
                                     "best_epoch": result["best_epoch"]}
        if args.test:
            entry["seeds"][str(seed)]["test_accuracy"] = result["test_accuracy"]
        for split in ("validation", "test") if args.test else ("validation",):
            accs = [r[f"{split}_accuracy"] for r in entry["seeds"].values()]
            entry[f"{split}_mean"] = statistics.mean(accs)
            entry[f"{split}_sd"] = statistics.stdev(accs) if len(accs) > 1 else None
        entry["command"] = "python examples/probes/fsdd_recipe.py " + " ".join(sys.argv[1:])
        os.makedirs(os.path.dirname(OUT), exist_ok=True)
        with open(OUT, "w") as fh:
            json.dump(out, fh, indent=2, sort_keys=True)
        print(f"{variant} seed {seed}: validation {result['validation_accuracy']:.4f}", flush=True)
