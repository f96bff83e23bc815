"""Builds and runs a ``to_c`` export with its test vectors: on the host (gcc), on a Cortex-M4
(QEMU ``mps2-an386``) and on a Cortex-M0 (QEMU ``microbit``, nRF51: 256 KiB flash, 16 KiB RAM).

Every source is compiled with ``-std=c99 -O2 -Wall -Wextra -Werror``. The program is
``c/klp_runner.c``: it compares every output byte and the final state with the NumPy
reference and, on Cortex-M, counts instructions with SysTick under ``-icount shift=0``
(board clocks in ``firmware.QEMU_BOARDS``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from typing import Any

from keras_lowprec.export import firmware
from keras_lowprec.export.errors import ExportError

TARGETS = ("host", "cortex-m4", "cortex-m0")
C_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "c")
CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-ffunction-sections", "-fdata-sections")
_ARCH = {"host": (), "cortex-m4": ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
         "cortex-m0": ("-mcpu=cortex-m0", "-mthumb")}
_TOOLS = {"host": ("gcc",), "cortex-m4": ("arm-none-eabi-gcc", "qemu-system-arm"),
          "cortex-m0": ("arm-none-eabi-gcc", "qemu-system-arm")}
_DEBIAN = "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"


@dataclasses.dataclass
class RunResult:
    """One run of the test program: the comparison with the reference and the costs.

    ``instructions_per_step``: QEMU instruction count of ``klp_step`` per time step (Cortex-M
    only). ``flash``: bytes by part from the linker map (Cortex-M only): ``weights`` (packed
    codes), ``params`` (biases, multipliers, descriptors), ``tables`` (sigmoid/tanh), ``runtime``
    (klp.c code), ``test_data``, ``program`` (the rest: runner, C library), ``total``.
    ``stack_bytes``: deepest stack use below the test program's main during klp_init / klp_reset /
    klp_step (painted stack, Cortex-M only; an upper bound: it includes up to 128 bytes of main's frame)."""

    target: str
    passed: bool
    sequences: int
    steps: int
    outputs: int
    mismatches: int
    max_abs_diff: int
    state_mismatches: int
    instructions_per_step: float | None
    flash: dict[str, int] | None
    stack_bytes: int | None
    log: str

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "log"}


def missing_tools(target: str) -> list[str]:
    _check_target(target)
    return [t for t in _TOOLS[target] if shutil.which(t) is None]


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ExportError(f"target must be one of {', '.join(TARGETS)}; got {target!r}.")


def compile_object(src: str, obj: str, target: str, include: list[str], defines: tuple[str, ...] = ()) -> None:
    """One C99 object for ``target`` with the warning flags; raises ExportError with gcc's errors."""
    cc = "gcc" if target == "host" else "arm-none-eabi-gcc"
    args = [cc, *_ARCH[target], *CFLAGS, *defines, *(f"-I{d}" for d in include), "-c", src, "-o", obj]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ExportError(f"compiling {os.path.basename(src)} for {target} failed: {proc.stderr[-1500:]}")


