"""The firmware harness: build an export folder with TFLM's C++ sources and run it on a target.

Targets:

- ``host``: g++ on this machine (64-bit), TFLM's reference kernels.
- ``cortex-m4``: ``arm-none-eabi-g++`` for a Cortex-M4F, reference kernels, run on QEMU's
  ``mps2-an386`` board with semihosting.
- ``cortex-m4-cmsis-nn``: the same with TFLM's CMSIS-NN kernels where it has them.

The build (``harness/Makefile``) compiles TFLM's core plus exactly the kernels the export's
``model_ops.h`` registers, caches the objects per target, and links ``harness/runner.cc``,
which runs the exporter's test vectors (``model_test_data.h``) with the header's own
``kTensorArenaSize`` and compares every output byte. On QEMU ``-icount shift=0`` makes one
instruction one nanosecond of virtual time: the runner's SysTick figures are instruction
counts, not cycles.

The TFLM tree (``tflite-micro/`` and ``third_party/`` as in the project's
``../shared/third_party/tflm``) comes from the ``tflm_dir`` argument, else ``$TFLM_DIR``,
else ``../shared/third_party/tflm`` next to a source checkout of this project.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
from typing import Any

from keras_lowprec.export.errors import ExportError

TARGETS = ("host", "cortex-m4", "cortex-m4-cmsis-nn")
HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "harness")
_TOOLS = {"host": ("g++", "make"),
          "cortex-m4": ("arm-none-eabi-g++", "arm-none-eabi-size", "qemu-system-arm", "make"),
          "cortex-m4-cmsis-nn": ("arm-none-eabi-g++", "arm-none-eabi-size", "qemu-system-arm", "make")}
_DEBIAN = "gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm"
_FILES = ("model_data.cc", "model_data.h", "model_ops.h", "model_test_data.h")


class FirmwareError(ExportError):
    """The harness cannot build or run an export (missing sources or tools, a build error)."""


@dataclasses.dataclass
class FirmwareResult:
    """What one run of the harness measured.

    Attributes:
        target: one of ``TARGETS``.
        passed: every output byte equals the exporter's TFLM reference.
        sequences / outputs / mismatches / max_abs_diff: the comparison (int8 values).
        arena_used_bytes: ``interpreter.arena_used_bytes()`` on the target.
        arena_bytes: ``kTensorArenaSize``, the arena the program gave TFLM.
        invokes: number of ``Invoke()`` calls.
        instructions_per_invoke / instructions_per_step: QEMU instruction counts (Cortex-M
            only; ``None`` on the host).
        flash: bytes in flash by part (``model``, ``tflm`` core and kernels, ``program``
            rest) from the linker map; Cortex-M only.
        log: the program's output.
    """

    target: str
    passed: bool
    sequences: int
    outputs: int
    mismatches: int
    max_abs_diff: int
    arena_used_bytes: int
    arena_bytes: int
    invokes: int
    instructions_per_invoke: float | None
    instructions_per_step: float | None
    flash: dict[str, int] | None
    log: str

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "log"}


def find_tflm(tflm_dir: str | None = None) -> str:
    """The TFLM source tree to build with; raises ``FirmwareError`` saying where to get one."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    candidates = [tflm_dir] if tflm_dir else [os.environ.get("TFLM_DIR"),
                                              os.path.join(here, "..", "shared", "third_party", "tflm")]
    for path in filter(None, candidates):
        if os.path.isfile(os.path.join(path, "tflite-micro", "tensorflow", "lite", "micro", "micro_interpreter.h")):
            return os.path.realpath(path)
    given = tflm_dir or os.environ.get("TFLM_DIR")
    raise FirmwareError(
        (f"tflm_dir: no TFLM source tree at {given!r} (expected tflite-micro/tensorflow/lite/micro/ inside). "
         if given else "no TFLM source tree: ")
        + "set TFLM_DIR (or --tflm-dir) to a folder holding tflite-micro/ (a checkout of "
          "github.com/tensorflow/tflite-micro) and third_party/ (flatbuffers, gemmlowp, ruy, cmsis_nn, cmsis), "
          "laid out as export/README.md describes."
    )


def missing_tools(target: str) -> list[str]:
    """Programs the target needs that are not on PATH."""
    _check_target(target)
    return [tool for tool in _TOOLS[target] if shutil.which(tool) is None]


