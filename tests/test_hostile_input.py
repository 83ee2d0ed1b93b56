"""Hostile requests get a clean rejection and leave the market as it was.

Every RPC is sent empty, unknown, oversized, negative and non-finite values,
and bytes that are no valid message at all. Each must fail with
INVALID_ARGUMENT or NOT_FOUND and a message that starts with the field at
fault. A message over the size limit gets RESOURCE_EXHAUSTED. No request may
get UNKNOWN or INTERNAL. GetMarketState must read the same before and after.
Hypothesis then sends random field values and random bytes to each RPC.
"""

from __future__ import annotations

import base64
import math
import re

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc

CALL_TIMEOUT = 10.0
I64_MAX = 2**63 - 1
I64_MIN = -(2**63)
I32_MAX = 2**31 - 1
I32_MIN = -(2**31)
# The in-process server's limit on a request (create_server's default).
MAX_MESSAGE_BYTES = 1024 * 1024
SERVICE = "marketplace.v1.MarketService"

TEA = pb.Product(
    product_id="tea",
    kind="Tea",
    name="Linden",
    price=pb.Money(units=9),
    attributes=[pb.Attribute(key="type", string_value="Herbal")],
)

METHODS = {
    "RegisterProducer": pb.RegisterProducerRequest,
    "Publish": pb.PublishRequest,
    "CreateCart": pb.CreateCartRequest,
    "AddToCart": pb.AddToCartRequest,
    "RemoveFromCart": pb.RemoveFromCartRequest,
    "PlaceOrder": pb.PlaceOrderRequest,
    "GetMarketState": pb.GetMarketStateRequest,
}
MUTATING = [name for name in METHODS if name != "GetMarketState"]


@pytest.fixture
def ids(stub) -> dict[str, str]:
    """Register farm with 2 teas on its shelf, and a cart of alice holding 1."""
    producer_id = stub.RegisterProducer(
        pb.RegisterProducerRequest(name="farm"), timeout=CALL_TIMEOUT
    ).producer_id
    stub.Publish(
        pb.PublishRequest(producer_id=producer_id, product=TEA, quantity=3),
        timeout=CALL_TIMEOUT,
    )
    cart_id = stub.CreateCart(
        pb.CreateCartRequest(consumer="alice"), timeout=CALL_TIMEOUT
    ).cart_id
    stub.AddToCart(
        pb.AddToCartRequest(cart_id=cart_id, product_id="tea", quantity=1),
        timeout=CALL_TIMEOUT,
    )
    return {"producer": producer_id, "cart": cart_id}


def market_state(stub) -> pb.GetMarketStateResponse:
    return stub.GetMarketState(pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT)


