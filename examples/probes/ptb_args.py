"""Command line shared by the PTB probes that train the matrix's quick-budget model.

Every such probe takes the model's cell, width, epochs and seed, the smoke-run caps, a
scratch folder (resumable runs) and an output path, and names its JSON
``results/probes/<probe>_<parts>_u<units>[_s<seed>].json``.
"""
import argparse
import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "results" / "probes"


def parser(probe: str, epochs_help: str | None = None) -> argparse.ArgumentParser:
    """An argument parser with the shared options; the probe adds its own."""
    p = argparse.ArgumentParser(prog=f"{probe}.py")
    p.add_argument("--cell", choices=("gru", "lstm"), default="gru")
    p.add_argument("--units", type=int, default=256)
    p.add_argument("--epochs", type=int, default=6, help=epochs_help)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps-per-epoch", type=int, default=None, help="smoke runs")
    p.add_argument("--max-eval-chars", type=int, default=None, help="smoke runs")
    p.add_argument("--scratch", default=os.path.expanduser(f"~/.keras/keras_lowprec/scratch/{probe}"))
    p.add_argument("--out", default=None, help="JSON to write (default under results/probes)")
    return p


def run_name(probe: str, args, *parts: str) -> str:
    """``<probe>_<cell>[_<parts>]_u<units>[_s<seed>]``, the JSON's and scratch folder's name."""
    name = "_".join((probe, args.cell, *parts)) + f"_u{args.units}"
    return name + ("" if args.seed == 0 else f"_s{args.seed}")


def out_path(args, name: str) -> Path:
    """``--out`` if given, else ``results/probes/<name>.json``."""
    return Path(args.out or RESULTS / f"{name}.json")
