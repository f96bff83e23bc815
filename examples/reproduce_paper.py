"""Reproduce Ott et al. (2016) with keras_lowprec: every rounding method on every RNN type.

Matrix: {float, binary, ternary, pow2_ternary, exponential} x {deterministic, stochastic}
x {SimpleRNN, GRU, LSTM} x {fsdd_conventional, fsdd_speaker (6 held-out speakers),
ptb (characters)}. Float has no stochastic variant.

    python examples/reproduce_paper.py --budget quick                      # everything
    python examples/reproduce_paper.py --budget quick --only fsdd_conventional gru
    python examples/reproduce_paper.py --tables-only                       # tables + figures

* Each run writes ``results/runs/<run id>.json`` when it finishes (settings, metrics,
  history, weight summary); finished runs are skipped, so the matrix resumes where it
  stopped. Inside a run, training resumes from the last finished epoch
  (``keras.callbacks.BackupAndRestore`` in ``--scratch``, outside ``results/``).
* ``--only`` keeps runs matching the given words: data sets (fsdd_conventional,
  fsdd_speaker, ptb), cells (simplernn, gru, lstm), methods (float, binary, ternary,
  pow2_ternary, exponential), rounding (deterministic, stochastic), folds (fold0..fold5),
  seeds (seed0..seed2). Words of the same kind are alternatives; different kinds must all
  match.
* Conventional FSDD runs three seeds per cell (``SEEDS``; the table shows mean ± sd).
  ``RECIPES`` holds the training recipe of a (data set, cell) where the probes found one
  that beats the budget's settings on validation (e.g. a cosine learning-rate decay for
  SimpleRNNs, fine-tuning from the float model for LSTMs); its tag is part of the run id
  and only runs of the current recipe enter the tables. A fine-tuning recipe trains the
  float model of each seed (or fold) once, kept in ``--scratch/float_stages``, and every
  method of that seed starts from it.
* Speaker-independent FSDD: the preprocessing (normalization, augmentation, dropout) is
  chosen first, with a float GRU, on the *validation* speaker of every fold (never the
  held-out test speaker), together with the epoch count (median best validation epoch
  of the chosen candidate). Every method is then trained on all five non-test speakers
  (training + validation speaker) for that many epochs and tested once on the held-out
  speaker.
* At the end ``results/paper_tables.md`` (test accuracy for FSDD, test BPC for PTB; one
  row per method, one column per cell type) and ``results/figures/*.png`` are written
  from all result files present; ``results/findings.md`` (the hand-written comparison
  with the paper) is copied in verbatim.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

DATASETS = ("fsdd_conventional", "fsdd_speaker", "ptb")
# the examples' data set behind each protocol (common.recipe and CANDIDATE_RECIPES are keyed by it)
DATA_OF = {"fsdd_conventional": "fsdd", "fsdd_speaker": "fsdd", "ptb": "ptb"}
CELL_ORDER = ("gru", "lstm", "simplernn")
ROUNDINGS = ("deterministic", "stochastic")
FOLDS = tuple(range(6))
# conventional FSDD: 300 test utterances and one seed cannot separate 1-point effects
SEEDS = {"fsdd_conventional": (0, 1, 2)}
# the examples' recipe (common.RECIPES, chosen on validation by the probes) where it differs
# from the budget's settings; the tag goes into the run id, so runs of an older recipe are
# never mixed into a table. Speaker-independent runs get it too, on top of the preprocessing
# and epoch count the protocol chose on its own validation speakers.
RECIPES = {(name, cell): common.recipe(data, cell)
           for name, data in DATA_OF.items()
           for cell in common.CELLS if common.recipe(data, cell)[0]}
RECIPE_TEXT = {
    "cos": "cosine learning-rate decay to 0 over the run",
    "cs": "learned float scale per gate unit on the rounded kernels (channel_scale=True; float runs are the "
          "budget's, float layers have no scales)",
    "cs-cos": "learned float scale per gate unit on the rounded kernels (channel_scale=True) and a cosine "
              "learning-rate decay to 0 over the run (float runs: the decay only)",
    "ft": "fine-tuning: the float model of the same seed (speaker split: fold) is trained first with the budget's "
          "settings, then every method, float included, trains from its weights for the budget's epochs again "
          "at the recipe's rate",
}
BUDGET_RANK = {"full": 3, "quick": 2, "smoke": 1}

BUDGETS = {
    "smoke": {
        "fsdd_conventional": dict(units=8, epochs=1, steps_per_epoch=2, max_train=64, max_eval=64, batch_size=16),
        "fsdd_speaker": dict(units=8, epochs=1, steps_per_epoch=2, max_train=64, max_eval=64, batch_size=16),
        "ptb": dict(units=8, embedding=8, seq_len=20, epochs=1, steps_per_epoch=2, batch_size=8,
                    max_eval_chars=1000),
    },
    "quick": {
        "fsdd_conventional": dict(units=96, epochs=30, batch_size=32, lr=2e-3, normalize="global", noise=0.3,
                                  dropout=0.3),
        "fsdd_speaker": dict(units=96, epochs=30, batch_size=32, lr=2e-3),
        "ptb": dict(units=256, embedding=32, seq_len=100, epochs=6, batch_size=64, lr=2e-3, patience=2),
    },
    "full": {
        "fsdd_conventional": dict(units=128, epochs=60, batch_size=32, lr=2e-3, normalize="global", noise=0.3,
                                  dropout=0.3),
        "fsdd_speaker": dict(units=128, epochs=60, batch_size=32, lr=2e-3),
        "ptb": dict(units=512, embedding=64, seq_len=100, epochs=40, batch_size=64, lr=2e-3, patience=3),
    },
}
# preprocessing candidates of the speaker-independent protocol (chosen on validation)
# (GaussianNoise 0.3 + dropout 0.3 with global normalization won on the conventional
# validation takes: 98.7% vs 97.3% plain global vs 93.7% per-utterance mean/variance)
SPEAKER_CANDIDATES = {
    "global-reg": dict(normalize="global", augment=False, noise=0.3, dropout=0.3),
    "global-aug": dict(normalize="global", augment=True, noise=0.3, dropout=0.3),
    "cmn-aug": dict(normalize="cmn", augment=True, noise=0.3, dropout=0.3),
    "utt-aug": dict(normalize="utterance", augment=True, noise=0.3, dropout=0.3),
    "cmn-specaug": dict(normalize="cmn", augment=True, specaugment=True, noise=0.3, dropout=0.3),
    # 13 MFCCs keep the spectral envelope and drop the pitch harmonics that 40 log-mel bins
    # still resolve: the classic speaker-robust front end (time-stretch augmentation only)
    "mfcc-cmvn-aug": dict(features="mfcc", normalize="utterance", augment=True, noise=0.3, dropout=0.3),
    # per-speaker mean/variance normalization (the held-out speaker's own, label-free statistics)
    "spk-aug": dict(normalize="speaker", augment=True, noise=0.3, dropout=0.3),
}
SMOKE_CANDIDATES = ("global-reg",)


# ---------------------------------------------------------------------------------------
# the matrix
# ---------------------------------------------------------------------------------------
def rounding_name(stochastic: bool) -> str:
    return "stochastic" if stochastic else "deterministic"


def run_id(spec: dict) -> str:
    parts = [spec["dataset"]]
    if spec["dataset"] == "fsdd_speaker":
        parts.append(f"fold{spec['fold']}")
    parts += [spec["cell"], spec["method"], "sto" if spec["stochastic"] else "det", spec["budget"]]
    if spec.get("recipe"):
        parts.append(spec["recipe"])
    if spec.get("seed"):  # seed 0 keeps the run ids of the single-seed matrix
        parts.append(f"seed{spec['seed']}")
    if spec.get("prep"):
        parts.append(spec["prep"])
    if spec.get("epochs"):  # final speaker-independent run: all 5 non-test speakers, fixed epochs
        parts.append(f"all5x{spec['epochs']}")
    return "_".join(parts)


# Recipe settings only rounded layers have (float layers have no scales).
ROUNDED_ONLY = ("channel_scale",)


def recipe_for(dataset: str, cell: str, method: str | None = None) -> tuple[str | None, dict]:
    """``(tag, settings)`` of the (data set, cell) recipe as it applies to ``method``: float
    runs drop the settings only rounded layers have, and a recipe left with none is no recipe,
    so its float run is the budget's float run. ``method=None``: the recipe as given."""
    tag, settings = RECIPES.get((dataset, cell), (None, {}))
    if method == "float":
        settings = {k: v for k, v in settings.items() if k not in ROUNDED_ONLY}
    return (tag, settings) if settings else (None, {})


