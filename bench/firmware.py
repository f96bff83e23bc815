"""Firmware figures of exported models, built with TFLM's C++ sources by the firmware harness.

For LSTM / GRU / SimpleRNN models with ternary and exponential (shift-encoded) weights,
trained on the scikit-learn digits (8 time steps of 8 features, as in
``export_size_latency.py``), every export route is built and run on:

* ``host``: g++ (64-bit), TFLM reference kernels;
* ``cortex-m4``: Cortex-M4F under QEMU ``mps2-an386``, TFLM reference kernels;
* ``cortex-m4-cmsis-nn``: the same with TFLM's CMSIS-NN kernels.

Routes: sequence and stream exports with the default kernels, the LSTM also unrolled and
streamed through the fused op, and LUT-compressed weights (``compress="flash"``, both
modes; "weight bits" = bits per compressed weight in the file, value tables included).

Per export and target: whether all int8 outputs equal TFLM's Python interpreter on the
exporter's test vectors, ``arena_used_bytes()``, the header's ``kTensorArenaSize``, flash of
the model and of TFLM with its kernels (linker map), and instructions per invoke and per
time step (QEMU ``-icount shift=0``: instruction counts, not cycles). The fused stream LSTM
is also forced through CMSIS-NN (``KERAS_LOWPREC_ALLOW_WRONG_KERNELS``) to count how many
outputs its LSTM kernel gets wrong; the exporter's ``model_ops.h`` refuses that build.

    python bench/firmware.py --out results/firmware.json
    python bench/firmware.py --table results/firmware.json     # the table of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_size_latency import digits, model_args, trained  # noqa: E402

# (label, export keyword arguments, kinds it applies to)
ROUTES = [
    ("sequence", {}, ("LSTM", "GRU", "SimpleRNN")),
    ("stream", {"mode": "stream"}, ("LSTM", "GRU", "SimpleRNN")),
    ("sequence unrolled", {"lstm_kernel": "unrolled"}, ("LSTM",)),
    ("stream fused", {"mode": "stream", "lstm_kernel": "fused"}, ("LSTM",)),
    ("stream compressed", {"mode": "stream", "compress": "flash"}, ("LSTM", "GRU", "SimpleRNN")),
    ("sequence compressed", {"compress": "flash"}, ("LSTM", "GRU", "SimpleRNN")),
]


def _tool_version(tool: str) -> str:
    try:
        return subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "missing"


def measure(out_dir: str, report: dict, build_dir: str) -> dict:
    from keras_lowprec.export import firmware

    row = {}
    for target in firmware.TARGETS:
        if target == "cortex-m4-cmsis-nn" and report["kernel_sets"] == "reference":
            exe = firmware.build(out_dir, target, build_dir=build_dir,
                                 extra_defines=("KERAS_LOWPREC_ALLOW_WRONG_KERNELS",))
            try:
                forced = firmware.run_program(exe, out_dir, target).as_dict()
            except firmware.FirmwareError as err:  # e.g. AllocateTensors refuses decoded LSTM weights
                forced = {"failed": str(err)}
            row[target] = {"refused_by_model_ops_h": True, "reason": report["not_on_cmsis_nn"],
                           "forced_build": forced}
            continue
        row[target] = firmware.run(out_dir, target, build_dir=build_dir).as_dict()
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_args(parser, "results/firmware.json", ["LSTM", "GRU", "SimpleRNN"])
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.load(open(args.table))))
        return 0

    from keras_lowprec.export import firmware, to_tflite

    x_train, y_train, x_test, _ = digits()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, method, model in trained(args, x_train, y_train):
            for label, kwargs, kinds in ROUTES:
                if kind not in kinds:
                    continue
                out = os.path.join(tmp, f"{kind}_{method}_{label.replace(' ', '_')}")
                res = to_tflite(model, x_train[:400], verify_data=x_test[:8], output_dir=out, **kwargs)
                rep = res.report
                row = {"kind": kind, "method": method, "units": args.units, "export": label,
                       "graph": rep["graph"], "kernel_sets": rep["kernel_sets"], "ops": rep["ops"],
                       "model_bytes": rep["model_bytes"], "arena_python_used": rep["arena_bytes"],
                       "arena_smallest_host": rep["arena_smallest_bytes"],
                       "kTensorArenaSize": rep["arena_recommended"], "timesteps": 8,
                       "compression": {k: v for k, v in rep.get("compression", {}).items() if k != "tensors"},
                       "targets": measure(out, rep, args.build_dir)}
                rows.append(row)
                print(_line(row), flush=True)
    result = {
        "command": "python bench/firmware.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "platform": platform.platform(), "processor": platform.machine(),
        "toolchains": {t: _tool_version(t) for t in ("g++", "arm-none-eabi-g++", "qemu-system-arm")},
        "tflm_dir": firmware.find_tflm(),
        "notes": "instructions: QEMU -icount shift=0 (one instruction per virtual ns) read through SysTick "
                 "(25 MHz on mps2-an386, 40 instructions per tick): instruction counts, not cycles. "
                 "flash: from the linker map; tflm = TFLM core, the model's kernels and CMSIS-NN.",
        "rows": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    return 0


def table(result: dict) -> str:
    """Markdown: one row per export, Cortex-M4 figures with reference and CMSIS-NN kernels."""
    lines = ["| model | export | graph | bit-exact host / M4 / M4 CMSIS-NN | weight bits | model flash B "
             "| TFLM flash B "
             "(ref / CMSIS-NN) | kTensorArenaSize | arena used M4 (ref / CMSIS-NN) | instructions per step M4 "
             "(ref / CMSIS-NN) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        t = row["targets"]
        ref, cm = t["cortex-m4"], t["cortex-m4-cmsis-nn"]
        refused = cm.get("refused_by_model_ops_h")
        forced = cm.get("forced_build", {})
        if refused and "failed" in forced:
            cm_text = "refused (fails to allocate if forced)"
        elif refused:
            cm_text = f"refused ({forced['mismatches']} of {forced['outputs']} wrong if forced)"
        else:
            cm_text = "yes" if cm["passed"] else "no"
        exact = " / ".join("yes" if r.get("passed") else "no" for r in (t["host"], ref)) + " / " + cm_text
        cm_run = cm if not refused else (forced if "failed" not in forced else {})
        comp = row.get("compression") or {}
        bits = f"{comp['bits_per_weight']:.2f}" if comp.get("applied") else "8"
        lines.append(
            f"| {row['kind']} {row['units']} {row['method'].lower()} | {row['export']} | {row['graph']} | {exact} | "
            f"{bits} | "
            f"{ref['flash']['model']:,} | {ref['flash']['tflm']:,} / {_n(cm_run.get('flash', {}).get('tflm'))} | "
            f"{row['kTensorArenaSize']:,} | {ref['arena_used_bytes']:,} / {_n(cm_run.get('arena_used_bytes'))} | "
            f"{ref['instructions_per_step']:,.0f} / {_n(cm_run.get('instructions_per_step'))}"
            + (" (wrong)" if cm_run and refused else "") + " |")
    return "\n".join(lines)


def _n(value) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _line(row: dict) -> str:
    parts = [f"{row['kind']:9s} {row['method']:11s} {row['export']:17s} {row['model_bytes']:6d} B"]
    for target, r in row["targets"].items():
        if r.get("refused_by_model_ops_h"):
            f = r["forced_build"]
            parts.append(f"{target}: refused (forced: "
                         + ("fails" if "failed" in f else f"{f['mismatches']}/{f['outputs']} wrong") + ")")
        else:
            ins = r["instructions_per_step"]
            parts.append(f"{target}: {'ok' if r['passed'] else 'WRONG'} arena {r['arena_used_bytes']}"
                         + (f" {ins:,.0f} instr/step" if ins else ""))
    return " | ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
