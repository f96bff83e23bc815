"""The keras_lowprec C runtime (``export/c/klp.h``): packed ternary / shift-coded weights,
multiplier-free matrix-vector products, int8 activations (``export/cruntime``).

Pipeline steps: validate → analyze (stream mode) → build the integer model → verify (the
NumPy reference of the runtime's arithmetic against Keras, test vectors) → emit
(``<name>.c`` / ``<name>.h``, the runtime sources, ``klp_test_data.h``, ``report.json``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

_FILE_KEYS = {"klp.c": "runtime_c", "klp.h": "runtime_h", "klp_test_data.h": "test_data", "report.json": "report"}


class CTarget:
    name = "c"

    def __init__(self, packing: str = "2bit", name: str = "model", table_bytes: int = 2048):
        self.packing, self.symbol, self.table_bytes = packing, name, int(table_bytes)

    def requirements(self) -> None:
        """Nothing beyond the core install (Keras and NumPy)."""

    def build(self, ctx) -> None:
        """The integer model, its memory layout and the report of sizes and formats."""
        from keras_lowprec.export.cruntime import model as M
        from keras_lowprec.export.cruntime import quantize
        from keras_lowprec.export.cruntime.api import PACKINGS, make_report

        ctx.artifact = im = quantize.build(ctx.plan, ctx.data, PACKINGS[self.packing], self.table_bytes)
        ctx.layout = M.layout(im)
        ctx.report = make_report(im, ctx.layout, self.packing)

    def verify(self, ctx) -> None:
        """With ``verify_data``: test vectors from the NumPy reference (what the C code must
        reproduce bit for bit) and the argmax agreement of the reference with Keras."""
        if ctx.opts.verify_data is None:
            return
        from keras_lowprec.export.cruntime import codegen, reference

        im, x = ctx.artifact, np.asarray(ctx.opts.verify_data, np.float32)
        frames = _vector_frames(ctx.plan, x)
        xq = im.quantize_input(frames)
        out, state = reference.run(im, xq)
        state = reference.state_bytes(im, state, ctx.layout["state_bytes"])
        ctx.vectors = codegen.test_data(self.symbol, xq, out, state, ctx.layout)
        keras_out = np.asarray(ctx.model.predict(x, verbose=0))
        ours = predict_real_frames(im, ctx.plan.mask_value, x)
        ctx.report["verify"] = {"sequences": int(len(x)), "timesteps": int(x.shape[1]),
                                "argmax_agreement_with_keras": float(np.mean(keras_out.argmax(-1) == ours.argmax(-1)))}

    def emit(self, ctx) -> dict[str, Any]:
        from keras_lowprec.export.cruntime import codegen
        from keras_lowprec.export.cruntime.api import C_DIR, RUNTIME_FILES

        out: dict[str, Any] = {f"{self.symbol}.c": codegen.source(self.symbol, ctx.artifact, ctx.layout),
                               f"{self.symbol}.h": codegen.header(self.symbol, ctx.artifact, ctx.layout)}
        for f in RUNTIME_FILES:
            with open(os.path.join(C_DIR, f)) as fh:
                out[f] = fh.read()
        if ctx.vectors is not None:
            out["klp_test_data.h"] = ctx.vectors
        return out

    def owned_files(self) -> tuple[str, ...]:
        """The files an export to this folder replaces (another model name's files are kept)."""
        return (f"{self.symbol}.c", f"{self.symbol}.h", *_FILE_KEYS)

    def file_key(self, name: str) -> str:
        return _FILE_KEYS.get(name) or ("source" if name.endswith(".c") else "header")

    def result(self, ctx):
        from keras_lowprec.export.cruntime.api import CExport

        paths = ctx.paths
        return CExport(os.fspath(ctx.opts.output_dir), paths["source"], paths["header"],
                       [paths["runtime_c"], paths["runtime_h"]], paths.get("test_data"), ctx.report, ctx.artifact)


def predict_real_frames(im, mask_value: float | None, x: np.ndarray) -> np.ndarray:
    """The integer model's output for each sequence of ``x`` as firmware runs it: with a
    Masking layer only the real frames, one sequence at a time."""
    from keras_lowprec.export.cruntime import reference
    from keras_lowprec.export.plan import real_frames

    if mask_value is None:
        return reference.predict(im, x)
    return np.concatenate([reference.predict(im, seq[None]) for seq in real_frames(x, mask_value)])


def _vector_frames(plan, x: np.ndarray) -> np.ndarray:
    """Test-vector sequences: with a Masking layer the first 8 sequences that have real frames,
    cut to their shortest real length (every frame real, one array)."""
    if plan.mask_value is None:
        return x
    from keras_lowprec.export.plan import real_frames

    seqs = [s for s in real_frames(x, plan.mask_value) if len(s)][:8]
    n = min(len(s) for s in seqs)
    return np.stack([s[:n] for s in seqs])