def call_error(method, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        method(request, timeout=CALL_TIMEOUT)
    return raised.value


def product(**changes) -> pb.Product:
    """TEA under the new id "new", with `changes` applied."""
    message = pb.Product()
    message.CopyFrom(TEA)
    message.product_id = "new"
    for name, value in changes.items():
        if name == "attributes":
            del message.attributes[:]
            message.attributes.extend(value)
        elif name == "price":
            message.price.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def publish(quantity=1, **changes):
    return lambda ids: pb.PublishRequest(
        producer_id=ids["producer"], product=product(**changes), quantity=quantity
    )


def cart_call(message, **fields):
    return lambda ids: message(cart_id=ids["cart"], **fields)


def state_token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def attributes(count: int) -> list[pb.Attribute]:
    return [pb.Attribute(key=f"k{n}", int_value=n) for n in range(count)]


BAD = grpc.StatusCode.INVALID_ARGUMENT
UNKNOWN = grpc.StatusCode.NOT_FOUND

# (method, request built from the fixture's ids, status code, field at fault)
HOSTILE = [
    # RegisterProducer
    pytest.param("RegisterProducer", lambda ids: pb.RegisterProducerRequest(), BAD, "name", id="register-empty"),
    pytest.param(
        "RegisterProducer",
        lambda ids: pb.RegisterProducerRequest(name="n" * 100_000),
        BAD,
        "name",
        id="register-name-huge",
    ),
    pytest.param(
        "RegisterProducer",
        lambda ids: pb.RegisterProducerRequest(request_id="r" * 1000, name="farm"),
        BAD,
        "request_id",
        id="register-request-id-long",
    ),
    # Publish
    pytest.param("Publish", lambda ids: pb.PublishRequest(), BAD, "product", id="publish-empty"),
    pytest.param(
        "Publish",
        lambda ids: pb.PublishRequest(producer_id="nobody", product=TEA, quantity=1),
        UNKNOWN,
        "producer_id",
        id="publish-unknown-producer",
    ),
    pytest.param("Publish", publish(quantity=I64_MAX), BAD, "quantity", id="publish-quantity-max"),
    pytest.param("Publish", publish(quantity=I64_MIN), BAD, "quantity", id="publish-quantity-min"),
    pytest.param("Publish", publish(quantity=-1), BAD, "quantity", id="publish-quantity-negative"),
    pytest.param("Publish", publish(product_id="p" * 129), BAD, "product.product_id", id="product-id-long"),
    pytest.param("Publish", publish(kind="k" * 100_000), BAD, "product.kind", id="kind-huge"),
    pytest.param("Publish", publish(name=""), BAD, "product.name", id="name-empty"),
    pytest.param("Publish", publish(name="n" * 257), BAD, "product.name", id="name-long"),
    pytest.param("Publish", publish(name="n" * 100_000), BAD, "product.name", id="name-huge"),
    pytest.param(
        "Publish", publish(price=pb.Money(units=I64_MAX)), BAD, "product.price.units", id="price-max"
    ),
    pytest.param(
        "Publish", publish(price=pb.Money(units=I64_MIN)), BAD, "product.price.units", id="price-min"
    ),
    pytest.param(
        "Publish",
        publish(price=pb.Money(units=1, nanos=I32_MAX)),
        BAD,
        "product.price.nanos",
        id="nanos-max",
    ),
    pytest.param(
        "Publish",
        publish(price=pb.Money(units=1, nanos=I32_MIN)),
        BAD,
        "product.price.nanos",
        id="nanos-min",
    ),
    pytest.param(
        "Publish",
        publish(price=pb.Money(units=1, currency_code="\u20acUR")),
        BAD,
        "product.price.currency_code",
        id="currency-symbol",
    ),
    pytest.param(
        "Publish",
        publish(price=pb.Money(units=1, currency_code="\uff25\uff35\uff32")),
        BAD,
        "product.price.currency_code",
        id="currency-fullwidth",
    ),
    pytest.param("Publish", publish(attributes=attributes(65)), BAD, "product.attributes", id="attributes-65"),
    pytest.param(
        "Publish", publish(attributes=attributes(20_000)), BAD, "product.attributes", id="attributes-many"
    ),
    pytest.param(
        "Publish",
        publish(attributes=[pb.Attribute(key="k" * 65, int_value=1)]),
        BAD,
        "product.attributes[0].key",
        id="attribute-key-long",
    ),
    pytest.param(
        "Publish",
        publish(attributes=[pb.Attribute(key="price", int_value=1)]),
        BAD,
        "product.attributes[0].key",
        id="attribute-key-reserved",
    ),
    pytest.param(
        "Publish",
        publish(attributes=[pb.Attribute(key="note", string_value="v" * 1025)]),
        BAD,
        "product.attributes[0]",
        id="attribute-string-long",
    ),
    pytest.param(
        "Publish",
        publish(attributes=[pb.Attribute(key="note", string_value="v" * 200_000)]),
        BAD,
        "product.attributes[0]",
        id="attribute-string-huge",
    ),
    pytest.param(
        "Publish",
        publish(attributes=[pb.Attribute(key="acidity", float_value=math.nan)]),
        BAD,
        "product.attributes[0]",
        id="attribute-nan",
    ),
    pytest.param(
        "Publish",
        publish(
            attributes=[
                pb.Attribute(key="a", float_value=1.5),
                pb.Attribute(key="b", float_value=math.inf),
            ]
        ),
        BAD,
        "product.attributes[1]",
        id="attribute-inf",
    ),
    pytest.param(
        "Publish",
        publish(attributes=[pb.Attribute(key="acidity", float_value=-math.inf)]),
        BAD,
        "product.attributes[0]",
        id="attribute-minus-inf",
    ),
    # CreateCart
    pytest.param("CreateCart", lambda ids: pb.CreateCartRequest(), BAD, "consumer", id="cart-empty"),
    pytest.param(
        "CreateCart",
        lambda ids: pb.CreateCartRequest(consumer="c" * 100_000),
        BAD,
        "consumer",
        id="consumer-huge",
    ),
    pytest.param(
        "CreateCart",
        lambda ids: pb.CreateCartRequest(consumer="alice", budget=pb.Money(units=-1)),
        BAD,
        "budget.units",
        id="budget-negative",
    ),
    pytest.param(
        "CreateCart",
        lambda ids: pb.CreateCartRequest(
            consumer="alice", budget=pb.Money(units=1, nanos=I32_MIN)
        ),
        BAD,
        "budget.nanos",
        id="budget-nanos-negative",
    ),
    pytest.param(
        "CreateCart",
        lambda ids: pb.CreateCartRequest(
            consumer="alice", budget=pb.Money(units=5, currency_code="xx")
        ),
        BAD,
        "budget.currency_code",
        id="budget-currency",
    ),
    # AddToCart
    pytest.param("AddToCart", lambda ids: pb.AddToCartRequest(), BAD, "quantity", id="add-empty"),
    pytest.param(
        "AddToCart",
        lambda ids: pb.AddToCartRequest(cart_id="nobody", product_id="tea", quantity=1),
        UNKNOWN,
        "cart_id",
        id="add-unknown-cart",
    ),
    pytest.param(
        "AddToCart",
        cart_call(pb.AddToCartRequest, product_id="tea", quantity=I64_MAX),
        BAD,
        "quantity",
        id="add-quantity-max",
    ),
    pytest.param(
        "AddToCart",
        cart_call(pb.AddToCartRequest, product_id="tea", quantity=I64_MIN),
        BAD,
        "quantity",
        id="add-quantity-min",
    ),
    pytest.param(
        "AddToCart",
        cart_call(pb.AddToCartRequest, product_id="t" * 100_000, quantity=1),
        BAD,
        "product_id",
        id="add-product-id-huge",
    ),
    pytest.param(
        "AddToCart",
        cart_call(pb.AddToCartRequest, product_id="tea", quantity=1, wait_ms=I64_MIN),
        BAD,
        "wait_ms",
        id="add-wait-negative",
    ),
    # RemoveFromCart
    pytest.param("RemoveFromCart", lambda ids: pb.RemoveFromCartRequest(), BAD, "quantity", id="remove-empty"),
    pytest.param(
        "RemoveFromCart",
        lambda ids: pb.RemoveFromCartRequest(cart_id="nobody", product_id="tea", quantity=1),
        UNKNOWN,
        "cart_id",
        id="remove-unknown-cart",
    ),
    pytest.param(
        "RemoveFromCart",
        cart_call(pb.RemoveFromCartRequest, product_id="tea", quantity=I64_MAX),
        BAD,
        "quantity",
        id="remove-quantity-max",
    ),
    pytest.param(
        "RemoveFromCart",
        cart_call(pb.RemoveFromCartRequest, product_id="tea", quantity=-1),
        BAD,
        "quantity",
        id="remove-quantity-negative",
    ),
    pytest.param(
        "RemoveFromCart",
        cart_call(pb.RemoveFromCartRequest, product_id="", quantity=1),
        BAD,
        "product_id",
        id="remove-product-id-empty",
    ),
    # PlaceOrder
    pytest.param("PlaceOrder", lambda ids: pb.PlaceOrderRequest(), UNKNOWN, "cart_id", id="order-empty"),
    pytest.param(
        "PlaceOrder",
        lambda ids: pb.PlaceOrderRequest(cart_id="c" * 100_000),
        UNKNOWN,
        "cart_id",
        id="order-cart-id-huge",
    ),
    pytest.param(
        "PlaceOrder",
        cart_call(pb.PlaceOrderRequest, request_id="r" * 65),
        BAD,
        "request_id",
        id="order-request-id-long",
    ),
    # GetMarketState
    pytest.param(
        "GetMarketState",
        lambda ids: pb.GetMarketStateRequest(page_size=-1),
        BAD,
        "page_size",
        id="state-page-size-negative",
    ),
    pytest.param(
        "GetMarketState",
        lambda ids: pb.GetMarketStateRequest(page_token="\u00e9\u00e9"),
        BAD,
        "page_token",
        id="state-token-non-ascii",
    ),
    pytest.param(
        "GetMarketState",
        lambda ids: pb.GetMarketStateRequest(page_token=state_token("state:-1")),
        BAD,
        "page_token",
        id="state-token-negative",
    ),
    pytest.param(
        "GetMarketState",
        lambda ids: pb.GetMarketStateRequest(page_token=state_token("products:1")),
        BAD,
        "page_token",
        id="state-token-other-call",
    ),
    pytest.param(
        "GetMarketState",
        lambda ids: pb.GetMarketStateRequest(page_token=state_token(f"state:{2**64}")),
        BAD,
        "page_token",
        id="state-token-huge-offset",
    ),
]


@pytest.mark.parametrize("method, build, code, field", HOSTILE)
def test_hostile_request_is_rejected(stub, ids, method, build, code, field):
    before = market_state(stub)

    error = call_error(getattr(stub, method), build(ids))

    assert error.code() == code, error.details()
    assert error.details().startswith(field + " ")
    assert market_state(stub) == before


# Requests near and over the message size limit


def sized(build, target: int):
    """Return build(filler) with the filler sized so that the message is `target` bytes."""
    guess = build("x" * target)
    message = build("x" * (2 * target - guess.ByteSize()))
    assert message.ByteSize() == target
    return message


# For each RPC, a request with one string field to fill, and the field that
# the server names when the request is just under the limit.
FILLED = [
    pytest.param(
        "RegisterProducer",
        lambda ids, filler: pb.RegisterProducerRequest(name=filler),
        BAD,
        "name",
        id="register",
    ),
    pytest.param(
        "Publish",
        lambda ids, filler: publish(
            attributes=[pb.Attribute(key="note", string_value=filler)]
        )(ids),
        BAD,
        "product.attributes[0]",
        id="publish",
    ),
    pytest.param(
        "CreateCart",
        lambda ids, filler: pb.CreateCartRequest(consumer=filler),
        BAD,
        "consumer",
        id="cart",
    ),
    pytest.param(
        "AddToCart",
        lambda ids, filler: pb.AddToCartRequest(
            cart_id=ids["cart"], product_id=filler, quantity=1
        ),
        BAD,
        "product_id",
        id="add",
    ),
    pytest.param(
        "RemoveFromCart",
        lambda ids, filler: pb.RemoveFromCartRequest(
            cart_id=ids["cart"], product_id=filler, quantity=1
        ),
        BAD,
        "product_id",
        id="remove",
    ),
    pytest.param(
        "PlaceOrder",
        lambda ids, filler: pb.PlaceOrderRequest(cart_id=filler),
        UNKNOWN,
        "cart_id",
        id="order",
    ),
    pytest.param(
        "GetMarketState",
        lambda ids, filler: pb.GetMarketStateRequest(page_token=filler),
        BAD,
        "page_token",
        id="state",
    ),
]


@pytest.mark.parametrize("method, build, code, field", FILLED)
def test_request_under_size_limit(stub, ids, method, build, code, field):
    request = sized(lambda filler: build(ids, filler), MAX_MESSAGE_BYTES - 64)
    before = market_state(stub)

    error = call_error(getattr(stub, method), request)

    assert error.code() == code
    assert error.details().startswith(field + " ")
    assert market_state(stub) == before


@pytest.mark.parametrize("method, build, code, field", FILLED)
def test_request_over_size_limit(stub, ids, method, build, code, field):
    request = sized(lambda filler: build(ids, filler), MAX_MESSAGE_BYTES + 64)
    before = market_state(stub)

    error = call_error(getattr(stub, method), request)

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert market_state(stub) == before


# Bytes that are not a valid message


def raw_method(channel: grpc.Channel, method: str):
    """Return a callable that sends `method` raw bytes and returns raw bytes."""
    return channel.unary_unary(
        f"/{SERVICE}/{method}", request_serializer=None, response_deserializer=None
    )


@pytest.fixture
def channel(server_address):
    with grpc.insecure_channel(server_address) as channel:
        yield channel


# Bytes that no request type accepts: each breaks the wire format or UTF-8.
GARBAGE = {
    "all-ones": b"\xff\xff\xff\xff",
    "truncated-varint": b"\x20\xff\xff",
    "length-past-end": b"\x12\x10ab",
    "field-zero": b"\x00\x01",
    "wire-type-7": b"\x0f\x01",
    "unterminated-group": b"\x7b\x08\x01",
    "stray-end-group": b"\x7c",
    "groups-too-deep": b"\x7b" * 5000 + b"\x7c" * 5000,
    "bad-utf8-field-2": b"\x12\x02\xc3\x28",
    "valid-then-garbage": b"\x12\x04farm\xff",
}
# In the mutating RPCs, field 1 is request_id. In Publish, field 3 is a
# Product, and its field 3 is the product name.
GARBAGE_FOR = {
    name: dict(GARBAGE, **({"bad-utf8-request-id": b"\x0a\x02\xc3\x28"} if name in MUTATING else {}))
    for name in METHODS
}
GARBAGE_FOR["Publish"]["bad-utf8-nested"] = b"\x1a\x04\x1a\x02\xc3\x28"
GARBAGE_CASES = [
    pytest.param(method, raw, id=f"{method}-{label}")
    for method, cases in GARBAGE_FOR.items()
    for label, raw in cases.items()
]


@pytest.mark.parametrize("method, raw", GARBAGE_CASES)
def test_garbage_bytes_are_invalid_argument(stub, ids, channel, method, raw):
    before = market_state(stub)

    error = call_error(raw_method(channel, method), raw)

    assert error.code() == BAD
    assert f"marketplace.v1.{METHODS[method].__name__}" in error.details()
    assert market_state(stub) == before


# The server's limits are flags


def test_server_flags_set_limits(start_server):
    server = start_server(
        "--max-name-length", "16",
        "--max-quantity", "10",
        "--max-attributes", "2",
        "--max-message-bytes", "4096",
    )
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        producer_id = stub.RegisterProducer(
            pb.RegisterProducerRequest(name="p" * 16), timeout=CALL_TIMEOUT
        ).producer_id
        at_limits = stub.Publish(
            pb.PublishRequest(
                producer_id=producer_id,
                product=product(product_id="i" * 16, attributes=attributes(2)),
                quantity=10,
            ),
            timeout=CALL_TIMEOUT,
        )
        before = market_state(stub)
        rejected = [
            call_error(stub.RegisterProducer, pb.RegisterProducerRequest(name="p" * 17)),
            call_error(
                stub.Publish,
                pb.PublishRequest(
                    producer_id=producer_id, product=product(product_id="i" * 17), quantity=1
                ),
            ),
            call_error(
                stub.Publish,
                pb.PublishRequest(producer_id=producer_id, product=product(), quantity=11),
            ),
            call_error(
                stub.Publish,
                pb.PublishRequest(
                    producer_id=producer_id, product=product(attributes=attributes(3)), quantity=1
                ),
            ),
            call_error(stub.CreateCart, pb.CreateCartRequest(consumer="c" * 4000)),
            call_error(stub.CreateCart, pb.CreateCartRequest(consumer="c" * 4200)),
        ]
        after = market_state(stub)
    server.stop()

    assert at_limits.published == 10
    assert [error.code() for error in rejected] == [BAD] * 5 + [
        grpc.StatusCode.RESOURCE_EXHAUSTED
    ]
    assert [error.details().split(" ")[0] for error in rejected[:5]] == [
        "name",
        "product.product_id",
        "quantity",
        "product.attributes",
        "consumer",
    ]
    assert "the maximum is 16" in rejected[0].details()
    assert "give 1 to 10" in rejected[2].details()
    assert "the maximum is 2" in rejected[3].details()
    assert after == before


# Fuzzing

FUZZ_SETTINGS = settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
ALLOWED = {grpc.StatusCode.OK, BAD, UNKNOWN}
# INVALID_ARGUMENT details start with the path of a request field.
FIELD_AT_START = re.compile(
    r"(request_id|name|consumer|producer_id|cart_id|product_id|quantity|wait_ms"
    r"|page_size|page_token|budget\.(units|nanos|currency_code)"
    r"|product(\.(product_id|kind|name|price\.(units|nanos|currency_code)"
    r"|attributes(\[\d+\](\.key)?)?))?) "
)


def text(max_size: int):
    return st.text(st.characters(codec="utf-8"), max_size=max_size)


INTS = st.one_of(
    st.integers(-3, 5),
    st.sampled_from([10**6, 10**6 + 1, I64_MAX, I64_MIN]),
    st.integers(I64_MIN, I64_MAX),
)
NAMES = st.one_of(text(12), st.integers(120, 140).map(lambda n: "n" * n))
REQUEST_IDS = st.one_of(st.just(""), text(70))
MONEY = st.builds(
    pb.Money,
    currency_code=st.one_of(st.sampled_from(["", "EUR", "eur"]), text(4)),
    units=st.one_of(st.integers(-2, 20), st.integers(I64_MIN, I64_MAX)),
    nanos=st.one_of(st.integers(-1, 2), st.integers(I32_MIN, I32_MAX)),
)
KEYS = st.one_of(st.sampled_from(["origin", "grams", "name", "price", ""]), text(70))
ATTRIBUTES = st.one_of(
    st.builds(pb.Attribute, key=KEYS, string_value=text(20)),
    st.builds(pb.Attribute, key=KEYS, int_value=INTS),
    st.builds(pb.Attribute, key=KEYS, float_value=st.floats()),
    st.builds(pb.Attribute, key=KEYS, bool_value=st.booleans()),
    st.builds(pb.Attribute, key=KEYS),
)
PRODUCTS = st.builds(
    pb.Product,
    product_id=st.one_of(st.sampled_from(["tea", "honey", ""]), text(130)),
    kind=st.one_of(st.just("Tea"), text(70)),
    name=st.one_of(st.just("Linden"), text(260)),
    price=MONEY,
    attributes=st.lists(ATTRIBUTES, max_size=70),
)
PAGE_TOKENS = st.one_of(
    text(30),
    st.one_of(st.integers(-10, 2**70), st.sampled_from([2**63 - 1, 2**64])).map(
        lambda n: state_token(f"state:{n}")
    ),
)


def requests(method: str, producer_ids, cart_ids):
    """A strategy for `method` requests with the given id strategies.

    AddToCart never sets a positive wait_ms, so that no example blocks for
    seconds. PlaceOrder gets no real cart, so that the cart stays open.
    """
    product_ids = st.one_of(st.sampled_from(["tea", "honey", ""]), text(130))
    return {
        "RegisterProducer": st.builds(
            pb.RegisterProducerRequest, request_id=REQUEST_IDS, name=NAMES
        ),
        "Publish": st.builds(
            pb.PublishRequest,
            request_id=REQUEST_IDS,
            producer_id=producer_ids,
            product=st.one_of(st.none(), PRODUCTS),
            quantity=INTS,
        ),
        "CreateCart": st.builds(
            pb.CreateCartRequest,
            request_id=REQUEST_IDS,
            consumer=NAMES,
            budget=st.one_of(st.none(), MONEY),
        ),
        "AddToCart": st.builds(
            pb.AddToCartRequest,
            request_id=REQUEST_IDS,
            cart_id=cart_ids,
            product_id=product_ids,
            quantity=INTS,
            wait_ms=st.integers(I64_MIN, 0),
        ),
        "RemoveFromCart": st.builds(
            pb.RemoveFromCartRequest,
            request_id=REQUEST_IDS,
            cart_id=cart_ids,
            product_id=product_ids,
            quantity=INTS,
        ),
        "PlaceOrder": st.builds(
            pb.PlaceOrderRequest, request_id=REQUEST_IDS, cart_id=text(40)
        ),
        "GetMarketState": st.builds(
            pb.GetMarketStateRequest,
            page_size=st.integers(I32_MIN, I32_MAX),
            page_token=PAGE_TOKENS,
        ),
    }[method]


@st.composite
def mangled(draw, messages):
    """Encode a drawn message, then truncate it, flip a byte or insert bytes."""
    raw = bytearray(draw(messages).SerializeToString())
    mutation = draw(st.sampled_from(["keep", "truncate", "flip", "insert"]))
    if mutation == "truncate" and raw:
        del raw[draw(st.integers(0, len(raw) - 1)) :]
    elif mutation == "flip" and raw:
        raw[draw(st.integers(0, len(raw) - 1))] ^= draw(st.integers(1, 255))
    elif mutation == "insert":
        at = draw(st.integers(0, len(raw)))
        raw[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(raw)


def check_outcome(stub, method: str, before, send):
    """Send a request; check its status, its message and the market state."""
    try:
        send()
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        code, details = error.code(), error.details()
    assert code in ALLOWED, f"{code}: {details}"
    if code != grpc.StatusCode.OK or method == "GetMarketState":
        assert market_state(stub) == before
    if code == BAD:
        assert FIELD_AT_START.match(details) or "marketplace.v1." in details, details
    if code == UNKNOWN:
        assert details.startswith(("producer_id ", "cart_id ")), details
    return code


@pytest.mark.parametrize("method", list(METHODS))
def test_fuzz_field_values(stub, ids, method):
    strategy = requests(
        method,
        producer_ids=st.one_of(st.just(ids["producer"]), text(40)),
        cart_ids=st.one_of(st.just(ids["cart"]), text(40)),
    )

    @FUZZ_SETTINGS
    @given(request=strategy)
    def check(request):
        before = market_state(stub)
        check_outcome(
            stub,
            method,
            before,
            lambda: getattr(stub, method)(request, timeout=CALL_TIMEOUT),
        )

    check()


@pytest.mark.parametrize("method", list(METHODS))
def test_fuzz_bytes(stub, ids, channel, method):
    # Random ids only: a mangled request never reaches a real shelf or cart.
    valid = requests(method, producer_ids=text(40), cart_ids=text(40))
    send_raw = raw_method(channel, method)

    @FUZZ_SETTINGS
    @given(raw=st.one_of(st.binary(max_size=80), mangled(valid)))
    def check(raw):
        before = market_state(stub)
        try:
            METHODS[method].FromString(raw)
            parses = True
        except Exception:
            parses = False
        code = check_outcome(
            stub, method, before, lambda: send_raw(raw, timeout=CALL_TIMEOUT)
        )
        if not parses:
            assert code == BAD

    check()
