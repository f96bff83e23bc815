"""Writing an export folder as one consistent set.

The exporter's files (``EXPORT_FILES``) belong together: a ``model_test_data.h`` or a
``model_data.cc`` of a previous export next to a new ``model.tflite`` would build firmware
for the wrong model. :func:`write_folder` therefore writes the complete new set into a
hidden sibling folder, links in the files there that are not the exporter's (the user's own
sources), and swaps the two folders with one atomic ``renameat2(RENAME_EXCHANGE)`` on Linux.
An interruption at any point leaves the complete old set or the complete new one at
``output_dir``. Elsewhere (no ``renameat2``, or a file system without it) the swap is two
renames; an interruption between them leaves the old set in ``.<name>.old-*`` beside it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import shutil
import tempfile

EXPORT_FILES = ("model.tflite", "model_data.cc", "model_data.h", "model_ops.h", "model_test_data.h", "report.json")
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def write_folder(output_dir: str, files: dict[str, bytes | str],
                 owned: tuple[str, ...] = EXPORT_FILES) -> dict[str, str]:
    """Makes ``output_dir`` hold exactly ``files`` (name -> content) of the export's ``owned``
    file names (default: the TFLM export's), plus whatever else it held; returns name -> path.
    See the module docstring."""
    unknown = set(files) - set(owned)
    if unknown:
        raise ValueError(f"write_folder: not export files: {sorted(unknown)}")
    target = os.path.abspath(os.fspath(output_dir))
    parent, base = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    for stale in glob.glob(os.path.join(parent, f".{base}.new-*")) + glob.glob(os.path.join(parent, f".{base}.old-*")):
        shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted export to this folder
    staging = tempfile.mkdtemp(prefix=f".{base}.new-", dir=parent)
    try:
        for name, data in files.items():
            _write_synced(os.path.join(staging, name), data.encode() if isinstance(data, str) else data)
        if os.path.isdir(target):
            _link_others(target, staging, owned)
            _swap(staging, target)  # staging now holds the old set
            shutil.rmtree(staging, ignore_errors=True)
        else:
            os.rename(staging, target)
    except BaseException:
        if os.path.isdir(staging) and os.path.realpath(staging) != os.path.realpath(target):
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return {name: os.path.join(os.fspath(output_dir), name) for name in files}


def _write_synced(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o666 & ~_umask())


def _link_others(old: str, new: str, owned: tuple[str, ...]) -> None:
    """Hard links (copies across file systems) every entry of ``old`` that is not an export
    file into ``new``: the user's files survive the swap."""
    for entry in os.listdir(old):
        if entry in owned:
            continue
        src, dst = os.path.join(old, entry), os.path.join(new, entry)
        if os.path.isdir(src) and not os.path.islink(src):
            shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(src, dst)


def _link_or_copy(src: str, dst: str) -> None:
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _swap(a: str, b: str) -> None:
    """Exchanges the folders ``a`` and ``b``: atomically where renameat2 exists."""
    libc_name = ctypes.util.find_library("c")
    renameat2 = getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None) if libc_name else None
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(b)}.old-", dir=os.path.dirname(b))
    os.rmdir(old)
    os.rename(b, old)
    os.rename(a, b)
    os.rename(old, a)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
