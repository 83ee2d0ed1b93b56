"""Cart leases: a cart with no call for the lease time expires and its items
go back to their shelves.

The first tests drive the market with a fake clock. The others run
marketplace-server as a process with a short --lease. In one, a client process
that has a cart is killed with SIGKILL, and the server must reclaim the cart.
In the other, a consumer whose cart expires while it waits must fill a new cart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import grpc
import pytest

from conftest import BIN
from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc
from marketplace_clients import scenario as scenario_module
from marketplace_server import core

LEASE = 10.0
CALL_TIMEOUT = 10.0
# Bound on how long the server may take to notice an abandoned cart, beyond
# the lease itself; generous because the machine may be busy.
EXPIRY_SLACK = 10.0
PROCESS_TIMEOUT = 60.0

TEA = core.Product("tea", "Tea", "Linden", core.Money(9))
HONEY = core.Product("honey", "Honey", "Acacia", core.Money(4))


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def market(clock) -> core.Market:
    return core.Market(capacity=5, lease_seconds=LEASE, clock=clock)


def shelves(market: core.Market) -> dict[str, tuple[int, dict[str, int]]]:
    return {s.producer: (s.size, s.items) for s in market.snapshot().shelves}


def stocked(market: core.Market) -> tuple[str, str]:
    """Register farm with 3 teas and apiary with 2 teas and 2 honeys."""
    farm = market.register_producer("farm")
    apiary = market.register_producer("apiary")
    market.publish(farm, TEA, 3)
    market.publish(apiary, TEA, 2)
    market.publish(apiary, HONEY, 2)
    return farm, apiary


CART_CALLS = [
    pytest.param(lambda m, cart_id: m.add_to_cart(cart_id, "tea", 1), id="add"),
    pytest.param(lambda m, cart_id: m.remove_from_cart(cart_id, "tea", 1), id="remove"),
    pytest.param(lambda m, cart_id: m.place_order(cart_id), id="order"),
]


# The market with a fake clock


def test_expiry_returns_items_to_origin_shelves(market, clock):
    stocked(market)
    before = shelves(market)
    cart_id, label = market.create_cart("alice")
    market.add_to_cart(cart_id, "tea", 4)
    market.add_to_cart(cart_id, "honey", 1)

    clock.now += LEASE
    expired = market.expire_carts()
    state = market.snapshot()

    assert expired == [label]
    assert shelves(market) == before
    assert state.carts == []
    assert state.carts_expired == 1
    assert state.items_published == 7


def test_expiry_returns_items_to_full_shelf(market, clock):
    farm, _ = stocked(market)
    cart_id, _ = market.create_cart("alice")
    market.add_to_cart(cart_id, "tea", 3)
    market.publish(farm, HONEY, 5)

    clock.now += LEASE
    market.expire_carts()

    assert shelves(market)["farm"] == (8, {"tea": 3, "honey": 5})


def test_cart_open_until_lease_runs_out(market, clock):
    cart_id, label = market.create_cart("alice")

    clock.now += LEASE - 0.001
    expired = market.expire_carts()

    assert expired == []
    assert [cart.cart_label for cart in market.snapshot().carts] == [label]


@pytest.mark.parametrize("cart_call", CART_CALLS)
def test_expired_cart_call_names_label(market, clock, cart_call):
    stocked(market)
    cart_id, label = market.create_cart("alice")
    clock.now += LEASE
    market.expire_carts()

    with pytest.raises(core.CartExpired) as raised:
        cart_call(market, cart_id)

    assert label in str(raised.value)


@pytest.mark.parametrize("cart_call", CART_CALLS)
def test_late_call_expires_cart(market, clock, cart_call):
    stocked(market)
    before = shelves(market)
    cart_id, label = market.create_cart("alice")
    market.add_to_cart(cart_id, "tea", 2)

    clock.now += LEASE
    with pytest.raises(core.CartExpired) as raised:
        cart_call(market, cart_id)

    assert label in str(raised.value)
    assert shelves(market) == before
    assert market.snapshot().carts_expired == 1


@pytest.mark.parametrize(
    "renew",
    [
        pytest.param(lambda m, cart_id: m.add_to_cart(cart_id, "tea", 1), id="add"),
        pytest.param(lambda m, cart_id: m.add_to_cart(cart_id, "nothing", 1), id="add-none"),
        pytest.param(
            lambda m, cart_id: m.remove_from_cart(cart_id, "tea", 1), id="remove"
        ),
        pytest.param(
            lambda m, cart_id: m.remove_from_cart(cart_id, "nothing", 1),
            id="remove-none",
        ),
    ],
)
def test_call_renews_lease(market, clock, renew):
    stocked(market)
    cart_id, label = market.create_cart("alice")

    for _ in range(3):
        clock.now += LEASE * 0.9
        renew(market, cart_id)
        market.expire_carts()
    open_after_renewals = [cart.cart_label for cart in market.snapshot().carts]
    clock.now += LEASE
    expired = market.expire_carts()

    assert open_after_renewals == [label]
    assert expired == [label]


def test_expire_carts_only_due(market, clock):
    first_id, first = market.create_cart("alice")
    clock.now += LEASE * 0.4
    _, second = market.create_cart("bob")
    clock.now += LEASE * 0.4
    _, third = market.create_cart("carol")
    market.add_to_cart(first_id, "nothing", 1)

    clock.now += LEASE * 0.7
    expired = market.expire_carts()

    assert expired == [second]
    assert [cart.cart_label for cart in market.snapshot().carts] == [first, third]


def test_ordered_cart_does_not_expire(market, clock):
    stocked(market)
    cart_id, label = market.create_cart("alice")
    market.add_to_cart(cart_id, "tea", 1)
    market.place_order(cart_id)

    clock.now += LEASE * 2
    expired = market.expire_carts()

    assert expired == []
    assert market.snapshot().carts_expired == 0
    with pytest.raises(core.CartOrdered):
        market.place_order(cart_id)


def test_forgotten_expired_cart_is_not_found(market, clock, monkeypatch):
    monkeypatch.setattr(core, "REMEMBERED_CLOSED_CARTS", 1)
    old_id, _ = market.create_cart("alice")
    new_id, _ = market.create_cart("bob")
    clock.now += LEASE
    market.expire_carts()

    with pytest.raises(core.NotFound):
        market.add_to_cart(old_id, "tea", 1)
    with pytest.raises(core.CartExpired):
        market.add_to_cart(new_id, "tea", 1)


# A real server and a client process that dies holding a cart

# Creates a cart, fills it, prints its id and label, then keeps the lease
# alive as a consumer waiting for a missing product would, until killed.
HOLDING_CLIENT = """
import sys, time, grpc
from marketplace.v1 import marketplace_pb2 as pb, marketplace_pb2_grpc as pb_grpc
stub = pb_grpc.MarketServiceStub(grpc.insecure_channel(sys.argv[1]))
cart = stub.CreateCart(pb.CreateCartRequest(consumer="dora"), timeout=10)
for product_id, quantity in (("tea", 2), ("honey", 1)):
    request = pb.AddToCartRequest(
        cart_id=cart.cart_id, product_id=product_id, quantity=quantity
    )
    assert stub.AddToCart(request, timeout=10).added == quantity
