"""Durable files: written beside, fsynced, then renamed into place.

A reader (or a crash, or Ctrl-C) sees either the previous file whole or the new one whole,
never half of one: the data is written to a hidden temporary sibling (same directory, so the
rename is atomic), flushed to the disk, renamed over the target, and the directory entry is
made durable too. Every writer of a result file in sdfkit goes through here.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def fsync_file(path: str | Path) -> None:
    """Flush a written file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Make a directory's entries (a rename into it) durable; a no-op where directories
    cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: str | Path, final: str | Path) -> None:
    """Make a finished temporary file visible: durable first, then one atomic rename
    (replacing ``final``), then the directory entry made durable."""
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)


def temp_sibling(path: str | Path) -> Path:
    """A hidden temporary name beside ``path`` unique to this process and call."""
    p = Path(path)
    return p.with_name(f".tmp-{p.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")


def check_target(path: str | Path) -> Path:
    """``path`` as a place a file may be written to, else a one-line ``SdfError``: never a
    folder, and never something other than a regular file (a device such as /dev/full or
    /dev/stdout, a pipe, a socket), which a rename would replace for every program on the
    machine. A symlink is followed to what it names."""
    import stat

    from sdfkit.errors import SdfError

    p = Path(path)
    try:
        mode = p.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # a new file (or a parent that is a file:
        return p  # making the folder names it)
    except OSError as exc:
        raise SdfError(f"{p}: cannot write here: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise SdfError(f"{p}: is a folder; give a file path")
    if not stat.S_ISREG(mode):
        raise SdfError(
            f"{p}: not a regular file (a device, pipe or socket); sdfkit writes files only"
        )
    return p


def check_writable(path: str | Path) -> Path:
    """``check_target``, and the nearest existing folder above ``path`` is a folder (not a
    file): for commands that check their output paths before they do any work."""
    from sdfkit.errors import SdfError

    p = check_target(path)
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise SdfError(f"{p}: {parent} is a file, not a folder")
            break
    return p


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; when the block succeeds it is
    published over ``path``, when it fails (or is interrupted) ``path`` is left as it was
    and the temporary file removed. ``path`` must be a file or not exist yet
    (``check_target``); a folder that cannot be made is a one-line error naming it."""
    from sdfkit.errors import SdfError

    p = check_target(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SdfError(f"{p}: cannot make its folder {p.parent}: {exc.strerror or exc}") from None
    tmp = temp_sibling(p)
    try:
        yield tmp
        publish(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` with ``data``, atomically and durably."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8), atomically and durably."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any, **dumps: Any) -> Path:
    """Replace ``path`` with ``obj`` as JSON plus a final newline (``dumps``: arguments of
    ``json.dumps``), atomically and durably."""
    return write_text_atomic(path, json.dumps(obj, **dumps) + "\n")


def write_parquet_atomic(path: str | Path, table: Any, **options: Any) -> Path:
    """Replace ``path`` with a Parquet file of ``table`` (an Arrow table or a polars
    DataFrame; ``options`` go to the writer), atomically and durably."""
    with atomic_path(path) as tmp:
        if hasattr(table, "write_parquet"):
            table.write_parquet(tmp, **options)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, tmp, **options)
    return Path(path)


def replace_dir_atomic(files: dict[str, str], out: str | Path, threads: int = 8) -> Path:
    """Replace the directory ``out`` with one holding exactly ``files`` (name -> text).

    The files are written and fsynced in a hidden sibling directory, which is then swapped
    in by renames; if anything fails the previous ``out`` is put back whole."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}@{uuid.uuid4().hex[:8]}"
    tmp = out.parent / f".{out.name}.tmp-{tag}"
    old = out.parent / f".{out.name}.old-{tag}"
    tmp.mkdir()

    def write(item: tuple[str, str]) -> None:
        with open(tmp / item[0], "w", encoding="utf-8") as fh:
            fh.write(item[1])
            fh.flush()
            os.fsync(fh.fileno())

    try:
        # fsync waits on the disk, not the CPU: several at once (it releases the GIL)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(write, files.items()))
        fsync_dir(tmp)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        fsync_dir(out.parent)
    except BaseException:
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out
