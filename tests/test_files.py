"""Outputs written atomically honour the umask, like a plain open() would."""

import os
import subprocess
import sys

from sweagent_oec.files import atomic_write_text


def _mode_under(umask: int, tmp_path) -> int:
    target = tmp_path / f"out_{umask:o}.json"
    # A child process, so the umask we set does not leak into the test process.
    code = (
        "import os, sys; os.umask(int(sys.argv[2], 8));"
        "from sweagent_oec.files import atomic_write_text; atomic_write_text(sys.argv[1], '{}')"
    )
    subprocess.run([sys.executable, "-c", code, str(target), f"{umask:o}"], check=True)
    return target.stat().st_mode & 0o777


def test_atomic_writes_follow_the_umask(tmp_path):
    assert _mode_under(0o022, tmp_path) == 0o644
    assert _mode_under(0o002, tmp_path) == 0o664
    assert _mode_under(0o077, tmp_path) == 0o600


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]