def build(export_dir: str, target: str, *, tflm_dir: str | None = None, build_dir: str | None = None,
          jobs: int | None = None, app: str | None = None, extra_defines: tuple[str, ...] = ()) -> str:
    """Compiles ``export_dir`` for ``target``; returns the program's path.

    ``build_dir`` (default ``$KERAS_LOWPREC_FIRMWARE_CACHE`` or ``~/.cache/keras_lowprec/firmware``)
    keeps TFLM's objects per TFLM tree and target, so later builds compile only the model and
    the program. ``app``: another program than the harness runner (e.g. ``export/example/main.cc``).
    ``extra_defines``: preprocessor names for the program and the model (measurements only,
    e.g. ``KERAS_LOWPREC_ALLOW_WRONG_KERNELS``; the TFLM objects do not see them).
    """
    _check_target(target)
    _check_export_dir(export_dir, need_test_data=app is None)
    tflm = find_tflm(tflm_dir)
    missing = missing_tools(target)
    if missing:
        raise FirmwareError(f"target {target!r} needs {', '.join(missing)} on PATH "
                            f"(Debian: apt-get install {_DEBIAN}).")
    out = os.path.join(_cache_root(build_dir), hashlib.sha1(tflm.encode()).hexdigest()[:10])
    key = "|".join([os.path.realpath(export_dir), app or "", *extra_defines])
    name = hashlib.sha1(key.encode()).hexdigest()[:12]
    args = ["make", "--no-print-directory", "-f", os.path.join(HARNESS, "Makefile"), f"-j{jobs or os.cpu_count() or 1}",
            f"TFLM_DIR={tflm}", f"TARGET={target}", f"MODEL_DIR={os.path.abspath(export_dir)}",
            f"BUILD_DIR={out}", f"APP_NAME={name}"]
    if app is not None:
        args.append(f"APP={os.path.abspath(app)}")
    if extra_defines:
        args.append("APP_DEFINES=" + " ".join(f"-D{d}" for d in extra_defines))
    os.makedirs(out, exist_ok=True)
    # One build per cache at a time: parallel builds (test workers, two terminals) would
    # write the same TFLM objects at once.
    with open(os.path.join(out, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [line for line in (proc.stderr + proc.stdout).splitlines()
                  if re.search(r"error:|\*\*\*|undefined reference|#error", line)]
        detail = " | ".join(errors[-5:] or [proc.stderr[-800:]])
        raise FirmwareError(f"building {export_dir} for {target} failed: {detail}")
    return os.path.join(out, target, "apps", name, "app" if target == "host" else "app.elf")


def run(export_dir: str, target: str, *, tflm_dir: str | None = None, build_dir: str | None = None,
        timeout: float = 600.0) -> FirmwareResult:
    """Builds ``export_dir`` for ``target``, runs its test vectors there and returns the figures."""
    exe = build(export_dir, target, tflm_dir=tflm_dir, build_dir=build_dir)
    return run_program(exe, export_dir, target, timeout=timeout)


def run_program(exe: str, export_dir: str, target: str, *, timeout: float = 600.0) -> FirmwareResult:
    """Runs a harness program built by :func:`build` (Cortex-M: under QEMU with ``-icount``)."""
    _check_target(target)
    if target == "host":
        cmd = [exe]
    else:
        cmd = ["qemu-system-arm", "-M", "mps2-an386", "-cpu", "cortex-m4", "-nographic", "-monitor", "none",
               "-serial", "none", "-semihosting-config", "enable=on,target=native", "-icount", "shift=0",
               "-kernel", exe]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FirmwareError(f"{target}: the program did not finish within {timeout:.0f} s.") from None
    return _parse(target, proc.stdout + proc.stderr, proc.returncode, export_dir,
                  None if target == "host" else exe)


def _parse(target: str, log: str, returncode: int, export_dir: str, elf: str | None) -> FirmwareResult:
    m = re.search(r"summary sequences (\d+) outputs (\d+) mismatches (\d+) max_abs_diff (\d+) invokes (\d+) "
                  r"ticks (\d+) tick_ns (\d+)", log)
    arena = re.search(r"arena_used_bytes (\d+)", log)
    if m is None or arena is None:
        lines = [line for line in log.splitlines() if line.startswith("error")] or log.strip().splitlines()[-3:]
        raise FirmwareError(f"{target}: the program failed (exit status {returncode}): {' | '.join(lines)}")
    seqs, outputs, wrong, diff, invokes, ticks, tick_ns = (int(v) for v in m.groups())
    if (returncode != 0) != (wrong != 0):
        raise FirmwareError(f"{target}: exit status {returncode} with {wrong} mismatches: {log.strip()[-300:]}")
    per_invoke = ticks * tick_ns / invokes if tick_ns and invokes else None
    header = open(os.path.join(export_dir, "model_data.h")).read()
    timesteps = int(re.search(r"kModelTimesteps = (\d+)", header).group(1))
    per_step = None if per_invoke is None else (per_invoke / timesteps if timesteps else per_invoke)
    return FirmwareResult(
        target=target, passed=wrong == 0, sequences=seqs, outputs=outputs, mismatches=wrong, max_abs_diff=diff,
        arena_used_bytes=int(arena.group(1)),
        arena_bytes=int(re.search(r"kTensorArenaSize = (\d+)", header).group(1)),
        invokes=invokes, instructions_per_invoke=per_invoke, instructions_per_step=per_step,
        flash=None if elf is None else flash_bytes(elf), log=log)


def flash_bytes(elf: str) -> dict[str, int]:
    """Flash use of a Cortex-M program by part, from its linker map (``app.map`` beside it):
    ``model`` (the flatbuffer array), ``test_data`` (the harness's vectors), ``tflm`` (TFLM's
    core, kernels and CMSIS-NN), ``program`` (the rest: runner, C/C++ runtime), ``total``."""
    sizes = {"model": 0, "test_data": 0, "tflm": 0, "program": 0}
    text = open(os.path.splitext(elf)[0] + ".map").read()
    text = text[text.index("Linker script and memory map"):]
    text = re.sub(r"^( \.\S+)\n\s+(0x)", r"\1 \2", text, flags=re.M)  # long names wrap
    for name, size, source in re.findall(r"^ (\.(?:text|rodata|data|ARM\.\w+|init_array|fini_array)[^\s]*)"
                                         r"\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+(\S+)$", text, flags=re.M):
        n = int(size, 16)
        if "g_model_data" in name:
            sizes["model"] += n
        elif "kTest" in name:
            sizes["test_data"] += n
        elif re.search(r"lib(tflm_core|cmsis_nn)\.a\(|kernels\.a\(", source):
            sizes["tflm"] += n
        else:
            sizes["program"] += n
    sizes["total"] = sum(sizes.values())
    return sizes


# QEMU boards for bare-metal Cortex-M programs (the TFLM harness above, the C runtime's test
# program): target -> (machine, cpu, nanoseconds per SysTick tick of the processor clock:
# 25 MHz on mps2-an386, 16 MHz on the micro:bit's nRF51). Under ``-icount shift=0`` one
# instruction is one nanosecond of virtual time, so ticks * ns-per-tick counts instructions.
QEMU_BOARDS = {
    "cortex-m4": ("mps2-an386", "cortex-m4", 40.0),
    "cortex-m4-cmsis-nn": ("mps2-an386", "cortex-m4", 40.0),
    "cortex-m0": ("microbit", "cortex-m0", 62.5),
}
# Linker script of the Cortex-M0 board (nRF51: 256 KiB flash, 16 KiB RAM); start-up code is
# harness/cortex_m/startup.c, shared with the Cortex-M4.
M0_LINKER_SCRIPT = os.path.join(HARNESS, "cortex_m0", "nrf51.ld")


def qemu_command(exe: str, target: str) -> list[str]:
    """The QEMU command line that runs a bare-metal semihosting program for ``target``."""
    if target not in QEMU_BOARDS:
        raise FirmwareError(f"target must be one of {', '.join(QEMU_BOARDS)} to run under QEMU; got {target!r}.")
    machine, cpu, _ = QEMU_BOARDS[target]
    return ["qemu-system-arm", "-M", machine, "-cpu", cpu, "-nographic", "-monitor", "none", "-serial", "none",
            "-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", exe]


def run_qemu(exe: str, target: str, *, timeout: float = 600.0) -> subprocess.CompletedProcess:
    """Runs ``exe`` under QEMU for ``target`` (see ``QEMU_BOARDS``); returns the finished process."""
    try:
        return subprocess.run(qemu_command(exe, target), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FirmwareError(f"{target}: the program did not finish within {timeout:.0f} s.") from None


def _cache_root(build_dir: str | None) -> str:
    return os.path.abspath(build_dir or os.environ.get("KERAS_LOWPREC_FIRMWARE_CACHE")
                           or os.path.join(os.path.expanduser("~"), ".cache", "keras_lowprec", "firmware"))


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise FirmwareError(f"target must be one of {', '.join(TARGETS)}; got {target!r}.")


def _check_export_dir(export_dir: str, need_test_data: bool) -> None:
    if not isinstance(export_dir, (str, os.PathLike)) or not os.path.isdir(export_dir):
        raise FirmwareError(f"export_dir: not a folder: {export_dir!r}.")
    need = _FILES if need_test_data else _FILES[:3]
    missing = [f for f in need if not os.path.isfile(os.path.join(export_dir, f))]
    if missing:
        raise FirmwareError(
            f"export_dir {export_dir!r} lacks {', '.join(missing)}: export with output_dir and c_array=True"
            + (" and verify=True (the test vectors come from the verification)" if "model_test_data.h" in missing
               else "") + ".")
