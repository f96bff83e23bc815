"""The ``keras-lowprec export`` command: argument checks, one-line errors, an export."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from keras_lowprec import cli

T, F, U, C = 5, 3, 4, 3


def _fake_keras(tmp_path):
    """A zip archive named .keras: passes the file checks, so the data checks come next."""
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
    return path


def _err_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error message"
    assert not any("Traceback" in line for line in err)
    return err[-1]


def test_missing_model(tmp_path, capsys):
    data = tmp_path / "d.npy"
    np.save(data, np.zeros((4, T, F), np.float32))
    rc = cli.main(["export", str(tmp_path / "nope.keras"), "--data", str(data), "--out", str(tmp_path / "o")])
    assert rc == cli.EXIT_USAGE
    assert _err_line(capsys) == f"keras-lowprec: error: model file not found: {tmp_path / 'nope.keras'}"


@pytest.mark.parametrize(
    "array,match",
    [
        (np.zeros((4, T), np.float32), "expected shape (samples, timesteps, features)"),
        (np.full((4, T, F), np.inf, np.float32), "NaN or inf"),
        (np.zeros((0, T, F), np.float32), "empty"),
    ],
)
def test_bad_data(tmp_path, capsys, array, match):
    model = _fake_keras(tmp_path)
    data = tmp_path / "d.npy"
    np.save(data, array)
    rc = cli.main(["export", str(model), "--data", str(data), "--out", str(tmp_path / "o")])
    assert rc == cli.EXIT_USAGE
    assert match in _err_line(capsys)
    assert not (tmp_path / "o").exists()


def test_bad_timesteps_and_unreadable_data(tmp_path, capsys):
    model = _fake_keras(tmp_path)
    data = tmp_path / "d.npy"
    np.save(data, np.zeros((4, T, F), np.float32))
    rc = cli.main(["export", str(model), "--data", str(data), "--out", str(tmp_path / "o"), "--timesteps", "7"])
    assert rc == cli.EXIT_USAGE and "--timesteps is 7" in _err_line(capsys)
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"garbage")
    rc = cli.main(["export", str(model), "--data", str(bad), "--out", str(tmp_path / "o")])
    assert rc == cli.EXIT_USAGE and "cannot read" in _err_line(capsys)


def test_help_lists_export(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["export", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--data", "--out", "--timesteps", "--mode"):
        assert flag in out


def test_export_end_to_end(tmp_path, capsys):
    import keras

    from keras_lowprec.layers import TernaryDense, TernaryGRU

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, F)), TernaryGRU(U), TernaryDense(C)])
    path = tmp_path / "m.keras"
    model.save(path)
    data = tmp_path / "d.npy"
    np.save(data, np.random.default_rng(0).normal(size=(12, T, F)).astype(np.float32))
    out = tmp_path / "out"
    # Variable time axis: refused without --timesteps, with one clear line.
    rc = cli.main(["export", str(path), "--data", str(data), "--out", str(out), "--quiet"])
    assert rc == cli.EXIT_EXPORT and "timesteps" in _err_line(capsys)
    rc = cli.main(["export", str(path), "--data", str(data), "--out", str(out), "--timesteps", str(T)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "verifying (TFLM)" in captured.err  # progress display
    assert "TFLM vs Keras" in captured.out and "int8 output grid" in captured.out
    assert sorted(os.listdir(out)) == ["model.tflite", "model_data.cc", "model_data.h", "model_ops.h",
                                   "model_test_data.h", "report.json"]
    # Stream mode (any length): also compared with the sequence export of the same model.
    rc = cli.main(["export", str(path), "--data", str(data), "--out", str(tmp_path / "stream"), "--mode", "stream",
                   "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "stream vs the sequence export (TFLM, 2 sequences): argmax agreement 100.0%, max abs difference 0" \
        in captured.out


def test_subprocess_error_is_one_line(tmp_path):
    """Run as a command: non-zero exit, the error as the last line, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "keras_lowprec.cli", "export", str(tmp_path / "x.keras"), "--data",
         str(tmp_path / "d.npy"), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == cli.EXIT_USAGE
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("keras-lowprec: error: model file not found")
    assert "Traceback" not in proc.stderr


def test_argument_errors_come_before_the_exporter(tmp_path):
    code = (
        "import sys\n"
        "from keras_lowprec import cli\n"
        f"rc = cli.main(['export', {str(tmp_path / 'x.keras')!r}, '--data', 'd.npy', '--out', 'o'])\n"
        "assert rc == 2\n"
        "assert 'keras_lowprec.export.analysis' not in sys.modules, 'the exporter was imported'\n"
        "assert 'tflite_micro' not in sys.modules, 'tflite_micro was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]


_TRAIN_AND_SAVE = """
import sys
import numpy as np
import keras
from keras_lowprec import layers as L
keras.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(40, 5, 3)).astype(np.float32)
y = (x[:, :, 0].mean(1) > 0).astype(int)
model = keras.Sequential([keras.Input((5, 3)), L.TernaryLSTM(4), L.TernaryDense(3)])
model.compile("adam", "sparse_categorical_crossentropy")
model.fit(x, y, epochs=1, verbose=0)
model.save(sys.argv[1])
np.save(sys.argv[2], x)
"""


def test_export_of_a_model_saved_by_another_process(tmp_path):
    """Train and save in one process; ``keras-lowprec export`` (the installed command) in a fresh one."""
    model, data, out = tmp_path / "m.keras", tmp_path / "d.npy", tmp_path / "out"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run([sys.executable, "-c", _TRAIN_AND_SAVE, str(model), str(data)], check=True, env=env,
                   capture_output=True, timeout=300)
    command = os.path.join(os.path.dirname(sys.executable), "keras-lowprec")
    proc = subprocess.run([command, "export", str(model), "--data", str(data), "--out", str(out), "--quiet",
                           "--compress", "auto"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "weights exact: True" in proc.stdout
    # A 4-unit LSTM: tables and DECODE cost more than 2-bit indices save; the CLI says so.
    assert "compression (auto): not applied" in proc.stdout
    assert {"model.tflite", "model_data.cc", "model_data.h", "model_ops.h", "model_test_data.h",
            "report.json"} <= set(os.listdir(out))


def test_export_c_command_writes_the_c_runtime_files(tmp_path):
    """``keras-lowprec export-c`` on a model saved in another process: the C files and the
    integer reference compared with Keras on the held-out fifth; a bad name is one line."""
    code = (
        "import numpy as np, keras\n"
        "from keras_lowprec import layers as L\n"
        "keras.utils.set_random_seed(0)\n"
        "m = keras.Sequential([keras.Input((6, 3)), L.TernaryGRU(8), L.TernaryDense(4)])\n"
        f"m.save({str(tmp_path / 'm.keras')!r})\n"
        f"np.save({str(tmp_path / 'x.npy')!r}, np.random.default_rng(0).normal(size=(20, 6, 3)).astype('float32'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
    out = tmp_path / "c"
    proc = subprocess.run([sys.executable, "-m", "keras_lowprec.cli", "export-c", str(tmp_path / "m.keras"), "--data",
                           str(tmp_path / "x.npy"), "--out", str(out), "--name", "net"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["klp.c", "klp.h", "klp_test_data.h", "net.c", "net.h", "report.json"]
    assert "bits per weight" in proc.stdout and "on 4 held-out sequences" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "keras_lowprec.cli", "export-c", str(tmp_path / "m.keras"), "--data",
                          str(tmp_path / "x.npy"), "--out", str(out), "--name", "9net"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "name: must be a C identifier" in bad.stderr
