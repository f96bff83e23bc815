"""The paper-matrix runner end to end on the smoke budget (files and shapes, not accuracy)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RUNNER = ROOT / "examples" / "reproduce_paper.py"

pytestmark = pytest.mark.skipif(
    not (DATA / "ptb").is_dir() or not (DATA / "fsdd" / "recordings").is_dir(),
    reason=f"shared data folder {DATA} (ptb/ and fsdd/recordings/) is absent",
)


def _args(tmp_path, *extra):
    return ["--budget", "smoke", "--data-dir", str(DATA), "--results", str(tmp_path / "results"),
            "--scratch", str(tmp_path / "scratch"), "--verbose", "0", "--no-tables-every-run", *extra]


def _run(tmp_path, *extra):
    """The runner as a user starts it: a fresh process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"}
    env.pop("KERAS_LOWPREC_DATA", None)
    proc = subprocess.run([sys.executable, str(RUNNER), *_args(tmp_path, *extra)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_runner_smoke_writes_runs_tables_figures_and_resumes(tmp_path, monkeypatch, capsys):
    # a ternary GRU on spoken digits (two of its three seeds) and on PTB characters (one seed)
    only = ["--only", "fsdd_conventional", "ptb", "gru", "ternary", "deterministic", "seed0", "seed1"]
    out = _run(tmp_path, *only)
    runs = sorted((tmp_path / "results" / "runs").glob("*.json"))
    assert [p.name for p in runs] == ["fsdd_conventional_gru_ternary_det_smoke.json",
                                      "fsdd_conventional_gru_ternary_det_smoke_seed1.json",
                                      "ptb_gru_ternary_det_smoke_cs-cos.json"]
    assert out.count("[done]") == 3

    fsdd, fsdd1 = (json.loads(p.read_text()) for p in runs[:2])
    assert fsdd["spec"] == {"dataset": "fsdd_conventional", "cell": "gru", "method": "ternary",
                            "stochastic": False, "budget": "smoke", "seed": 0}
    assert fsdd["settings"]["seed"] == 0 and fsdd1["settings"]["seed"] == 1
    s = fsdd["settings"]
    assert s["units"] == 8 and s["split"] == "conventional" and s["steps_per_epoch"] == 2
    assert 0.0 <= fsdd["test_accuracy"] <= 1.0 and 0.0 <= fsdd["validation_accuracy"] <= 1.0
    assert len(fsdd["history"]) == 1 and "val_accuracy" in fsdd["history"][0]
    w = fsdd["weights"]
    assert w["shape"] == [40, 24]  # 40 log-mel features -> 3 gates x 8 units
    assert sum(w["master_hist"]["counts"]) == 40 * 24
    assert len(w["rounded_values"]["values"]) <= 3 and sum(w["rounded_values"]["counts"]) == 40 * 24
    assert "reproduce_paper.py" in fsdd["command"]

    ptb = json.loads(runs[2].read_text())
    assert ptb["metric"] == "bpc" and ptb["test_bpc"] > 0 and ptb["data"]["vocab_size"] == 50
    assert ptb["data"]["test_chars"] == 1000 and "val_bpc" in ptb["history"][0]

    tables = (tmp_path / "results" / "paper_tables.md").read_text()
    assert "Runs produced by: `python examples/reproduce_paper.py --budget smoke" in tables
    assert "| method | rounding | SimpleRNN | GRU | LSTM |" in tables
    ternary_rows = [line for line in tables.splitlines() if line.startswith("| ternary | deterministic |")]
    assert len(ternary_rows) == 3  # one per data set
    accs = [100 * fsdd["test_accuracy"], 100 * fsdd1["test_accuracy"]]
    mean, sd = sum(accs) / 2, abs(accs[0] - accs[1]) / 2 ** 0.5
    assert ternary_rows[0].split("|")[4].strip() == f"{mean:.1f} ± {sd:.1f} (n=2)"
    assert ternary_rows[2].split("|")[4].strip() == f"{ptb['test_bpc']:.3f}"
    for name in ("val_curves_fsdd_conventional", "weights_fsdd_conventional", "val_curves_ptb", "weights_ptb"):
        png = tmp_path / "results" / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # finished runs leave no scratch behind
    assert not any((tmp_path / "scratch").glob("*/backup"))

    # resumable: a second call skips the finished runs and leaves their files alone
    before = {p.name: p.stat().st_mtime_ns for p in runs}
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    monkeypatch.delenv("KERAS_LOWPREC_DATA", raising=False)
    import reproduce_paper  # in this process: saves a second TensorFlow start

    reproduce_paper.main(_args(tmp_path, *only))
    out = capsys.readouterr().out
    assert out.count("[skip]") == 3 and "[run ]" not in out
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "results" / "runs").glob("*.json")} == before


