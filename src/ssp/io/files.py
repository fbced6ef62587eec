"""Files written whole or not at all, by any number of writers at once.

Every file the project writes goes through ``atomic_path``: a temporary name unique to the writer
(``tempfile.mkstemp`` in the target's folder, so the rename never crosses a file system), flushed
to disk (``fsync``) and renamed over the target when the block ends without an exception, removed
otherwise. Two runs writing the same ``results`` folder (from two working directories, which
Snakemake's lock does not see) then each replace the file with a whole copy of theirs; a fixed
``.tmp`` name would let one writer rename the other's half-written file.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, *, sync: bool = True):
    """A temporary path to write ``path``'s new content to (by a library that takes a path:
    ``torch.save``, ``save_file``, ``DataFrame.to_csv``); flushed (``sync``: to the disk too) and
    renamed over ``path`` when the block ends cleanly, deleted when it raises. ``sync=False`` for
    the many small files of one job that a crash makes it redo anyway (PNG masks, figures)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if sync:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        _fsync_dir(path.parent)


def write_text(path: str | Path, text: str, *, sync: bool = True) -> None:
    """``path`` holds ``text`` whole (never a mix of two writers' texts, never a part of one)."""
    with atomic_path(path, sync=sync) as tmp:
        tmp.write_text(text)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """The rename itself on disk (a folder's fsync; not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