print(cart.cart_id, cart.cart_label, flush=True)
while True:
    request = pb.AddToCartRequest(cart_id=cart.cart_id, product_id="nothing", quantity=1)
    stub.AddToCart(request, timeout=10)
    time.sleep(0.1)
"""


def read_line(process: subprocess.Popen, timeout: float) -> str:
    """Return the next stdout line of `process`, or fail after `timeout` s."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()))
    reader.daemon = True
    reader.start()
    reader.join(timeout)
    if not lines or not lines[0]:
        pytest.fail(f"the client printed no line within {timeout} s")
    return lines[0]


def wait_for(condition, timeout: float, poll: float = 0.05) -> float | None:
    """Poll `condition()` until true; return the seconds it took, or None."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(poll)
    return None


def test_killed_client_cart_is_reclaimed(start_server):
    lease = 1.5
    server = start_server("--lease", str(lease), "--queue-size", "5")
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)

        def state() -> pb.GetMarketStateResponse:
            return stub.GetMarketState(pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT)

        farm = stub.RegisterProducer(
            pb.RegisterProducerRequest(name="farm"), timeout=CALL_TIMEOUT
        ).producer_id
        apiary = stub.RegisterProducer(
            pb.RegisterProducerRequest(name="apiary"), timeout=CALL_TIMEOUT
        ).producer_id
        for producer_id, product_id, kind, quantity in (
            (farm, "tea", "Tea", 3),
            (apiary, "honey", "Honey", 2),
        ):
            product = pb.Product(
                product_id=product_id, kind=kind, name=kind, price=pb.Money(units=1)
            )
            stub.Publish(
                pb.PublishRequest(producer_id=producer_id, product=product, quantity=quantity),
                timeout=CALL_TIMEOUT,
            )
        before = [(s.producer, s.size, list(s.items)) for s in state().shelves]

        client = subprocess.Popen(
            [str(BIN / "python"), "-c", HOLDING_CLIENT, server.address],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            cart_id, label = read_line(client, PROCESS_TIMEOUT).split()
            # Alive, the client keeps its cart beyond the lease.
            time.sleep(lease + 0.5)
            open_while_alive = [cart.cart_label for cart in state().carts]

            os.kill(client.pid, signal.SIGKILL)
            client.wait(timeout=PROCESS_TIMEOUT)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait(timeout=PROCESS_TIMEOUT)
        took = wait_for(lambda: not state().carts, lease + EXPIRY_SLACK)
        after = state()
        with pytest.raises(grpc.RpcError) as raised:
            stub.AddToCart(
                pb.AddToCartRequest(cart_id=cart_id, product_id="tea", quantity=1),
                timeout=CALL_TIMEOUT,
            )
    error = raised.value
    server.stop()

    assert open_while_alive == [label]
    assert took is not None, f"cart {label} still open {lease + EXPIRY_SLACK} s after the kill"
    assert after.carts_expired == 1
    assert [(s.producer, s.size, list(s.items)) for s in after.shelves] == before
    assert after.items_published == 5
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert label in error.details()
    assert ("marketplace-reason", "CART_EXPIRED") in tuple(error.trailing_metadata())
    assert f"cart {label} expired" in server.log_text()


# A consumer whose cart expires while it waits

# cons1 takes a Coffee from prod1, then waits for a Tea. prod2, the Tea's
# producer, never runs: the test publishes the Tea itself once a cart has
# expired. Each wait (retry_wait_time 1 s) outlasts the 0.3 s lease, so the
# first cart expires and cons1 must fill a new one.
EXPIRING_SCENARIO = {
    "products": {
        "id1": {"product_type": "Coffee", "name": "Arabica", "price": 3},
        "id2": {"product_type": "Tea", "name": "Sencha", "price": 5},
    },
    "producers": [
        {"name": "prod1", "products": [["id1", 1, 0.2]], "republish_wait_time": 0.1},
        {"name": "prod2", "products": [["id2", 1, 0.2]], "republish_wait_time": 0.1},
    ],
    "consumers": [
        {
            "name": "cons1",
            "retry_wait_time": 1.0,
            "carts": [
                [
                    {"type": "add", "product": "id1", "quantity": 1},
                    {"type": "add", "product": "id2", "quantity": 1},
                ]
            ],
        }
    ],
    "marketplace": {"queue_size_per_producer": 5},
}
EXPIRING_EXPECTED = [
    "cons1 bought Coffee(name='Arabica', price=3)",
    "cons1 bought Tea(name='Sencha', price=5)",
]


def client_command(role: str, name: str, scenario, address: str) -> list[str]:
    return [
        str(BIN / f"marketplace-{role}"),
        "--scenario",
        str(scenario),
        "--name",
        name,
        "--server",
        address,
        "--retry-deadline",
        "30",
    ]


def test_consumer_refills_expired_cart(start_server, tmp_path):
    scenario = tmp_path / "expiring.json"
    scenario.write_text(json.dumps(EXPIRING_SCENARIO), encoding="utf-8")
    tea = scenario_module.load(str(scenario)).products["id2"]
    server = start_server("--lease", "0.3", "--queue-size", "5")
    producer_log = tmp_path / "producer.log"
    with open(producer_log, "w", encoding="utf-8") as log:
        producer = subprocess.Popen(
            client_command("producer", "prod1", scenario, server.address),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    consumer = subprocess.Popen(
        client_command("consumer", "cons1", scenario, server.address),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.MarketServiceStub(channel)
            took = wait_for(
                lambda: stub.GetMarketState(
                    pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT
                ).carts_expired
                >= 1,
                PROCESS_TIMEOUT,
            )
            assert took is not None, "no cart expired"
            tea_producer = stub.RegisterProducer(
                pb.RegisterProducerRequest(name="prod2"), timeout=CALL_TIMEOUT
            ).producer_id
            stub.Publish(
                pb.PublishRequest(producer_id=tea_producer, product=tea, quantity=1),
                timeout=CALL_TIMEOUT,
            )
        stdout, stderr = consumer.communicate(timeout=PROCESS_TIMEOUT)
        producer.send_signal(signal.SIGTERM)
        producer_status = producer.wait(timeout=PROCESS_TIMEOUT)
    finally:
        for process in (consumer, producer):
            if process.poll() is None:
                process.kill()
                process.wait(timeout=PROCESS_TIMEOUT)
    server.stop()

    assert consumer.returncode == 0, stderr
    assert sorted(stdout.splitlines()) == sorted(EXPIRING_EXPECTED)
    assert (
        "cart expired, and its items went back to their shelves; "
        "filling a new cart from the start (1 of 10)"
    ) in stderr
    assert producer_status == 0, producer_log.read_text(encoding="utf-8")