def test_runner_speaker_protocol_selects_on_validation_then_trains_on_five_speakers(tmp_path):
    out = _run(tmp_path, "--only", "fsdd_speaker", "gru", "float", "fold0")
    runs = {p.name: json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").glob("*.json")}
    selection = runs.pop("fsdd_speaker_fold0_gru_float_det_smoke_global-reg.json")
    assert selection["validation_accuracy"] is not None and selection["settings"]["train_on_validation"] is False
    assert len(selection["train_speakers"]) == 4
    assert "[prep] fsdd_speaker preprocessing chosen on validation: global-reg, 1 epochs" in out
    (name, final), = runs.items()  # one selection fold only: nothing recorded for good
    assert name == "fsdd_speaker_fold0_gru_float_det_smoke_global-reg_all5x1.json"
    assert final["settings"]["train_on_validation"] is True and final["settings"]["epochs"] == 1
    assert final["validation_accuracy"] is None and 0.0 <= final["test_accuracy"] <= 1.0
    test_speaker = final["data"]["test_speaker"]
    assert len(final["train_speakers"]) == 5 and test_speaker not in final["train_speakers"]
    assert final["data"]["validation_speaker"] in final["train_speakers"]


def test_runner_rejects_unknown_filter_words(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import reproduce_paper

    with pytest.raises(SystemExit, match="gruu"):
        reproduce_paper.main(["--only", "gruu", "--results", str(tmp_path)])
    assert not (tmp_path / "paper_tables.md").exists()


def test_rnn_layer_uniform_g_init():
    """``init="uniform-g"`` starts every gate of both kernels inside its own Glorot bound
    and fills that range (Keras's defaults leave most ternary weights at 0)."""
    import math

    import keras
    import numpy as np

    sys.path.insert(0, str(ROOT / "examples"))
    import common

    layer = common.rnn_layer("gru", "ternary", 16, init="uniform-g", input_dim=8, seed=3)
    layer.build((None, None, 8))
    k, r = keras.ops.convert_to_numpy(layer.cell.kernel), keras.ops.convert_to_numpy(layer.cell.recurrent_kernel)
    for w, g in ((k, math.sqrt(6 / 24)), (r, math.sqrt(6 / 32))):
        assert np.abs(w).max() <= g and np.abs(w).max() > 0.9 * g
        assert np.mean(np.abs(w) > g / 2) > 0.4  # about half leave the ternary zero band
    with pytest.raises(ValueError, match="input_dim"):
        common.rnn_layer("gru", "ternary", 16, init="uniform-g")
    with pytest.raises(ValueError, match="init must be one of"):
        common.rnn_layer("gru", "ternary", 16, init="he")


def test_fsdd_model_passes_rnn_kwargs():
    """``rnn_kwargs`` reaches the recurrent layer (the probes leave one part in float)."""
    sys.path.insert(0, str(ROOT / "examples"))
    import common

    s = {**common.FSDD_DEFAULTS, "method": "ternary", "units": 4}
    default = common.fsdd_model(3, s).get_layer("rnn")
    floatbias = common.fsdd_model(3, {**s, "rnn_kwargs": {"bias_quantizer": None}}).get_layer("rnn")
    assert default.cell.bias_quantizer is not None
    assert floatbias.cell.bias_quantizer is None and floatbias.cell.kernel_quantizer is not None


def test_ptb_model_builds_its_recurrent_layer_with_the_given_factory():
    """``s["rnn_layer"]`` replaces ``common.rnn_layer`` with the same arguments (probes
    that try another layer keep the rest of the PTB model and training)."""
    sys.path.insert(0, str(ROOT / "examples"))
    import common

    seen = {}

    def factory(cell, method, units, stochastic, **kwargs):
        seen.update(cell=cell, method=method, units=units, name=kwargs["name"])
        return common.rnn_layer(cell, "float", units, **{k: kwargs[k] for k in ("name", "return_sequences")})

    s = {**common.PTB_DEFAULTS, "method": "ternary", "units": 4, "embedding": 3}
    model = common.ptb_model(20, {**s, "rnn_layer": factory}, steps_per_epoch=1)
    assert seen == {"cell": "gru", "method": "ternary", "units": 4, "name": "rnn"}
    assert type(model.get_layer("rnn")).__name__ == "GRU"
    assert type(common.ptb_model(20, s, steps_per_epoch=1).get_layer("rnn")).__name__ == "TernaryGRU"


def test_recipe_tag_names_runs_and_keeps_superseded_runs_out_of_tables(tmp_path, monkeypatch):
    """A (data set, cell) with a recipe gets its tag in the run id and settings; runs of
    another recipe (an older one) are not shown."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import reproduce_paper as rp

    monkeypatch.setitem(rp.RECIPES, ("fsdd_conventional", "simplernn"), ("cos", {"lr_schedule": "cosine"}))
    spec = next(rp.method_specs("fsdd_conventional", "simplernn", "quick", seeds=(2,)))
    assert rp.run_id(spec) == "fsdd_conventional_simplernn_float_det_quick_cos_seed2"
    assert rp.settings_for(spec)["lr_schedule"] == "cosine" and rp.settings_for(spec)["seed"] == 2
    old = {"spec": {**spec, "recipe": None, "seed": 0}, "test_accuracy": 0.5}
    new = {"spec": spec, "test_accuracy": 0.9}
    table = rp.best_budget_runs([old, new], "fsdd_conventional", {})
    assert table == {("simplernn", "float", False): [new]}


def test_float_runs_of_a_scales_recipe_drop_the_scales(monkeypatch):
    """The PTB recipes (``common.RECIPES``): float layers have no channel scales, so under the
    LSTM's scales-only recipe the float run is the budget's float run (no tag, shown in the
    table); under the GRU's scales plus decay it gets the decay."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import common
    import reproduce_paper as rp

    assert rp.RECIPES[("ptb", "lstm")] == common.recipe("ptb", "lstm") == ("cs", {"channel_scale": True})
    assert rp.RECIPES[("ptb", "gru")] == ("cs-cos", {"channel_scale": True, "lr_schedule": "cosine"})
    specs = {(s["method"], s["stochastic"]): s for s in rp.method_specs("ptb", "lstm", "quick")}
    assert rp.run_id(specs[("float", False)]) == "ptb_lstm_float_det_quick"
    assert rp.run_id(specs[("ternary", False)]) == "ptb_lstm_ternary_det_quick_cs"
    assert rp.settings_for(specs[("ternary", False)])["channel_scale"] is True
    assert not rp.settings_for(specs[("float", False)]).get("channel_scale")
    gru_float = next(rp.method_specs("ptb", "gru", "quick"))
    assert rp.run_id(gru_float) == "ptb_gru_float_det_quick_cs-cos"
    assert rp.settings_for(gru_float)["lr_schedule"] == "cosine" and not rp.settings_for(gru_float).get("channel_scale")
    plain = {"spec": {**specs[("float", False)]}, "test_bpc": 1.6}
    table = rp.best_budget_runs([plain], "ptb", {})
    assert table == {("lstm", "float", False): [plain]}


def test_candidate_recipes_run_under_their_own_tag_and_leave_the_tables_alone(tmp_path, monkeypatch, capsys):
    """``--candidate-recipes``: a candidate in ``common.CANDIDATE_RECIPES`` replaces its
    (data set, cell)'s recipe for the run, which gets the candidate's tag; the tables (current
    recipes) are not rewritten and do not show it. With no candidate pending it says so."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    monkeypatch.delenv("KERAS_LOWPREC_DATA", raising=False)
    import common
    import reproduce_paper as rp

    monkeypatch.setattr(rp, "RECIPES", dict(rp.RECIPES))  # main() updates it in place
    monkeypatch.setitem(common.CANDIDATE_RECIPES, ("ptb", "lstm"), ("cs-cos", {"channel_scale": True,
                                                                          "lr_schedule": "cosine"}))
    rp.main(_args(tmp_path, "--candidate-recipes", "--only", "ptb", "lstm", "ternary", "deterministic"))
    runs = tmp_path / "results" / "runs"
    (path,) = runs.glob("*.json")
    assert path.name == "ptb_lstm_ternary_det_smoke_cs-cos.json"
    settings = json.loads(path.read_text())["settings"]
    assert settings["channel_scale"] is True and settings["lr_schedule"] == "cosine"
    assert not (tmp_path / "results" / "paper_tables.md").exists()
    # the tables show only the current recipes, and their header counts and cites only what they show
    monkeypatch.setattr(rp, "RECIPES", {**rp.RECIPES, ("ptb", "lstm"): common.recipe("ptb", "lstm")})
    rp.main(_args(tmp_path, "--tables-only"))
    tables = (tmp_path / "results" / "paper_tables.md").read_text()
    header = tables.split("\n## ")[0]
    assert "from 0 finished runs (1 more in `results/runs/`" in header and "--candidate-recipes" not in header
    assert "| ternary | deterministic | — | — | — |" in tables.split("## Penn Treebank")[1]

    monkeypatch.delitem(common.CANDIDATE_RECIPES, ("ptb", "lstm"))
    capsys.readouterr()
    rp.main(_args(tmp_path, "--candidate-recipes", "--only", "ptb", "lstm", "ternary", "deterministic"))
    assert "no candidate recipes pending" in capsys.readouterr().out
    assert sorted(p.name for p in runs.glob("*.json")) == [path.name, "ptb_lstm_ternary_det_smoke_cs.json"]


def test_glorot_lr_scaling_scales_only_rounded_weights():
    """``lr_scale="glorot"``: the first Adam step moves a rounded weight by about lr/G
    (BinaryConnect's per-layer scaling) and a float weight by about lr."""
    import keras
    import numpy as np

    sys.path.insert(0, str(ROOT / "examples"))
    import common

    s = {**common.PTB_DEFAULTS, "method": "ternary", "units": 8, "embedding": 4, "lr": 1e-3, "lr_scale": "glorot"}
    model = common.ptb_model(20, s, steps_per_epoch=1)
    rnn, head = model.get_layer("rnn"), model.get_layer("softmax")
    scales = common.glorot_lr_scales(model)
    assert set(scales) == {v.path for v in rnn.cell.master_weights().values()}
    g = rnn.cell.glorot_bound_for("kernel")
    assert scales[rnn.cell.kernel.path] == pytest.approx(1 / g)
    before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in (rnn.cell.kernel, head.kernel)}
    x = np.random.default_rng(0).integers(0, 20, (8, 6)).astype("int32")
    model.train_on_batch(x, x)
    moved = {p: np.abs(keras.ops.convert_to_numpy(v) - before[p]).max()
             for p, v in ((rnn.cell.kernel.path, rnn.cell.kernel), (head.kernel.path, head.kernel))}
    assert moved[head.kernel.path] == pytest.approx(1e-3, rel=0.05)
    assert moved[rnn.cell.kernel.path] == pytest.approx(1e-3 / g, rel=0.05)
    with pytest.raises(ValueError, match="lr_scale"):
        common.optimizer(model, {**s, "lr_scale": "he"}, 1)


def test_example_command_lines_default_to_the_recommended_recipe():
    """``--lr-schedule auto`` (the default) is the cell's recipe; explicit choices win."""
    import argparse

    sys.path.insert(0, str(ROOT / "examples"))
    import common

    parser = argparse.ArgumentParser()
    common.add_run_args(parser, common.FSDD_DEFAULTS)
    settings = lambda *a: common.run_args_settings(parser.parse_args(["--out", "m.keras", *a]), "fsdd")  # noqa: E731
    assert settings("--cell", "simplernn")["lr_schedule"] == "cosine"
    assert settings("--cell", "lstm")["lr_schedule"] == "constant"
    assert settings("--cell", "simplernn", "--lr-schedule", "constant")["lr_schedule"] == "constant"
    s = settings("--lr-scale", "glorot", "--input-bn", "0.1")
    assert s["lr_scale"] == "glorot" and s["input_bn"] == 0.1
    assert settings()["lr_scale"] is None and settings()["input_bn"] is False
    assert settings("--cell", "lstm")["finetune_lr"] == 5e-4 and settings()["finetune_lr"] is None
    assert settings("--cell", "lstm", "--finetune-lr", "0")["finetune_lr"] is None
    assert settings("--finetune-lr", "1e-3")["finetune_lr"] == 1e-3
    assert settings("--method", "ternary")["channel_scale"] is False

    ptb_parser = argparse.ArgumentParser()
    common.add_run_args(ptb_parser, common.PTB_DEFAULTS)
    ptb = lambda *a: common.run_args_settings(ptb_parser.parse_args(["--out", "m.keras", *a]), "ptb")  # noqa: E731
    gru, lstm = ptb("--method", "ternary"), ptb("--method", "exponential", "--cell", "lstm")
    assert gru["channel_scale"] is True and gru["lr_schedule"] == "cosine"
    assert lstm["channel_scale"] is True and lstm["lr_schedule"] == "constant"
    assert ptb()["channel_scale"] is False and ptb()["lr_schedule"] == "cosine"  # float GRU: the decay only
    assert ptb("--method", "ternary", "--channel-scale", "off")["channel_scale"] is False
    with pytest.raises(SystemExit, match="float layers have no channel scales"):
        ptb("--channel-scale", "on")


@pytest.mark.parametrize("value", ["fast", "-1", "nan"])
def test_example_command_line_rejects_a_bad_fine_tuning_rate(value, capsys):
    import argparse

    sys.path.insert(0, str(ROOT / "examples"))
    import common

    parser = argparse.ArgumentParser()
    common.add_run_args(parser, common.FSDD_DEFAULTS)
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "m.keras", "--finetune-lr", value])
    assert "--finetune-lr" in capsys.readouterr().err


