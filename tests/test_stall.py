"""Stall diagnosis in marketplace-simulate and marketplace-top.

tests/data/extra/stall.json stalls for good: its one producer publishes
linden, then sencha, onto a shelf of capacity 1, and its one consumer wants
only sencha. The linden fills the shelf, so sencha is never published.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import grpc
import pytest

from conftest import BIN, CLASSIC, DATA, ROOT
from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc

STALL_SCENARIO = DATA / "extra" / "stall.json"
RUN_TIMEOUT = 240
CALL_TIMEOUT = 10
SETTLE_TIMEOUT = 60
EXIT_STALLED = 4

DIAGNOSIS = [
    "consumer alice (cart alice/cart-1) waits for product sencha",
    "producer tea_farm is blocked publishing sencha: its shelf holds 1 of 1 "
    "items (linden x1)",
    "nobody waiting wants what fills the shelf of tea_farm, so it stays full",
]


def run_simulate(scenario, stall_timeout: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "bash",
            str(ROOT / "scripts" / "simulate.sh"),
            str(scenario),
            "--time-scale",
            "0.1",
            "--stall-timeout",
            stall_timeout,
            "--timeout",
            "180",
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=RUN_TIMEOUT,
    )


@pytest.fixture(scope="module")
def stalled_run() -> subprocess.CompletedProcess:
    return run_simulate(STALL_SCENARIO, "2")


def test_stalled_run_exits_4(stalled_run):
    assert stalled_run.returncode == EXIT_STALLED, stalled_run.stderr


@pytest.mark.parametrize("line", DIAGNOSIS)
def test_stalled_run_diagnosis(stalled_run, line):
    assert (
        f"simulate: stalled: {line}" in stalled_run.stderr.splitlines()
    ), stalled_run.stderr


def test_stalled_run_names_idle_time(stalled_run):
    assert "simulate: stalled: no item has moved for " in stalled_run.stderr


def test_stalled_run_buys_nothing(stalled_run):
    assert stalled_run.stdout == ""


def test_classic_run_does_not_stall():
    # 5 s rather than 2: client processes may take seconds to start on a busy
    # machine, and no item moves before they do.
    result = run_simulate(CLASSIC / "02.json", "5")
    expected = (CLASSIC / "02.expected").read_text(encoding="utf-8").splitlines()

    assert result.returncode == 0, result.stderr
    assert "stalled" not in result.stderr
    assert sorted(result.stdout.splitlines()) == sorted(expected)


# marketplace-top against a market that stalled.


@pytest.fixture
def stalled_market(start_server):
    """Run stall.json's producer and consumer against a server; yield its address
    once the consumer waits and the producer is blocked."""
    server = start_server("--queue-size", "1")
    clients = [
        subprocess.Popen(
            [
                str(BIN / f"marketplace-{role}"),
                "--server",
                server.address,
                "--scenario",
                str(STALL_SCENARIO),
                "--name",
                name,
                "--time-scale",
                "0.1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for role, name in (("producer", "tea_farm"), ("consumer", "alice"))
    ]
    try:
        with grpc.insecure_channel(server.address) as channel:
            wait_until_stalled(pb_grpc.MarketServiceStub(channel))
        yield server.address
    finally:
        for client in clients:
            client.send_signal(signal.SIGTERM)
        for client in clients:
            try:
                client.wait(timeout=SETTLE_TIMEOUT)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait()


def wait_until_stalled(stub) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        state = stub.GetMarketState(pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT)
        blocked = [s.blocked_product_id for s in state.shelves]
        waiting = [c.waiting_product_id for c in state.carts]
        if blocked == ["sencha"] and waiting == ["sencha"]:
            return
        time.sleep(0.1)
    pytest.fail(f"the market did not stall within {SETTLE_TIMEOUT} s")


def test_top_shows_diagnosis(stalled_market):
    # Wide enough that no diagnosis line wraps.
    env = dict(os.environ, PYTHONIOENCODING="utf-8", COLUMNS="200")
    result = subprocess.run(
        [
            str(BIN / "marketplace-top"),
            "--server",
            stalled_market,
            "--count",
            "8",
            "--interval",
            "0.3",
            "--stall-after",
            "1",
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=RUN_TIMEOUT,
        env=env,
    )
    lines = [line.strip() for line in result.stdout.splitlines()]

    assert result.returncode == 0, result.stderr
    assert any(line.startswith("STALLED: no item has moved for") for line in lines)
    for line in DIAGNOSIS:
        assert line in lines, result.stdout
