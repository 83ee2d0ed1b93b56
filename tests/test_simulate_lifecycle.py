"""simulate's children end with it, and a closed stdout ends the run cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from conftest import BIN, CLASSIC


def child_pids(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as file:
        return [int(child) for child in file.read().split()]


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_children_end_when_simulate_is_killed():
    simulate = subprocess.Popen(
        [str(BIN / "marketplace-simulate"), str(CLASSIC / "05.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    children: list[int] = []
    while time.monotonic() < deadline and len(children) < 9:
        time.sleep(0.2)
        children = child_pids(simulate.pid)

    os.kill(simulate.pid, signal.SIGKILL)
    simulate.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(running(pid) for pid in children):
        time.sleep(0.2)

    assert len(children) == 9
    assert [pid for pid in children if running(pid)] == []


def test_closed_stdout_ends_run_without_traceback():
    simulate = subprocess.Popen(
        [str(BIN / "marketplace-simulate"), str(CLASSIC / "05.json"), "--time-scale", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first_line = simulate.stdout.readline()
    simulate.stdout.close()
    _, stderr = simulate.communicate(timeout=120)

    assert " bought " in first_line
    assert simulate.returncode == 1
    assert "standard output was closed" in stderr
    assert "Traceback" not in stderr
