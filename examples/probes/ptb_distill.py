"""Probe: does distillation from the float model close the PTB gap at the same width?

Rounding a 256-unit PTB GRU costs 0.21 test BPC (ternary) at the matrix's budget; half of
that is the rounded range and half the three levels (results/findings.md, item 14), and no
recipe tried so far (range, schedule, fine-tuning, input batch normalization) closes it.
Distillation (Hinton et al., 2015; for quantized students Mishra & Marr, 2018 and Polino
et al., 2018) gives the rounded student the float teacher's whole next-character
distribution instead of the one observed character:

    loss = (1 - alpha) * CE(y, p_student) + alpha * CE(p_teacher, p_student)

at temperature 1 (both models end in a softmax). The teacher is a trained float model of
the same data (``examples/ptb_char.py --method float ... --out TEACHER.keras``), frozen.
Validation loss, early stopping and best-epoch restore use the plain ``CE(y, p_student)``
as in ``common.train_ptb``; validation and test BPC are reported (decisions on validation
only). The student has the matrix's quick-budget settings (embedding 32, 6 epochs at 2e-3,
patience 2). Resumable: finished alphas are skipped, an interrupted one resumes from its
last epoch; ``--alphas 0`` is the plain rounded model of the same code path (the control).

Writes ``results/probes/ptb_distill_<cell>_<method>_u<units>[_s<seed>].json``.

    python examples/probes/ptb_distill.py --teacher /tmp/ptb_gru_float_s1.keras --seed 1 --alphas 0.5
"""
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import keras  # noqa: E402

import common  # noqa: E402
import ptb_args  # noqa: E402
from keras_lowprec import datasets  # noqa: E402

parser = ptb_args.parser("ptb_distill")
parser.add_argument("--teacher", required=True, help="trained float PTB model (.keras) of examples/ptb_char.py")
parser.add_argument("--alphas", type=float, nargs="+", default=[0.5], help="weights of the teacher's term")
parser.add_argument("--method", choices=("ternary", "pow2_ternary", "exponential", "binary", "float"),
                    default="ternary")
args = parser.parse_args()

name = ptb_args.run_name("ptb_distill", args, args.method)
OUT = ptb_args.out_path(args, name)
SCRATCH = Path(args.scratch) / name
COMMAND = "python examples/probes/ptb_distill.py " + " ".join(sys.argv[1:])


class Distiller(keras.Model):
    """Trains ``student`` on ``(1 - alpha) CE(y, p_s) + alpha CE(p_t, p_s)``, ``p_t`` the
    frozen ``teacher``'s output; evaluates (``training=False``) on ``CE(y, p_s)`` alone."""

    def __init__(self, student, teacher, alpha: float):
        super().__init__(name="distiller")
        self.student, self.teacher, self.alpha = student, teacher, float(alpha)
        self.teacher.trainable = False

    def call(self, x, training=False):
        return self.student(x, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        ops = keras.ops
        hard = ops.mean(keras.losses.sparse_categorical_crossentropy(y, y_pred))
        if not training or self.alpha == 0.0:
            return hard
        p_t = ops.stop_gradient(self.teacher(x, training=False))
        soft = ops.mean(-ops.sum(p_t * ops.log(ops.clip(y_pred, 1e-7, 1.0)), axis=-1))
        return (1.0 - self.alpha) * hard + self.alpha * soft


def settings() -> dict:
    return {**common.PTB_DEFAULTS, "cell": args.cell, "method": args.method, "units": args.units,
            "embedding": 32, "epochs": args.epochs, "seed": args.seed, "patience": 2,
            "steps_per_epoch": args.steps_per_epoch, "max_eval_chars": args.max_eval_chars}


def distill(alpha: float) -> dict:
    """One student trained with the teacher's term at weight ``alpha``."""
    s = settings()
    keras.utils.set_random_seed(int(s["seed"]))
    data = datasets.ptb_chars(common.default_data_dir())
    train_b = common.PTBWindows(data.train, s["seq_len"], s["batch_size"], shuffle=True, seed=s["seed"])
    steps = min(len(train_b), s["steps_per_epoch"] or len(train_b))
    student = common.ptb_model(data.vocab_size, s, steps)
    model = Distiller(student, keras.saving.load_model(args.teacher, compile=False), alpha)
    model.compile(optimizer=common.optimizer(student, s, steps))
    model(keras.ops.zeros((1, 2), "int32"))  # BackupAndRestore needs a built model
    val_b = common.PTBWindows(data.valid, s["seq_len"], 128, max_chars=s["max_eval_chars"])
    import tensorflow as tf
    specs = (tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None, None), tf.int32))
    t0 = time.time()
    state = common._fit(model, common.as_dataset(train_b, *specs), common.as_dataset(val_b, *specs), s,
                        SCRATCH / f"alpha{alpha:g}", "val_loss", "min", patience=s["patience"])
    cap = s["max_eval_chars"]
    history = [{**h, "val_bpc": h["val_loss"] / math.log(2)} for h in state["history"]]
    return {"alpha": alpha, "settings": s,
            "validation_bpc": common.ptb_bpc(student, data.valid[:cap], s["seq_len"]),
            "test_bpc": common.ptb_bpc(student, data.test[:cap], s["seq_len"]),
            "best_epoch": state["best_epoch"], "epochs_run": len(history), "train_seconds": state["seconds"],
            "wall_seconds": time.time() - t0, "history": history, "weights": common.weight_summary(student),
            "command": COMMAND}


def teacher_record() -> dict:
    """The teacher's path and, from the JSON ``ptb_char.py`` writes beside it, its scores."""
    record = {"path": args.teacher}
    meta = Path(args.teacher).with_suffix(".json")
    if meta.is_file():
        result = json.loads(meta.read_text())
        record.update({k: result[k] for k in ("validation_bpc", "test_bpc", "best_epoch")},
                      settings={k: result["settings"][k] for k in ("cell", "method", "units", "epochs", "seed")})
    return record


out = json.loads(OUT.read_text()) if OUT.exists() else {"runs": {}}
out["note"] = ("student trained on (1 - alpha) CE(y, p_s) + alpha CE(p_teacher, p_s) at temperature 1; "
               "validation loss and early stopping on CE(y, p_s); the matrix's quick-budget settings")
out["teacher"] = teacher_record()
for a in args.alphas:
    key = f"alpha{a:g}"
    if key in out["runs"]:
        continue
    keras.utils.clear_session()
    run = distill(a)
    if OUT.exists():  # another process may have added runs meanwhile
        out["runs"] = {**json.loads(OUT.read_text())["runs"], **out["runs"]}
    out["runs"][key] = run
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1))
    r = out["runs"][key]
    print(key, "validation", round(r["validation_bpc"], 4), "test", round(r["test_bpc"], 4), flush=True)