def recipe_tag(dataset: str, cell: str, method: str | None = None) -> str | None:
    return recipe_for(dataset, cell, method)[0]


def method_specs(dataset: str, cell: str, budget: str, prep=None, folds=FOLDS, seeds=None):
    """Seed by seed: deterministic rounding of every method first, then the stochastic
    variants; binary (the method expected to fail) after the others."""
    for seed in seeds if seeds is not None else SEEDS.get(dataset, (0,)):
        for stochastic in (False, True):
            for method in ("float", "ternary", "pow2_ternary", "exponential", "binary"):
                if method == "float" and stochastic:
                    continue
                for fold in (folds if dataset == "fsdd_speaker" else (None,)):
                    spec = {"dataset": dataset, "cell": cell, "method": method, "stochastic": stochastic,
                            "budget": budget, "seed": seed}
                    if fold is not None:
                        spec["fold"] = fold
                    if prep:
                        spec["prep"] = prep
                    if recipe_tag(dataset, cell, method):
                        spec["recipe"] = recipe_tag(dataset, cell, method)
                    yield spec


def matches(spec: dict, only: list) -> bool:
    if not only:
        return True
    kinds = {
        "dataset": (DATASETS, spec["dataset"]),
        "cell": (common.CELLS, spec["cell"]),
        "method": (common.METHODS, spec["method"]),
        "rounding": (ROUNDINGS, rounding_name(spec["stochastic"])),
        "fold": (tuple(f"fold{k}" for k in FOLDS), f"fold{spec.get('fold')}"),
        "seed": (SEED_WORDS, f"seed{spec.get('seed', 0)}"),
    }
    for vocab, value in kinds.values():
        wanted = [w for w in only if w in vocab]
        if wanted and value not in wanted:
            return False
    return True


