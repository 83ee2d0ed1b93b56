"""marketplace-simulate shows progress on a terminal and nothing extra on a pipe."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time

from conftest import ROOT

SIMULATE = [sys.executable, "-m", "marketplace_clients.simulate", "--time-scale", "0.5"]


def run_with_terminal_stderr(timeout: float = 120) -> tuple[int, str, str]:
    """Run the bundled example with stderr on a pseudo-terminal."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        SIMULATE, stdout=subprocess.PIPE, stderr=follower, cwd=ROOT
    )
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    stdout, _ = process.communicate(timeout=30)
    return process.returncode, stdout.decode(), b"".join(chunks).decode()


def test_progress_on_terminal():
    returncode, stdout, stderr = run_with_terminal_stderr()

    assert returncode == 0, stderr
    assert "consumers finished" in stderr
    assert "consumers finished" not in stdout
    assert len(stdout.splitlines()) == 9


def test_no_progress_on_pipe():
    result = subprocess.run(
        SIMULATE, capture_output=True, text=True, cwd=ROOT, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert "consumers finished" not in result.stderr
    assert "items bought" in result.stderr
