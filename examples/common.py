"""Model building and training shared by the examples and the paper-matrix runner.

Uses only the public API of ``keras_lowprec`` (``keras_lowprec.layers`` presets and
``keras_lowprec.datasets``). One function per data set trains one configuration and
returns ``(result, model)``; ``result`` is a JSON-ready dict with the settings, the
metrics, the per-epoch history and a weight summary of the recurrent layer.

Protocol: every choice (best epoch, preprocessing) is made on the validation split;
the test split is evaluated once, at the end, on the weights of the best validation
epoch. Quantized layers evaluate with deterministic rounding (also when trained with
stochastic rounding).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_lowprec  # noqa: E402
from keras_lowprec import datasets  # noqa: E402

METHODS = ("float", "binary", "ternary", "pow2_ternary", "exponential")
CELLS = ("simplernn", "gru", "lstm")
_METHOD_PREFIX = {"binary": "Binary", "ternary": "Ternary", "pow2_ternary": "Pow2Ternary", "exponential": "Exponential"}
_CELL_NAME = {"simplernn": "SimpleRNN", "gru": "GRU", "lstm": "LSTM"}
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# defaults of one training run; the examples and the runner override them
FSDD_DEFAULTS = dict(
    dataset="fsdd", split="conventional", fold=0, cell="gru", method="float", stochastic=False,
    units=96, epochs=30, batch_size=32, lr=2e-3, seed=0, features="logmel", normalize="global",
    augment=False, specaugment=False, noise=0.0, dropout=0.0, steps_per_epoch=None, max_train=None,
    max_eval=None, train_on_validation=False, input_bn=False, lr_schedule="constant", lr_scale=None,
    init_from=None, finetune_lr=None, channel_scale=False,
)
PTB_DEFAULTS = dict(
    dataset="ptb", cell="gru", method="float", stochastic=False, units=256, embedding=32,
    epochs=5, batch_size=64, lr=2e-3, seed=0, seq_len=100, dropout=0.0, steps_per_epoch=None,
    max_eval_chars=None, patience=2, init="keras", input_bn=False, lr_schedule="constant", lr_scale=None,
    init_from=None, finetune_lr=None, channel_scale=False,
)
INITS = ("keras", "uniform-g")
# The training recipe per (data set, cell) where the probes found, on validation data, one
# that beats the defaults above (results/findings.md, items 7-15): a short tag and the
# settings it changes. The examples use it unless told otherwise. Float layers have no
# channel scales: float runs of a recipe take the rest of it.
RECIPES = {
    ("fsdd", "simplernn"): ("cos", {"lr_schedule": "cosine"}),
    # fine-tuning: the float LSTM of the same settings first, then this run from it at 5e-4
    ("fsdd", "lstm"): ("ft", {"finetune_lr": 5e-4}),
    # learned per-unit scales on the rounded kernels; for GRUs with a cosine decay of the rate
    # (on validation the decay costs the float LSTM 0.09 BPC and the exponential LSTM 0.009)
    ("ptb", "gru"): ("cs-cos", {"channel_scale": True, "lr_schedule": "cosine"}),
    ("ptb", "lstm"): ("cs", {"channel_scale": True}),
}


# Recipes that won their probes and are rerun over the whole matrix
# (``reproduce_paper.py --candidate-recipes``) before they replace the entries above.
CANDIDATE_RECIPES: dict = {}


def recipe(dataset: str, cell: str) -> tuple[str | None, dict]:
    """``(tag, settings)`` of the recommended recipe, ``(None, {})`` where the defaults are it."""
    return RECIPES.get((dataset, cell), (None, {}))


def default_data_dir() -> str | None:
    """``../shared/data`` of the repository when present, else ``None`` (env var / download)."""
    if os.environ.get(datasets.ENV_DATA):
        return None
    return str(DEFAULT_DATA_DIR) if DEFAULT_DATA_DIR.is_dir() else None


# ---------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------
def rnn_layer(cell: str, method: str, units: int, stochastic: bool = False, init: str = "keras",
              input_dim: int | None = None, channel_scale: bool = False, **kwargs):
    """A recurrent layer: the plain Keras one for ``float``, else the preset of the method
    (with a learned scale per gate unit when ``channel_scale``; float layers have none).

    ``init="uniform-g"``: kernel and recurrent kernel drawn from U(-G, G) with each gate's
    Glorot bound ``G = sqrt(6 / (fan_in + units))`` (``input_dim`` is the kernel's fan-in),
    the range the paper's code initialized in; ``"keras"``: Keras's defaults.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "uniform-g":
        if input_dim is None:
            raise ValueError("init='uniform-g' needs input_dim")
        g_in, g_rec = math.sqrt(6 / (input_dim + units)), math.sqrt(6 / (2 * units))
        seed = kwargs.get("seed", 0)
        kwargs.update(kernel_initializer=keras.initializers.RandomUniform(-g_in, g_in, seed=seed),
                      recurrent_initializer=keras.initializers.RandomUniform(-g_rec, g_rec, seed=seed + 1))
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "float":
        if stochastic:
            raise ValueError("float has no stochastic rounding")
        return getattr(keras.layers, _CELL_NAME[cell])(units, **kwargs)
    cls = getattr(keras_lowprec.layers, _METHOD_PREFIX[method] + _CELL_NAME[cell])
    return cls(units, stochastic=stochastic, channel_scale=channel_scale, **kwargs)


def exponent_offset_kwargs(s: dict) -> dict:
    """``s["exponent_offset"]`` (exponential weights): every quantizer's window moved up."""
    offset = s.get("exponent_offset") or 0
    if not offset or s["method"] != "exponential":
        return {}
    make = keras_lowprec.quantizers.Exponential
    return {k: make(exponent_offset=offset, stochastic=s["stochastic"])
            for k in ("kernel_quantizer", "recurrent_quantizer", "bias_quantizer")}


def fsdd_model(num_features: int, s: dict, steps_per_epoch: int | None = None) -> keras.Model:
    """Masking -> [GaussianNoise] -> [BatchNormalization] -> recurrent layer -> [Dropout] ->
    softmax classifier.

    ``s["rnn_kwargs"]`` (optional): extra arguments of the recurrent layer (probes use it
    to leave one part of a rounded layer in float, e.g. ``{"bias_quantizer": None}``).
    ``s["input_bn"]``: see :func:`input_bn`. ``s["lr_schedule"]``: ``"constant"`` or
    ``"cosine"`` (decay to 0 over the run; needs ``steps_per_epoch``); ``s["lr_scale"]``:
    see :func:`optimizer`.
    """
    inputs = keras.Input((None, num_features), name="frames")
    x = keras.layers.Masking(mask_value=0.0)(inputs)  # padding is exactly zero
    if s["noise"]:
        x = keras.layers.GaussianNoise(s["noise"], seed=s["seed"])(x)
    x = input_bn(x, s)
    x = rnn_layer(s["cell"], s["method"], s["units"], s["stochastic"], name="rnn", seed=s["seed"],
                  channel_scale=s.get("channel_scale", False), **exponent_offset_kwargs(s),
                  **s.get("rnn_kwargs", {}))(x)
    if s["dropout"]:
        x = keras.layers.Dropout(s["dropout"], seed=s["seed"])(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, outputs, name=f"fsdd_{s['cell']}_{s['method']}")
    model.compile(optimizer=optimizer(model, s, steps_per_epoch), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def input_bn(x, s: dict):
    """``s["input_bn"]``: batch normalization over batch and (real) time steps, per feature,
    of the recurrent layer's input; a number is the initial scale gamma (authors' code: 0.1)."""
    if not s.get("input_bn"):
        return x
    gamma = 1.0 if s["input_bn"] is True else float(s["input_bn"])
    return keras.layers.BatchNormalization(gamma_initializer=keras.initializers.Constant(gamma), name="input_bn")(x)


@keras.saving.register_keras_serializable(package="keras_lowprec_examples")
class ScaledAdam(keras.optimizers.Adam):
    """Adam with a fixed learning-rate factor per variable (``scales``: variable path ->
    factor; others 1), as BinaryConnect scales each binarized layer's rate by 1/H.

    Serialized with its factors, so a saved model reloads with the same optimizer in a
    process that imports this module; elsewhere load it with ``compile=False`` (as
    ``keras-lowprec export`` does)."""

    def __init__(self, *args, scales: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.scales = {str(path): float(factor) for path, factor in (scales or {}).items()}

    def get_config(self):
        return {**super().get_config(), "scales": dict(self.scales)}

    def build(self, var_list):
        super().build(var_list)
        self._factors = [float(self.scales.get(v.path, 1.0)) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factors[self._get_variable_index(variable)]
        if factor != 1.0:
            learning_rate = keras.ops.multiply(keras.ops.cast(learning_rate, variable.dtype), factor)
        super().update_step(gradient, variable, learning_rate)


def glorot_lr_scales(model) -> dict:
    """BinaryConnect's per-layer rate scaling: 1/G for every rounded weight (G its Glorot
    bound, the quantizer's scale), so its step is proportional to the level spacing."""
    scales = {}
    for layer in model._flatten_layers():
        if hasattr(layer, "master_weights") and hasattr(layer, "_glorot_bounds"):
            for name, variable in layer.master_weights().items():
                if layer.quantizer_for(name) is not None:
                    scales[variable.path] = 1.0 / layer.glorot_bound_for(name)
    return scales


def optimizer(model, s: dict, steps_per_epoch: int | None):
    """Adam (clipnorm 1) at ``learning_rate(s, ...)``; ``s["lr_scale"] == "glorot"`` scales
    each rounded weight's rate by 1/G (``glorot_lr_scales``)."""
    rate = learning_rate(s, steps_per_epoch)
    scale = s.get("lr_scale")
    if scale is None:
        return keras.optimizers.Adam(rate, clipnorm=1.0)
    if scale != "glorot":
        raise ValueError(f"lr_scale must be None or 'glorot', got {scale!r}")
    return ScaledAdam(rate, clipnorm=1.0, scales=glorot_lr_scales(model))


def learning_rate(s: dict, steps_per_epoch: int | None):
    """``s["lr"]`` (``s["finetune_lr"]`` when set: the fine-tuning stage), constant or
    (``s["lr_schedule"] == "cosine"``) cosine-decayed to 0 over the run."""
    rate = s.get("finetune_lr") or s["lr"]
    schedule = s.get("lr_schedule", "constant")
    if schedule == "constant":
        return rate
    if schedule != "cosine":
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {schedule!r}")
    if not steps_per_epoch:
        raise ValueError("lr_schedule='cosine' needs the number of steps per epoch")
    return keras.optimizers.schedules.CosineDecay(rate, decay_steps=s["epochs"] * steps_per_epoch)


def ptb_model(vocab_size: int, s: dict, steps_per_epoch: int | None = None) -> keras.Model:
    """Embedding -> [BatchNormalization] -> recurrent layer -> [Dropout] -> softmax; the
    recipe settings as for :func:`fsdd_model`. ``s["rnn_layer"]`` (optional, probes): a
    callable with :func:`rnn_layer`'s signature that builds the recurrent layer instead."""
    inputs = keras.Input((None,), dtype="int32", name="chars")
    x = keras.layers.Embedding(vocab_size, s["embedding"], name="embedding")(inputs)
    x = input_bn(x, s)
    make_rnn = s.get("rnn_layer", rnn_layer)
    x = make_rnn(s["cell"], s["method"], s["units"], s["stochastic"], name="rnn", seed=s["seed"],
                 return_sequences=True, init=s.get("init", "keras"), input_dim=s["embedding"],
                 channel_scale=s.get("channel_scale", False), **exponent_offset_kwargs(s),
                 **s.get("rnn_kwargs", {}))(x)
    if s["dropout"]:
        x = keras.layers.Dropout(s["dropout"], seed=s["seed"])(x)
    outputs = keras.layers.Dense(vocab_size, activation="softmax", name="softmax")(x)
    model = keras.Model(inputs, outputs, name=f"ptb_{s['cell']}_{s['method']}")
    model.compile(optimizer=optimizer(model, s, steps_per_epoch), loss="sparse_categorical_crossentropy")
    return model


# ---------------------------------------------------------------------------------------
# batching
# ---------------------------------------------------------------------------------------
def _round_up(n: int, multiple: int = 16) -> int:
    return int(multiple * math.ceil(n / multiple))


def as_dataset(batches, x_spec, y_spec):
    """A ``tf.data.Dataset`` over a batch source (``len`` + ``[i]`` + ``on_epoch_end``)
    whose time dimension varies between batches; reshuffled at every pass."""
    import tensorflow as tf

    def gen():
        for i in range(len(batches)):
            yield batches[i]
        batches.on_epoch_end()

    ds = tf.data.Dataset.from_generator(gen, output_signature=(x_spec, y_spec))
    return ds.apply(tf.data.experimental.assert_cardinality(len(batches))).prefetch(2)


class BucketBatches:
    """Batches of similar-length utterances, each padded to its own (rounded) length.

    Padding stays zero, so ``Masking`` ignores it; rounding lengths up to a multiple of
    16 keeps the number of traced shapes small. ``augment`` (training only): random
    time stretch (0.85–1.15), mel-axis warp (0.9–1.1, log-mel only) and Gaussian noise
    of 0.1 on the real frames; ``specaugment`` adds SpecAugment masks (Park et al., 2019)
    before the noise: two time masks of up to 10% of the frames and two frequency masks of
    up to 1/8 of the bins, set to 0 (the mean of a mean-normalized feature).
    """

    def __init__(self, split, batch_size, shuffle=False, augment=False, warp=True, specaugment=False, seed=0):
        self.split, self.batch_size, self.shuffle, self.augment, self.warp = split, batch_size, shuffle, augment, warp
        self.specaugment = specaugment
        self.rng = np.random.default_rng(seed)
        self._make_batches()

    def _make_batches(self):
        lengths = self.split.lengths.astype(np.float64)
        if self.shuffle:
            lengths = lengths + self.rng.uniform(0, 8, size=len(lengths))  # mix similar lengths
        order = np.argsort(lengths, kind="stable")
        self.batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.shuffle:
            self.rng.shuffle(self.batches)

    def __len__(self):
        return len(self.batches)

    def on_epoch_end(self):
        if self.shuffle:
            self._make_batches()

    def _augmented(self, u):
        n, f = u.shape
        rate = self.rng.uniform(0.85, 1.15)
        m = max(2, int(round(n * rate)))
        pos = np.linspace(0, n - 1, m)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        w = (pos - lo)[:, None]
        u = u[lo] * (1 - w) + u[hi] * w
        if self.warp:
            alpha = self.rng.uniform(0.9, 1.1)
            src = np.clip(np.arange(f) * alpha, 0, f - 1)
            lo = np.floor(src).astype(int)
            hi = np.minimum(lo + 1, f - 1)
            w = src - lo
            u = u[:, lo] * (1 - w) + u[:, hi] * w
        if self.specaugment:
            u = u.copy()
            for axis, size in ((0, max(1, len(u) // 10)), (1, max(1, f // 8))):
                for _ in range(2):
                    width = int(self.rng.integers(0, size + 1))
                    start = int(self.rng.integers(0, u.shape[axis] - width + 1))
                    np.moveaxis(u, axis, 0)[start:start + width] = 0.0
        u = u + self.rng.normal(0, 0.1, size=u.shape)
        return u.astype(np.float32)

    def __getitem__(self, i):
        idx = self.batches[i]
        s = self.split
        if not self.augment:
            t = _round_up(int(s.lengths[idx].max()))
            return s.x[idx, :t], s.y[idx]
        utts = [self._augmented(s.x[j, :s.lengths[j]]) for j in idx]
        t = _round_up(max(len(u) for u in utts))
        x = np.zeros((len(idx), t, s.x.shape[-1]), np.float32)
        for row, u in enumerate(utts):
            u[~np.any(u != 0, axis=1), 0] = 1e-6
            x[row, :len(u)] = u
        return x, s.y[idx]


def predict_split(model, split, batch_size=256) -> np.ndarray:
    """Class probabilities for every utterance of ``split``, in the split's order."""
    batches = BucketBatches(split, batch_size)
    out = np.zeros((len(split), 10), np.float32)
    for i in range(len(batches)):
        x, _ = batches[i]
        out[batches.batches[i]] = keras.ops.convert_to_numpy(model(x, training=False))
    return out


class PTBWindows:
    """Non-overlapping ``seq_len`` windows of a character stream, shuffled per epoch with
    a random start offset (training), or in order (validation)."""

    def __init__(self, stream, seq_len, batch_size, shuffle=False, seed=0, max_chars=None):
        self.stream = stream if max_chars is None else stream[:max_chars]
        self.seq_len, self.batch_size, self.shuffle = seq_len, batch_size, shuffle
        self.rng = np.random.default_rng(seed)
        self._make()

    def _make(self):
        offset = int(self.rng.integers(0, self.seq_len)) if self.shuffle else 0
        n = (len(self.stream) - 1 - offset) // self.seq_len
        starts = offset + self.seq_len * np.arange(n)
        if self.shuffle:
            self.rng.shuffle(starts)
        self.starts = starts

    def __len__(self):
        return max(1, len(self.starts) // self.batch_size)

    def on_epoch_end(self):
        if self.shuffle:
            self._make()

    def __getitem__(self, i):
        starts = self.starts[i * self.batch_size:(i + 1) * self.batch_size]
        idx = starts[:, None] + np.arange(self.seq_len + 1)[None, :]
        w = self.stream[idx]
        return w[:, :-1], w[:, 1:]


def ptb_bpc(model, stream, seq_len, batch_size=64) -> float:
    """Bits per character over the whole stream; every predicted character after the
    first window sees at least ``seq_len`` characters of context (burn-in windows)."""
    n = len(stream) - 1
    total, count = 0.0, 0
    starts = list(range(0, n, seq_len))
    for b in range(0, len(starts), batch_size):
        chunk = starts[b:b + batch_size]
        ctx = [min(s, seq_len) for s in chunk]
        ends = [min(s + seq_len, n) for s in chunk]
        width = max(e - (s - c) for s, c, e in zip(chunk, ctx, ends))
        x = np.zeros((len(chunk), width), np.int32)
        y = np.zeros((len(chunk), width), np.int32)
        w = np.zeros((len(chunk), width), np.float64)
        for r, (s, c, e) in enumerate(zip(chunk, ctx, ends)):
            a = s - c
            x[r, :e - a] = stream[a:e]
            y[r, :e - a] = stream[a + 1:e + 1]
            w[r, c:e - a] = 1.0
        p = keras.ops.convert_to_numpy(model(x, training=False))
        logp = np.log(np.maximum(np.take_along_axis(p, y[..., None], -1)[..., 0].astype(np.float64), 1e-12))
        total -= float((logp * w).sum())
        count += int(w.sum())
    return total / count / math.log(2)


# ---------------------------------------------------------------------------------------
# training bookkeeping
# ---------------------------------------------------------------------------------------
class RunLog(keras.callbacks.Callback):
    """Per-epoch history and best-validation weights, persisted in ``scratch`` so that a
    run resumed by ``BackupAndRestore`` keeps its full history and its best epoch."""

    def __init__(self, scratch: Path, monitor: str, mode: str, patience: int | None = None):
        super().__init__()
        self.scratch, self.monitor, self.mode, self.patience = Path(scratch), monitor, mode, patience
        self.state_path = self.scratch / "runlog.json"
        self.best_path = self.scratch / "best.weights.h5"
        self.state = {"history": [], "best": None, "best_epoch": None, "seconds": 0.0}
        if self.state_path.is_file():
            self.state = json.loads(self.state_path.read_text())

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        self.state["history"] = [h for h in self.state["history"] if h["epoch"] < epoch + 1]
        self.state["history"].append({"epoch": epoch + 1, **logs})
        self.state["seconds"] += time.time() - self._t
        value = logs.get(self.monitor)
        best = self.state["best"]
        if value is not None and np.isfinite(value) and (
                best is None or (value > best if self.mode == "max" else value < best)):
            self.state["best"], self.state["best_epoch"] = value, epoch + 1
            self.model.save_weights(self.best_path)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.state_path)
        if self.patience is not None and self.state["best_epoch"] is not None:
            if epoch + 1 - self.state["best_epoch"] >= self.patience:
                self.model.stop_training = True

    def restore_best(self):
        if self.best_path.is_file():
            self.model.load_weights(self.best_path)


def _fit(model, train, val, s, scratch: Path, monitor: str, mode: str, patience=None, verbose=2):
    scratch.mkdir(parents=True, exist_ok=True)
    if not (scratch / "backup").exists():  # fresh start: forget an older run's log
        for stale in ("runlog.json", "best.weights.h5"):
            (scratch / stale).unlink(missing_ok=True)
    log = RunLog(scratch, monitor, mode, patience)
    callbacks = [keras.callbacks.BackupAndRestore(str(scratch / "backup")), log]
    model.fit(train, validation_data=val, epochs=s["epochs"], steps_per_epoch=s.get("steps_per_epoch"),
              callbacks=callbacks, verbose=verbose)
    log.restore_best()
    return log.state


def init_from(model, path: str | None):
    """Fine-tuning: copy the weights of the trained model saved at ``path`` into ``model``,
    layer by layer (same layer names and shapes, e.g. a float model into its rounded twin).
    Master weights outside a rounded layer's range are clipped by its constraint at the
    first step; clipping never changes the rounded weights."""
    if not path:
        return
    trained = keras.saving.load_model(path, compile=False)
    for layer in trained.layers:
        if not layer.weights:
            continue
        try:
            model.get_layer(layer.name).set_weights(layer.get_weights())
        except ValueError as err:  # no such layer, or other shapes
            raise ValueError(f"init_from {path!r}: its layer {layer.name!r} does not fit the model "
                             f"being trained (same layers and sizes needed): {err}") from None


def float_stage_settings(s: dict) -> dict:
    """Settings of the first stage of the fine-tuning recipe: the float model of ``s``."""
    return {**s, "method": "float", "stochastic": False, "finetune_lr": None, "init_from": None}


def float_stage_ready(s: dict, path) -> bool:
    """Whether ``path`` holds the finished float stage of ``s`` (model and the same recorded
    settings), i.e. :func:`train_float_stage` will reuse it rather than train."""
    path = Path(path)
    summary_path = path.with_suffix(".json")
    if not (path.is_file() and summary_path.is_file()):
        return False
    recorded = json.loads(summary_path.read_text()).get("settings")
    return recorded == json.loads(json.dumps(float_stage_settings(s)))


def train_float_stage(train_fn, s: dict, path: Path, data_dir=None, scratch=None, verbose=2) -> dict:
    """First stage of the fine-tuning recipe: trains the float model of ``s`` with ``train_fn``
    unless ``path`` (a ``.keras`` file) holds it already, saves it there and its settings and
    metrics beside it (``.json``); returns the metrics. A finished first stage of the same
    settings is reused, so every method of one seed (and an interrupted run) starts from the
    same float model; one of other settings is trained again, never silently reused."""
    path = Path(path)
    summary_path = path.with_suffix(".json")
    settings = json.loads(json.dumps(float_stage_settings(s)))
    if not float_stage_ready(s, path):
        result, model = train_fn(float_stage_settings(s), data_dir, scratch, verbose)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
        keys = ("metric", "validation_accuracy", "test_accuracy", "validation_bpc", "test_bpc", "best_epoch",
                "epochs_run", "train_seconds")
        summary = {"settings": settings, **{k: result[k] for k in keys if k in result}}
        summary_path.write_text(json.dumps(summary, indent=1))
    else:
        summary = json.loads(summary_path.read_text())
    return {k: v for k, v in summary.items() if k != "settings"}


def _fine_tuning(train_fn, s: dict, data_dir, scratch: Path, verbose) -> tuple[dict, dict | None]:
    """``s["finetune_lr"]`` set and no ``init_from``: the float stage is trained first (kept in
    ``scratch`` so an interrupted run resumes after it) and the run starts from it. Returns
    the settings of the run and the first stage's metrics (``None`` without one)."""
    if not s["finetune_lr"] or s["init_from"]:
        return s, None
    path = scratch / "float_stage.keras"
    first = train_float_stage(train_fn, s, path, data_dir, scratch / "float_stage", verbose)
    return {**s, "init_from": str(path)}, first


def _scratch(scratch) -> Path:
    return Path(scratch) if scratch else Path(os.path.expanduser("~/.keras/keras_lowprec/scratch/tmp"))


def weight_summary(model) -> dict:
    """Input kernel of the recurrent layer: histogram of the master weights and the
    distinct values (with counts) of its deterministic rounding used at inference."""
    layer = model.get_layer("rnn")
    master = keras.ops.convert_to_numpy(layer.cell.kernel).ravel()
    if hasattr(layer, "quantized_weights"):
        rounded = keras.ops.convert_to_numpy(layer.quantized_weights(training=False)["kernel"]).ravel()
    else:
        rounded = master
    counts, edges = np.histogram(master, bins=80)
    out = {"layer": "rnn", "weight": "kernel", "shape": list(layer.cell.kernel.shape),
           "master_hist": {"counts": counts.tolist(), "edges": edges.tolist()}}
    values, vcounts = np.unique(rounded, return_counts=True)
    if len(values) <= 64:
        out["rounded_values"] = {"values": values.tolist(), "counts": vcounts.tolist()}
    else:
        c, e = np.histogram(rounded, bins=80)
        out["rounded_hist"] = {"counts": c.tolist(), "edges": e.tolist()}
    return out


def _seed(s):
    keras.utils.set_random_seed(int(s["seed"]))


def _subset(split, n):
    if n is None or n >= len(split):
        return split
    idx = np.random.default_rng(0).permutation(len(split))[:n]
    return datasets.SequenceSplit(split.x[idx], split.y[idx], split.lengths[idx], split.speakers[idx],
                                  split.files[idx])


def _concat(a, b):
    """Two splits of one ``datasets.fsdd`` call (same padded length) as one."""
    return datasets.SequenceSplit(*(np.concatenate([getattr(a, k), getattr(b, k)])
                                    for k in ("x", "y", "lengths", "speakers", "files")))


# ---------------------------------------------------------------------------------------
# one run per data set
# ---------------------------------------------------------------------------------------
def train_fsdd(settings: dict, data_dir=None, scratch=None, verbose=2):
    """One FSDD run of ``settings`` (over ``FSDD_DEFAULTS``); returns ``(result, model)``.
    With ``finetune_lr`` the run fine-tunes at that rate from ``init_from`` (by default the
    float model of the same settings, trained first)."""
    scratch = _scratch(scratch)
    s, first_stage = _fine_tuning(train_fsdd, {**FSDD_DEFAULTS, **settings}, data_dir, scratch, verbose)
    _seed(s)
    data = datasets.fsdd(data_dir, features=s["features"], split=s["split"], fold=s["fold"],
                         normalize=s["normalize"])
    train = _subset(data.train, s["max_train"])
    val, test = _subset(data.validation, s["max_eval"]), _subset(data.test, s["max_eval"])
    if s["train_on_validation"]:  # fixed epoch count chosen beforehand; nothing left to validate on
        train, val = _concat(train, val), None
    train_b = BucketBatches(train, s["batch_size"], shuffle=True, augment=s["augment"],
                            warp=s["features"] == "logmel", specaugment=s["specaugment"], seed=s["seed"])
    model = fsdd_model(data.num_features, s, min(len(train_b), s["steps_per_epoch"] or len(train_b)))
    init_from(model, s.get("init_from"))
    import tensorflow as tf
    specs = (tf.TensorSpec((None, None, data.num_features), tf.float32), tf.TensorSpec((None,), tf.int32))
    train_b = as_dataset(train_b, *specs)
    val_b = None if val is None else as_dataset(BucketBatches(val, 256), *specs)
    t0 = time.time()
    # without validation data the last epoch's weights are kept (RunLog sees no val_accuracy)
    state = _fit(model, train_b, val_b, s, scratch, "val_accuracy", "max", verbose=verbose)
    if val is None:
        state["best_epoch"] = len(state["history"])
    val_acc = None if val is None else float((predict_split(model, val).argmax(-1) == val.y).mean())
    test_acc = float((predict_split(model, test).argmax(-1) == test.y).mean())
    result = {
        "settings": s, "data": data.info,
        "metric": "accuracy", "validation_accuracy": val_acc, "test_accuracy": test_acc,
        "train_examples": len(train), "train_speakers": sorted(set(train.speakers.tolist())),
        "best_epoch": state["best_epoch"], "epochs_run": len(state["history"]),
        "train_seconds": state["seconds"], "wall_seconds": time.time() - t0,
        "history": state["history"], "weights": weight_summary(model),
        "num_params": int(model.count_params()), "first_stage": first_stage,
    }
    return result, model


def train_ptb(settings: dict, data_dir=None, scratch=None, verbose=2):
    """One PTB run of ``settings`` (over ``PTB_DEFAULTS``), fine-tuning as in :func:`train_fsdd`."""
    scratch = _scratch(scratch)
    s, first_stage = _fine_tuning(train_ptb, {**PTB_DEFAULTS, **settings}, data_dir, scratch, verbose)
    _seed(s)
    data = datasets.ptb_chars(data_dir)
    train_b = PTBWindows(data.train, s["seq_len"], s["batch_size"], shuffle=True, seed=s["seed"])
    model = ptb_model(data.vocab_size, s, min(len(train_b), s["steps_per_epoch"] or len(train_b)))
    init_from(model, s.get("init_from"))
    val_b = PTBWindows(data.valid, s["seq_len"], 128, max_chars=s["max_eval_chars"])
    import tensorflow as tf
    specs = (tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None, None), tf.int32))
    train_b, val_b = as_dataset(train_b, *specs), as_dataset(val_b, *specs)
    t0 = time.time()
    state = _fit(model, train_b, val_b, s, scratch, "val_loss", "min", patience=s["patience"], verbose=verbose)
    for h in state["history"]:
        h["bpc"] = h.get("loss", float("nan")) / math.log(2)
        h["val_bpc"] = h.get("val_loss", float("nan")) / math.log(2)
    valid = data.valid if s["max_eval_chars"] is None else data.valid[:s["max_eval_chars"]]
    test = data.test if s["max_eval_chars"] is None else data.test[:s["max_eval_chars"]]
    result = {
        "settings": s, "data": {"vocab_size": data.vocab_size, "train_chars": int(len(data.train)),
                                "valid_chars": int(len(valid)), "test_chars": int(len(test))},
        "metric": "bpc", "validation_bpc": ptb_bpc(model, valid, s["seq_len"]),
        "test_bpc": ptb_bpc(model, test, s["seq_len"]),
        "best_epoch": state["best_epoch"], "epochs_run": len(state["history"]),
        "train_seconds": state["seconds"], "wall_seconds": time.time() - t0,
        "history": state["history"], "weights": weight_summary(model),
        "num_params": int(model.count_params()), "first_stage": first_stage,
    }
    return result, model


# ---------------------------------------------------------------------------------------
# command line of the single-run examples
# ---------------------------------------------------------------------------------------
def _auto_or_rate(text: str):
    if text == "auto":
        return text
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if not rate >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"'auto' or a learning rate >= 0 (0: off), got {text!r}")
    return rate


def add_run_args(parser, defaults: dict):
    parser.add_argument("--cell", choices=CELLS, default=defaults["cell"])
    parser.add_argument("--method", choices=METHODS, default=defaults["method"])
    parser.add_argument("--stochastic", action="store_true", help="stochastic rounding in training")
    parser.add_argument("--units", type=int, default=defaults["units"])
    parser.add_argument("--epochs", type=int, default=defaults["epochs"])
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    parser.add_argument("--lr", type=float, default=defaults["lr"])
    parser.add_argument("--seed", type=int, default=defaults["seed"])
    parser.add_argument("--lr-schedule", choices=("auto", "constant", "cosine"), default="auto",
                        help="learning rate: constant, or cosine decay to 0 over the run; auto (default): "
                             "the recommended recipe of the cell (cosine for SimpleRNNs on spoken digits and for GRUs "
                             "on PTB)")
    parser.add_argument("--lr-scale", choices=("none", "glorot"), default="none",
                        help="glorot: BinaryConnect's per-layer rate scaling, 1/G for every rounded weight (the "
                             "saved model's optimizer is this module's ScaledAdam: reload it after importing "
                             "examples/common.py, or with compile=False)")
    parser.add_argument("--input-bn", type=float, default=0.0, metavar="GAMMA",
                        help="batch-normalize the recurrent layer's input, scale starting at GAMMA (0: off)")
    parser.add_argument("--channel-scale", choices=("auto", "on", "off"), default="auto",
                        help="on: rounded layers learn a float scale per gate unit (channel_scale=True; float "
                             "layers have none); auto (default): the cell's recipe (on for PTB)")
    parser.add_argument("--exponent-offset", type=int, default=0,
                        help="exponential weights: move the window of exponents up by this many (default 0)")
    parser.add_argument("--finetune-lr", default="auto", metavar="LR", type=_auto_or_rate,
                        help="fine-tune at LR: train the float model of the same settings first (or take "
                             "--init-from), then this model from its weights at LR; 0: off; auto (default): "
                             "the cell's recipe (5e-4 for LSTMs on spoken digits, else off)")
    parser.add_argument("--init-from", default=None, metavar="MODEL.keras",
                        help="start from this trained model's weights (e.g. the float model of the same "
                             "settings) instead of training the float stage first")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="cap steps per epoch (smoke runs)")
    parser.add_argument("--data-dir", default=default_data_dir(),
                        help="folder with the data (default: ../shared/data when present, "
                             f"else ${datasets.ENV_DATA}, else download into the Keras cache)")
    parser.add_argument("--out", required=True, help="path of the .keras model to write")
    parser.add_argument("--scratch", default=None,
                        help="folder for BackupAndRestore and best weights (default: next to --out)")


def run_args_settings(args, dataset: str) -> dict:
    """Settings of the single-run examples' command line; ``auto`` options take the cell's recipe."""
    cell_recipe = recipe(dataset, args.cell)[1]
    schedule = args.lr_schedule
    if schedule == "auto":
        schedule = cell_recipe.get("lr_schedule", "constant")
    finetune_lr = cell_recipe.get("finetune_lr") if args.finetune_lr == "auto" else args.finetune_lr
    channel_scale = (cell_recipe.get("channel_scale", False) if args.channel_scale == "auto"
                     else args.channel_scale == "on")
    if args.method == "float":
        if args.channel_scale == "on":
            raise SystemExit("--channel-scale on: float layers have no channel scales (use a rounded --method)")
        channel_scale = False
    return {"cell": args.cell, "method": args.method, "stochastic": bool(args.stochastic), "units": args.units,
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
            "steps_per_epoch": args.steps_per_epoch, "lr_schedule": schedule,
            "lr_scale": None if args.lr_scale == "none" else args.lr_scale, "input_bn": args.input_bn or False,
            "exponent_offset": args.exponent_offset, "init_from": args.init_from, "finetune_lr": finetune_lr or None,
            "channel_scale": channel_scale}


def save_outputs(result: dict, model, out: str):
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))


def train_and_save(train_fn, settings: dict, args):
    """Runs ``train_fn`` with a resume folder, saves model and result to ``args.out`` and
    removes the resume folder once finished (unless ``--scratch`` named one)."""
    scratch = args.scratch or str(Path(args.out).with_suffix("")) + "_scratch"
    result, model = train_fn(settings, args.data_dir, scratch)
    save_outputs(result, model, args.out)
    if not args.scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return result, model
