"""Running an exported model in LiteRT and in the TFLM interpreter, against Keras.

TFLM keeps variable tensors between invokes, so the runners call ``reset()`` before
every sequence. TFLM's error messages go to the process's stderr (C level); they are
captured and put into the ``TFLMError`` raised when TFLM cannot load or run a model.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from typing import Callable

import numpy as np

from keras_lowprec.export.errors import TFLMError

DEFAULT_ARENA = 4 * 1024 * 1024


@contextlib.contextmanager
def capture_stderr():
    """Captures what C code writes to file descriptor 2; yields a list that gets the text."""
    out: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode(errors="replace"))


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """``clip(round(x / scale) + zero_point, -128, 127)`` as int8; ``scale == 0``: a float
    tensor (no quantization parameters), ``x`` as float32."""
    if scale == 0:
        return np.asarray(x, np.float32)
    return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """``(q - zero_point) * scale`` as float32; ``scale == 0``: a float tensor, unchanged."""
    if scale == 0:
        return np.asarray(q, np.float32)
    return (q.astype(np.float32) - zero_point) * np.float32(scale)


class _Runner:
    """Common interface over LiteRT and TFLM: set inputs, invoke, read outputs.

    ``input_quant(i)`` / ``output_quant(i)`` give ``(scale, zero_point)``, ``(0.0, 0)`` for a
    float tensor; ``last_invoke_s`` is the duration of the last ``invoke`` alone.
    """

    last_invoke_s: float = 0.0

    def reset(self):  # pragma: no cover - interface
        pass


class LiteRTRunner(_Runner):
    def __init__(self, model_bytes: bytes):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        # Reference kernels without the XNNPACK delegate: the closest to TFLM's kernels.
        self.it = Interpreter(model_content=model_bytes,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self.it.allocate_tensors()
        self.inputs = self.it.get_input_details()
        self.outputs = self.it.get_output_details()

    def input_quant(self, i):
        return self.inputs[i]["quantization"]

    def output_quant(self, i):
        return self.outputs[i]["quantization"]

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        for d, a in zip(self.inputs, arrays):
            self.it.set_tensor(d["index"], a.reshape(d["shape"]))
        t0 = time.perf_counter()
        self.it.invoke()
        self.last_invoke_s = time.perf_counter() - t0
        return [self.it.get_tensor(d["index"]).copy() for d in self.outputs]

    def reset(self):
        self.it.reset_all_variables()


class TFLMRunner(_Runner):
    def __init__(self, model_bytes: bytes, arena_size: int = DEFAULT_ARENA):
        from tflite_micro import runtime

        with capture_stderr() as err:
            try:
                self.it = runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=arena_size)
                exc = None
            except Exception as e:  # noqa: BLE001 - re-raised with TFLM's own message
                exc = e
        if exc is not None:
            raise TFLMError(f"TFLM cannot load the model: {_tflm_message(err, exc)}") from None
        self.n_in = len(_model_io(model_bytes)[0])
        self.n_out = len(_model_io(model_bytes)[1])
        self.inputs = [self.it.get_input_details(i) for i in range(self.n_in)]
        self.outputs = [self.it.get_output_details(i) for i in range(self.n_out)]

    def input_quant(self, i):
        return _quant(self.inputs[i])

    def output_quant(self, i):
        return _quant(self.outputs[i])

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        with capture_stderr() as err:
            try:
                for i, a in enumerate(arrays):
                    self.it.set_input(a.reshape(self.inputs[i]["shape"]), i)
                t0 = time.perf_counter()
                self.it.invoke()
                self.last_invoke_s = time.perf_counter() - t0
                exc = None
            except Exception as e:  # noqa: BLE001
                exc = e
        if exc is not None:
            raise TFLMError(f"TFLM cannot run the model: {_tflm_message(err, exc)}") from None
        return [np.array(self.it.get_output(i)) for i in range(self.n_out)]

    def reset(self):
        self.it.reset()

    def arena_bytes(self) -> int | None:
        with capture_stderr() as err:
            self.it.print_allocations()
        m = re.search(r"Arena allocation total (\d+) bytes", "".join(err))
        return int(m.group(1)) if m else None


def _quant(details: dict) -> tuple[float, int]:
    q = details["quantization_parameters"]
    return (float(q["scales"][0]), int(q["zero_points"][0])) if len(q["scales"]) else (0.0, 0)


def _tflm_message(err: list[str], exc: Exception) -> str:
    text = " ".join(line.strip() for line in "".join(err).splitlines() if line.strip())
    return f"{text} ({exc})" if text else str(exc)


def _model_io(model_bytes: bytes):
    from keras_lowprec.export.tflite import TFLiteModel

    sg = TFLiteModel.from_bytes(model_bytes).subgraph
    return list(sg.inputs), list(sg.outputs)


_PROBE = """
import sys
import numpy as np
from tflite_micro import runtime

