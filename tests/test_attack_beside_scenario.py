"""A hostile client beside a classic scenario: only documented errors, exact output."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import CLASSIC, ROOT

ALLOWED = {"INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED"}
# Random bytes can decode as a valid request with unknown fields, which a
# read-only method may then serve.
READ_ONLY = {"GetMarketState", "ListProducts", "SearchProducts"}


def test_attack_leaves_scenario_output_exact(start_server):
    server = start_server("--queue-size", "13")
    attacker = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "attacker.py"), server.address, "60", "20000"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        scenario = subprocess.run(
            [
                "bash",
                str(ROOT / "scripts" / "simulate.sh"),
                str(CLASSIC / "04.json"),
                "--server",
                server.address,
                "--time-scale",
                "0.1",
                "--timeout",
                "120",
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        attacker.terminate()
        report, _ = attacker.communicate(timeout=30)

    assert scenario.returncode == 0, scenario.stderr
    expected = (CLASSIC / "04.expected").read_text().splitlines()
    assert sorted(scenario.stdout.splitlines()) == sorted(expected)
    assert attacker.returncode == 0
    codes = json.loads(report)
    unexpected = {
        key: count
        for key, count in codes.items()
        if key.split(" ", 1)[1] not in ALLOWED and key.split(" ", 1)[0] not in READ_ONLY
    }
    assert unexpected == {}
    assert sum(codes.values()) > 100
