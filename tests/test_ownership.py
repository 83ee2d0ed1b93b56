"""Producer and cart ids are unguessable secrets that the market never reveals.

An id is 128 random bits in hex. A wrong id, however close to a real one,
gets the same error as an id that never existed, and neither GetMarketState
nor the server's log, even at DEBUG, ever shows an id the market issued.
"""

from __future__ import annotations

import re
import time

import grpc
import pytest

from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc

CALL_TIMEOUT = 10.0
ID_PATTERN = re.compile(r"[0-9a-f]{32}")
# An id that no market issued: the same length and alphabet as real ones.
NEVER_ISSUED = "3f9c2a7be1d04c58a6e2f1b09d7c4e31"

TEA = pb.Product(product_id="tea", kind="Tea", name="Linden", price=pb.Money(units=9))


def register(stub, name: str = "farm") -> str:
    return stub.RegisterProducer(
        pb.RegisterProducerRequest(name=name), timeout=CALL_TIMEOUT
    ).producer_id


def create_cart(stub, consumer: str = "alice") -> pb.CreateCartResponse:
    return stub.CreateCart(pb.CreateCartRequest(consumer=consumer), timeout=CALL_TIMEOUT)


def market_state(stub) -> pb.GetMarketStateResponse:
    return stub.GetMarketState(pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT)


def failure(method, request) -> tuple:
    """Make the call, which must fail; return its code, details and trailers."""
    with pytest.raises(grpc.RpcError) as raised:
        method(request, timeout=CALL_TIMEOUT)
    error = raised.value
    return error.code(), error.details(), tuple(error.trailing_metadata() or ())


# Each call that takes a secret id, built around a given id.
ID_CALLS = {
    "Publish": lambda stub, some_id: (
        stub.Publish,
        pb.PublishRequest(producer_id=some_id, product=TEA, quantity=1),
    ),
    "AddToCart": lambda stub, some_id: (
        stub.AddToCart,
        pb.AddToCartRequest(cart_id=some_id, product_id="tea", quantity=1),
    ),
    "RemoveFromCart": lambda stub, some_id: (
        stub.RemoveFromCart,
        pb.RemoveFromCartRequest(cart_id=some_id, product_id="tea", quantity=1),
    ),
    "PlaceOrder": lambda stub, some_id: (
        stub.PlaceOrder,
        pb.PlaceOrderRequest(cart_id=some_id),
    ),
}


def flip(hex_id: str, position: int) -> str:
    digit = hex_id[position]
    other = "0" if digit != "0" else "1"
    return hex_id[:position] + other + hex_id[position + 1 :]


# Ways to get close to a real id: (its id, the other kind's id) -> wrong id.
NEAR_MISSES = {
    "flip-first": lambda own, other: flip(own, 0),
    "flip-middle": lambda own, other: flip(own, 16),
    "flip-last": lambda own, other: flip(own, 31),
    "increment": lambda own, other: f"{(int(own, 16) + 1) % 2**128:032x}",
    "decrement": lambda own, other: f"{(int(own, 16) - 1) % 2**128:032x}",
    "upper-case": lambda own, other: own.upper(),
    "truncated": lambda own, other: own[:-1],
    "extended": lambda own, other: own + "0",
    "padded": lambda own, other: f" {own} ",
    "other-kind": lambda own, other: other,
}


@pytest.fixture
def real_ids(stub) -> dict[str, str]:
    """A producer with 2 teas on its shelf and an open cart holding one."""
    producer_id = register(stub)
    stub.Publish(
        pb.PublishRequest(producer_id=producer_id, product=TEA, quantity=2),
        timeout=CALL_TIMEOUT,
    )
    cart_id = create_cart(stub).cart_id
    stub.AddToCart(
        pb.AddToCartRequest(cart_id=cart_id, product_id="tea", quantity=1),
        timeout=CALL_TIMEOUT,
    )
    return {"producer": producer_id, "cart": cart_id}


def own_and_other(real_ids, method: str) -> tuple[str, str]:
    if method == "Publish":
        return real_ids["producer"], real_ids["cart"]
    return real_ids["cart"], real_ids["producer"]


# Shape and randomness


def test_ids_are_distinct_hex(stub):
    ids = [register(stub, f"producer{n}") for n in range(200)]
    ids += [create_cart(stub, f"consumer{n}").cart_id for n in range(200)]

    malformed = [some_id for some_id in ids if not ID_PATTERN.fullmatch(some_id)]

    assert malformed == []
    assert len(set(ids)) == len(ids)


def test_ids_look_random(stub):
    ids = [register(stub, f"producer{n}") for n in range(200)]
    ids += [create_cart(stub, f"consumer{n}").cart_id for n in range(200)]

    bits = "".join(f"{int(some_id, 16):0128b}" for some_id in ids)
    ones = bits.count("1") / len(bits)
    # A counter, a timestamp or a shared prefix leaves some positions with
    # few distinct digits; 400 random ids show nearly all 16 everywhere.
    fewest_digits = min(len({some_id[i] for some_id in ids}) for i in range(32))

    # The standard deviation of `ones` is about 0.0022; 0.02 is 9 of them.
    assert abs(ones - 0.5) < 0.02
    assert fewest_digits >= 12


