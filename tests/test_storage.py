"""Stored files: written whole or not at all, never overwritten, nothing left behind."""
import os
import signal
from pathlib import Path

import pytest

from sendit_core import storage
from sendit_core.storage import Stored, store_file

REL = "1/1.2.3/1.2.3.4/1.2.3.4.5.dcm"


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "in.dcm"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    return path


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture(params=["anonymous", "named"])
def mode(request, monkeypatch, tmp_path):
    """Both ways of writing: O_TMPFILE, and the named temporary file used without it."""
    if request.param == "named":
        monkeypatch.setattr(storage, "_anonymous_file", lambda folder: None)
    else:  # the anonymous file must really be linked, not silently replaced by a named one
        probe = storage._anonymous_file(tmp_path)
        if probe is None:
            pytest.skip("this file system has no O_TMPFILE")
        os.close(probe)

        def no_named_file(*args, **kwargs):
            raise AssertionError("store_file fell back to a named temporary file")

        monkeypatch.setattr(storage.tempfile, "mkstemp", no_named_file)
    return request.param


def test_new_then_identical_then_conflict(mode, source, tmp_path):
    root = tmp_path / "storage"
    assert store_file(source, root, REL) is Stored.NEW
    assert (root / REL).read_bytes() == source.read_bytes()
    assert store_file(source, root, REL, fsync=True) is Stored.IDENTICAL
    other = tmp_path / "other.dcm"
    other.write_bytes(b"different")
    assert store_file(other, root, REL) is Stored.CONFLICT
    assert (root / REL).read_bytes() == source.read_bytes(), "a conflict never overwrites"
    assert files_under(root) == [root / REL], "no temporary file is left"


def test_a_file_that_appears_while_copying_is_not_overwritten(mode, source, tmp_path, monkeypatch):
    root = tmp_path / "storage"
    real_copy = storage._copy

    def racing_copy(src, dst):  # another writer links the same name meanwhile
        (root / REL).write_bytes(b"the other writer's bytes")
        real_copy(src, dst)

    monkeypatch.setattr(storage, "_copy", racing_copy)
    assert store_file(source, root, REL) is Stored.CONFLICT
    assert (root / REL).read_bytes() == b"the other writer's bytes"
    assert files_under(root) == [root / REL]


def test_user_space_copy_when_the_kernel_cannot(source, tmp_path, monkeypatch):
    def refuse(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    root = tmp_path / "storage"
    assert store_file(source, root, REL) is Stored.NEW
    assert (root / REL).read_bytes() == source.read_bytes()


def test_without_proc_the_named_temporary_file_is_used(source, tmp_path, monkeypatch):
    real_link = os.link

    def link(src, dst, **kw):
        if str(src).startswith("/proc/"):
            raise FileNotFoundError(2, "No such file or directory", src)
        return real_link(src, dst, **kw)

    monkeypatch.setattr(os, "link", link)
    root = tmp_path / "storage"
    assert store_file(source, root, REL) is Stored.NEW
    assert files_under(root) == [root / REL]
    assert (root / REL).read_bytes() == source.read_bytes()


def test_a_process_killed_mid_copy_leaves_nothing_behind(mode, source, tmp_path):
    root = tmp_path / "storage"
    pid = os.fork()
    if pid == 0:  # the child dies halfway through its copy
        try:
            def half_then_die(src, dst):
                os.write(dst, os.read(src, 1024 * 1024))
                os.kill(os.getpid(), signal.SIGKILL)

            storage._copy = half_then_die
            store_file(source, root, REL)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    leftovers = files_under(root)
    if mode == "anonymous":
        assert leftovers == [], "an unnamed file vanishes with its process"
    else:  # without O_TMPFILE a named temporary file stays, never under the final name
        assert not (root / REL).exists()
        assert all(p.name.startswith(".incoming-") for p in leftovers)
