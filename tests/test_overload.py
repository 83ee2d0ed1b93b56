"""A server limited to 2 concurrent calls, sent many more at once.

A flood of calls must get RESOURCE_EXHAUSTED for some and never UNKNOWN or
INTERNAL. Many clients that start together and retry with back-off
(marketplace_clients.retry.call) overload the server in the same way, and
each must still get every call through. The server must serve normally
afterwards. Everything is bounded in calls and in seconds, and nothing
asserts on timing.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc

from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc
from marketplace_clients.retry import RetryPolicy, call, new_request_id

# Open carts that make each GetMarketState reply large, and so slow to build,
# which keeps calls in the server long enough to overlap.
CARTS = 800
FLOOD_THREADS = 4
# Calls each flood thread starts at once, then waits for, per round.
BURST = 32
ROUNDS = 20
RETRY_THREADS = 32
# Rounds of one Publish and one GetMarketState per retrying client.
RETRY_ROUNDS = 3
# Seconds that a test waits for its client threads. retry.call gives up on a
# call after POLICY.deadline.
CLIENT_TIMEOUT = 120.0
POLICY = RetryPolicy(
    refusal_wait=0.0,
    initial_backoff=0.01,
    max_backoff=0.5,
    deadline=30.0,
    call_timeout=10.0,
)
PRODUCT = pb.Product(
    product_id="linden", kind="Tea", name="Linden", price=pb.Money(units=9)
)


class CodeCounter:
    """Status codes counted from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.codes: Counter = Counter()

    def add(self, code: grpc.StatusCode) -> None:
        with self._lock:
            self.codes[code] += 1


def flood(stub, counter: CodeCounter) -> None:
    """Start BURST GetMarketState calls at once and wait for them, ROUNDS times."""
    request = pb.GetMarketStateRequest()
    for _ in range(ROUNDS):
        calls = [stub.GetMarketState.future(request, timeout=30) for _ in range(BURST)]
        for future in calls:
            counter.add(future.code())


def counting(method, counter: CodeCounter):
    """Wrap a stub method so that every failed attempt's code is counted."""

    def invoke(request, **kwargs):
        try:
            return method(request, **kwargs)
        except grpc.RpcError as error:
            counter.add(error.code())
            raise

    return invoke


def retrying_client(
    stub, index: int, counter: CodeCounter, start: threading.Barrier
) -> list[int]:
    """Register, then alternate Publish and GetMarketState through retry.call.

    Waits at `start` so that all clients begin together. Returns the number
    of items each Publish placed on the shelf.
    """
    never = threading.Event()
    start.wait()
    register = pb.RegisterProducerRequest(
        request_id=new_request_id(), name=f"retrying-{index}"
    )
    producer_id = call(
        counting(stub.RegisterProducer, counter),
        register,
        POLICY,
        never,
        what="register",
    ).producer_id
    published = []
    for _ in range(RETRY_ROUNDS):
        request = pb.PublishRequest(
            request_id=new_request_id(),
            producer_id=producer_id,
            product=PRODUCT,
            quantity=1,
        )
        response = call(
            counting(stub.Publish, counter), request, POLICY, never, what="publish"
        )
        published.append(response.published)
        call(
            counting(stub.GetMarketState, counter),
            pb.GetMarketStateRequest(),
            POLICY,
            never,
            what="read state",
        )
    return published


def fill_market(stub) -> None:
    """Open CARTS carts, one call at a time, to stay under the server's limit."""
    for index in range(CARTS):
        stub.CreateCart(
            pb.CreateCartRequest(consumer=f"c{index}"), timeout=10, wait_for_ready=True
        )


def start_overloadable_server(start_server):
    """Start a server that runs 2 calls at once and rejects more, and fill it."""
    server = start_server("--max-concurrent-rpcs", "2", "--workers", "2")
    with grpc.insecure_channel(server.address) as channel:
        fill_market(pb_grpc.MarketServiceStub(channel))
    return server


def read_state(address: str) -> pb.GetMarketStateResponse:
    """Return the market's state, read on a new connection with one attempt."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        return stub.GetMarketState(
            pb.GetMarketStateRequest(), timeout=10, wait_for_ready=True
        )


def test_flood_gets_resource_exhausted(start_server):
    server = start_overloadable_server(start_server)
    counter = CodeCounter()

    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        with ThreadPoolExecutor(FLOOD_THREADS) as pool:
            floods = [pool.submit(flood, stub, counter) for _ in range(FLOOD_THREADS)]
            for future in floods:
                future.result(timeout=CLIENT_TIMEOUT)
    after = read_state(server.address)

    codes = counter.codes
    unexpected = {
        code.name: n
        for code, n in codes.items()
        if code not in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED)
    }
    assert sum(codes.values()) == FLOOD_THREADS * ROUNDS * BURST
    assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] > 0
    assert codes[grpc.StatusCode.OK] > 0
    assert codes[grpc.StatusCode.UNKNOWN] == 0
    assert codes[grpc.StatusCode.INTERNAL] == 0
    assert unexpected == {}
    assert after.total_carts == CARTS
    assert server.process.poll() is None
    assert server.stop() == 0
    assert "Traceback" not in server.log_text()


def test_retrying_clients_all_succeed(start_server):
    server = start_overloadable_server(start_server)
    counter = CodeCounter()
    start = threading.Barrier(RETRY_THREADS)

    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        with ThreadPoolExecutor(RETRY_THREADS) as pool:
            clients = [
                pool.submit(retrying_client, stub, index, counter, start)
                for index in range(RETRY_THREADS)
            ]
            published = [
                n for client in clients for n in client.result(timeout=CLIENT_TIMEOUT)
            ]
    after = read_state(server.address)

    # Every failed attempt was a rejection for overload, and there were some.
    assert counter.codes[grpc.StatusCode.RESOURCE_EXHAUSTED] > 0
    assert set(counter.codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    # Every call got through, and each Publish was applied once.
    assert len(published) == RETRY_THREADS * RETRY_ROUNDS
    assert after.items_published == sum(published)
    assert server.process.poll() is None
    assert server.stop() == 0
    assert "Traceback" not in server.log_text()
