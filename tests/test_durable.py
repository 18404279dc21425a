"""The one durable-file helper: a write is whole or absent, never half, and leaves no
temporary file behind."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sdfkit.store import durable


def test_text_bytes_and_json_replace_the_file_and_leave_nothing_beside(tmp_path):
    p = tmp_path / "sub" / "out.txt"
    durable.write_text_atomic(p, "first")
    durable.write_text_atomic(p, "second ✓")
    assert p.read_text(encoding="utf-8") == "second ✓"
    durable.write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    durable.write_json_atomic(tmp_path / "j.json", {"a": [1, 2]}, indent=1)
    assert json.loads((tmp_path / "j.json").read_text()) == {"a": [1, 2]}
    assert sorted(x.name for x in (tmp_path / "sub").iterdir()) == ["out.txt"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["b.bin", "j.json", "sub"]


def test_parquet_from_arrow_or_polars(tmp_path):
    import polars as pl

    durable.write_parquet_atomic(tmp_path / "a.parquet", pa.table({"x": [1, 2]}))
    durable.write_parquet_atomic(tmp_path / "p.parquet", pl.DataFrame({"x": [3]}))
    assert pq.read_table(tmp_path / "a.parquet").column("x").to_pylist() == [1, 2]
    assert pq.read_table(tmp_path / "p.parquet").column("x").to_pylist() == [3]


def test_interrupted_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    p = tmp_path / "out.json"
    durable.write_text_atomic(p, "old, whole")

    def dying_fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(durable.os, "fsync", dying_fsync)
    with pytest.raises(KeyboardInterrupt):
        durable.write_text_atomic(p, "new")
    monkeypatch.undo()
    assert p.read_text() == "old, whole"
    assert [x.name for x in tmp_path.iterdir()] == ["out.json"]


def test_a_failing_block_publishes_nothing(tmp_path):
    p = tmp_path / "x.csv"
    with pytest.raises(RuntimeError), durable.atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []


def test_replacing_a_directory_is_all_or_nothing(tmp_path, monkeypatch):
    out = tmp_path / "d"
    durable.replace_dir_atomic({"a.md": "A", "b.md": "B"}, out)
    durable.replace_dir_atomic({"c.md": "C"}, out)
    assert {x.name: x.read_text() for x in out.iterdir()} == {"c.md": "C"}
    calls = {"n": 0}
    real = durable.os.fsync

    def dying_fsync(fd):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real(fd)

    monkeypatch.setattr(durable.os, "fsync", dying_fsync)
    with pytest.raises(KeyboardInterrupt):
        durable.replace_dir_atomic({f"{i}.md": str(i) for i in range(5)}, out, threads=1)
    monkeypatch.undo()
    assert {x.name: x.read_text() for x in out.iterdir()} == {"c.md": "C"}
    assert [x.name for x in tmp_path.iterdir()] == ["d"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_folder_a_device_or_a_pipe_is_never_replaced_by_a_file(tmp_path):
    """A rename over /dev/full or /dev/stdout would replace the device for every program on
    the machine (root may); over a folder it fails with a traceback. Each is one line, and
    the target is left as it was."""
    import stat

    from sdfkit.errors import SdfError
    from sdfkit.store.durable import check_writable, write_text_atomic

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    afile = tmp_path / "afile"
    afile.write_text("keep")
    for target, why in (
        (fifo, "not a regular file"),
        (folder, "is a folder"),
        (afile / "x.json", "afile is a file, not a folder"),
    ):
        with pytest.raises(SdfError, match=why):
            check_writable(target)
        with pytest.raises(
            SdfError, match=r"not a regular file|is a folder|cannot make its folder"
        ):
            write_text_atomic(target, "new")
    assert stat.S_ISFIFO(fifo.stat().st_mode) and folder.is_dir() and afile.read_text() == "keep"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    link = tmp_path / "link.json"
    link.symlink_to(afile)  # a symlink to a file: the link is replaced, as before
    write_text_atomic(link, "new")
    assert link.read_text() == "new" and afile.read_text() == "keep"


def test_an_os_error_escaping_a_command_is_one_line(store, tmp_path, monkeypatch):
    """No space left, no permission: the system's refusal named in one line, exit 2 (with
    SDF_TRACEBACK set, the traceback)."""
    from typer.testing import CliRunner

    from sdfkit.cli import app
    from sdfkit.store import durable

    def full(*_a, **_k):
        raise OSError(28, "No space left on device", str(tmp_path / "q.csv"))

    monkeypatch.setattr(durable, "publish", full)
    from sdfkit.store.ingest import build_documents

    store.append("documents_raw", build_documents([{"text": "one document", "concept": "c"}]))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SDF_CORPUS", str(store.root))
    res = CliRunner().invoke(app, ["sql", "SELECT 1 AS x", "--out", "q.csv"])
    assert res.exit_code == 2, res.output
    assert (
        res.output.strip().splitlines()[-1]
        == f"error: {tmp_path / 'q.csv'}: No space left on device"
    )
    assert not (tmp_path / "q.csv").exists()
    monkeypatch.setenv("SDF_TRACEBACK", "1")
    res = CliRunner().invoke(app, ["sql", "SELECT 1 AS x", "--out", "q.csv"])
    assert isinstance(res.exception, OSError)
