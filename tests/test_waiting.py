"""AddToCart with wait_ms: waking on publish, the waiter limit, and dead waiters.

A waiting call (AddToCart with wait_ms, or WatchSales) keeps a server thread
busy, so the server allows at most --max-waiters of them, fewer than its
--workers threads. These tests fill that limit, check that other calls are
still served, and check that a waiter whose client cancels or is killed gives
its slot back.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

from conftest import BIN
from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc

CALL_TIMEOUT = 10
# Maximum seconds a test waits for something that normally takes under a second.
SETTLE_TIMEOUT = 30
# wait_ms of calls that should wait until the test ends them. The server caps
# it at its --max-wait: 10 s by default, 60 s for the servers started here.
LONG_WAIT_MS = 60_000
PRODUCT = pb.Product(
    product_id="sencha", kind="Tea", name="Sencha", price=pb.Money(units=12)
)
OTHER_PRODUCT = pb.Product(
    product_id="linden", kind="Tea", name="Linden", price=pb.Money(units=9)
)


def register(stub, name: str = "prod1") -> str:
    return stub.RegisterProducer(
        pb.RegisterProducerRequest(name=name), timeout=CALL_TIMEOUT
    ).producer_id


def publish(stub, producer_id: str, product: pb.Product = PRODUCT, quantity: int = 1):
    return stub.Publish(
        pb.PublishRequest(producer_id=producer_id, product=product, quantity=quantity),
        timeout=CALL_TIMEOUT,
    )


def create_cart(stub, consumer: str = "cons1") -> str:
    return stub.CreateCart(
        pb.CreateCartRequest(consumer=consumer), timeout=CALL_TIMEOUT
    ).cart_id


def add_request(cart_id: str, wait_ms: int, product_id: str = "sencha"):
    return pb.AddToCartRequest(
        cart_id=cart_id, product_id=product_id, quantity=1, wait_ms=wait_ms
    )


def waiting_carts(stub) -> int:
    """Return how many open carts wait for a product (first page only)."""
    state = stub.GetMarketState(pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT)
    return sum(1 for cart in state.carts if cart.waiting_product_id)


def wait_for_waiting_carts(stub, count: int) -> None:
    """Return once `count` carts wait, which means their AddToCart calls hold a slot."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while waiting_carts(stub) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"fewer than {count} carts waited within {SETTLE_TIMEOUT} s")
        time.sleep(0.05)


