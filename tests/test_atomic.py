"""atomic_file: a file appears whole or not at all."""

from __future__ import annotations

import pytest

from hpstudy.atomic import PART_SUFFIX, atomic_file


def test_success_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "table.csv"
    with atomic_file(target, "w") as f:
        f.write("a,b\n")
        assert f.name != str(target) and f.name.endswith(PART_SUFFIX)
        assert not target.exists()  # nothing visible until the block succeeds
    assert target.read_text() == "a,b\n"
    assert [p.name for p in target.parent.iterdir()] == ["table.csv"]


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "model.pth"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_file(target, fsync=True) as f:
        f.write(b"half of the new")
        raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]


def test_only_write_modes(tmp_path):
    with pytest.raises(ValueError, match="mode='a'"), atomic_file(tmp_path / "x", "a"):
        pass