SEED_WORDS = tuple(f"seed{k}" for k in sorted({k for seeds in SEEDS.values() for k in seeds}))


def check_only(only: list):
    known = (set(DATASETS) | set(common.CELLS) | set(common.METHODS) | set(ROUNDINGS) | {f"fold{k}" for k in FOLDS}
             | set(SEED_WORDS))
    bad = [w for w in only if w not in known]
    if bad:
        raise SystemExit(f"--only: unknown word(s) {bad}; known: {sorted(known)}")


def settings_for(spec: dict) -> dict:
    budget = BUDGETS[spec["budget"]][spec["dataset"]]
    s = {"cell": spec["cell"], "method": spec["method"], "stochastic": spec["stochastic"], **budget,
         "seed": spec.get("seed", 0)}
    if spec.get("recipe"):
        s.update(recipe_for(spec["dataset"], spec["cell"], spec["method"])[1])
    if spec["dataset"] == "fsdd_conventional":
        s.update(split="conventional")
    elif spec["dataset"] == "fsdd_speaker":
        s.update(split="speaker", fold=spec["fold"], **SPEAKER_CANDIDATES[spec["prep"]])
        if spec.get("epochs"):
            s.update(epochs=spec["epochs"], train_on_validation=True)
    return s


# ---------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------
class Runner:
    def __init__(self, args):
        self.args = args
        self.results = Path(args.results)
        self.runs_dir = self.results / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(args.scratch)
        self.command = "python examples/reproduce_paper.py " + " ".join(shlex.quote(a) for a in args.argv)

    def result_path(self, spec) -> Path:
        return self.runs_dir / f"{run_id(spec)}.json"

    def load(self, spec):
        path = self.result_path(spec)
        return json.loads(path.read_text()) if path.is_file() else None

    def run(self, spec) -> dict | None:
        path = self.result_path(spec)
        if path.is_file():
            print(f"[skip] {path.name} (finished)", flush=True)
            return json.loads(path.read_text())
        import keras

        keras.backend.clear_session()
        rid = run_id(spec)
        print(f"[run ] {rid}", flush=True)
        settings = settings_for(spec)
        scratch = self.scratch / rid
        train = common.train_ptb if spec["dataset"] == "ptb" else common.train_fsdd
        t0 = time.time()
        try:
            first_stage = self.float_stage(spec, settings, train)
            result, _ = train(settings, self.args.data_dir, scratch, verbose=self.args.verbose)
        except Exception:
            traceback.print_exc()
            print(f"[fail] {rid}", flush=True)
            return None
        if first_stage:  # the stage's run id, not the scratch path the model was read from
            result["first_stage"] = first_stage
            result["settings"]["init_from"] = first_stage["run"]
        result.update({"run_id": rid, "spec": spec, "command": self.command,
                       "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "total_seconds": time.time() - t0})
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, path)
        shutil.rmtree(scratch, ignore_errors=True)
        val = result.get("validation_accuracy")
        metric = (f"test acc {result['test_accuracy']:.4f} (val {'—' if val is None else f'{val:.4f}'})"
                  if result["metric"] == "accuracy" else
                  f"test BPC {result['test_bpc']:.4f} (val {result['validation_bpc']:.4f})")
        print(f"[done] {rid}: {metric}, {result['total_seconds']:.0f} s", flush=True)
        if self.args.tables_every_run:
            try:  # keep the tables current while a long matrix runs
                write_tables(self.results, self.command)
            except Exception:
                traceback.print_exc()
        return result

    def float_stage(self, spec: dict, settings: dict, train) -> dict | None:
        """Fine-tuning recipes (``finetune_lr``): every method of a seed (and fold) starts from
        one float model of the budget's settings, trained once and kept in ``--scratch``;
        sets ``settings["init_from"]`` to it and returns its metrics (``None`` otherwise)."""
        if not settings.get("finetune_lr"):
            return None
        stage = run_id({**spec, "method": "float", "stochastic": False}) + "_stage1"
        path = self.scratch / "float_stages" / f"{stage}.keras"
        if not common.float_stage_ready(settings, path):
            print(f"[run ] {stage} (float model the {spec['recipe']} recipe starts from)", flush=True)
        metrics = common.train_float_stage(train, settings, path, self.args.data_dir, self.scratch / stage,
                                           verbose=self.args.verbose)
        shutil.rmtree(self.scratch / stage, ignore_errors=True)
        settings["init_from"] = str(path)
        return {"run": stage, **metrics}

    def select_speaker_prep(self, budget: str) -> tuple | None:
        """Float GRU on every fold with each candidate; the best mean *validation* accuracy
        wins. Returns (candidate, epochs): epochs is the median best validation epoch of the
        winner over the folds, the fixed length of the final runs on all five speakers.
        A recorded selection is reused while the candidate list is unchanged."""
        path = self.runs_dir / f"fsdd_speaker_selection_{budget}.json"
        names = SMOKE_CANDIDATES if budget == "smoke" else tuple(SPEAKER_CANDIDATES)
        if path.is_file():
            recorded = json.loads(path.read_text())
            if set(recorded["candidates"]) == set(names) and "epochs" in recorded:
                return recorded["chosen"], recorded["epochs"]
        folds = self.folds
        table, best_epochs = {}, {}
        for name in names:
            vals = []
            for fold in folds:
                res = self.run({"dataset": "fsdd_speaker", "cell": "gru", "method": "float", "stochastic": False,
                                "budget": budget, "fold": fold, "prep": name})
                if res is None:
                    return None
                vals.append(res["validation_accuracy"])
                best_epochs.setdefault(name, []).append(res["best_epoch"])
            table[name] = {"settings": SPEAKER_CANDIDATES[name], "validation_accuracy_per_fold": vals,
                           "mean_validation_accuracy": sum(vals) / len(vals),
                           "best_epoch_per_fold": best_epochs[name]}
        chosen = max(table, key=lambda k: table[k]["mean_validation_accuracy"])
        epochs = int(statistics.median_low(best_epochs[chosen]))
        if set(folds) == set(FOLDS):  # only a complete selection is recorded for good
            path.write_text(json.dumps({"chosen": chosen, "epochs": epochs,
                                        "criterion": "mean validation accuracy of a float GRU over the folds "
                                        "(validation speaker, never the test speaker); epochs: median best "
                                        "validation epoch of the winner",
                                        "folds": list(folds), "candidates": table, "command": self.command},
                                       indent=1))
        print(f"[prep] fsdd_speaker preprocessing chosen on validation: {chosen}, {epochs} epochs", flush=True)
        return chosen, epochs

    @property
    def folds(self):
        wanted = [int(w[4:]) for w in self.args.only if w.startswith("fold")]
        return tuple(wanted) if wanted else FOLDS

    def all_specs(self):
        budget = self.args.budget
        order = [("fsdd_conventional", "gru"), ("fsdd_speaker", "gru"), ("fsdd_conventional", "lstm"),
                 ("fsdd_conventional", "simplernn"), ("fsdd_speaker", "lstm"), ("fsdd_speaker", "simplernn"),
                 ("ptb", "gru"), ("ptb", "lstm"), ("ptb", "simplernn")]
        for dataset, cell in order:
            yield dataset, cell, budget

    def main(self):
        only = self.args.only
        prep = None
        for dataset, cell, budget in self.all_specs():
            specs = [s for s in method_specs(dataset, cell, budget, folds=self.folds) if matches(s, only)]
            if not specs:
                continue
            if dataset == "fsdd_speaker":
                if prep is None:
                    prep = self.select_speaker_prep(budget)
                    if prep is None:
                        print("[fail] preprocessing selection failed; skipping fsdd_speaker", flush=True)
                        continue
                for s in specs:
                    s["prep"], s["epochs"] = prep
            for spec in specs:
                self.run(spec)


# ---------------------------------------------------------------------------------------
# tables and figures
# ---------------------------------------------------------------------------------------
METHOD_LABEL = {"float": "float", "binary": "binary", "ternary": "ternary", "pow2_ternary": "pow2-ternary",
                "exponential": "exponential"}
CELL_LABEL = {"simplernn": "SimpleRNN", "gru": "GRU", "lstm": "LSTM"}
TABLE_CELLS = ("simplernn", "gru", "lstm")


def collect(runs_dir: Path) -> list:
    out = []
    for path in sorted(runs_dir.glob("*.json")):
        data = json.loads(path.read_text())
        if "spec" in data:
            out.append(data)
    return out


def best_budget_runs(results: list, dataset: str, selection: dict) -> dict:
    """{(cell, method, stochastic): [results]} with the highest budget available per key."""
    groups = {}
    for r in results:
        sp = r["spec"]
        if sp["dataset"] != dataset:
            continue
        if dataset == "fsdd_speaker":
            chosen = selection.get(sp["budget"])
            if chosen is None or (sp.get("prep"), sp.get("epochs")) != chosen:
                continue
        if sp.get("recipe") != recipe_tag(dataset, sp["cell"], sp["method"]):
            continue  # a superseded recipe
        groups.setdefault((sp["cell"], sp["method"], sp["stochastic"]), {}).setdefault(sp["budget"], []).append(r)
    return {k: v[max(v, key=BUDGET_RANK.get)] for k, v in groups.items()}


def _stats(values):
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def cell_text(runs, dataset):
    if not runs:
        return "—"
    if dataset == "ptb":
        return f"{runs[0]['test_bpc']:.3f}"
    accs = [100 * r["test_accuracy"] for r in runs]
    m, sd = _stats(accs)
    full = len(SEEDS["fsdd_conventional"]) if dataset == "fsdd_conventional" else len(FOLDS)
    tail = "" if len(accs) == full else f" (n={len(accs)})"
    return f"{m:.1f} ± {sd:.1f}{tail}"


def metric_value(runs, dataset, which="test"):
    """Test (or validation) metric of a table cell: BPC for PTB, accuracy in % for FSDD
    (mean over the six folds for the speaker split, None while folds are missing; mean over
    the seeds present for the conventional split)."""
    if not runs:
        return None
    if dataset == "ptb":
        return runs[0][f"{which}_bpc"]
    if dataset == "fsdd_speaker" and len(runs) < len(FOLDS):
        return None  # a mean over fewer folds is not compared
    key = "test_accuracy" if which == "test" else "validation_accuracy"
    if any(r.get(key) is None for r in runs):
        return None  # final speaker-independent runs train on the validation speaker too
    return 100 * sum(r[key] for r in runs) / len(runs)


ROWS = [(m, st) for m in common.METHODS for st in ((False,) if m == "float" else (False, True))]
TITLES = {
    "fsdd_conventional": "Spoken digits (FSDD), conventional split — test accuracy (%), mean ± sd over three seeds",
    "fsdd_speaker": "Spoken digits (FSDD), speaker-independent (leave one speaker out) — test accuracy (%), "
                    "mean ± std over the six held-out speakers",
    "ptb": "Penn Treebank characters — test bits per character (lower is better)",
}
TARGETS = {"fsdd_conventional": ("points", 1.0), "fsdd_speaker": ("points", 2.0), "ptb": ("BPC", 0.05)}


def write_tables(results_dir: Path, command: str):
    runs_dir = results_dir / "runs"
    results = collect(runs_dir)
    selection = {}
    for path in runs_dir.glob("fsdd_speaker_selection_*.json"):
        selection[path.stem.rsplit("_", 1)[1]] = json.loads(path.read_text())
    chosen = {b: (s["chosen"], s.get("epochs")) for b, s in selection.items()}
    # only the runs a table shows: not superseded or candidate recipes, other budgets or preprocessing
    shown = [r for dataset in DATASETS for runs in best_budget_runs(results, dataset, chosen).values() for r in runs]
    lines = [
        "# Reproduction of Ott et al. (2016) with keras_lowprec",
        "",
        "Runs produced by: " + (", ".join(f"`{c}`" for c in sorted({r.get("command", "?") for r in shown}))
                                or "(no runs yet)")
        + f"; tables written by `{command}`. Each run's settings are in `results/runs/<run id>.json`.",
        f"Generated at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from {len(shown)} finished runs "
        f"({len(results) - len(shown)} more in `results/runs/` belong to other recipes, budgets or preprocessing).",
        "Test numbers are evaluated once, on the weights of the best validation epoch (speaker-independent FSDD: "
        "after the fixed number of epochs chosen on the validation speakers, trained on all five non-test "
        "speakers); every choice (epoch, preprocessing) was made on the validation split. Quantized models are evaluated with deterministic "
        "rounding (also when trained stochastically). Budgets: "
        + "; ".join(f"`{b}`" for b in BUDGETS) + " (settings in each result file). '—' = not run (yet).",
        "",
    ]
    findings = []
    for dataset in DATASETS:
        table = best_budget_runs(results, dataset, chosen)
        lines += [f"## {TITLES[dataset]}", ""]
        budgets = sorted({r["spec"]["budget"] for rs in table.values() for r in rs})
        if budgets:
            lines.append(f"Budget(s) shown: {', '.join(budgets)}.")
        conv_sel = sorted(runs_dir.glob("fsdd_conventional_selection_*.json"))
        if dataset == "fsdd_conventional" and conv_sel:
            for path in conv_sel:
                sel = json.loads(path.read_text())
                cands = ", ".join(f"`{k}` {100 * v['validation_accuracy']:.1f}%" for k, v in sel["candidates"].items())
                lines.append(f"Preprocessing ({path.stem.rsplit('_', 1)[1]}) chosen with a float GRU on the validation "
                             f"takes 5–9: **{sel['chosen']}** (validation accuracy: {cands}).")
        if dataset == "fsdd_speaker" and selection:
            for b, sel in sorted(selection.items()):
                cands = ", ".join(f"`{k}` {100 * v['mean_validation_accuracy']:.1f}%"
                                  for k, v in sel["candidates"].items())
                lines.append(f"Preprocessing ({b}) chosen on the validation speakers with a float GRU: "
                             f"**{sel['chosen']}** = {sel['candidates'][sel['chosen']]['settings']} "
                             f"(mean validation accuracy: {cands}); each table cell then trains on all five "
                             f"non-test speakers for {sel.get('epochs', '?')} epochs (median best validation "
                             f"epoch of the winner) and tests once on the held-out speaker.")
        recipes = sorted({(c, recipe_tag(dataset, c)) for c in TABLE_CELLS if recipe_tag(dataset, c)})
        if recipes:
            lines.append("Recipes (chosen on validation; `common.RECIPES`): " + "; ".join(
                f"{CELL_LABEL[c]} `{tag}` = {RECIPE_TEXT.get(tag, tag)} {RECIPES[(dataset, c)][1]}"
                for c, tag in recipes) + ".")
        lines += ["", "| method | rounding | " + " | ".join(CELL_LABEL[c] for c in TABLE_CELLS) + " |",
                  "|---|---|" + "---|" * len(TABLE_CELLS)]
        for method, stochastic in ROWS:
            cells = [cell_text(table.get((c, method, stochastic), []), dataset) for c in TABLE_CELLS]
            lines.append(f"| {METHOD_LABEL[method]} | {'—' if method == 'float' else rounding_name(stochastic)} | "
                         + " | ".join(cells) + " |")
        lines.append("")
        unit, tol = TARGETS[dataset]
        for cell in TABLE_CELLS:
            base = metric_value(table.get((cell, "float", False)), dataset)
            if base is None:
                continue
            parts = []
            for method in common.METHODS[1:]:
                # deterministic or stochastic: the better on *validation*, then its test number
                vals = [(st, metric_value(table.get((cell, method, st)), dataset, "validation"),
                         metric_value(table.get((cell, method, st)), dataset)) for st in (False, True)]
                vals = [t for t in vals if t[2] is not None]
                if not vals:
                    continue
                if any(t[1] is None for t in vals):  # no validation left: deterministic, fixed beforehand
                    st, _, v = next((t for t in vals if not t[0]), vals[0])
                else:
                    st, _, v = (min if dataset == "ptb" else max)(vals, key=lambda t: t[1])
                diff = v - base
                if dataset == "ptb":
                    ok, text = diff <= tol + 1e-9, f"{diff:+.3f} BPC"
                else:
                    ok, text = diff >= -tol - 1e-9, f"{diff:+.1f} points"
                parts.append(f"{METHOD_LABEL[method]} {text} ({rounding_name(st)})"
                             + ("" if method == "binary" else (" ✓" if ok else " ✗")))
            if parts:
                findings.append(f"- {TITLES[dataset].split(' — ')[0]}, {CELL_LABEL[cell]}: float "
                                + (f"{base:.3f} BPC" if dataset == "ptb" else f"{base:.1f}%")
                                + "; each method (rounding picked on validation"
                                + ("; none left here: deterministic" if dataset == "fsdd_speaker" else "")
                                + ") vs float, test: " + "; ".join(parts)
                                + f" (✓ = within the target of {tol} {unit} of float or better).")
    lines += ["## Findings: measured differences to float (generated from the tables)", "",
              "The paper's statements: binarized RNNs do not train well; ternary, pow2-ternary and exponential "
              "weights match or beat full precision (TIDIGITS GRUs beat the baseline; on PTB characters the best "
              "low-precision model beats its float baseline by 0.133 BPC in a slightly overfitting setting where "
              "stochastic rounding regularizes). FSDD stands in for TIDIGITS. Targets of this project: within "
              "1 point (FSDD conventional), 2 points (FSDD speaker-independent), 0.05 BPC (PTB) of float.", ""]
    lines += findings or ["- no method has both a float baseline and a quantized result yet."]
    notes = results_dir / "findings.md"  # the hand-written reading of the tables, kept verbatim
    if notes.is_file():
        lines += ["", notes.read_text().strip()]
    lines += ["", "Figures: `figures/val_curves_<dataset>.png` (validation curves per method; speaker-independent "
              "FSDD: training curves, its final runs have no validation data), "
              "`figures/weights_<dataset>.png` (master weights vs their rounded values, input kernel of the "
              "recurrent layer, one trained GRU per method).", ""]
    (results_dir / "paper_tables.md").write_text("\n".join(lines))
    write_figures(results_dir, results, chosen)


def write_figures(results_dir: Path, results: list, chosen: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir = results_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for dataset in DATASETS:
        table = best_budget_runs(results, dataset, chosen)
        if not table:
            continue
        key = "val_bpc" if dataset == "ptb" else "val_accuracy"
        curve = "validation"
        if not any(key in h for runs in table.values() for r in runs for h in r["history"]):
            key, curve = "accuracy", "training"  # final speaker-independent runs: no validation data
        fig, axes = plt.subplots(1, len(common.METHODS), figsize=(4 * len(common.METHODS), 3.4), sharey=True)
        for ax, method in zip(axes, common.METHODS):
            for (cell, m, st), runs in sorted(table.items()):
                if m != method:
                    continue
                curves = [[h.get(key, math.nan) for h in r["history"]] for r in runs]
                n = min(len(c) for c in curves)
                if n == 0:
                    continue
                mean = [sum(c[i] for c in curves) / len(curves) for i in range(n)]
                ax.plot(range(1, n + 1), mean, ("--" if st else "-"),
                        label=f"{CELL_LABEL[cell]} {'sto' if st else 'det'}")
            ax.set_title(METHOD_LABEL[method])
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7)
        axes[0].set_ylabel(f"{curve} BPC" if dataset == "ptb" else f"{curve} accuracy"
                           + (" (mean over folds)" if dataset == "fsdd_speaker" else ""))
        fig.suptitle(TITLES[dataset].split(" — ")[0] + f": {curve} curves"
                     + (" (trained on all five non-test speakers: no validation data)" if curve == "training" else ""))
        fig.tight_layout()
        fig.savefig(fig_dir / f"val_curves_{dataset}.png", dpi=90)
        plt.close(fig)

        fig, axes = plt.subplots(1, len(common.METHODS), figsize=(4 * len(common.METHODS), 3.2))
        for ax, method in zip(axes, common.METHODS):
            pick = None
            for cell in ("gru", "lstm", "simplernn"):
                for st in (False, True):
                    runs = table.get((cell, method, st))
                    if runs:
                        pick = runs[0]
                        break
                if pick:
                    break
            if pick is None:
                ax.set_visible(False)
                continue
            w = pick["weights"]
            h = w["master_hist"]
            edges = h["edges"]
            ax.stairs(h["counts"], edges, fill=True, alpha=0.5, label="master (float)")
            if "rounded_values" in w and method != "float":
                ax2 = ax.twinx()
                rv = w["rounded_values"]
                ax2.vlines(rv["values"], 0, rv["counts"], colors="C3", lw=2.5, label="rounded (inference)")
                ax2.plot(rv["values"], rv["counts"], "o", color="C3", ms=4)
                ax2.set_ylabel("rounded count", color="C3", fontsize=8)
            sp = pick["spec"]
            ax.set_title(f"{METHOD_LABEL[method]}: {CELL_LABEL[sp['cell']]} {rounding_name(sp['stochastic'])[:3]}",
                         fontsize=9)
            ax.set_xlabel(f"{w['weight']} {tuple(w['shape'])}", fontsize=8)
        fig.suptitle(TITLES[dataset].split(" — ")[0] + ": master vs rounded weights (recurrent layer input kernel)")
        fig.tight_layout()
        fig.savefig(fig_dir / f"weights_{dataset}.png", dpi=90)
        plt.close(fig)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=tuple(BUDGETS), default="quick")
    parser.add_argument("--only", nargs="*", default=[], help="filter words (see above)")
    parser.add_argument("--data-dir", default=common.default_data_dir())
    parser.add_argument("--results", default=str(Path(__file__).resolve().parents[1] / "results"))
    parser.add_argument("--scratch", default=os.path.expanduser("~/.keras/keras_lowprec/scratch"),
                        help="BackupAndRestore folder (outside results/)")
    parser.add_argument("--tables-only", action="store_true", help="only (re)write tables and figures")
    parser.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity")
    parser.add_argument("--no-tables-every-run", dest="tables_every_run", action="store_false",
                        help="write tables and figures only at the end (default: also after every run)")
    parser.add_argument("--candidate-recipes", action="store_true",
                        help="run the matrix with common.CANDIDATE_RECIPES in place of the recipes of their "
                             "(data set, cell); the runs get the candidate's tag, the tables (not written) keep "
                             "showing the current recipes until the candidates replace them (none pending: "
                             "the current recipes, tables not written)")
    args = parser.parse_args(argv)
    args.argv = argv
    check_only(args.only)
    if args.candidate_recipes:
        if args.tables_only:
            raise SystemExit("--candidate-recipes runs the matrix; it does not go with --tables-only")
        RECIPES.update({(name, cell): common.CANDIDATE_RECIPES[(data, cell)]
                        for name, data in DATA_OF.items()
                        for cell in common.CELLS if (data, cell) in common.CANDIDATE_RECIPES})
        if not common.CANDIDATE_RECIPES:
            print("[note] no candidate recipes pending (common.CANDIDATE_RECIPES is empty): "
                  "the runs use the current recipes", flush=True)
        args.tables_every_run = False
    runner = Runner(args)
    if not args.tables_only:
        runner.main()
    if args.candidate_recipes:
        return
    write_tables(Path(args.results), runner.command)
    print(f"wrote {Path(args.results) / 'paper_tables.md'}", flush=True)


if __name__ == "__main__":
    main()
