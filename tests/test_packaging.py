"""Packaging: the core works without TensorFlow (another Keras backend), and the exporter
names what is missing instead of falling back quietly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# A meta-path finder that makes every TensorFlow package unimportable, as on a JAX-only install.
_NO_TF = """
import sys
class _NoTF:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'tf_keras'):
            raise ImportError('no ' + name)
sys.meta_path.insert(0, _NoTF())
"""


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _NO_TF + code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": "jax", **env})


def test_core_trains_and_summarizes_on_jax_without_tensorflow():
    pytest.importorskip("jax")
    proc = _run(
        "import numpy as np, keras, keras_lowprec as kl\n"
        "from keras_lowprec import layers as L\n"
        "assert keras.backend.backend() == 'jax'\n"
        "m = keras.Sequential([keras.Input((5, 3)), L.TernaryLSTM(4), L.TernaryDense(2)])\n"
        "m.compile('adam', 'sparse_categorical_crossentropy')\n"
        "m.fit(np.zeros((8, 5, 3), 'float32'), np.zeros(8, 'int64'), epochs=1, verbose=0)\n"
        "kl.summary(m, print_fn=lambda s: None)\n"
        "assert not [k for k in sys.modules if k.split('.')[0] == 'tensorflow']\n"
        "print('ok')\n")
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_exporter_names_what_is_missing():
    pytest.importorskip("jax")
    proc = _run(
        "import numpy as np, keras\n"
        "from keras_lowprec import layers as L\n"
        "from keras_lowprec.export import ExportError, to_tflite\n"
        "m = keras.Sequential([keras.Input((5, 3)), L.TernaryLSTM(4), L.TernaryDense(2)])\n"
        "try:\n"
        "    to_tflite(m, np.zeros((4, 5, 3), 'float32'))\n"
        "except ExportError as err:\n"
        "    print(err)\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tensorflow (the TFLite converter)" in proc.stdout
    assert "tf-keras (the fused LSTM route" in proc.stdout
    assert "pip install 'keras_lowprec[export]'" in proc.stdout


def test_missing_tf_keras_alone_is_an_error_not_an_unrolled_lstm(monkeypatch):
    """With TensorFlow but without tf-keras, an LSTM must not be exported unrolled (3x the
    flash) without a word: the export stops and says what to install."""
    import importlib.util

    from keras_lowprec.export import ExportError, requirements

    real = importlib.util.find_spec
    monkeypatch.setattr(requirements.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tf_keras" else real(name, *a))
    assert requirements.missing() == ["tf_keras"]
    with pytest.raises(ExportError, match=r"tf-keras \(the fused LSTM route.*pip install 'keras_lowprec\[export\]'"):
        requirements.check()


def test_fsdd_features_without_tensorflow_say_what_to_install(tmp_path):
    proc = _run(
        "from keras_lowprec import datasets\n"
        "try:\n"
        "    datasets._features([[0.0] * 400], 'mfcc', 8, 4, 256, 128, 256)\n"
        "except datasets.DatasetUnavailableError as err:\n"
        "    print(err)\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TensorFlow is not installed" in proc.stdout and "keras_lowprec[cpu]" in proc.stdout
