"""Producer and consumer processes carry on when the server restarts mid-run.

A server keeps its market in memory only, so the new server has none of the old
producers and carts. The producer must register again and the consumer
must fill its lost cart again from the start.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time

import grpc
import pytest

from conftest import BIN, CLASSIC
from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc

SCENARIO = CLASSIC / "02.json"
TIME_SCALE = "0.3"
START_TIMEOUT = 30.0
RUN_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
CALL_TIMEOUT = 10.0


def free_loopback_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, tmp_path, number: int) -> tuple[subprocess.Popen, object]:
    """Start marketplace-server on `port`; return it once it serves, and its log path."""
    port_file = tmp_path / f"server{number}.port"
    log_path = tmp_path / f"server{number}.log"
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [
                str(BIN / "marketplace-server"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--port-file",
                str(port_file),
                "--queue-size",
                "15",
                "--grace",
                "2",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while not port_file.exists():
        if process.poll() is not None:
            pytest.fail(
                f"server {number} on port {port} exited with status "
                f"{process.returncode}: {log_path.read_text(encoding='utf-8')}"
            )
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"server {number} wrote no port within {START_TIMEOUT} s")
        time.sleep(0.02)
    return process, log_path


def client(role: str, name: str, address: str, stderr) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(BIN / f"marketplace-{role}"),
            "--scenario",
            str(SCENARIO),
            "--name",
            name,
            "--server",
            address,
            "--time-scale",
            TIME_SCALE,
        ],
        stdout=subprocess.PIPE if role == "consumer" else subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )


def wait_for_filled_cart(address: str, consumer: subprocess.Popen) -> None:
    """Wait until the consumer has an open cart with items in it."""
    deadline = time.monotonic() + RUN_TIMEOUT
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        while time.monotonic() < deadline:
            if consumer.poll() is not None:
                pytest.fail("the consumer finished before the server restarted")
            state = stub.GetMarketState(pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT)
            if any(cart.items for cart in state.carts):
                return
            time.sleep(0.02)
    pytest.fail(f"the consumer filled no cart within {RUN_TIMEOUT} s")


def stop(process: subprocess.Popen) -> int:
    """Send SIGTERM, wait for the process to exit, and return its status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(timeout=STOP_TIMEOUT)


def test_clients_survive_server_restart(tmp_path):
    port = free_loopback_port()
    address = f"127.0.0.1:{port}"
    processes = []
    producer_log = tmp_path / "producer.log"
    consumer_log = tmp_path / "consumer.log"
    try:
        old_server, old_log = start_server(port, tmp_path, 1)
        processes.append(old_server)
        with open(producer_log, "w", encoding="utf-8") as log:
            producer = client("producer", "prod1", address, log)
        processes.append(producer)
        with open(consumer_log, "w", encoding="utf-8") as log:
            consumer = client("consumer", "cons1", address, log)
        processes.append(consumer)

        wait_for_filled_cart(address, consumer)
        old_status = stop(old_server)
        new_server, new_log = start_server(port, tmp_path, 2)
        processes.append(new_server)

        stdout, _ = consumer.communicate(timeout=RUN_TIMEOUT)
        producer_status = stop(producer)
        new_status = stop(new_server)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
    old_text = old_log.read_text(encoding="utf-8")
    stopped = re.search(r"stopped: (\d+) orders", old_text)
    consumer_text = consumer_log.read_text(encoding="utf-8")
    producer_text = producer_log.read_text(encoding="utf-8")
    expected = (CLASSIC / "02.expected").read_text(encoding="utf-8").splitlines()
    bought = stdout.splitlines()

    assert old_status == 0, old_text
    assert stopped is not None, old_text
    # cons1 places 2 orders: the restart came before the second.
    assert int(stopped.group(1)) < 2
    assert consumer.returncode == 0, consumer_text
    for line in bought:
        assert line in expected
    # The consumer prints a cart only after its order succeeded, and fills a
    # lost cart again from the start, so no item is missing or doubled.
    assert sorted(bought) == sorted(expected)
    assert (
        "filling a new cart from the start" in consumer_text
        or "registering again" in producer_text
    )
    assert producer_status == 0, producer_text
    assert new_status == 0, new_log.read_text(encoding="utf-8")
