"""Exports are reproducible: a fixed set of models, one per export route and rewrite pass,
gives the same bytes as the committed digests in ``tests/data/export_digests.json``.

The digests were made by the exporter before it was restructured into a pipeline, so a
change to the exporter's structure that alters any written byte fails here. A deliberate
change of the output regenerates them:

    KERAS_LOWPREC_UPDATE_DIGESTS=1 .venv/bin/python -m pytest tests/test_export_bytes.py

Each model is built and exported in a fresh process (as a user's export script would run),
with weights drawn from a fixed NumPy generator rather than trained, so that the digests
depend on the exporter only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("tflite_micro")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGESTS = os.path.join(ROOT, "tests", "data", "export_digests.json")
# The files whose bytes must not change (report.json holds timings and is left out).
FILES = ("model.tflite", "model_data.cc", "model_data.h", "model_ops.h", "model_test_data.h")

# name -> (Python expression of the layer stack between Input and the TernaryDense head,
#          input time axis (None: variable), to_tflite keyword arguments)
CASES = {
    "lstm-fused-sequence": ("[L.TernaryLSTM(5)]", 6, {}),
    "lstm-fused-stream": ("[L.TernaryLSTM(5)]", 6, {"mode": "stream", "lstm_kernel": "fused"}),
    "lstm-step-stream": ("[L.TernaryLSTM(5)]", 6, {"mode": "stream"}),
    "lstm-unrolled-sequence": ("[L.TernaryLSTM(5)]", 6, {"lstm_kernel": "unrolled"}),
    "keras-lstm-fused": ("[keras.layers.LSTM(5)]", 6, {}),
    "stacked-gru-sequence": ("[L.TernaryGRU(5, return_sequences=True), L.TernaryGRU(4)]", 6, {}),
    "gru-no-reset-after-stream": ("[L.TernaryGRU(5, reset_after=False)]", 6, {"mode": "stream"}),
    "exponential-gru-sequence": ("[L.ExponentialGRU(5)]", 6, {}),
    "pow2-simplernn-stream": ("[L.Pow2TernarySimpleRNN(5)]", 6, {"mode": "stream"}),
    "binary-simplernn-sequence": ("[L.BinarySimpleRNN(5)]", 6, {}),
    "flatten-sequence": ("[L.TernaryGRU(4, return_sequences=True), keras.layers.Flatten()]", 6, {}),
    "normalization-stream": ("[keras.layers.LayerNormalization(), L.TernaryGRU(5), "
                             "keras.layers.BatchNormalization(), keras.layers.ReLU(), keras.layers.Dropout(0.3)]", 6, {"mode": "stream"}),
    "masked-lstm-stream": ("[keras.layers.Masking(0.0), L.TernaryLSTM(5)]", None, {"mode": "stream"}),
    "gru-stream-compressed": ("[L.TernaryGRU(32)]", 6, {"mode": "stream", "compress": "flash"}),
    "lstm-fused-compressed": ("[L.TernaryLSTM(32)]", 6, {"compress": "flash"}),
    "exponential-gru-compressed": ("[L.ExponentialGRU(32)]", 6, {"compress": "flash"}),
}

_SCRIPT = r"""
import hashlib, json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import keras, numpy as np
from keras_lowprec import layers as L
from keras_lowprec.export import to_tflite

stack, steps, kwargs, out, files = json.loads(sys.argv[1])
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((steps, 3)), *eval(stack), L.TernaryDense(4)])
rng = np.random.default_rng(7)
for w in model.weights:
    shape = tuple(w.shape)
    if "variance" in w.path:
        w.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
    else:
        w.assign(rng.uniform(-0.6, 0.6, shape).astype("float32"))
x = rng.normal(size=(30, 8 if steps is None else steps, 3)).astype("float32")
if steps is None:
    for i, n in enumerate(rng.integers(3, 9, size=len(x))):
        x[i, n:] = 0.0
to_tflite(model, x, output_dir=out, **kwargs)
digests = {}
for name in files:
    path = os.path.join(out, name)
    if os.path.exists(path):
        digests[name] = hashlib.sha256(open(path, "rb").read()).hexdigest()
print(json.dumps(digests))
"""


def export_digests(name: str, out_dir: str) -> dict[str, str]:
    """Exports case ``name`` in a fresh Python process; the sha256 of each written file."""
    stack, steps, kwargs = CASES[name]
    arg = json.dumps([stack, steps, kwargs, out_dir, FILES])
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, arg], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_export_bytes_match_the_committed_digests(name, tmp_path):
    got = export_digests(name, str(tmp_path / name))
    if os.environ.get("KERAS_LOWPREC_UPDATE_DIGESTS") == "1":
        _update(name, got)
        return
    with open(DIGESTS) as fh:
        expected = json.load(fh)[name]
    changed = sorted(f for f in set(expected) | set(got) if expected.get(f) != got.get(f))
    assert not changed, f"{name}: exported bytes changed in {changed}"


def _update(name: str, got: dict[str, str]) -> None:
    import fcntl

    os.makedirs(os.path.dirname(DIGESTS), exist_ok=True)
    with open(DIGESTS + ".lock", "w") as lock:  # pytest-xdist workers write the same file
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.load(open(DIGESTS)) if os.path.exists(DIGESTS) else {}
        data[name] = got
        with open(DIGESTS, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.write("\n")
