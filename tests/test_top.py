"""The marketplace-top program against a real server process."""

from __future__ import annotations

import os
import re
import subprocess

import grpc
import pytest

from conftest import BIN
from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc

CALL_TIMEOUT = 5
RUN_TIMEOUT = 60
CAPACITY = 5
PUBLISHED = 2
# Pin the encoding and width, so the table has the same box characters and
# layout under any terminal or CI runner.
TOP_ENV = dict(os.environ, PYTHONIOENCODING="utf-8", COLUMNS="120")


def run_top(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "marketplace-top"), *flags],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=TOP_ENV,
    )


@pytest.fixture
def market_address(start_server):
    """Serve a market where producer prod1 has published 2 items; yield HOST:PORT."""
    server = start_server("--queue-size", str(CAPACITY))
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        producer_id = stub.RegisterProducer(
            pb.RegisterProducerRequest(name="prod1"), timeout=CALL_TIMEOUT
        ).producer_id
        product = pb.Product(
            product_id="id1", kind="Tea", name="Linden", price=pb.Money(units=9)
        )
        response = stub.Publish(
            pb.PublishRequest(
                producer_id=producer_id, product=product, quantity=PUBLISHED
            ),
            timeout=CALL_TIMEOUT,
        )
    assert response.published == PUBLISHED
    return server.address


def shelf_row(output: str, producer: str) -> list[str]:
    """Return the cells of the Shelves table row of `producer`."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃|]", line)]
        if producer in cells:
            return cells
    pytest.fail(f"no shelf row for {producer} in:\n{output}")


def test_top_once_shows_shelf(market_address):
    result = run_top("--server", market_address, "--once")
    cells = shelf_row(result.stdout, "prod1")

    assert result.returncode == 0, result.stderr
    # Cells: producer, fill bar, items, capacity, products.
    assert cells[3] == str(PUBLISHED)
    assert cells[4] == str(CAPACITY)
    assert cells[5] == f"id1:{PUBLISHED}"


def test_top_count_exits_after_refreshes(market_address):
    result = run_top("--server", market_address, "--count", "2", "--interval", "0.2")

    assert result.returncode == 0, result.stderr
    assert "prod1" in result.stdout
    # Only a refresh after the first has a previous state to compute rates.
    assert "0 orders (0.0/s)" in result.stdout


def test_top_without_server_exits_1(unused_address):
    result = run_top("--server", unused_address, "--once", "--timeout", "2")

    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert f"on {unused_address} failed with UNAVAILABLE" in result.stderr
    assert result.stdout == ""