# Wrong ids


@pytest.mark.parametrize("method", list(ID_CALLS))
def test_never_issued_id_is_not_found(stub, real_ids, method):
    before = market_state(stub)

    code, details, _ = failure(*ID_CALLS[method](stub, NEVER_ISSUED))

    assert code == grpc.StatusCode.NOT_FOUND
    assert ("producer_id" if method == "Publish" else "cart_id") in details
    assert market_state(stub) == before


@pytest.mark.parametrize("near_miss", list(NEAR_MISSES))
@pytest.mark.parametrize("method", list(ID_CALLS))
def test_near_miss_id_fails_like_unknown(stub, real_ids, method, near_miss):
    own, other = own_and_other(real_ids, method)
    wrong = NEAR_MISSES[near_miss](own, other)
    assert wrong != own
    never_issued = failure(*ID_CALLS[method](stub, NEVER_ISSUED))
    before = market_state(stub)

    near = failure(*ID_CALLS[method](stub, wrong))

    assert near == never_issued
    assert market_state(stub) == before


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param("", id="empty"),
        pytest.param("0" * 32, id="zeros"),
        pytest.param("f" * 10_000, id="long"),
        pytest.param("\u00e9" * 300, id="non-ascii"),
        pytest.param("../" * 20, id="path"),
    ],
)
@pytest.mark.parametrize("method", list(ID_CALLS))
def test_malformed_id_is_rejected(stub, real_ids, method, wrong):
    before = market_state(stub)

    code, details, _ = failure(*ID_CALLS[method](stub, wrong))

    assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
    for secret in real_ids.values():
        assert secret not in details
    assert market_state(stub) == before


def test_long_id_is_not_echoed(stub, real_ids):
    long_id = real_ids["cart"] * 300

    _, details, _ = failure(*ID_CALLS["AddToCart"](stub, long_id))

    assert len(details) < 1000


# What the market shows and logs


def exercise(stub) -> list[str]:
    """Run every kind of call, failing ones included; return the ids issued.

    Leaves an open cart, an ordered cart and a cart left to expire.
    """
    farm = register(stub, "farm")
    apiary = register(stub, "apiary")
    issued = [farm, apiary]
    for producer_id in (farm, apiary):
        request = pb.PublishRequest(producer_id=producer_id, product=TEA, quantity=5)
        stub.Publish(request, timeout=CALL_TIMEOUT)
    open_cart, ordered_cart, abandoned_cart = (
        create_cart(stub, name).cart_id for name in ("alice", "bob", "carol")
    )
    issued += [open_cart, ordered_cart, abandoned_cart]
    for cart_id in issued[2:]:
        for product_id in ("tea", "nothing"):
            request = pb.AddToCartRequest(cart_id=cart_id, product_id=product_id, quantity=2)
            stub.AddToCart(request, timeout=CALL_TIMEOUT)
        request = pb.RemoveFromCartRequest(cart_id=cart_id, product_id="tea", quantity=3)
        stub.RemoveFromCart(request, timeout=CALL_TIMEOUT)
    stub.PlaceOrder(pb.PlaceOrderRequest(cart_id=ordered_cart), timeout=CALL_TIMEOUT)

    for some_id in issued:
        for method in ID_CALLS:
            for wrong in (flip(some_id, 5), some_id.upper()):
                failure(*ID_CALLS[method](stub, wrong))
    request = pb.AddToCartRequest(cart_id=open_cart, product_id="tea", quantity=0)
    failure(stub.AddToCart, request)
    request = pb.PublishRequest(producer_id=farm, product=TEA, quantity=-1)
    failure(stub.Publish, request)
    stub.Publish(
        pb.PublishRequest(request_id="r1", producer_id=farm, product=TEA, quantity=1),
        timeout=CALL_TIMEOUT,
    )
    request = pb.PublishRequest(request_id="r1", producer_id=farm, product=TEA, quantity=2)
    failure(stub.Publish, request)
    return issued


def test_market_state_never_shows_ids(stub):
    issued = exercise(stub)

    state = market_state(stub)
    text = str(state)
    encoded = state.SerializeToString()

    assert [cart.consumer for cart in state.carts] == ["alice", "carol"]
    for secret in issued:
        assert secret not in text
        assert secret.upper() not in text
        assert secret.encode() not in encoded


def test_server_log_never_shows_ids(start_server):
    lease = 1.0
    server = start_server("--log-level", "DEBUG", "--lease", str(lease))
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        issued = exercise(stub)
        # alice's and carol's carts expire; bob's was ordered.
        deadline = time.monotonic() + lease + 30
        while market_state(stub).carts_expired < 2 and time.monotonic() < deadline:
            time.sleep(lease / 5)
        expired = market_state(stub).carts_expired
        failure(*ID_CALLS["AddToCart"](stub, issued[4]))
    status = server.stop()
    log = server.log_text()

    assert status == 0
    assert expired == 2
    # The log is worth searching: it has DEBUG lines and speaks of every cart.
    assert " DEBUG " in log
    assert "cart alice/cart-1 expired" in log
    assert "bob/cart-2" in log
    assert "cart carol/cart-3 expired" in log
    for secret in issued:
        assert secret not in log
        assert secret.upper() not in log