def _python(code: str, tmp_path) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT / "examples")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_model_trained_with_glorot_lr_scaling_reloads_in_another_process(tmp_path):
    """A model saved with ``--lr-scale glorot`` reloads, optimizer factors and state included,
    in a process that imports the examples; with ``compile=False`` (the exporter's load)
    without them; and a plain load elsewhere fails naming the optimizer, not silently."""
    saved = _python(
        "import numpy as np, common\n"
        "s = {**common.PTB_DEFAULTS, 'method': 'ternary', 'units': 8, 'embedding': 4, 'lr': 1e-3, 'lr_scale': 'glorot'}\n"
        "m = common.ptb_model(20, s, steps_per_epoch=1)\n"
        "x = np.random.default_rng(0).integers(0, 20, (8, 6)).astype('int32')\n"
        "m.train_on_batch(x, x)\n"
        "m.save('m.keras')\n"
        "print(sorted(m.optimizer.scales.items()))\n", tmp_path)
    loaded = _python(
        "import keras, keras_lowprec, common\n"
        "m = keras.saving.load_model('m.keras')\n"
        "assert type(m.optimizer) is common.ScaledAdam, type(m.optimizer)\n"
        "assert int(m.optimizer.iterations) == 1\n"
        "print(sorted(m.optimizer.scales.items()))\n", tmp_path)
    assert loaded == saved and "rnn" in saved
    _python(
        "import keras, keras_lowprec\n"
        "m = keras.saving.load_model('m.keras', compile=False)\n"
        "assert type(m.get_layer('rnn').cell.quantizer_for('kernel')).__name__ == 'Ternary'\n"
        "try:\n"
        "    keras.saving.load_model('m.keras')\n"
        "except Exception as err:\n"
        "    assert 'ScaledAdam' in str(err), err\n"
        "else:\n"
        "    raise AssertionError('loaded an optimizer it does not know')\n", tmp_path)