def accepts_waiting_call(stub, cart_id: str) -> bool:
    """Try waiting calls until one is accepted; return False if none is within
    SETTLE_TIMEOUT."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        try:
            stub.AddToCart(add_request(cart_id, wait_ms=50), timeout=CALL_TIMEOUT)
            return True
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
        time.sleep(0.1)
    return False


@pytest.fixture
def small_server(start_server):
    """Start a server process with 4 workers, of which at most 2 may wait."""
    return start_server("--workers", "4", "--max-waiters", "2", "--max-wait", "60")


@pytest.fixture
def small_stub(small_server):
    with grpc.insecure_channel(small_server.address) as channel:
        yield pb_grpc.MarketServiceStub(channel)


# Waking and timing out, on the in-process server of conftest.py.


def test_wait_returns_on_publish(stub):
    producer_id = register(stub)
    cart_id = create_cart(stub)
    future = stub.AddToCart.future(
        add_request(cart_id, LONG_WAIT_MS), timeout=SETTLE_TIMEOUT
    )
    wait_for_waiting_carts(stub, 1)

    publisher = threading.Thread(target=publish, args=(stub, producer_id))
    publisher.start()
    publisher.join(SETTLE_TIMEOUT)

    assert future.result(timeout=SETTLE_TIMEOUT).added == 1


def test_wait_takes_published_item(stub):
    producer_id = register(stub)
    cart_id = create_cart(stub)
    future = stub.AddToCart.future(
        add_request(cart_id, LONG_WAIT_MS), timeout=SETTLE_TIMEOUT
    )
    wait_for_waiting_carts(stub, 1)
    publish(stub, producer_id)
    future.result(timeout=SETTLE_TIMEOUT)

    state = stub.GetMarketState(pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT)

    assert state.shelves[0].size == 0
    assert [(c.product_id, c.quantity) for c in state.carts[0].items] == [("sencha", 1)]
    assert state.carts[0].waiting_product_id == ""


def test_wait_ignores_other_product(stub):
    producer_id = register(stub)
    cart_id = create_cart(stub)
    future = stub.AddToCart.future(
        add_request(cart_id, LONG_WAIT_MS), timeout=SETTLE_TIMEOUT
    )
    wait_for_waiting_carts(stub, 1)

    publish(stub, producer_id, OTHER_PRODUCT)
    still_waiting = waiting_carts(stub)
    publish(stub, producer_id)

    assert still_waiting == 1
    assert future.result(timeout=SETTLE_TIMEOUT).added == 1


def test_wait_times_out_with_0(stub):
    cart_id = create_cart(stub)

    response = stub.AddToCart(add_request(cart_id, wait_ms=100), timeout=CALL_TIMEOUT)
    state = stub.GetMarketState(pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT)

    assert response.added == 0
    assert state.carts[0].waiting_product_id == "sencha"
    assert state.adds_refused == 1


def test_negative_wait_rejected(stub):
    cart_id = create_cart(stub)

    with pytest.raises(grpc.RpcError) as raised:
        stub.AddToCart(add_request(cart_id, wait_ms=-1), timeout=CALL_TIMEOUT)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "wait_ms" in raised.value.details()


def test_max_wait_caps_wait(start_server):
    server = start_server("--max-wait", "0.1")
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        cart_id = create_cart(stub)

        # Without the cap this call would outlast its deadline.
        response = stub.AddToCart(
            add_request(cart_id, wait_ms=3_600_000), timeout=SETTLE_TIMEOUT
        )

    assert response.added == 0


# The waiter limit, on a server process with --workers 4 --max-waiters 2.


def test_third_waiter_rejected(small_stub):
    carts = [create_cart(small_stub, f"cons{i}") for i in range(3)]
    futures = [
        small_stub.AddToCart.future(
            add_request(c, LONG_WAIT_MS), timeout=SETTLE_TIMEOUT
        )
        for c in carts[:2]
    ]
    wait_for_waiting_carts(small_stub, 2)

    with pytest.raises(grpc.RpcError) as raised:
        small_stub.AddToCart(add_request(carts[2], LONG_WAIT_MS), timeout=CALL_TIMEOUT)
    producer_id = register(small_stub)
    publish(small_stub, producer_id, quantity=2)

    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "waiting calls" in raised.value.details()
    assert [f.result(timeout=SETTLE_TIMEOUT).added for f in futures] == [1, 1]


def test_full_waiters_other_calls_served(small_stub):
    futures = [
        small_stub.AddToCart.future(
            add_request(create_cart(small_stub, f"cons{i}"), LONG_WAIT_MS),
            timeout=SETTLE_TIMEOUT,
        )
        for i in range(2)
    ]
    wait_for_waiting_carts(small_stub, 2)
    producer_id = register(small_stub)
    cart_id = create_cart(small_stub, "cons9")

    for _ in range(10):
        state = small_stub.GetMarketState(
            pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT
        )
        assert state.total_shelves == 1
        assert publish(small_stub, producer_id, OTHER_PRODUCT).published == 1
        added = small_stub.AddToCart(
            add_request(cart_id, wait_ms=0, product_id="linden"), timeout=CALL_TIMEOUT
        ).added
        assert added == 1
    publish(small_stub, producer_id, quantity=2)

    assert [f.result(timeout=SETTLE_TIMEOUT).added for f in futures] == [1, 1]


def test_full_waiters_poll_served(small_stub):
    futures = [
        small_stub.AddToCart.future(
            add_request(create_cart(small_stub, f"cons{i}"), LONG_WAIT_MS),
            timeout=SETTLE_TIMEOUT,
        )
        for i in range(2)
    ]
    wait_for_waiting_carts(small_stub, 2)

    response = small_stub.AddToCart(
        add_request(create_cart(small_stub, "cons9"), wait_ms=0), timeout=CALL_TIMEOUT
    )
    for future in futures:
        future.cancel()

    assert response.added == 0


def test_cancelled_waiter_frees_slot(small_stub):
    futures = [
        small_stub.AddToCart.future(
            add_request(create_cart(small_stub, f"cons{i}"), LONG_WAIT_MS),
            timeout=SETTLE_TIMEOUT,
        )
        for i in range(2)
    ]
    wait_for_waiting_carts(small_stub, 2)
    cart_id = create_cart(small_stub, "cons9")
    with pytest.raises(grpc.RpcError) as raised:
        small_stub.AddToCart(add_request(cart_id, LONG_WAIT_MS), timeout=CALL_TIMEOUT)

    futures[0].cancel()
    accepted = accepts_waiting_call(small_stub, cart_id)
    futures[1].cancel()

    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert accepted


# Client processes killed while they wait.

WAITING_CLIENT = """
import sys, time, grpc
from marketplace.v1 import marketplace_pb2 as pb, marketplace_pb2_grpc as pb_grpc
stub = pb_grpc.MarketServiceStub(grpc.insecure_channel(sys.argv[1]))
created = stub.CreateCart(pb.CreateCartRequest(consumer=sys.argv[2]), timeout=30)
request = pb.AddToCartRequest(
    cart_id=created.cart_id, product_id="sencha", quantity=1, wait_ms=60000
)
while True:
    try:
        stub.AddToCart(request, timeout=120)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        time.sleep(0.05)
