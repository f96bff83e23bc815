"""keras_lowprec.datasets on the real data in ../shared/data (skipped when absent)."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from keras_lowprec import datasets

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(
    not (DATA / "ptb").is_dir() or not (DATA / "fsdd" / "recordings").is_dir(),
    reason=f"shared data folder {DATA} (ptb/ and fsdd/recordings/) is absent",
)
UNREACHABLE = "http://127.0.0.1:9/{name}"  # discard port: connection refused at once


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(datasets.ENV_DATA, raising=False)


# ------------------------------------------------------------------------------ PTB
@pytest.fixture(scope="module")
def ptb():
    return datasets.ptb_chars(DATA)


@needs_data
def test_ptb_chars_splits_and_vocabulary(ptb):
    assert (len(ptb.train), len(ptb.valid), len(ptb.test)) == (5017482, 393042, 442423)
    assert ptb.vocab_size == 50 and "\n" in ptb.vocab and "_" in ptb.vocab
    for split in (ptb.train, ptb.valid, ptb.test):
        assert split.dtype == np.int32 and split.min() >= 0 and split.max() < ptb.vocab_size
    assert ptb.decode(ptb.valid[:31]) == "consumers_may_want_to_move_thei"
    assert ptb.decode(ptb.train[:4]) == "aer_"


@needs_data
def test_ptb_word_files_give_the_same_streams(ptb, tmp_path):
    for split in ("train", "valid", "test"):
        shutil.copy(DATA / "ptb" / f"ptb.{split}.txt", tmp_path)
    derived = datasets.ptb_chars(tmp_path)
    assert derived.vocab == ptb.vocab
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(derived, split), getattr(ptb, split))


@needs_data
def test_ptb_env_var_is_the_default(monkeypatch, ptb):
    monkeypatch.setenv(datasets.ENV_DATA, str(DATA))
    np.testing.assert_array_equal(datasets.ptb_chars().valid, ptb.valid)


@needs_data
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_ptb_corrupt_file_is_a_checksum_error(tmp_path, damage):
    for split in ("train", "valid", "test"):
        shutil.copy(DATA / "ptb" / f"ptb.char.{split}.txt", tmp_path)
    target = tmp_path / "ptb.char.valid.txt"
    os.chmod(target, 0o644)
    raw = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(raw[: len(raw) // 2])
    else:
        target.write_bytes(raw[:1000] + (b"x" if raw[1000:1001] != b"x" else b"y") + raw[1001:])
    with pytest.raises(datasets.ChecksumError, match="ptb.char.valid.txt"):
        datasets.ptb_chars(tmp_path)


def test_ptb_offline_without_data_dir_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "PTB_URL", UNREACHABLE)
    with pytest.raises(datasets.DatasetUnavailableError) as info:
        datasets.ptb_chars(download_dir=str(tmp_path))
    message = str(info.value)
    assert "data_dir" in message and "--data-dir" in message and datasets.ENV_DATA in message


def test_fsdd_offline_without_data_dir_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "FSDD_URL", "http://127.0.0.1:9/fsdd-missing.tar.gz")
    with pytest.raises(datasets.DatasetUnavailableError) as info:
        datasets.fsdd(download_dir=str(tmp_path))
    assert "data_dir" in str(info.value) and datasets.ENV_DATA in str(info.value)


def test_missing_data_dir_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError):
        datasets.ptb_chars(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="ptb"):
        datasets.ptb_chars(tmp_path)


# ----------------------------------------------------------------------------- FSDD
@pytest.fixture(scope="module")
def conventional():
    return datasets.fsdd(DATA, normalize="utterance")


@needs_data
def test_fsdd_conventional_split(conventional):
    d = conventional
    assert (len(d.train), len(d.validation), len(d.test)) == (2400, 300, 300)
    take = lambda split: np.array([int(f.split("_")[2][:-4]) for f in split.files])  # noqa: E731
    assert take(d.test).max() <= 4 and take(d.validation).min() == 5 and take(d.validation).max() == 9
    assert take(d.train).min() == 10
    assert not set(d.train.files) & set(d.test.files) and not set(d.validation.files) & set(d.test.files)
    for split in (d.train, d.validation, d.test):
        assert split.x.dtype == np.float32 and split.x.ndim == 3 and split.x.shape[2] == 40
        assert set(np.unique(split.y)) == set(range(10))
        assert set(split.speakers) == set(datasets.FSDD_SPEAKERS)
        assert np.bincount(split.y).min() == np.bincount(split.y).max()  # balanced digits
    assert d.num_features == 40 and d.info["split"] == "conventional"


@needs_data
def test_fsdd_padding_is_zero_and_real_frames_are_not(conventional):
    for split in (conventional.train, conventional.test):
        assert split.lengths.min() >= 10 and split.lengths.max() <= split.x.shape[1]
        mask = split.mask
        assert mask.shape == split.x.shape[:2]
        assert np.all(split.x[~mask] == 0.0)
        assert np.all(np.any(split.x != 0.0, axis=-1) == mask)  # Masking(0.0) recovers the mask
        # per-utterance normalization over the real frames only
        i = int(np.argmax(split.lengths))
        j = int(np.argmin(split.lengths))
        for k in (i, j):
            real = split.x[k, : split.lengths[k]]
            np.testing.assert_allclose(real.mean(0), 0.0, atol=1e-4)


@needs_data
def test_fsdd_padding_does_not_leak_into_a_masked_rnn(conventional):
    import keras

    import keras_lowprec

    split = conventional.test
    for layer in (keras.layers.GRU(8, seed=1), keras_lowprec.layers.TernaryGRU(8, seed=1)):
        inputs = keras.Input((None, 40))
        outputs = layer(keras.layers.Masking(0.0)(inputs))
        model = keras.Model(inputs, outputs)
        for k in np.argsort(split.lengths)[:3]:
            padded = model.predict(split.x[k:k + 1], verbose=0)
            exact = model.predict(split.x[k:k + 1, : split.lengths[k]], verbose=0)
            np.testing.assert_allclose(padded, exact, rtol=1e-5, atol=1e-6)


@needs_data
@pytest.mark.parametrize("fold", range(6))
def test_fsdd_speaker_folds_separate_speakers(fold):
    d = datasets.fsdd(DATA, split="speaker", fold=fold)
    test_speaker = datasets.FSDD_SPEAKERS[fold]
    assert set(d.test.speakers) == {test_speaker} == {d.info["test_speaker"]}
    (val_speaker,) = set(d.validation.speakers)
    assert val_speaker != test_speaker and val_speaker == d.info["validation_speaker"]
    train_speakers = set(d.train.speakers)
    assert len(train_speakers) == 4 and not train_speakers & {test_speaker, val_speaker}
    assert (len(d.train), len(d.validation), len(d.test)) == (2000, 500, 500)
    files = np.concatenate([d.train.files, d.validation.files, d.test.files])
    assert len(set(files)) == 3000


@needs_data
def test_fsdd_speaker_by_name_mfcc_and_global_normalization():
    d = datasets.fsdd(DATA, split="speaker", fold="theo", validation_speaker="george", features="mfcc",
                      normalize="global")
    assert set(d.test.speakers) == {"theo"} and set(d.validation.speakers) == {"george"}
    assert d.num_features == 13
    real = d.train.x[d.train.mask]
    np.testing.assert_allclose(real.mean(0), 0.0, atol=1e-3)  # statistics of the training split
    np.testing.assert_allclose(real.std(0), 1.0, atol=1e-3)
    assert np.all(d.test.x[~d.test.mask] == 0.0)
    with pytest.raises(ValueError):
        datasets.fsdd(DATA, split="speaker", fold="theo", validation_speaker="theo")
    with pytest.raises(ValueError):
        datasets.fsdd(DATA, split="speaker", fold=6)


@needs_data
def test_fsdd_feature_cache_is_keyed_by_parameters(tmp_path):
    a = datasets.fsdd(DATA, num_mel_bins=20, cache_dir=tmp_path)
    cached = sorted((tmp_path / "fsdd_features").glob("*.npz"))
    assert len(cached) == 1
    b = datasets.fsdd(DATA, num_mel_bins=20, cache_dir=tmp_path)
    np.testing.assert_array_equal(a.test.x, b.test.x)
    assert a.num_features == 20
    datasets.fsdd(DATA, num_mel_bins=20, frame_step_ms=20, cache_dir=tmp_path)
    assert len(list((tmp_path / "fsdd_features").glob("*.npz"))) == 2


@needs_data
def test_fsdd_truncated_recording_is_a_checksum_error(tmp_path):
    src = DATA / "fsdd" / "recordings"
    dst = tmp_path / "recordings"
    dst.mkdir()
    names = sorted(os.listdir(src))
    victim = names[123]
    for name in names:
        if name != victim:
            os.symlink(src / name, dst / name)
    raw = (src / victim).read_bytes()
    (dst / victim).write_bytes(raw[: len(raw) - 400])
    with pytest.raises(datasets.ChecksumError, match=victim):
        datasets.fsdd(tmp_path, cache_dir=tmp_path / "cache")
    (dst / victim).unlink()  # a missing file: a shorter data set is an error too
    with pytest.raises(datasets.ChecksumError, match="2999 recordings"):
        datasets.fsdd(tmp_path, cache_dir=tmp_path / "cache")


# ------------------------------------------------------------------ sequential digits
def test_sequential_digits_fixed_split():
    (x_train, y_train), (x_test, y_test) = datasets.sequential_digits()
    assert x_train.shape == (1347, 8, 8) and x_test.shape == (450, 8, 8)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert set(np.unique(y_test)) == set(range(10))
    (again, _), _ = datasets.sequential_digits()
    np.testing.assert_array_equal(again, x_train)
    (other, _), _ = datasets.sequential_digits(seed=1)
    assert not np.array_equal(other, x_train)


@needs_data
def test_fsdd_cepstral_mean_normalization_is_per_utterance():
    d = datasets.fsdd(DATA, split="speaker", fold=1, normalize="cmn")
    for split in (d.train, d.test):
        for k in (0, len(split) - 1):
            np.testing.assert_allclose(split.x[k, : split.lengths[k]].mean(0), 0.0, atol=1e-4)
        assert np.all(split.x[~split.mask] == 0.0)
    with pytest.raises(ValueError, match="normalize"):
        datasets.fsdd(DATA, normalize="bogus")


@needs_data
def test_fsdd_speaker_normalization_uses_each_speakers_own_statistics():
    d = datasets.fsdd(DATA, split="speaker", fold=2, normalize="speaker")
    for split in (d.train, d.validation, d.test):
        for spk in np.unique(split.speakers):
            rows = split.speakers == spk
            frames = split.x[rows][split.mask[rows]]  # every real frame of that speaker
            np.testing.assert_allclose(frames.mean(0), 0.0, atol=1e-3)
            np.testing.assert_allclose(frames.std(0), 1.0, atol=1e-3)
        assert np.all(split.x[~split.mask] == 0.0)
