"""The C runtime (``to_c``) against TFLM on the same models: flash, RAM, instructions per step.

For the 32-unit digits LSTM / GRU of ``bench/firmware.py`` (scikit-learn digits, 8 steps of
8 pixels), with ternary weights (2 bits per weight, and 5 trits per byte) and exponential
weights (4-bit shift codes), trained as there:

* the C runtime: ``to_c`` export; the test program (``export/c/klp_runner.c``) built with
  ``-std=c99 -O2 -Wall -Wextra -Werror`` and run on the host, on a Cortex-M4 (QEMU
  ``mps2-an386``) and on a Cortex-M0 (QEMU ``microbit``); bit-exact against the NumPy
  reference on 8 held-out sequences; accuracy of the integer model (= the C code) on the
  360 held-out digits;
* TFLM: ``to_tflite(..., mode="stream")`` (one invoke per time step, as the C runtime's
  ``klp_step``) built by the firmware harness for ``cortex-m4`` (reference kernels) and
  ``cortex-m4-cmsis-nn``, and for a Cortex-M0 with the reference kernels: the harness
  Makefile's Cortex-M4 branch with ``ARCH``, ``DEFINES`` and ``LDFLAGS`` overridden on the
  command line (``-mcpu=cortex-m0``, the nRF51 linker script of ``harness/cortex_m0``), run on
  QEMU ``microbit``.

Instructions: QEMU ``-icount shift=0`` read through SysTick (40 instructions per tick on
mps2-an386, 62.5 on the micro:bit): instruction counts, not cycles. Both sides run their
output layer at every step.

    python bench/c_runtime.py --out results/c_runtime.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_size_latency import digits, model_args, trained  # noqa: E402
from firmware import _tool_version  # noqa: E402  (bench/firmware.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tflm_m0(export_dir: str, build_dir: str) -> dict:
    """TFLM's reference kernels on a Cortex-M0: the harness Makefile, Cortex-M4 branch with the
    architecture, defines and linker flags overridden; run on QEMU microbit."""
    from keras_lowprec.export import firmware

    harness = firmware.HARNESS
    name = os.path.basename(export_dir)
    out = os.path.abspath(build_dir)
    args = ["make", "--no-print-directory", "-f", os.path.join(harness, "Makefile"), "-j2",
            f"TFLM_DIR={firmware.find_tflm()}", "TARGET=cortex-m4", f"MODEL_DIR={os.path.abspath(export_dir)}",
            f"BUILD_DIR={out}", f"APP_NAME={name}", "ARCH=-mcpu=cortex-m0 -mthumb",
            "DEFINES=-DTF_LITE_STATIC_MEMORY -DTF_LITE_DISABLE_X86_NEON -DKERAS_LOWPREC_QEMU_MPS2",
            f"LDFLAGS=-Wl,--gc-sections -nostartfiles --specs=rdimon.specs -T{firmware.M0_LINKER_SCRIPT} "
            "-Wl,--no-warn-rwx-segments -Wl,-Map=$(OUT)/apps/$(APP_NAME)/app.map"]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"failed": (proc.stderr or proc.stdout)[-800:]}
    exe = os.path.join(out, "cortex-m4", "apps", name, "app.elf")
    run = firmware.run_qemu(exe, "cortex-m0")
    log = run.stdout + run.stderr
    m = re.search(r"summary sequences (\d+) outputs (\d+) mismatches (\d+) max_abs_diff (\d+) invokes (\d+) "
                  r"ticks (\d+)", log)
    arena = re.search(r"arena_used_bytes (\d+)", log)
    if m is None or arena is None:
        return {"failed": log[-800:]}
    seqs, outputs, wrong, diff, invokes, ticks = (int(v) for v in m.groups())
    # runner.cc prints tick_ns 40 (mps2-an386); the micro:bit's SysTick ticks at 16 MHz.
    per_invoke = ticks * firmware.QEMU_BOARDS["cortex-m0"][2] / invokes
    return {"target": "cortex-m0 (TFLM reference kernels)", "passed": wrong == 0 and run.returncode == 0,
            "sequences": seqs, "outputs": outputs, "mismatches": wrong, "max_abs_diff": diff,
            "arena_used_bytes": int(arena.group(1)), "invokes": invokes, "instructions_per_step": per_invoke,
            "flash": firmware.flash_bytes(exe)}


def measure_tflm(model, x_train, x_test, out_dir: str, build_dir: str, m0_build_dir: str) -> dict:
    from keras_lowprec.export import firmware, to_tflite

    res = to_tflite(model, x_train[:400], verify_data=x_test[:8], output_dir=out_dir, mode="stream")
    row = {"export": "stream", "graph": res.report["graph"], "model_bytes": res.report["model_bytes"],
           "kTensorArenaSize": res.report["arena_recommended"], "targets": {}}
    for target in ("cortex-m4", "cortex-m4-cmsis-nn"):
        row["targets"][target] = firmware.run(out_dir, target, build_dir=build_dir).as_dict()
    row["targets"]["cortex-m0"] = tflm_m0(out_dir, m0_build_dir)
    return row


def measure_c(model, x_train, x_test, y_test, out_dir: str, packing: str) -> dict:
    from keras_lowprec.export.cruntime import build as cbuild
    from keras_lowprec.export.cruntime import reference, to_c

    res = to_c(model, x_train[:400], out_dir, packing=packing, verify_data=x_test[:8])
    acc = float(np.mean(reference.predict(res.model, x_test).argmax(-1) == y_test))
    rep = res.report
    kinds = sorted({m["packing"] for l in rep["layers"] for m in (l.get("kernel"), l.get("recurrent_kernel")) if m})
    return {"packing": packing, "weight_packings": kinds, "accuracy": acc, "bits_per_weight": rep["bits_per_weight"],
            "flash_bytes": rep["flash_bytes"], "ram_bytes": rep["ram_bytes"], "layers": rep["layers"],
            "targets": {t: cbuild.run(out_dir, t).as_dict() for t in cbuild.TARGETS}}


KERNEL_ROWS, KERNEL_COLS, KERNEL_REPEAT = 192, 128, 8


def _kernel_program(path: str) -> list[str]:
    """C source timing each matrix-vector kernel on a 192 x 128 matrix (tables included);
    returns the labels in the order the program prints them."""
    from keras_lowprec.export.cruntime import codegen, packing

    rng = np.random.default_rng(0)
    rows, cols = KERNEL_ROWS, KERNEL_COLS
    tern = rng.choice([-1, 0, 1], (rows, cols), p=[0.3, 0.4, 0.3])
    shift = rng.choice([0, 1, -1, 2, -2, 4, -4, 8, -8, 16, -16, 32, -32, 64, -64], (rows, cols))
    # label, packing, weights, groups per table block (int16 tables: trit4 162 B per group, trit5 486 B,
    # shift4 64 B per pair; at most 7776 B, which the Cortex-M0's 16 KiB hold)
    cases = [("trit4 (all 48 groups per block)", "trit4", tern, 48), ("trit4 (12 groups per block)", "trit4", tern, 12),
             ("trit5 (16 groups per block)", "trit5", tern, 16), ("shift4 (96 pairs per block)", "shift4", shift, 96),
             ("int8 multiply-accumulate", "int8", rng.integers(-127, 128, (rows, cols)), 1)]
    src = ["#include <stdio.h>", '#include "klp.h"', "static int16_t table[48 * 81];", f"static int32_t acc[{cols}];",
           "static volatile uint32_t* const st = (volatile uint32_t*)0xE000E010u;",
           codegen.c_array("int8_t", "x", rng.integers(-128, 128, rows))]
    body = ["  st[1] = 0xFFFFFFu; st[2] = 0; st[0] = 5u;"]
    for k, (label, kind, w, block) in enumerate(cases):
        stride, g = packing.stride(kind, rows), packing.GROUP[kind]
        src.append(codegen.c_array("uint8_t", f"w{k}", np.frombuffer(packing.pack(w, kind), np.uint8)))
        calls = []
        for first in range(0, stride, block if kind != "int8" else stride):
            nb = min(block, stride - first)
            args = f"w{k} + {first}, {stride}, {cols}, x + {first * g}, {rows - first * g}, {nb}"
            calls.append(f"klp_matvec_int8(w{k}, {stride}, {cols}, x, {rows}, acc);" if kind == "int8" else
                         f"klp_matvec_shift({args}, {int(first > 0)}, acc, table);" if kind == "shift4" else
                         f"klp_matvec_trit({args}, {g}, {int(first > 0)}, acc, table);")
        body.append(f"  {{ uint32_t t0 = st[2]; for (int r = 0; r < {KERNEL_REPEAT}; r++) {{ {' '.join(calls)} }}\n"
                    f"    uint32_t t1 = st[2]; printf(\"kernel {k} ticks %lu check %ld\\n\", "
                    f"(unsigned long)((t0 - t1) & 0xFFFFFFu), (long)acc[0]); }}")
    src.append("int main(void) {\n" + "\n".join(body) + "\n  return 0;\n}\n")
    with open(path, "w") as fh:
        fh.write("\n".join(src))
    return [c[0] for c in cases]


def kernel_costs(tmp: str) -> dict:
    """Instructions per weight of each kernel (192 x 128, tables built every call) on the
    Cortex-M4 and M0 under QEMU -icount: the figure the issue's feasibility study gives."""
    from keras_lowprec.export import firmware
    from keras_lowprec.export.cruntime import build as cbuild

    src = os.path.join(tmp, "kernels.c")
    labels = _kernel_program(src)
    out = {}
    for target in ("cortex-m4", "cortex-m0"):
        objs = []
        for f in (src, os.path.join(cbuild.C_DIR, "klp.c")):
            objs.append(os.path.join(tmp, f"{target}_{os.path.basename(f)}.o"))
            cbuild.compile_object(f, objs[-1], target, [cbuild.C_DIR])
        startup = os.path.join(tmp, f"{target}_startup.o")
        cbuild.compile_object(os.path.join(firmware.HARNESS, "cortex_m", "startup.c"), startup, target, [])
        ld = (os.path.join(firmware.HARNESS, "cortex_m", "mps2_an386.ld") if target == "cortex-m4"
              else firmware.M0_LINKER_SCRIPT)
        exe = os.path.join(tmp, f"{target}_kernels.elf")
        subprocess.run(["arm-none-eabi-gcc", *cbuild._ARCH[target], *objs, startup, "-nostartfiles",
                        "--specs=rdimon.specs", f"-T{ld}", "-Wl,--gc-sections", "-Wl,--no-warn-rwx-segments",
                        "-o", exe], check=True)
        log = firmware.run_qemu(exe, target).stdout
        ticks = [int(t) for t in re.findall(r"kernel \d+ ticks (\d+)", log)]
        ns = firmware.QEMU_BOARDS[target][2]
        out[target] = {label: t * ns / (KERNEL_REPEAT * KERNEL_ROWS * KERNEL_COLS) for label, t in zip(labels, ticks)}
    return out


