"""Retried calls apply once: lost replies, cancelled calls, reused request ids.

The gRPC tests serve a market through `add_market_service` on a server built
here, so that an interceptor can lose replies or pause calls. Clients retry
through `marketplace_clients.retry.call`, which resends the same request,
request id included. Each mutating RPC is checked by the market state it must
leave when applied exactly once; applying it twice leaves another state.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent import futures

import grpc
import pytest

from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc
from marketplace_clients.retry import RetryPolicy, call, new_request_id
from marketplace_server import core
from marketplace_server.requests import MAX_REQUEST_ID_LENGTH, RequestLog
from marketplace_server.servicer import METHODS, add_market_service

CALL_TIMEOUT = 10.0
# Retries start after milliseconds, so that each lost reply costs little.
POLICY = RetryPolicy(
    refusal_wait=0.0,
    initial_backoff=0.01,
    max_backoff=0.05,
    deadline=20.0,
    call_timeout=CALL_TIMEOUT,
)
REQUEST_TYPES = {method[0]: method[1] for method in METHODS}
TEA = pb.Product(product_id="tea", kind="Tea", name="Linden", price=pb.Money(units=9))


# A test server


@contextlib.contextmanager
def serve(market: core.Market, *interceptors, request_log: RequestLog | None = None):
    """Serve `market` on a loopback port with `interceptors` and yield a stub."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8), interceptors=list(interceptors)
    )
    # An empty RequestLog is falsy (it has __len__), so test for None.
    add_market_service(
        server, market, RequestLog() if request_log is None else request_log
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.MarketServiceStub(channel)
    finally:
        server.stop(None).wait()


def method_name(handler_call_details) -> str:
    return handler_call_details.method.rsplit("/", 1)[-1]


def wrap(handler, behavior):
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class LoseFirstReply(grpc.ServerInterceptor):
    """Interceptor that lets the market apply each call, then fails the first
    attempt of every request id with UNAVAILABLE, as a dropped connection would.

    `lost` lists (method, response) for every reply it dropped.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()
        self.lost: list[tuple[str, object]] = []

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        name = method_name(handler_call_details)
        inner = handler.unary_unary

        def lose_first_reply(raw: bytes, context):
            response = inner(raw, context)
            request_id = getattr(REQUEST_TYPES[name].FromString(raw), "request_id", "")
            with self._lock:
                first = bool(request_id) and (name, request_id) not in self._seen
                self._seen.add((name, request_id))
                if first:
                    self.lost.append((name, response))
            if first:
                context.abort(grpc.StatusCode.UNAVAILABLE, "reply dropped by the test")
            return response

        return wrap(handler, lose_first_reply)


class PauseFirstCall(grpc.ServerInterceptor):
    """Interceptor that pauses the first call of one method that carries a
    request id until `release` is set.

    With `after_apply` the market applies the call before the pause,
    otherwise after it. `reached` is set when the call gets to the pause,
    `finished` when its handler has returned or raised, and `raised` is what
    it raised, if anything.
    """

    def __init__(self, method: str, *, after_apply: bool) -> None:
        self.method = method
        self.after_apply = after_apply
        self.reached = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        self.raised: BaseException | None = None
        self._lock = threading.Lock()
        self._paused_one = False

    def _claim_pause(self, raw: bytes) -> bool:
        if not REQUEST_TYPES[self.method].FromString(raw).request_id:
            return False
        with self._lock:
            first = not self._paused_one
            self._paused_one = True
        return first

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or method_name(handler_call_details) != self.method:
            return handler
        inner = handler.unary_unary

        def pause(raw: bytes, context):
            if not self._claim_pause(raw):
                return inner(raw, context)
            try:
                if not self.after_apply:
                    self.reached.set()
                    self.release.wait(CALL_TIMEOUT)
                response = inner(raw, context)
                if self.after_apply:
                    self.reached.set()
                    self.release.wait(CALL_TIMEOUT)
                return response
            except BaseException as error:
                self.raised = error
                raise
            finally:
                self.finished.set()

        return wrap(handler, pause)


# The market every gRPC test starts from, and the state each call must leave


def prepare(stub) -> dict[str, str]:
    """Register farm with 4 teas published, and a cart of alice holding 2.

    These calls carry no request id, so the interceptors let them through.
    """
    producer_id = stub.RegisterProducer(
        pb.RegisterProducerRequest(name="farm"), timeout=CALL_TIMEOUT
    ).producer_id
    stub.Publish(
        pb.PublishRequest(producer_id=producer_id, product=TEA, quantity=4),
        timeout=CALL_TIMEOUT,
    )
    cart_id = stub.CreateCart(
        pb.CreateCartRequest(consumer="alice"), timeout=CALL_TIMEOUT
    ).cart_id
    stub.AddToCart(
        pb.AddToCartRequest(cart_id=cart_id, product_id="tea", quantity=2),
        timeout=CALL_TIMEOUT,
    )
    return {"producer": producer_id, "cart": cart_id}


def summary(state: pb.GetMarketStateResponse) -> dict:
    return {
        "shelves": [(shelf.producer, shelf.size) for shelf in state.shelves],
        "carts": [
            (cart.consumer, {item.product_id: item.quantity for item in cart.items})
            for cart in state.carts
        ],
        "orders": state.orders,
        "items_ordered": state.items_ordered,
        "items_published": state.items_published,
    }


PREPARED = {
    "shelves": [("farm", 2)],
    "carts": [("alice", {"tea": 2})],
    "orders": 0,
    "items_ordered": 0,
    "items_published": 4,
}

# For each mutating RPC: its request on the prepared market, and the state it
# leaves when applied once. Applied twice, each would leave another state.
ONCE = {
    "RegisterProducer": (
        lambda ids: pb.RegisterProducerRequest(name="apiary"),
        {**PREPARED, "shelves": [("farm", 2), ("apiary", 0)]},
    ),
    "Publish": (
        lambda ids: pb.PublishRequest(
            producer_id=ids["producer"], product=TEA, quantity=2
        ),
        {**PREPARED, "shelves": [("farm", 4)], "items_published": 6},
    ),
    "CreateCart": (
        lambda ids: pb.CreateCartRequest(consumer="bob"),
        {**PREPARED, "carts": [("alice", {"tea": 2}), ("bob", {})]},
    ),
    "AddToCart": (
        lambda ids: pb.AddToCartRequest(
            cart_id=ids["cart"], product_id="tea", quantity=1
        ),
        {**PREPARED, "shelves": [("farm", 1)], "carts": [("alice", {"tea": 3})]},
    ),
    "RemoveFromCart": (
        lambda ids: pb.RemoveFromCartRequest(
            cart_id=ids["cart"], product_id="tea", quantity=1
        ),
        {**PREPARED, "shelves": [("farm", 3)], "carts": [("alice", {"tea": 1})]},
    ),
    "PlaceOrder": (
        lambda ids: pb.PlaceOrderRequest(cart_id=ids["cart"]),
        {**PREPARED, "carts": [], "orders": 1, "items_ordered": 2},
    ),
}
MUTATING = list(ONCE)


def build_request(method: str, ids: dict[str, str]):
    request = ONCE[method][0](ids)
    request.request_id = new_request_id()
    return request


def retried(stub, method: str, request):
    return call(getattr(stub, method), request, POLICY, threading.Event(), what=method)


def market_summary(stub) -> dict:
    return summary(stub.GetMarketState(pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT))


def call_error(method, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        method(request, timeout=CALL_TIMEOUT)
    return raised.value


# Lost replies and cancelled calls


@pytest.mark.parametrize("method", MUTATING)
def test_lost_reply_applies_once(method):
    lose = LoseFirstReply()
    with serve(core.Market(capacity=5), lose) as stub:
        request = build_request(method, prepare(stub))

        response = retried(stub, method, request)
        after = market_summary(stub)

    assert lose.lost == [(method, response)]
    assert after == ONCE[method][1]


def test_lost_replies_whole_cart():
    lose = LoseFirstReply()
    with serve(core.Market(capacity=5), lose) as stub:
        producer = retried(
            stub,
            "RegisterProducer",
            pb.RegisterProducerRequest(request_id=new_request_id(), name="farm"),
        )
        published = retried(
            stub,
            "Publish",
            pb.PublishRequest(
                request_id=new_request_id(),
                producer_id=producer.producer_id,
                product=TEA,
                quantity=3,
            ),
        )
        cart = retried(
            stub,
            "CreateCart",
            pb.CreateCartRequest(request_id=new_request_id(), consumer="alice"),
        )
        added = retried(
            stub,
            "AddToCart",
            pb.AddToCartRequest(
                request_id=new_request_id(),
                cart_id=cart.cart_id,
                product_id="tea",
                quantity=2,
            ),
        )
        removed = retried(
            stub,
            "RemoveFromCart",
            pb.RemoveFromCartRequest(
                request_id=new_request_id(),
                cart_id=cart.cart_id,
                product_id="tea",
                quantity=1,
            ),
        )
        before_order = market_summary(stub)
        order = retried(
            stub,
            "PlaceOrder",
            pb.PlaceOrderRequest(request_id=new_request_id(), cart_id=cart.cart_id),
        )
        after_order = market_summary(stub)

    assert [method for method, _ in lose.lost] == MUTATING
    assert published.published == 3
    assert added.added == 2
    assert removed.removed == 1
    assert before_order == {
        "shelves": [("farm", 2)],
        "carts": [("alice", {"tea": 1})],
        "orders": 0,
        "items_ordered": 0,
        "items_published": 3,
    }
    assert [(line.product, line.quantity) for line in order.lines] == [(TEA, 1)]
    assert after_order == {
        "shelves": [("farm", 2)],
        "carts": [],
        "orders": 1,
        "items_ordered": 1,
        "items_published": 3,
    }


@pytest.mark.parametrize("method", MUTATING)
def test_cancel_after_apply_then_retry(method):
    pause = PauseFirstCall(method, after_apply=True)
    with serve(core.Market(capacity=5), pause) as stub:
        request = build_request(method, prepare(stub))
        future = getattr(stub, method).future(request, timeout=CALL_TIMEOUT)
        assert pause.reached.wait(CALL_TIMEOUT)

        future.cancel()
        pause.release.set()
        assert pause.finished.wait(CALL_TIMEOUT)
        retried(stub, method, request)
        after = market_summary(stub)

    assert future.cancelled()
    assert pause.raised is None
    assert after == ONCE[method][1]


@pytest.mark.parametrize("method", MUTATING)
def test_cancel_before_apply_then_retry(method):
    # The retry applies the call while the cancelled attempt waits. When the
    # cancelled attempt goes on, it must find the request id already applied.
    pause = PauseFirstCall(method, after_apply=False)
    with serve(core.Market(capacity=5), pause) as stub:
        request = build_request(method, prepare(stub))
        future = getattr(stub, method).future(request, timeout=CALL_TIMEOUT)
        assert pause.reached.wait(CALL_TIMEOUT)

        future.cancel()
        retried(stub, method, request)
        pause.release.set()
        assert pause.finished.wait(CALL_TIMEOUT)
        after = market_summary(stub)

    assert future.cancelled()
    # The paused attempt found the request id applied and replayed its result.
    assert pause.raised is None
    assert after == ONCE[method][1]


# Concurrent duplicates


class SignallingClock:
    """A monotonic clock that sets `second_call` once it has been read twice.

    RequestLog reads its clock once per call that carries a request id, so
    the second read means a duplicate has reached the log.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads = 0
        self.second_call = threading.Event()

    def __call__(self) -> float:
        with self._lock:
            self._reads += 1
            if self._reads >= 2:
                self.second_call.set()
            return float(self._reads)


MARKET_METHODS = {
    "RegisterProducer": "register_producer",
    "Publish": "publish",
    "CreateCart": "create_cart",
    "AddToCart": "add_to_cart",
    "RemoveFromCart": "remove_from_cart",
    "PlaceOrder": "place_order",
}


@pytest.mark.parametrize("method", MUTATING)
def test_concurrent_duplicates_apply_once(method):
    market = core.Market(capacity=5)
    clock = SignallingClock()
    entered = threading.Event()
    release = threading.Event()
    applied = []
    market_method = getattr(market, MARKET_METHODS[method])

    def slow(*args, **kwargs):
        applied.append(args)
        entered.set()
        release.wait(CALL_TIMEOUT)
        return market_method(*args, **kwargs)

    with serve(market, request_log=RequestLog(clock=clock)) as stub:
        request = build_request(method, prepare(stub))
        setattr(market, MARKET_METHODS[method], slow)
        first = getattr(stub, method).future(request, timeout=CALL_TIMEOUT)
        assert entered.wait(CALL_TIMEOUT)
        second = getattr(stub, method).future(request, timeout=CALL_TIMEOUT)
        assert clock.second_call.wait(CALL_TIMEOUT)
        release.set()
        responses = [first.result(), second.result()]
        after = market_summary(stub)

    assert len(applied) == 1
    assert responses[0] == responses[1]
    assert after == ONCE[method][1]


# Request id rules over gRPC


def test_request_id_reuse_is_invalid():
    with serve(core.Market(capacity=5)) as stub:
        ids = prepare(stub)
        request_id = new_request_id()
        stub.Publish(
            pb.PublishRequest(
                request_id=request_id, producer_id=ids["producer"], product=TEA, quantity=1
            ),
            timeout=CALL_TIMEOUT,
        )
        before = market_summary(stub)

        error = call_error(
            stub.Publish,
            pb.PublishRequest(
                request_id=request_id, producer_id=ids["producer"], product=TEA, quantity=2
            ),
        )
        after = market_summary(stub)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("request_id ")
    assert after == before


@pytest.mark.parametrize("method", MUTATING)
def test_request_id_too_long_is_invalid(method):
    with serve(core.Market(capacity=5)) as stub:
        request = build_request(method, prepare(stub))
        request.request_id = "r" * (MAX_REQUEST_ID_LENGTH + 1)

        error = call_error(getattr(stub, method), request)
        after = market_summary(stub)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("request_id ")
    assert str(MAX_REQUEST_ID_LENGTH) in error.details()
    assert after == PREPARED


@pytest.mark.parametrize("method", MUTATING)
def test_request_id_max_length_accepted(method):
    with serve(core.Market(capacity=5)) as stub:
        request = build_request(method, prepare(stub))
        request.request_id = "r" * MAX_REQUEST_ID_LENGTH

        first = getattr(stub, method)(request, timeout=CALL_TIMEOUT)
        repeat = getattr(stub, method)(request, timeout=CALL_TIMEOUT)
        after = market_summary(stub)

    assert repeat == first
    assert after == ONCE[method][1]


def test_empty_request_id_not_deduplicated():
    with serve(core.Market(capacity=5)) as stub:
        ids = prepare(stub)
        request = pb.PublishRequest(producer_id=ids["producer"], product=TEA, quantity=1)

        stub.Publish(request, timeout=CALL_TIMEOUT)
        stub.Publish(request, timeout=CALL_TIMEOUT)
        after = market_summary(stub)

    assert after["items_published"] == PREPARED["items_published"] + 2


# RequestLog on its own


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counter:
    """An apply function that counts its calls and returns the count."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.calls


def test_log_replays_result():
    log = RequestLog()
    apply = Counter()

    first = log.run("Publish", "r1", b"request", apply)
    repeat = log.run("Publish", "r1", b"request", apply)

    assert apply.calls == 1
    assert repeat == first


def test_log_replays_market_error():
    log = RequestLog()
    calls = []

    def reject():
        calls.append(1)
        raise core.NotFound("cart_id is not an open cart of this market")

    for _ in range(2):
        with pytest.raises(core.NotFound):
            log.run("AddToCart", "r1", b"request", reject)

    assert len(calls) == 1


def test_log_forgets_unexpected_error():
    log = RequestLog()
    calls = []

    def fail_once():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("unexpected failure")
        return "applied"

    with pytest.raises(RuntimeError):
        log.run("Publish", "r1", b"request", fail_once)
    result = log.run("Publish", "r1", b"request", fail_once)

    assert result == "applied"
    assert len(calls) == 2


def test_log_rejects_other_request_with_same_id():
    log = RequestLog()
    apply = Counter()
    log.run("Publish", "r1", b"first", apply)

    with pytest.raises(core.InvalidArgument) as raised:
        log.run("Publish", "r1", b"second", apply)

    assert str(raised.value).startswith("request_id ")
    assert apply.calls == 1


def test_log_keys_ids_by_method():
    log = RequestLog()
    apply = Counter()

    log.run("Publish", "r1", b"request", apply)
    log.run("AddToCart", "r1", b"request", apply)

    assert apply.calls == 2


def test_log_rejects_long_id():
    log = RequestLog()
    apply = Counter()

    with pytest.raises(core.InvalidArgument) as raised:
        log.run("Publish", "r" * (MAX_REQUEST_ID_LENGTH + 1), b"request", apply)

    assert str(raised.value).startswith("request_id ")
    assert apply.calls == 0


def test_log_empty_id_always_applies():
    log = RequestLog()
    apply = Counter()

    log.run("Publish", "", b"request", apply)
    log.run("Publish", "", b"request", apply)

    assert apply.calls == 2
    assert len(log) == 0


def test_log_keeps_id_until_max_age():
    clock = FakeClock()
    log = RequestLog(max_age=10.0, clock=clock)
    apply = Counter()
    log.run("Publish", "r1", b"request", apply)

    clock.now += 10.0
    log.run("Publish", "r1", b"request", apply)

    assert apply.calls == 1


def test_log_forgets_id_after_max_age():
    clock = FakeClock()
    log = RequestLog(max_age=10.0, clock=clock)
    apply = Counter()
    log.run("Publish", "r1", b"request", apply)

    clock.now += 10.001
    result = log.run("Publish", "r1", b"request", apply)

    assert apply.calls == 2
    assert result == 2


def test_log_forgets_reused_id_after_max_age():
    clock = FakeClock()
    log = RequestLog(max_age=10.0, clock=clock)
    apply = Counter()
    log.run("Publish", "r1", b"first", apply)

    clock.now += 11.0
    log.run("Publish", "r1", b"second", apply)

    assert apply.calls == 2


def test_log_forgets_oldest_beyond_max_entries():
    log = RequestLog(max_entries=3, clock=FakeClock())
    apply = Counter()
    for request_id in ("r1", "r2", "r3", "r4"):
        log.run("Publish", request_id, b"request", apply)

    log.run("Publish", "r4", b"request", apply)
    log.run("Publish", "r2", b"request", apply)
    replayed_calls = apply.calls
    log.run("Publish", "r1", b"request", apply)

    assert replayed_calls == 4
    assert apply.calls == 5


def test_log_size_stays_bounded():
    log = RequestLog(max_entries=50, clock=FakeClock())
    apply = Counter()

    for number in range(500):
        log.run("Publish", f"r{number}", b"request", apply)

    assert len(log) <= 50


def test_log_concurrent_duplicate_waits_for_first():
    clock = SignallingClock()
    log = RequestLog(clock=clock)
    entered = threading.Event()
    release = threading.Event()
    calls = []

    def slow_apply():
        calls.append(1)
        entered.set()
        release.wait(CALL_TIMEOUT)
        return "applied once"

    results = {}

    def run(name):
        results[name] = log.run("Publish", "r1", b"request", slow_apply)

    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert entered.wait(CALL_TIMEOUT)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    assert clock.second_call.wait(CALL_TIMEOUT)
    second.join(0.05)
    waited = second.is_alive()
    release.set()
    first.join(CALL_TIMEOUT)
    second.join(CALL_TIMEOUT)

    assert waited
    assert len(calls) == 1
    assert results == {"first": "applied once", "second": "applied once"}


# The server's flags that bound the log


def publish_items(address: str, request_ids: list[str], pause: float = 0.0) -> int:
    """Publish one tea per request id, in order, and return the items published."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        producer_id = stub.RegisterProducer(
            pb.RegisterProducerRequest(name="farm"), timeout=CALL_TIMEOUT
        ).producer_id
        for index, request_id in enumerate(request_ids):
            if index and pause:
                time.sleep(pause)
            stub.Publish(
                pb.PublishRequest(
                    request_id=request_id, producer_id=producer_id, product=TEA, quantity=1
                ),
                timeout=CALL_TIMEOUT,
            )
        return stub.GetMarketState(
            pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT
        ).items_published


def test_server_request_ids_flag_bounds_log(start_server):
    server = start_server("--request-ids", "1")

    # With room for one id, "b" pushes "a" out, so the second "a" applies.
    published = publish_items(server.address, ["a", "b", "a"])

    assert published == 3


def test_server_request_id_age_flag_bounds_log(start_server):
    server = start_server("--request-id-age", "0.2")

    published = publish_items(server.address, ["a", "a"], pause=0.5)

    assert published == 2
