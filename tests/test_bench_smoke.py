"""The benchmark in its smoke configuration, and `marketplace-simulate --local`.

The benchmark's numbers mean nothing on a shared machine, so these tests
check only that it runs and writes every result. Speed targets live in the
benchmark itself and its report, benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import CLASSIC, ROOT

SPREAD_KEYS = {"min", "median", "max"}


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("bench")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--smoke", "--out-dir", str(out_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return out_dir, json.loads((out_dir / "results.json").read_text())


def test_bench_smoke_records_machine_and_command(smoke_results):
    _, results = smoke_results

    assert results["settings"]["name"] == "smoke"
    assert "benchmarks.bench --smoke" in results["command"]
    for key in ("cpu_count", "python", "grpcio", "protobuf"):
        assert results["machine"][key], key


def test_bench_smoke_ceiling_and_market(smoke_results):
    _, results = smoke_results
    row = results["ceiling_vs_market"][0]

    assert row["concurrency"] == "1x1"
    for side in ("ceiling", "market"):
        for key in ("calls_per_s", "p50_ms", "p99_ms"):
            assert set(row[side][key]) == SPREAD_KEYS, (side, key)
    assert set(row["market"]["items_per_s"]) == SPREAD_KEYS
    assert row["market"]["errors"] == 0
    assert row["ratio"] > 0
    assert set(row["pair_ratio"]) == SPREAD_KEYS


def test_bench_smoke_batching(smoke_results):
    _, results = smoke_results
    batching = results["batching"]

    assert batching["batch"] > 1
    assert set(batching["market"]["items_per_s"]) == SPREAD_KEYS
    assert batching["items_per_ceiling_call"] > 0


def test_bench_smoke_cost_growth(smoke_results):
    _, results = smoke_results
    dimensions = results["cost_growth"]["dimensions"]

    assert set(dimensions) == {"producers", "items", "carts", "kinds"}
    for name, dimension in dimensions.items():
        assert len(dimension["rows"]) >= 2, name
        for row in dimension["rows"]:
            assert set(row["calls_per_s"]) == SPREAD_KEYS, name
        assert dimension["largest_vs_smallest"] > 0, name


def test_bench_smoke_memory(smoke_results):
    _, results = smoke_results
    steps = {step["step"]: step for step in results["memory"]["steps"]}

    assert set(steps) == {
        "started",
        "empty",
        "items",
        "carts",
        "cart_items",
        "producers",
        "spread_items",
        "request_ids",
    }
    assert all(step["rss_kib"] > 0 for step in steps.values())
    assert results["memory"]["final_state"]["open_carts"] == 100


def test_bench_smoke_scenarios(smoke_results):
    _, results = smoke_results
    scenarios = results["scenarios"]
    runs = {(run["mode"], run["time_scale"]) for run in scenarios["runs"]}

    assert runs == {
        ("distributed", 1.0),
        ("distributed, polling", 1.0),
        ("local", 1.0),
        ("distributed", 0.1),
        ("distributed, polling", 0.1),
        ("local", 0.1),
    }
    for run in scenarios["runs"]:
        assert run["items_bought"] == scenarios["items_expected"], run
        assert run["calls_per_item"]["median"] >= 1, run


def test_bench_smoke_targets_and_markdown(smoke_results):
    out_dir, results = smoke_results
    markdown = (out_dir / "RESULTS.md").read_text()

    assert all(set(target) == {"target", "measured", "met"} for target in results["targets"])
    for heading in ("## Targets", "## Cost growth", "## Memory", "## Whole scenarios"):
        assert heading in markdown, heading


STALLING_SCENARIO = {
    "products": {
        "a": {"product_type": "Tea", "name": "A", "price": 1},
        "b": {"product_type": "Tea", "name": "B", "price": 2},
    },
    # The shelf fills with the A that no consumer buys, so B is never published.
    "producers": [
        {
            "name": "p1",
            "products": [["a", 1, 0.01], ["b", 1, 0.01]],
            "republish_wait_time": 0.05,
        }
    ],
    "consumers": [
        {
            "name": "c1",
            "retry_wait_time": 0.05,
            "carts": [[{"type": "add", "product": "b", "quantity": 2}]],
        }
    ],
    "marketplace": {"queue_size_per_producer": 1},
}


def run_simulate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "simulate.sh"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_simulate_local_matches_classic_01():
    result = run_simulate(
        "--local", str(CLASSIC / "01.json"), "--time-scale", "0.1", "--timeout", "60"
    )

    assert result.returncode == 0, result.stderr
    expected = (CLASSIC / "01.expected").read_text().splitlines()
    assert sorted(result.stdout.splitlines()) == sorted(expected)
    assert "simulate: 1 consumers, 3 items bought" in result.stderr


def test_simulate_local_rejects_server():
    result = run_simulate("--local", "--server", "127.0.0.1:1")

    assert result.returncode == 2
    assert "--local" in result.stderr


def test_simulate_local_diagnoses_stall(tmp_path):
    scenario = tmp_path / "stall.json"
    scenario.write_text(json.dumps(STALLING_SCENARIO))

    result = run_simulate(
        "--local", str(scenario), "--stall-timeout", "1", "--timeout", "60"
    )

    assert result.returncode == 4, result.stderr
    assert "simulate: failed: the market stalled" in result.stderr
    assert "consumer c1 (cart c1/cart-1) waits for product b" in result.stderr


def test_simulate_local_budget_matches_distributed(tmp_path):
    scenario = json.loads((ROOT / "clients" / "examples" / "example.json").read_text())
    scenario["consumers"][0]["budget"] = 30
    scenario["consumers"][1]["budget"] = 20
    path = tmp_path / "budget.json"
    path.write_text(json.dumps(scenario))

    local = run_simulate("--local", str(path), "--time-scale", "0.2", "--timeout", "60")
    distributed = run_simulate(str(path), "--time-scale", "0.2", "--timeout", "60")

    assert local.returncode == 0, local.stderr
    assert distributed.returncode == 0, distributed.stderr
    assert sorted(local.stdout.splitlines()) == sorted(distributed.stdout.splitlines())
    assert "dropped 1 green to stay within the budget" in local.stderr
    assert "simulate: alice spent 49, budget 30 per order" in local.stderr
