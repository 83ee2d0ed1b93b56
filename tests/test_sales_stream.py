"""WatchSales: a producer's stream of the sales of its own items."""

from __future__ import annotations

import queue
import threading
import time

import grpc
import pytest

from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc
from marketplace_server import core
from marketplace_server.server import create_server

CALL_TIMEOUT = 10
# Maximum seconds a test waits for a message or for the server to notice a change.
SETTLE_TIMEOUT = 30
STREAM_TIMEOUT = 120
SENCHA = pb.Product(
    product_id="sencha",
    kind="Tea",
    name="Sencha",
    price=pb.Money(units=12, nanos=500_000_000),
)
LINDEN = pb.Product(
    product_id="linden", kind="Tea", name="Linden", price=pb.Money(units=9)
)


class FollowedMarket(core.Market):
    """A Market that counts the watches WatchSales starts.

    A stream sends nothing until the first sale, so a client cannot see when
    the server has begun to follow. Tests wait on `follows` instead.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.follows = threading.Semaphore(0)

    def watch_sales(self, producer_id, sale_queue, **options):
        stop = super().watch_sales(producer_id, sale_queue, **options)
        self.follows.release()
        return stop


@pytest.fixture
def market() -> FollowedMarket:
    return FollowedMarket(capacity=10)


class Follower:
    """Reads one WatchSales stream in a thread into a queue."""

    def __init__(self, stub, producer_id: str) -> None:
        self.call = stub.WatchSales(
            pb.WatchSalesRequest(producer_id=producer_id), timeout=STREAM_TIMEOUT
        )
        self.messages: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for message in self.call:
                self.messages.put(message)
        except grpc.RpcError as error:
            self.messages.put(error)

    def next(self):
        """Return the next message, or the RpcError that ended the stream."""
        try:
            return self.messages.get(timeout=SETTLE_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"no sale arrived within {SETTLE_TIMEOUT} s")

    def take(self, count: int) -> list[pb.WatchSalesResponse]:
        messages = [self.next() for _ in range(count)]
        errors = [m for m in messages if isinstance(m, grpc.RpcError)]
        assert errors == []
        return messages


@pytest.fixture
def follow(stub, market):
    """Yield a function that follows a producer's sales.

    The function returns once the server follows them; teardown cancels every
    stream.
    """
    followers: list[Follower] = []

    def start(producer_id: str) -> Follower:
        follower = Follower(stub, producer_id)
        followers.append(follower)
        assert market.follows.acquire(timeout=SETTLE_TIMEOUT)
        return follower

    yield start
    for follower in followers:
        follower.call.cancel()
        follower.thread.join(SETTLE_TIMEOUT)


def register(stub, name: str) -> str:
    return stub.RegisterProducer(
        pb.RegisterProducerRequest(name=name), timeout=CALL_TIMEOUT
    ).producer_id


def publish(stub, producer_id: str, product: pb.Product, quantity: int) -> None:
    response = stub.Publish(
        pb.PublishRequest(producer_id=producer_id, product=product, quantity=quantity),
        timeout=CALL_TIMEOUT,
    )
    assert response.published == quantity


def order(stub, adds: dict[str, int]) -> str:
    """Fill a cart with `adds`, place its order and return the cart label."""
    created = stub.CreateCart(
        pb.CreateCartRequest(consumer="cons1"), timeout=CALL_TIMEOUT
    )
    for product_id, quantity in adds.items():
        added = stub.AddToCart(
            pb.AddToCartRequest(
                cart_id=created.cart_id, product_id=product_id, quantity=quantity
            ),
            timeout=CALL_TIMEOUT,
        ).added
        assert added == quantity
    stub.PlaceOrder(pb.PlaceOrderRequest(cart_id=created.cart_id), timeout=CALL_TIMEOUT)
    return created.cart_label


def summary(message: pb.WatchSalesResponse) -> tuple:
    return (
        message.product_id,
        message.quantity,
        message.price.units,
        message.price.nanos,
        message.cart_label,
    )


@pytest.fixture
def two_producers(stub):
    """Register prod1 with 2 sencha and 1 linden, then prod2 with 2 sencha."""
    first = register(stub, "prod1")
    second = register(stub, "prod2")
    publish(stub, first, SENCHA, 2)
    publish(stub, first, LINDEN, 1)
    publish(stub, second, SENCHA, 2)
    return first, second


def test_sales_per_product_and_shelf(stub, follow, two_producers):
    first, second = two_producers
    first_sales = follow(first)
    second_sales = follow(second)

    # An add takes from the shelf that got the product first: 2 sencha from
    # prod1, then 1 from prod2.
    label = order(stub, {"sencha": 3, "linden": 1})
    first_messages = first_sales.take(2)
    second_messages = second_sales.take(1)

    assert sorted(summary(m) for m in first_messages) == [
        ("linden", 1, 9, 0, label),
        ("sencha", 2, 12, 500_000_000, label),
    ]
    assert [summary(m) for m in second_messages] == [
        ("sencha", 1, 12, 500_000_000, label)
    ]


def test_sale_time_plausible(stub, follow, two_producers):
    first, _ = two_producers
    sales = follow(first)
    before_ms = time.time() * 1000

    order(stub, {"linden": 1})
    after_ms = time.time() * 1000
    sold_at = sales.take(1)[0].sold_at_unix_ms

    # A margin of a second on each side allows for rounding and clock steps.
    assert before_ms - 1000 <= sold_at <= after_ms + 1000


def test_other_producer_sales_not_sent(stub, follow, two_producers):
    first, second = two_producers
    sales = follow(second)

    order(stub, {"sencha": 2})  # all from prod1's shelf
    order(stub, {"linden": 1})  # prod1's only
    label = order(stub, {"sencha": 1})  # now from prod2's shelf
    message = sales.next()

    assert summary(message) == ("sencha", 1, 12, 500_000_000, label)


def test_sales_of_each_order(stub, follow, two_producers):
    first, _ = two_producers
    sales = follow(first)

    labels = [order(stub, {"sencha": 1}) for _ in range(2)]
    messages = sales.take(2)

    assert [m.cart_label for m in messages] == labels
    assert [m.quantity for m in messages] == [1, 1]


def test_unknown_producer_not_found(stub):
    call = stub.WatchSales(
        pb.WatchSalesRequest(producer_id="0" * 32), timeout=CALL_TIMEOUT
    )

    with pytest.raises(grpc.RpcError) as raised:
        next(call)

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


# A server with room for one waiting call.


@pytest.fixture
def one_waiter_stub(market):
    server, port = create_server(market, "127.0.0.1", 0, workers=4, max_waiters=1)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.MarketServiceStub(channel)
    server.stop(None).wait()


def watch_is_rejected(stub, producer_id: str) -> grpc.StatusCode | None:
    """Start a watch and return its error code, or None if the server accepted it."""
    call = stub.WatchSales(
        pb.WatchSalesRequest(producer_id=producer_id), timeout=SETTLE_TIMEOUT
    )
    try:
        next(call)
    except grpc.RpcError as error:
        return error.code()
    finally:
        call.cancel()
    return None


def test_second_watch_rejected_when_full(one_waiter_stub, market):
    producer_id = register(one_waiter_stub, "prod1")
    first = Follower(one_waiter_stub, producer_id)
    assert market.follows.acquire(timeout=SETTLE_TIMEOUT)

    code = watch_is_rejected(one_waiter_stub, producer_id)
    first.call.cancel()

    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def accepted_or_rejected(follower: Follower, market: FollowedMarket) -> bool:
    """Return True once the server follows for `follower`, False if it rejected it."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        if market.follows.acquire(timeout=0.05):
            return True
        try:
            error = follower.messages.get_nowait()
        except queue.Empty:
            continue
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        return False
    pytest.fail(f"WatchSales was neither accepted nor rejected in {SETTLE_TIMEOUT} s")


def test_cancelled_watch_frees_slot(one_waiter_stub, market):
    producer_id = register(one_waiter_stub, "prod1")
    first = Follower(one_waiter_stub, producer_id)
    assert market.follows.acquire(timeout=SETTLE_TIMEOUT)

    first.call.cancel()
    deadline = time.monotonic() + SETTLE_TIMEOUT
    accepted = False
    while not accepted and time.monotonic() < deadline:
        second = Follower(one_waiter_stub, producer_id)
        accepted = accepted_or_rejected(second, market)
        if not accepted:
            time.sleep(0.1)
    second.call.cancel()

    assert accepted