def goals(c: dict, tflm: dict | None) -> dict:
    """The issue's goals, measured: True / False, or None where a figure is missing."""
    t = c["targets"]
    ternary = c["layers"][0]["kernel"]["packing"].startswith("trit")
    out = {"bit_exact_host_m4_m0": all(t[k]["passed"] for k in t),
           "bits_per_ternary_weight_le_2": (c["bits_per_weight"] <= 2.0) if ternary else None}
    if tflm is None:
        return out
    tt = tflm["targets"]
    arena = tt["cortex-m4"]["arena_used_bytes"]
    out["ram_le_tflm_arena_used_m4"] = c["ram_bytes"]["total"] <= arena
    m0 = tt["cortex-m0"].get("instructions_per_step")
    out["m0_le_third_of_tflm_reference_m0"] = None if m0 is None else t["cortex-m0"]["instructions_per_step"] <= m0 / 3
    cmsis = tt["cortex-m4-cmsis-nn"]["instructions_per_step"]
    out["m4_le_tflm_cmsis_nn"] = t["cortex-m4"]["instructions_per_step"] <= cmsis
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_args(parser, "results/c_runtime.json", ["LSTM", "GRU"])
    parser.add_argument("--m0-build-dir", default="build/firmware-m0", help="TFLM Cortex-M0 objects")
    parser.add_argument("--no-tflm", action="store_true", help="measure the C runtime only")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.load(open(args.table))))
        return 0

    from keras_lowprec.export import firmware

    x_train, y_train, x_test, y_test = digits()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        kernels = kernel_costs(tmp)
        print("instructions per weight of the kernels (192 x 128, tables included):", json.dumps(kernels, indent=1))
        for kind, method, model in trained(args, x_train, y_train):
            keras_acc = float(np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test))
            tflm = None if args.no_tflm else measure_tflm(
                model, x_train, x_test, os.path.join(tmp, f"{kind}_{method}_tflm"), args.build_dir,
                args.m0_build_dir)
            for packing in (["2bit", "trit5"] if method == "Ternary" else ["2bit"]):
                c = measure_c(model, x_train, x_test, y_test, os.path.join(tmp, f"{kind}_{method}_{packing}"),
                              packing)
                row = {"kind": kind, "method": method, "units": args.units, "timesteps": 8,
                       "keras_accuracy": keras_acc, "c": c, "tflm": tflm,
                       "accuracy_delta_points": 100 * (c["accuracy"] - keras_acc)}
                row["goals"] = goals(c, tflm)
                row["goals"]["accuracy_within_1_point"] = abs(row["accuracy_delta_points"]) <= 1.0
                rows.append(row)
                print(_line(row), flush=True)
    result = {
        "command": "python bench/c_runtime.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "platform": platform.platform(), "processor": platform.machine(),
        "toolchains": {t: _tool_version(t) for t in ("gcc", "arm-none-eabi-gcc", "qemu-system-arm")},
        "tflm_dir": None if args.no_tflm else firmware.find_tflm(),
        "notes": "instructions: QEMU -icount shift=0 read through SysTick (mps2-an386 25 MHz: 40 instructions "
                 "per tick; microbit 16 MHz: 62.5): instruction counts per time step, not cycles, output layer "
                 "included on both sides. C flash from the linker map (weights = packed codes, params = biases, "
                 "multipliers, descriptors, tables = sigmoid/tanh, runtime = klp.c code); C RAM = state + "
                 "scratch (accumulators, partial-sum tables, buffers), stack not included (nor for TFLM). "
                 "TFLM RAM = arena_used_bytes. TFLM Cortex-M0 = reference kernels built through the harness "
                 "Makefile with -mcpu=cortex-m0 overrides (see the bench's docstring).",
        "kernel_instructions_per_weight": {"matrix": [KERNEL_ROWS, KERNEL_COLS], "repeat": KERNEL_REPEAT,
                                           "targets": kernels},
        "rows": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(table(result))
    return 0


def _line(row: dict) -> str:
    c = row["c"]
    t = c["targets"]
    return (f"{row['kind']} {row['method']} {'+'.join(c['weight_packings'])}: acc keras {row['keras_accuracy']:.4f} C "
            f"{c['accuracy']:.4f}; bits/weight {c['bits_per_weight']:.2f}; RAM {c['ram_bytes']['total']} B; "
            f"instr/step M4 {t['cortex-m4']['instructions_per_step']:.0f} "
            f"M0 {t['cortex-m0']['instructions_per_step']:.0f}; "
            f"goals {row['goals']}")


def _fmt(v, spec=".0f"):
    return "n/a" if v is None else format(v, spec)


def table(result: dict) -> str:
    """Markdown: C runtime vs TFLM (stream export) per model."""
    lines = ["| model | weight codes | accuracy Keras / C | bits per weight "
             "| C flash: weights / params+tables / code M0 "
             "| TFLM flash: model / code M0 | RAM C / TFLM arena used (M4) | instr/step M0: C / TFLM ref "
             "| instr/step M4: C / TFLM ref / TFLM CMSIS-NN | bit-exact C host/M4/M0 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        c, tf = row["c"], row["tflm"] or {"targets": {}}
        ct, tt = c["targets"], tf["targets"]
        fm0 = ct["cortex-m0"]["flash"]
        tm0 = tt.get("cortex-m0", {})
        lines.append(
            f"| {row['kind']} {row['method']} {row['units']} | {'+'.join(c['weight_packings'])} | "
            f"{row['keras_accuracy']:.3f} / "
            f"{c['accuracy']:.3f} | {c['bits_per_weight']:.2f} | {fm0['weights']} / {fm0['params'] + fm0['tables']} / "
            f"{fm0['runtime']} | {_fmt(tf.get('model_bytes'), 'd')} / {_fmt(tm0.get('flash', {}).get('tflm'), 'd')} | "
            f"{c['ram_bytes']['total']} / {_fmt(tt.get('cortex-m4', {}).get('arena_used_bytes'), 'd')} | "
            f"{ct['cortex-m0']['instructions_per_step']:.0f} / {_fmt(tm0.get('instructions_per_step'))} | "
            f"{ct['cortex-m4']['instructions_per_step']:.0f} / "
            f"{_fmt(tt.get('cortex-m4', {}).get('instructions_per_step'))} / "
            f"{_fmt(tt.get('cortex-m4-cmsis-nn', {}).get('instructions_per_step'))} | "
            + "/".join("yes" if ct[k]["passed"] else "NO" for k in ("host", "cortex-m4", "cortex-m0")) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
