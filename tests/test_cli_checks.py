"""Command-line mistakes get one clear line and a usage exit status."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import BIN, CLASSIC

SCENARIO = str(CLASSIC / "01.json")


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("program", ["marketplace-consumer", "marketplace-producer"])
@pytest.mark.parametrize("server", ["127.0.0.1", "127.0.0.1:99999", ":50051", "h:x"])
def test_client_rejects_bad_server(program, server):
    result = run(str(BIN / program), "--server", server, "--scenario", SCENARIO, "--name", "x")

    assert result.returncode == 2
    assert f"--server {server!r} is invalid" in result.stderr


def test_consumer_rejects_repeated_name():
    result = run(
        str(BIN / "marketplace-consumer"),
        "--scenario",
        SCENARIO,
        "--name",
        "cons1",
        "--name",
        "cons1",
    )

    assert result.returncode == 2
    assert "--name cons1 is given more than once" in result.stderr


def test_simulate_rejects_negative_timeout():
    result = run(str(BIN / "marketplace-simulate"), SCENARIO, "--timeout", "-5")

    assert result.returncode == 2
    assert "--timeout -5.0 is invalid" in result.stderr


def test_scenario_rejects_invisible_characters(tmp_path):
    path = tmp_path / "invisible.json"
    path.write_text(
        json.dumps(
            {
                "products": {"a": {"product_type": "Tea", "name": "a\u200bb", "price": 1}},
                "producers": [
                    {"name": "p", "products": [["a", 1, 0.1]], "republish_wait_time": 0.1}
                ],
                "consumers": [],
                "marketplace": {"queue_size_per_producer": 2},
            }
        )
    )

    result = run(str(BIN / "marketplace-simulate"), str(path))

    assert result.returncode == 2
    assert "$.products.a.name" in result.stderr
    assert "control or invisible format characters" in result.stderr


def test_server_reports_unwritable_files(tmp_path):
    missing = str(tmp_path / "missing" / "file")

    port_file = run(str(BIN / "marketplace-server"), "--port", "0", "--port-file", missing)
    log_file = run(str(BIN / "marketplace-server"), "--port", "0", "--log-file", missing)

    assert port_file.returncode == 1
    assert "cannot write --port-file" in port_file.stderr
    assert "Traceback" not in port_file.stderr
    assert log_file.returncode == 1
    assert "cannot open --log-file" in log_file.stderr
    assert "Traceback" not in log_file.stderr


def test_producer_warns_of_other_capacity(start_server):
    server = start_server("--queue-size", "4")
    producer = subprocess.Popen(
        [
            str(BIN / "marketplace-producer"),
            "--server",
            server.address,
            "--scenario",
            SCENARIO,
            "--name",
            "prod1",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = producer.stderr.readline()
    finally:
        producer.terminate()
        producer.communicate(timeout=30)

    assert "shelf capacity is 4 but the scenario asks for 15" in line