def build(export_dir: str, target: str, build_dir: str | None = None) -> str:
    """Compiles the export (klp.c, the model source, klp_test_data.h) with the test program;
    returns the program's path."""
    _check_target(target)
    missing = missing_tools(target)
    if missing:
        raise ExportError(f"target {target!r} needs {', '.join(missing)} on PATH (Debian: apt-get install {_DEBIAN}).")
    if not os.path.isfile(os.path.join(export_dir, "klp_test_data.h")):
        raise ExportError(f"export_dir {export_dir!r} has no klp_test_data.h: export with verify_data.")
    out = os.path.abspath(build_dir or os.path.join(export_dir, "build", target))
    os.makedirs(out, exist_ok=True)
    sources = [os.path.join(export_dir, f) for f in sorted(os.listdir(export_dir)) if f.endswith(".c")]
    sources.append(os.path.join(C_DIR, "klp_runner.c"))
    objs = []
    for src in sources:
        obj = os.path.join(out, os.path.basename(src)[:-2] + ".o")
        systick = ("-DKLP_SYSTICK",) if target != "host" and src.endswith("klp_runner.c") else ()
        compile_object(src, obj, target, [os.path.abspath(export_dir)], systick)
        objs.append(obj)
    exe = os.path.join(out, "app" if target == "host" else "app.elf")
    if target == "host":
        link = ["gcc", *objs, "-Wl,--gc-sections", "-o", exe]
    else:
        startup = os.path.join(out, "startup.o")
        compile_object(os.path.join(firmware.HARNESS, "cortex_m", "startup.c"), startup, target, [])
        ld = (os.path.join(firmware.HARNESS, "cortex_m", "mps2_an386.ld") if target == "cortex-m4"
              else firmware.M0_LINKER_SCRIPT)
        link = ["arm-none-eabi-gcc", *_ARCH[target], *objs, startup, "-nostartfiles",
                "--specs=rdimon.specs", f"-T{ld}", "-Wl,--gc-sections", "-Wl,--no-warn-rwx-segments",
                f"-Wl,-Map={os.path.join(out, 'app.map')}", "-o", exe]
    proc = subprocess.run(link, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ExportError(f"linking for {target} failed: {proc.stderr[-1500:]}")
    return exe


def run(export_dir: str, target: str, *, build_dir: str | None = None, timeout: float = 300.0) -> RunResult:
    """Builds and runs the test program for ``target``; returns what it measured."""
    exe = build(export_dir, target, build_dir)
    if target == "host":
        proc = subprocess.run([exe], capture_output=True, text=True, timeout=timeout)
    else:
        proc = firmware.run_qemu(exe, target, timeout=timeout)
    log = proc.stdout + proc.stderr
    m = re.search(r"summary sequences (\d+) steps (\d+) outputs (\d+) mismatches (\d+) max_abs_diff (\d+) "
                  r"state_mismatches (\d+) ticks (\d+)", log)
    if m is None:
        raise ExportError(f"{target}: the test program failed (exit status {proc.returncode}): {log[-600:]}")
    seqs, steps, outs, wrong, diff, swrong, ticks = (int(v) for v in m.groups())
    stack = re.search(r"stack_bytes (\d+)", log)
    per_step = None
    if target != "host":
        per_step = ticks * firmware.QEMU_BOARDS[target][2] / (seqs * steps)
    return RunResult(target, wrong == 0 and swrong == 0 and proc.returncode == 0, seqs, steps, outs, wrong, diff,
                     swrong, per_step, None if target == "host" else flash_bytes(os.path.splitext(exe)[0] + ".map"),
                     None if stack is None or target == "host" else int(stack.group(1)), log)


def flash_bytes(map_path: str) -> dict[str, int]:
    """Flash by part from a linker map (see ``RunResult``)."""
    sizes = {"weights": 0, "params": 0, "tables": 0, "runtime": 0, "test_data": 0, "program": 0}
    text = open(map_path).read()
    text = text[text.index("Linker script and memory map"):]
    text = re.sub(r"^( \.\S+)\n\s+(0x)", r"\1 \2", text, flags=re.M)  # long names wrap
    for name, size, source in re.findall(r"^ (\.(?:text|rodata|data|ARM\.\w+|init_array|fini_array)[^\s]*)"
                                         r"\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+(\S+)$", text, flags=re.M):
        n = int(size, 16)
        obj = os.path.basename(source)
        if obj == "klp.o":
            sizes["runtime"] += n
        elif "klp_test_" in name:
            sizes["test_data"] += n
        elif obj in ("klp_runner.o", "startup.o") or "(" in obj or not obj.endswith(".o"):
            sizes["program"] += n
        elif re.search(r"_l\d+_[wu]_codes$", name):
            sizes["weights"] += n
        elif name.endswith("_lut"):
            sizes["tables"] += n
        else:
            sizes["params"] += n
    sizes["total"] = sum(sizes.values())
    return sizes
