"""Prometheus metrics of a real server process, checked against GetMarketState."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import BIN, CLASSIC
from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc

SCENARIO = CLASSIC / "02.json"
RUN_TIMEOUT = 60
SCRAPE_TIMEOUT = 5
CALL_TIMEOUT = 5
# Counters that only grow while the market runs.
COUNTERS = (
    "marketplace_orders_total",
    "marketplace_items_ordered_total",
    "marketplace_items_published_total",
    "marketplace_publishes_refused_total",
    "marketplace_adds_refused_total",
)


def metrics_url(log: str) -> str:
    match = re.search(r"serving metrics on (http://\S+/metrics)", log)
    assert match is not None, log
    url = match.group(1)
    # The tests only ever scrape a loopback endpoint.
    assert url.startswith("http://127.0.0.1:"), url
    return url


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Fetch /metrics and return every sample by name and labels."""
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as response:
        text = response.read().decode("utf-8")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def labelled(samples, name: str) -> dict[frozenset, float]:
    """Return the samples of `name`, keyed by their labels."""
    return {
        labels: sample_value
        for (sample_name, labels), sample_value in samples.items()
        if sample_name == name
    }


def calls(samples, method: str, code: str = "OK") -> float:
    """Return marketplace_calls_total for `method` and `code`, 0 when absent."""
    labels = frozenset({"method": method, "code": code}.items())
    return samples.get(("marketplace_calls_total", labels), 0.0)


def totals(state: pb.GetMarketStateResponse) -> tuple:
    """Return the parts of a market state that only calls change."""
    return (
        [(shelf.producer, shelf.size) for shelf in state.shelves],
        len(state.carts),
        state.orders,
        state.items_ordered,
        state.items_published,
        state.carts_expired,
        state.publishes_refused,
        state.adds_refused,
    )


def test_metrics_match_market_state(start_server):
    server = start_server("--metrics-port", "0")
    url = metrics_url(server.log_text())
    command = [
        str(BIN / "marketplace-simulate"),
        str(SCENARIO),
        "--server",
        server.address,
        "--time-scale",
        "0.1",
        "--timeout",
        str(RUN_TIMEOUT),
    ]
    simulate = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    during = []
    try:
        deadline = time.monotonic() + RUN_TIMEOUT + 10
        while simulate.poll() is None and time.monotonic() < deadline:
            during.append(scrape(url))
            time.sleep(0.05)
        # Simulate stops its producers before it exits, so no call changes
        # the market from here on.
        stdout, stderr = simulate.communicate(timeout=30)
    finally:
        if simulate.poll() is None:
            # SIGTERM, so that simulate stops the clients it started.
            simulate.terminate()
            simulate.communicate(timeout=30)
    before = scrape(url)
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        state = stub.GetMarketState(pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT)
        after = scrape(url)
        state_again = stub.GetMarketState(
            pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT
        )
    shelves = labelled(after, "marketplace_shelf_items")
    codes = {
        dict(labels)["code"] for labels in labelled(after, "marketplace_calls_total")
    }

    assert simulate.returncode == 0, stderr
    assert totals(state_again) == totals(state)
    assert state.items_ordered == len(stdout.splitlines())
    assert shelves == {
        frozenset({"producer": shelf.producer}.items()): shelf.size
        for shelf in state.shelves
    }
    assert value(after, "marketplace_open_carts") == len(state.carts)
    assert value(after, "marketplace_orders_total") == state.orders
    assert value(after, "marketplace_items_ordered_total") == state.items_ordered
    assert value(after, "marketplace_items_published_total") == state.items_published
    assert value(after, "marketplace_carts_expired_total") == state.carts_expired
    assert (
        value(after, "marketplace_publishes_refused_total") == state.publishes_refused
    )
    assert value(after, "marketplace_adds_refused_total") == state.adds_refused

    # Every call of the run succeeded, and the counts follow from the state.
    assert codes == {"OK"}
    assert calls(after, "RegisterProducer") == len(state.shelves)
    assert calls(after, "CreateCart") == (
        state.orders + len(state.carts) + state.carts_expired
    )
    assert calls(after, "PlaceOrder") == state.orders
    # Producers publish one item per call, so each call either placed one item
    # or counted as refused.
    assert calls(after, "Publish") == state.items_published + state.publishes_refused
    assert calls(after, "AddToCart") >= state.adds_refused
    # Simulate may call GetMarketState too, but it has exited by `before`.
    assert calls(after, "GetMarketState") - calls(before, "GetMarketState") == 1

    assert len(during) >= 1
    for sample in during:
        for name in COUNTERS:
            assert value(sample, name) <= value(after, name), name
        assert value(sample, "marketplace_items_ordered_total") <= value(
            sample, "marketplace_items_published_total"
        )


def test_metrics_count_rejected_calls(start_server):
    server = start_server("--metrics-port", "0")
    url = metrics_url(server.log_text())

    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        rejected = []
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as error:
                stub.RegisterProducer(
                    pb.RegisterProducerRequest(name=""), timeout=CALL_TIMEOUT
                )
            rejected.append(error.value.code())
        stub.RegisterProducer(
            pb.RegisterProducerRequest(name="prod1"), timeout=CALL_TIMEOUT
        )
    samples = scrape(url)

    assert rejected == [grpc.StatusCode.INVALID_ARGUMENT] * 2
    assert calls(samples, "RegisterProducer", "INVALID_ARGUMENT") == 2
    assert calls(samples, "RegisterProducer", "OK") == 1
    assert value(samples, "marketplace_shelf_items", producer="prod1") == 0