def test_matrix_recipes_follow_the_examples_defaults_on_both_fsdd_splits(monkeypatch):
    """The runner takes its recipes from ``common.recipe``: a SimpleRNN speaker-independent
    final run decays its rate over the protocol's chosen epochs, as the examples' CLI would."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import common
    import reproduce_paper as rp

    for dataset in ("fsdd_conventional", "fsdd_speaker"):
        for cell in common.CELLS:
            assert rp.RECIPES.get((dataset, cell), (None, {})) == common.recipe("fsdd", cell)
    spec = {**next(rp.method_specs("fsdd_speaker", "simplernn", "quick", prep="spk-aug", folds=(3,))), "epochs": 17}
    assert rp.run_id(spec) == "fsdd_speaker_fold3_simplernn_float_det_quick_cos_spk-aug_all5x17"
    s = rp.settings_for(spec)
    assert s["lr_schedule"] == "cosine" and s["epochs"] == 17 and s["train_on_validation"]


def test_fine_tuning_starts_from_a_float_model_saved_in_another_process(tmp_path):
    """``init_from``: the rounded model starts from the saved float model's weights, layer
    by layer (master weights clipped to the rounded layer's range by its constraint)."""
    tiny = "dict(cell='lstm', units=8, epochs=1, max_train=32, max_eval=16, seed=0)"
    _python(
        "import numpy as np, common\n"
        f"_, m = common.train_fsdd({{**{tiny}, 'method': 'float'}}, {str(DATA)!r}, 's1', verbose=0)\n"
        "m.save('float.keras')\n"
        "np.savez('float.npz', *[w.numpy() for w in m.weights])\n", tmp_path)
    _python(
        "import numpy as np, common\n"
        f"_, m = common.train_fsdd({{**{tiny}, 'method': 'ternary', 'lr': 1e-9, 'init_from': 'float.keras'}},\n"
        f"                          {str(DATA)!r}, 's2', verbose=0)\n"
        "f = list(np.load('float.npz').values())\n"
        "q = [w.numpy() for w in m.weights]\n"
        "assert [w.path for w in m.weights][:2] == ['rnn/lstm_cell/kernel', 'rnn/lstm_cell/recurrent_kernel']\n"
        "for a, b in zip(f, q):\n"
        "    np.testing.assert_allclose(b, np.clip(a, b.min(), b.max()), atol=1e-5)\n", tmp_path)


def test_fine_tuning_from_a_model_of_another_size_names_the_argument(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    import common

    s = {**common.FSDD_DEFAULTS, "cell": "lstm", "units": 8}
    common.fsdd_model(5, {**s, "units": 4}).save(tmp_path / "small.keras")
    with pytest.raises(ValueError, match=r"init_from .*small\.keras.*'rnn'"):
        common.init_from(common.fsdd_model(5, {**s, "method": "ternary"}), str(tmp_path / "small.keras"))


def test_fine_tuning_recipe_trains_the_float_stage_first_and_resumes_after_it(tmp_path):
    """``finetune_lr`` without ``init_from``: the float model of the same settings is trained
    first (kept in the scratch folder), the rounded run starts from its weights and trains at
    ``finetune_lr``; started again, the run reuses the finished float stage."""
    tiny = "dict(cell='lstm', units=8, epochs=1, max_train=32, max_eval=16, seed=0)"
    code = (
        "import json, numpy as np, keras, common\n"
        f"r, m = common.train_fsdd({{**{tiny}, 'method': 'ternary', 'finetune_lr': 1e-9}}, {str(DATA)!r}, 's',\n"
        "                         verbose=0)\n"
        "f = keras.saving.load_model('s/float_stage.keras', compile=False)\n"
        "for a, b in zip(f.weights, m.weights):\n"
        "    a, b = a.numpy(), b.numpy()\n"
        "    np.testing.assert_allclose(b, np.clip(a, b.min(), b.max()), atol=1e-5)\n"
        "assert float(m.optimizer.learning_rate) == np.float32(1e-9)\n"
        "assert r['settings']['init_from'].endswith('float_stage.keras')\n"
        "print(json.dumps(r['first_stage']))\n")
    first = json.loads(_python(code, tmp_path))
    assert first["epochs_run"] == 1 and 0 <= first["test_accuracy"] <= 1
    stamp = (tmp_path / "s" / "float_stage.keras").stat().st_mtime_ns
    assert json.loads(_python(code, tmp_path)) == first  # the float stage is not trained again
    assert (tmp_path / "s" / "float_stage.keras").stat().st_mtime_ns == stamp
    other_seed = code.replace("seed=0", "seed=1")
    _python(other_seed, tmp_path)  # other settings: the float stage is trained again, not reused
    assert (tmp_path / "s" / "float_stage.keras").stat().st_mtime_ns != stamp
    assert json.loads((tmp_path / "s" / "float_stage.json").read_text())["settings"]["seed"] == 1


def test_float_stage_ready_only_for_a_finished_stage_of_the_same_settings(tmp_path):
    """The runner logs "[run ] ..._stage1" exactly when ``train_float_stage`` will train."""
    sys.path.insert(0, str(ROOT / "examples"))
    import common

    s = {**common.FSDD_DEFAULTS, "cell": "lstm", "units": 4, "method": "ternary", "finetune_lr": 5e-4}
    path = tmp_path / "stage.keras"
    assert not common.float_stage_ready(s, path)
    path.write_bytes(b"model")
    assert not common.float_stage_ready(s, path)  # no recorded settings
    path.with_suffix(".json").write_text(json.dumps({"settings": common.float_stage_settings(s)}))
    assert common.float_stage_ready(s, path)
    assert common.float_stage_ready({**s, "method": "exponential"}, path)  # one float stage for every method
    assert not common.float_stage_ready({**s, "seed": 1}, path)
    path.unlink()
    assert not common.float_stage_ready(s, path)


def test_runner_fine_tuning_recipe_shares_one_float_stage_per_seed(tmp_path):
    """FSDD LSTM cells (recipe ``ft``): one float stage per seed, every method of that seed
    (float included) fine-tuned from it; a second start skips everything."""
    only = ["--only", "fsdd_conventional", "lstm", "seed0", "deterministic", "float", "ternary"]
    out = _run(tmp_path, *only)
    assert out.count("float model the ft recipe starts from") == 1
    runs = {p.name: json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").glob("*.json")}
    assert sorted(runs) == ["fsdd_conventional_lstm_float_det_smoke_ft.json",
                            "fsdd_conventional_lstm_ternary_det_smoke_ft.json"]
    stage = "fsdd_conventional_lstm_float_det_smoke_ft_stage1"
    for r in runs.values():
        assert r["first_stage"]["run"] == stage and r["settings"]["init_from"] == stage
        assert r["settings"]["finetune_lr"] == 5e-4 and r["settings"]["lr"] == 2e-3  # the float stage's rate, kept
    assert sorted(p.name for p in (tmp_path / "scratch" / "float_stages").iterdir()) == [
        f"{stage}.json", f"{stage}.keras"]
    tables = (tmp_path / "results" / "paper_tables.md").read_text()
    assert "LSTM `ft` = fine-tuning" in tables
    again = _run(tmp_path, *only)
    assert again.count("[skip]") == 2 and "[run ]" not in again
