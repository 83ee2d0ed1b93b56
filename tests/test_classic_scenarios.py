"""End-to-end runs of the classic scenarios through scripts/simulate.sh."""

from __future__ import annotations

import subprocess

import pytest

from conftest import CLASSIC, ROOT

SCENARIOS = sorted(path.stem for path in CLASSIC.glob("*.json"))


def run_simulate(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "simulate.sh"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_all_six_scenarios_present():
    assert SCENARIOS == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_classic_scenario_output_matches(name):
    result = run_simulate(
        str(CLASSIC / f"{name}.json"), "--time-scale", "0.1", "--timeout", "180"
    )

    assert result.returncode == 0, result.stderr
    expected = (CLASSIC / f"{name}.expected").read_text().splitlines()
    assert sorted(result.stdout.splitlines()) == sorted(expected)
    assert "items bought" in result.stderr


def test_bundled_example_runs():
    result = run_simulate("--time-scale", "0.2", "--timeout", "120")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 9
    assert all(" bought " in line for line in lines)


def test_classic_scenarios_at_time_scale_one():
    # All six run side by side, so the test takes about as long as the
    # slowest scenario rather than their sum.
    runs = {
        name: subprocess.Popen(
            [
                "bash",
                str(ROOT / "scripts" / "simulate.sh"),
                str(CLASSIC / f"{name}.json"),
                "--timeout",
                "240",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in SCENARIOS
    }
    results = {name: run.communicate(timeout=300) for name, run in runs.items()}

    for name, (stdout, stderr) in results.items():
        assert runs[name].returncode == 0, f"{name}: {stderr}"
        expected = (CLASSIC / f"{name}.expected").read_text().splitlines()
        assert sorted(stdout.splitlines()) == sorted(expected), name
