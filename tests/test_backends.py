"""Backend-agnostic layers (JAX) and distributed training (tf.distribute).

Each case runs in a fresh interpreter: the backend and TensorFlow's logical devices
are fixed at import time.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

FIT_SCRIPT = """
import numpy as np, keras
from keras_lowprec import layers as L
keras.utils.set_random_seed(0)
rng = np.random.RandomState(0)
x = rng.randn(64, 6, 3).astype("float32")
y = (x[:, :, 0].sum(axis=1) > 0).astype("int32")
{setup}
with make_scope():
    model = keras.Sequential([
        keras.Input((6, 3)),
        L.TernaryLSTM(8, stochastic=True, return_sequences=True),
        L.ExponentialGRU(8, stochastic=True, return_sequences=True),
        L.Pow2TernarySimpleRNN(4, stochastic=True),
        L.BinaryDense(2, activation="softmax", stochastic=True),
    ])
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy", metrics=["accuracy"])
before = [np.asarray(w).copy() for w in model.get_weights()]
hist = model.fit(x, y, epochs=4, batch_size=16, verbose=0)
after = [np.asarray(w) for w in model.get_weights()]
assert all(np.isfinite(h) for h in hist.history["loss"]), hist.history
assert any(not np.array_equal(a, b) for a, b in zip(before, after)), "weights did not change"
cell = model.layers[0].cell
for name, v in cell.master_weights().items():
    lim = cell.quantizer_for(name).clip_value(cell.glorot_bound_for(name))
    assert np.abs(np.asarray(v)).max() <= lim * (1 + 1e-6), name
p1 = model.predict(x, verbose=0); p2 = model.predict(x, verbose=0)
assert np.array_equal(p1, p2), "inference must be deterministic"
# fresh rounding noise at every compiled training step (not frozen at trace time)
with make_scope():
    probe = keras.Sequential([keras.Input((6, 3)), L.TernaryLSTM(8, stochastic=True), keras.layers.Dense(1)])
    probe.compile(keras.optimizers.SGD(0.0), "mse")
losses = [float(probe.train_on_batch(x, y.astype("float32"))) for _ in range(3)]
assert len(set(losses)) == 3, losses
print("OK", keras.backend.backend(), hist.history["loss"][0], hist.history["loss"][-1])
"""


def _run(script: str, backend: str) -> str:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_fit_under_jax_backend():
    out = _run(FIT_SCRIPT.format(setup="import contextlib; make_scope = contextlib.nullcontext"), "jax")
    assert "OK jax" in out


def test_fit_under_mirrored_strategy_with_two_cpu_devices():
    setup = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
make_scope = strategy.scope
"""
    out = _run(FIT_SCRIPT.format(setup=setup), "tensorflow")
    assert "OK tensorflow" in out