def load(arena):
    it = runtime.Interpreter.from_bytes(model, arena_size=arena)
    for i in range(n):
        d = it.get_input_details(i)
        it.set_input(np.zeros(tuple(d["shape"]), d["dtype"]), i)
    it.invoke()
    return it

model = open(sys.argv[1], "rb").read()
arena, n = int(sys.argv[2]), int(sys.argv[3])
if sys.argv[6] == "1":
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    lite = Interpreter(model_content=model,
                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    lite.allocate_tensors()
    for d in lite.get_input_details():
        lite.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    lite.invoke()
    print("litert ok", flush=True)
it = load(arena)
print("ok", flush=True)
it.print_allocations()
lo, hi = int(sys.argv[4]) // 16 * 16, -(-int(sys.argv[5]) // 16) * 16
# The smallest arena AllocateTensors accepts (0: not asked) is more than the arena it reports
# as used: the memory planner needs scratch space while planning. Some kernels crash on a
# too-small arena instead of failing: "try" without an answer means that size fails.
while hi - lo > 16:
    mid = (lo + hi) // 32 * 16
    print("try", mid, flush=True)
    try:
        load(mid)
        hi = mid
    except Exception:
        lo = mid
    print("done", lo, hi, flush=True)
"""


def probe_tflm(model_bytes: bytes, n_inputs: int, arena_size: int = DEFAULT_ARENA, timeout: float = 120.0,
               smallest: bool = False, litert: bool = False) -> int | tuple[int | None, int | None] | None:
    """Loads and invokes the model once in TFLM in a child process; returns the arena bytes used
    (``smallest=True``: ``(used, smallest arena that loads and invokes)``, found by bisection).
    ``litert=True``: in LiteRT first, too.

    Some models make TFLM or LiteRT abort the whole process (e.g. a kernel's check on a
    degenerate quantization scale, or a requantization multiplier that overflows) instead
    of returning an error; the child takes that hit and this raises ``TFLMError`` with what
    the interpreter printed.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.tflite")
        with open(path, "wb") as fh:
            fh.write(model_bytes)
        proc = _probe_child(path, arena_size, n_inputs, 0, 0, timeout, litert)
        if litert and "litert ok" not in proc.stdout:
            raise TFLMError(f"LiteRT cannot run the model ({_how(proc)}): {_child_message(proc)}. {_HINT}")
        if proc.returncode != 0 or "ok" not in proc.stdout.replace("litert ok", ""):
            raise TFLMError(f"TFLM cannot run the model ({_how(proc)}): {_child_message(proc)}. {_HINT}")
        m = re.search(r"Arena allocation total (\d+) bytes", proc.stderr or "")
        used = int(m.group(1)) if m else None
        if not smallest:
            return used
        return used, _smallest_arena(path, n_inputs, used or 0, arena_size, timeout)


_HINT = ("Common causes: a layer whose activations are all zero on the representative data (degenerate "
         "quantization scales), or inputs so large that int8 requantization overflows; check the data (e.g. "
         "normalize the features) and the trained weights.")


def _how(proc) -> str:
    return f"exit status {proc.returncode}" if proc.returncode >= 0 else f"killed by signal {-proc.returncode}"


def _child_message(proc) -> str:
    """The interpreter's own lines from a child's stderr (no traceback, no TF start-up logging)."""
    skip = ("Traceback", "  File", "    ", "WARNING: All log messages", "I0000", "W0000", "E0000")
    text = " ".join(line.strip() for line in (proc.stderr or "").splitlines()
                    if line.strip() and not line.startswith(skip))
    return text[-800:] or "no message"


def _smallest_arena(path: str, n_inputs: int, lo: int, hi: int, timeout: float) -> int:
    """Bisects the arena size between ``lo`` (used) and ``hi`` (known to work) in child
    processes, a new one after each crash; starts from ``2 * lo + 4 KiB`` when that works."""
    guess = 2 * lo + 4096
    if guess < hi and "ok" in _probe_child(path, guess, n_inputs, 0, 0, timeout).stdout.split():
        hi = guess
    while hi - lo > 16:
        proc = _probe_child(path, hi, n_inputs, lo, hi, timeout)
        for line in proc.stdout.splitlines():
            if line.startswith("done"):
                lo, hi = (int(v) for v in line.split()[1:])
        tried = [line for line in proc.stdout.splitlines() if line.startswith(("try", "done"))]
        if proc.returncode != 0 and tried and tried[-1].startswith("try"):
            lo = int(tried[-1].split()[1])  # it crashed at this size
        elif proc.returncode != 0:
            break
    return hi


def _probe_child(path: str, arena: int, n_inputs: int, lo: int, hi: int, timeout: float, litert: bool = False):
    import subprocess

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    try:
        return subprocess.run([sys.executable, "-c", _PROBE, path, str(arena), str(n_inputs), str(lo), str(hi),
                               "1" if litert else "0"],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise TFLMError(f"TFLM did not finish loading and running the model within {timeout:.0f} s.") from None


# -- running whole sequences ---------------------------------------------------------------
def run_sequences(runner: _Runner, x: np.ndarray, mode: str, n_states: int = 0,
                  progress: Callable[[int, int], None] | None = None, timings: list | None = None) -> np.ndarray:
    """Dequantized outputs of ``runner`` for each sequence of ``x`` (N, T, F); see
    :func:`run_sequences_int8`."""
    in_s, in_zp = runner.input_quant(0)
    out_s, out_zp = runner.output_quant(0)
    raw = run_sequences_int8(runner, [quantize(seq, in_s, in_zp) for seq in x], mode, n_states, progress, timings)
    got = [dequantize(y, out_s, out_zp) for y in raw]
    return np.stack([g[0] if mode == "sequence" else g.reshape(-1) for g in got])  # stream: (1, C) or (1, 1, C)


def run_sequences_int8(runner: _Runner, x_q: list, mode: str, n_states: int = 0,
                       progress: Callable[[int, int], None] | None = None,
                       timings: list | None = None) -> list[np.ndarray]:
    """Output 0 of ``runner``, as stored (int8), after each quantized sequence of ``x_q``
    (a list of (T, F) arrays; lengths may differ in stream mode).

    sequence mode: one invoke per sequence. stream mode: one invoke per step, states
    starting at their zero points, the int8 output states copied into the input states
    (they share quantization). ``runner.reset()`` before every sequence. ``timings`` gets
    the duration of every ``invoke`` (setting inputs and reading outputs not included).
    """
    results = []
    for n, seq in enumerate(x_q):
        runner.reset()
        if mode == "sequence":
            (y,) = runner.run([seq[None]])[:1]
            if timings is not None:
                timings.append(runner.last_invoke_s)
        else:
            states = []
            for i in range(n_states):
                s, zp = runner.input_quant(1 + i)
                states.append(quantize(np.zeros(tuple(runner.inputs[1 + i]["shape"]), np.float32), s, zp))  # zero
            y = None
            for t in range(seq.shape[0]):
                outs = runner.run([seq[t][None], *states])
                if timings is not None:
                    timings.append(runner.last_invoke_s)
                y = outs[0]
                states = [o.astype(np.int8) for o in outs[1:1 + n_states]]
        results.append(np.array(y))
        if progress is not None:
            progress(n + 1, len(x_q))
    return results


def compare(reference: np.ndarray, got: np.ndarray, output_grid: tuple[float, int] | None = None) -> dict:
    """Max / mean abs error of ``got`` against ``reference`` and, for vectors, argmax agreement.

    ``output_grid``: the ``(scale, zero_point)`` of the model's int8 output. Adds
    ``output_grid_ceiling``, the argmax agreement of ``reference`` rounded to that grid with
    ``reference`` itself (ties go to the first index, as they do in firmware): what an
    export with no error before its output rounding would reach.
    """
    ref = reference.reshape(len(reference), -1)
    out = got.reshape(len(got), -1)
    report = {"max_abs_error": float(np.max(np.abs(ref - out))) if ref.size else 0.0,
              "mean_abs_error": float(np.mean(np.abs(ref - out))) if ref.size else 0.0,
              "reference_abs_max": float(np.max(np.abs(ref))) if ref.size else 0.0}
    report["relative_max_abs_error"] = report["max_abs_error"] / max(report["reference_abs_max"], 1e-12)
    if reference.shape[-1] > 1:
        a = np.argmax(reference, axis=-1)
        b = np.argmax(got, axis=-1)
        report["argmax_agreement"] = float(np.mean(a == b))
        if output_grid is not None and output_grid[0] != 0:
            report["output_grid_ceiling"] = float(np.mean(np.argmax(quantize(reference, *output_grid), -1) == a))
    return report
