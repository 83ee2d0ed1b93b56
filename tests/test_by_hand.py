"""The README's three-shell run: server, producer and consumer as real processes."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from conftest import BIN, CLASSIC

SCENARIO = CLASSIC / "01.json"
START_TIMEOUT = 30
RUN_TIMEOUT = 120
STOP_TIMEOUT = 30


def stop_process(process: subprocess.Popen) -> None:
    """Kill `process` if it still runs, and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=STOP_TIMEOUT)


def wait_for_port(port_file, server: subprocess.Popen) -> int:
    """Wait until the server writes its port, and return it."""
    deadline = time.monotonic() + START_TIMEOUT
    while not port_file.exists():
        if server.poll() is not None:
            pytest.fail(f"the server exited with status {server.returncode}")
        if time.monotonic() > deadline:
            pytest.fail(f"the server wrote no port within {START_TIMEOUT} s")
        time.sleep(0.05)
    return int(port_file.read_text())


@pytest.fixture
def server(tmp_path):
    """Start marketplace-server on a free port; yield (process, address, log path)."""
    port_file = tmp_path / "port"
    log_path = tmp_path / "server.log"
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [
                str(BIN / "marketplace-server"),
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "--queue-size",
                "15",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        port = wait_for_port(port_file, process)
        yield process, f"127.0.0.1:{port}", log_path
    finally:
        stop_process(process)


def client_command(role: str, name: str, address: str) -> list[str]:
    return [
        str(BIN / f"marketplace-{role}"),
        "--scenario",
        str(SCENARIO),
        "--name",
        name,
        "--server",
        address,
        "--time-scale",
        "0.2",
    ]


def test_three_processes_run_scenario(server, tmp_path):
    server_process, address, server_log = server
    producer_log = tmp_path / "producer.log"
    with open(producer_log, "w", encoding="utf-8") as log:
        producer = subprocess.Popen(
            client_command("producer", "prod1", address),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        consumer = subprocess.run(
            client_command("consumer", "cons1", address),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        producer.send_signal(signal.SIGTERM)
        producer_status = producer.wait(timeout=STOP_TIMEOUT)
    finally:
        stop_process(producer)
    server_process.send_signal(signal.SIGTERM)
    server_status = server_process.wait(timeout=STOP_TIMEOUT)
    expected = (CLASSIC / "01.expected").read_text().splitlines()
    server_text = server_log.read_text(encoding="utf-8")

    assert consumer.returncode == 0, consumer.stderr
    assert sorted(consumer.stdout.splitlines()) == sorted(expected)
    assert producer_status == 0, producer_log.read_text(encoding="utf-8")
    assert server_status == 0, server_text
    assert "received SIGTERM, stopping" in server_text
    assert "stopped: 1 orders, 3 items ordered" in server_text


def test_consumer_without_server_exits_1(unused_address):
    command = [
        str(BIN / "marketplace-consumer"),
        "--scenario",
        str(SCENARIO),
        "--name",
        "cons1",
        "--server",
        unused_address,
        "--connect-timeout",
        "1",
    ]

    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    lines = result.stderr.splitlines()

    assert result.returncode == 1
    assert len(lines) == 1, result.stderr
    assert f"cannot reach the market server at {unused_address} within 1 s" in lines[0]
    assert result.stdout == ""