"""


@pytest.fixture
def waiting_clients(start_server):
    """Start a server and 6 client processes that keep making waiting calls.

    Yields the server and the client processes; clients still running at
    teardown are killed.
    """
    server = start_server("--workers", "4", "--max-waiters", "3", "--max-wait", "60")
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", WAITING_CLIENT, server.address, f"waiter{i}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(6)
    ]
    yield server, clients
    for client in clients:
        if client.poll() is None:
            client.kill()
        client.wait(timeout=SETTLE_TIMEOUT)


def test_killed_waiters_leave_calls_served(waiting_clients):
    server, clients = waiting_clients
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        wait_for_waiting_carts(stub, 3)

        for client in clients:
            client.send_signal(signal.SIGKILL)
        for client in clients:
            client.wait(timeout=SETTLE_TIMEOUT)

        producer_id = register(stub)
        cart_id = create_cart(stub, "survivor")
        for _ in range(10):
            state = stub.GetMarketState(
                pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT
            )
            assert state.total_shelves == 1
            assert publish(stub, producer_id, OTHER_PRODUCT).published == 1
            added = stub.AddToCart(
                add_request(cart_id, wait_ms=0, product_id="linden"),
                timeout=CALL_TIMEOUT,
            ).added
            assert added == 1
        accepted = accepts_waiting_call(stub, cart_id)

    assert accepted


# The consumer client: waiting adds against polling adds.


def slow_producer_scenario(path) -> str:
    """Write a scenario where items arrive far slower than the consumer retries."""
    scenario = {
        "products": {
            "sencha": {"product_type": "Tea", "name": "Sencha", "price": 12},
        },
        "producers": [
            {
                "name": "prod1",
                "products": [["sencha", 1, 0.3]],
                "republish_wait_time": 0.1,
            }
        ],
        "consumers": [
            {
                "name": "cons1",
                "retry_wait_time": 0.02,
                "carts": [[{"type": "add", "product": "sencha", "quantity": 4}]],
            }
        ],
        "marketplace": {"queue_size_per_producer": 5},
    }
    path.write_text(json.dumps(scenario), encoding="utf-8")
    return str(path)


def count_adds(start_server, scenario: str, *consumer_flags: str) -> tuple[int, str]:
    """Run the scenario's consumer against a new server process.

    Returns the number of successful AddToCart calls in the server's access
    log, and the consumer's stdout.
    """
    server = start_server("--log-level", "DEBUG")
    common = ["--server", server.address, "--scenario", scenario]
    producer = subprocess.Popen(
        [str(BIN / "marketplace-producer"), *common, "--name", "prod1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        consumer = subprocess.run(
            [
                str(BIN / "marketplace-consumer"),
                *common,
                "--name",
                "cons1",
                *consumer_flags,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        producer.send_signal(signal.SIGTERM)
        producer.wait(timeout=SETTLE_TIMEOUT)
    assert consumer.returncode == 0, consumer.stderr
    return server.log_text().count(" AddToCart OK "), consumer.stdout


def test_consumer_waits_instead_of_polling(start_server, tmp_path):
    scenario = slow_producer_scenario(tmp_path / "slow.json")

    polling, polling_output = count_adds(start_server, scenario, "--add-wait", "0")
    waiting, waiting_output = count_adds(start_server, scenario)

    assert waiting_output == polling_output
    assert len(waiting_output.splitlines()) == 4
    assert waiting <= polling
