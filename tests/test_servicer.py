"""Every RPC of MarketService over a real gRPC server on a loopback port.

The `market` fixture has shelves of capacity 3.
"""

from __future__ import annotations

import logging
import math

import grpc
import pytest

from marketplace.v1 import marketplace_pb2 as pb

CALL_TIMEOUT = 10.0

TEA = pb.Product(
    product_id="tea",
    kind="Tea",
    name="Linden",
    price=pb.Money(units=9),
    attributes=[pb.Attribute(key="type", string_value="Herbal")],
)
HONEY = pb.Product(
    product_id="honey",
    kind="Honey",
    name="Acacia",
    price=pb.Money(currency_code="EUR", units=2, nanos=500_000_000),
    attributes=[
        pb.Attribute(key="origin", string_value="Hungary"),
        pb.Attribute(key="grams", int_value=250),
        pb.Attribute(key="water", float_value=17.5),
        pb.Attribute(key="organic", bool_value=True),
    ],
)


def register(stub, name: str = "farm") -> str:
    request = pb.RegisterProducerRequest(name=name)
    return stub.RegisterProducer(request, timeout=CALL_TIMEOUT).producer_id


def publish(stub, producer_id: str, product=TEA, quantity: int = 1):
    request = pb.PublishRequest(
        producer_id=producer_id, product=product, quantity=quantity
    )
    return stub.Publish(request, timeout=CALL_TIMEOUT)


def create_cart(stub, consumer: str = "alice") -> pb.CreateCartResponse:
    request = pb.CreateCartRequest(consumer=consumer)
    return stub.CreateCart(request, timeout=CALL_TIMEOUT)


def add(stub, cart_id: str, product_id: str = "tea", quantity: int = 1) -> int:
    request = pb.AddToCartRequest(
        cart_id=cart_id, product_id=product_id, quantity=quantity
    )
    return stub.AddToCart(request, timeout=CALL_TIMEOUT).added


def remove(stub, cart_id: str, product_id: str = "tea", quantity: int = 1):
    request = pb.RemoveFromCartRequest(
        cart_id=cart_id, product_id=product_id, quantity=quantity
    )
    return stub.RemoveFromCart(request, timeout=CALL_TIMEOUT)


def place_order(stub, cart_id: str) -> pb.PlaceOrderResponse:
    request = pb.PlaceOrderRequest(cart_id=cart_id)
    return stub.PlaceOrder(request, timeout=CALL_TIMEOUT)


def market_state(stub) -> pb.GetMarketStateResponse:
    return stub.GetMarketState(pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT)


def shelf_by_producer(state: pb.GetMarketStateResponse) -> dict[str, pb.Shelf]:
    return {shelf.producer: shelf for shelf in state.shelves}


def cart_by_label(state: pb.GetMarketStateResponse) -> dict[str, pb.Cart]:
    return {cart.cart_label: cart for cart in state.carts}


def counts(items) -> dict[str, int]:
    return {item.product_id: item.quantity for item in items}


def call_error(method, request) -> grpc.RpcError:
    """Make the call and return the error it must fail with."""
    with pytest.raises(grpc.RpcError) as raised:
        method(request, timeout=CALL_TIMEOUT)
    return raised.value


# Happy paths


def test_register_producer_returns_id_and_capacity(stub):
    response = stub.RegisterProducer(
        pb.RegisterProducerRequest(name="farm"), timeout=CALL_TIMEOUT
    )

    assert response.producer_id != ""
    assert response.capacity == 3


def test_register_producer_ids_differ(stub):
    assert register(stub, "farm") != register(stub, "farm")


def test_publish_returns_published_and_size(stub):
    producer_id = register(stub)

    response = publish(stub, producer_id, quantity=2)

    assert response.published == 2
    assert response.shelf_size == 2


def test_publish_on_full_shelf_is_partial(stub):
    producer_id = register(stub)
    publish(stub, producer_id, quantity=2)

    partial = publish(stub, producer_id, quantity=5)
    rejected = publish(stub, producer_id, quantity=1)

    assert partial.published == 1
    assert partial.shelf_size == 3
    assert rejected.published == 0
    assert rejected.shelf_size == 3


def test_create_cart_returns_id_and_label(stub):
    response = create_cart(stub, "alice")

    assert response.cart_id != ""
    assert response.cart_label.startswith("alice/")
    assert response.cart_id != response.cart_label


def test_add_to_cart_returns_added(stub):
    publish(stub, register(stub), quantity=2)
    cart_id = create_cart(stub).cart_id

    assert add(stub, cart_id, quantity=3) == 2
    assert add(stub, cart_id, quantity=1) == 0


def test_add_unpublished_product_adds_nothing(stub):
    cart_id = create_cart(stub).cart_id

    assert add(stub, cart_id, product_id="nobody-makes-this") == 0


def test_remove_returns_removed_and_missing(stub):
    publish(stub, register(stub), quantity=2)
    cart_id = create_cart(stub).cart_id
    add(stub, cart_id, quantity=2)

    response = remove(stub, cart_id, quantity=3)

    assert response.removed == 2
    assert response.missing == 1


def test_remove_returns_item_to_full_origin_shelf(stub):
    farm = register(stub, "farm")
    publish(stub, farm, quantity=3)
    cart_id = create_cart(stub).cart_id
    add(stub, cart_id, quantity=2)
    publish(stub, farm, product=HONEY, quantity=2)

    remove(stub, cart_id, quantity=2)
    shelf = shelf_by_producer(market_state(stub))["farm"]
    rejected = publish(stub, farm, quantity=1)

    assert shelf.size == 5
    assert counts(shelf.items) == {"tea": 3, "honey": 2}
    assert rejected.published == 0


def test_place_order_returns_lines_and_total(stub):
    producer_id = register(stub)
    publish(stub, producer_id, product=HONEY, quantity=3)
    cart_id = create_cart(stub).cart_id
    add(stub, cart_id, product_id="honey", quantity=3)

    order = place_order(stub, cart_id)

    assert len(order.lines) == 1
    assert order.lines[0].product == HONEY
    assert order.lines[0].quantity == 3
    assert order.total == pb.Money(currency_code="EUR", units=7, nanos=500_000_000)


def test_place_order_keeps_attribute_types(stub):
    producer_id = register(stub)
    publish(stub, producer_id, product=HONEY)
    cart_id = create_cart(stub).cart_id
    add(stub, cart_id, product_id="honey")

    product = place_order(stub, cart_id).lines[0].product
    kinds = [attribute.WhichOneof("value") for attribute in product.attributes]

    assert [a.key for a in product.attributes] == ["origin", "grams", "water", "organic"]
    assert kinds == ["string_value", "int_value", "float_value", "bool_value"]


def test_place_order_lines_in_add_order(stub):
    producer_id = register(stub)
    publish(stub, producer_id, product=TEA)
    publish(stub, producer_id, product=HONEY)
    cart_id = create_cart(stub).cart_id
    add(stub, cart_id, product_id="honey")
    add(stub, cart_id, product_id="tea")

    order = place_order(stub, cart_id)

    assert [line.product.product_id for line in order.lines] == ["honey", "tea"]


def test_place_empty_order(stub):
    cart_id = create_cart(stub).cart_id

    order = place_order(stub, cart_id)

    assert list(order.lines) == []
    assert order.total.units == 0
    assert order.total.nanos == 0


# GetMarketState


def test_market_state_of_new_market_is_empty(stub):
    state = market_state(stub)

    assert list(state.shelves) == []
    assert list(state.carts) == []
    assert state.orders == 0
    assert state.items_ordered == 0
    assert state.items_published == 0


def test_market_state_shelves_by_producer(stub):
    farm = register(stub, "farm")
    apiary = register(stub, "apiary")
    publish(stub, farm, quantity=2)
    publish(stub, apiary, product=HONEY, quantity=3)
    cart_id = create_cart(stub).cart_id
    add(stub, cart_id, product_id="honey", quantity=1)

    state = market_state(stub)
    shelves = shelf_by_producer(state)

    assert [shelf.producer for shelf in state.shelves] == ["farm", "apiary"]
    assert shelves["farm"].capacity == 3
    assert shelves["farm"].size == 2
    assert counts(shelves["farm"].items) == {"tea": 2}
    assert shelves["apiary"].size == 2
    assert counts(shelves["apiary"].items) == {"honey": 2}


def test_market_state_omits_empty_products(stub):
    farm = register(stub, "farm")
    publish(stub, farm, product=TEA)
    publish(stub, farm, product=HONEY)
    cart_id = create_cart(stub).cart_id
    add(stub, cart_id, product_id="tea")

    shelf = shelf_by_producer(market_state(stub))["farm"]

    assert counts(shelf.items) == {"honey": 1}


def test_market_state_carts_by_label(stub):
    publish(stub, register(stub), quantity=3)
    alice = create_cart(stub, "alice")
    bob = create_cart(stub, "bob")
    add(stub, alice.cart_id, quantity=2)
    add(stub, bob.cart_id, quantity=1)

    carts = cart_by_label(market_state(stub))

    assert set(carts) == {alice.cart_label, bob.cart_label}
    assert carts[alice.cart_label].consumer == "alice"
    assert counts(carts[alice.cart_label].items) == {"tea": 2}
    assert carts[bob.cart_label].consumer == "bob"
    assert counts(carts[bob.cart_label].items) == {"tea": 1}


def test_market_state_carts_in_creation_order(stub):
    publish(stub, register(stub), quantity=1)
    first = create_cart(stub, "alice")
    second = create_cart(stub, "bob")
    add(stub, first.cart_id)

    labels = [cart.cart_label for cart in market_state(stub).carts]

    assert labels == [first.cart_label, second.cart_label]


def test_market_state_drops_ordered_carts(stub):
    open_cart = create_cart(stub, "alice")
    ordered = create_cart(stub, "bob")
    place_order(stub, ordered.cart_id)

    carts = cart_by_label(market_state(stub))

    assert set(carts) == {open_cart.cart_label}


def test_market_state_totals(stub):
    farm = register(stub, "farm")
    publish(stub, farm, quantity=3)
    first = create_cart(stub).cart_id
    add(stub, first, quantity=2)
    place_order(stub, first)
    publish(stub, farm, quantity=3)
    second = create_cart(stub).cart_id
    add(stub, second, quantity=1)
    empty = create_cart(stub).cart_id
    place_order(stub, empty)

    state = market_state(stub)
    on_shelves = sum(shelf.size for shelf in state.shelves)
    in_carts = sum(sum(counts(cart.items).values()) for cart in state.carts)

    assert state.orders == 2
    assert state.items_ordered == 2
    assert state.items_published == 5
    assert on_shelves + in_carts + state.items_ordered == state.items_published


# INVALID_ARGUMENT


def bad_product(**changes) -> pb.Product:
    product = pb.Product()
    product.CopyFrom(TEA)
    for name, value in changes.items():
        if name == "attributes":
            del product.attributes[:]
            product.attributes.extend(value)
        elif name == "price":
            product.price.CopyFrom(value)
        else:
            setattr(product, name, value)
    return product


def publish_request(product=TEA, quantity=1):
    def build(ids):
        request = pb.PublishRequest(producer_id=ids["producer"], quantity=quantity)
        if product is not None:
            request.product.CopyFrom(product)
        return "Publish", request

    return build


def cart_request(method: str, message, **fields):
    def build(ids):
        return method, message(cart_id=ids["cart"], **fields)

    return build


INVALID_REQUESTS = [
    pytest.param(
        lambda ids: ("RegisterProducer", pb.RegisterProducerRequest(name="")),
        "name",
        id="producer-name-empty",
    ),
    pytest.param(
        lambda ids: ("RegisterProducer", pb.RegisterProducerRequest(name="n" * 129)),
        "name",
        id="producer-name-long",
    ),
    pytest.param(
        lambda ids: ("CreateCart", pb.CreateCartRequest(consumer="")),
        "consumer",
        id="consumer-empty",
    ),
    pytest.param(
        lambda ids: ("CreateCart", pb.CreateCartRequest(consumer="c" * 129)),
        "consumer",
        id="consumer-long",
    ),
    pytest.param(publish_request(product=None), "product", id="publish-no-product"),
    pytest.param(publish_request(quantity=0), "quantity", id="publish-quantity-zero"),
    pytest.param(
        publish_request(quantity=-2), "quantity", id="publish-quantity-negative"
    ),
    pytest.param(
        publish_request(quantity=1_000_001), "quantity", id="publish-quantity-big"
    ),
    pytest.param(
        publish_request(bad_product(product_id="")),
        "product.product_id",
        id="product-id-empty",
    ),
    pytest.param(
        publish_request(bad_product(kind="")), "product.kind", id="kind-empty"
    ),
    pytest.param(
        publish_request(bad_product(kind="K" * 65)), "product.kind", id="kind-long"
    ),
    pytest.param(
        publish_request(bad_product(name="")), "product.name", id="name-empty"
    ),
    pytest.param(
        publish_request(bad_product(price=pb.Money(units=-1))),
        "product.price.units",
        id="price-negative",
    ),
    pytest.param(
        publish_request(bad_product(price=pb.Money(units=1, nanos=1_000_000_000))),
        "product.price.nanos",
        id="nanos-too-big",
    ),
    pytest.param(
        publish_request(bad_product(price=pb.Money(units=1, nanos=-5))),
        "product.price.nanos",
        id="nanos-negative",
    ),
    pytest.param(
        publish_request(bad_product(price=pb.Money(currency_code="euro", units=1))),
        "product.price.currency_code",
        id="currency-code",
    ),
    pytest.param(
        publish_request(
            bad_product(attributes=[pb.Attribute(key="acidity", float_value=math.nan)])
        ),
        "product.attributes[0]",
        id="attribute-nan",
    ),
    pytest.param(
        publish_request(
            bad_product(
                attributes=[
                    pb.Attribute(key="a", int_value=1),
                    pb.Attribute(key="b", float_value=-math.inf),
                ]
            )
        ),
        "product.attributes[1]",
        id="attribute-inf",
    ),
    pytest.param(
        publish_request(
            bad_product(
                attributes=[
                    pb.Attribute(key="a", int_value=1),
                    pb.Attribute(key="a", bool_value=True),
                ]
            )
        ),
        "product.attributes[1].key",
        id="attribute-duplicate-key",
    ),
    pytest.param(
        publish_request(bad_product(attributes=[pb.Attribute(key="", int_value=1)])),
        "product.attributes[0].key",
        id="attribute-key-empty",
    ),
    pytest.param(
        publish_request(
            bad_product(
                attributes=[
                    pb.Attribute(key="a", int_value=1),
                    pb.Attribute(key="unset"),
                ]
            )
        ),
        "product.attributes[1]",
        id="attribute-no-value",
    ),
    pytest.param(
        publish_request(bad_product(name="Sencha")),
        "product.product_id",
        id="product-redefined",
    ),
    pytest.param(
        cart_request("AddToCart", pb.AddToCartRequest, product_id="tea", quantity=0),
        "quantity",
        id="add-quantity-zero",
    ),
    pytest.param(
        cart_request("AddToCart", pb.AddToCartRequest, product_id="", quantity=1),
        "product_id",
        id="add-product-id-empty",
    ),
    pytest.param(
        cart_request(
            "RemoveFromCart", pb.RemoveFromCartRequest, product_id="tea", quantity=-1
        ),
        "quantity",
        id="remove-quantity-negative",
    ),
    pytest.param(
        cart_request(
            "RemoveFromCart", pb.RemoveFromCartRequest, product_id="t" * 129, quantity=1
        ),
        "product_id",
        id="remove-product-id-long",
    ),
]


@pytest.fixture
def ids(stub) -> dict[str, str]:
    """Register a producer with one tea on its shelf and a cart holding one tea."""
    producer_id = register(stub, "farm")
    publish(stub, producer_id, quantity=2)
    cart_id = create_cart(stub, "alice").cart_id
    add(stub, cart_id)
    return {"producer": producer_id, "cart": cart_id}


@pytest.mark.parametrize("build, field_name", INVALID_REQUESTS)
def test_invalid_request_names_field(stub, ids, build, field_name):
    method, request = build(ids)
    before = market_state(stub)

    error = call_error(getattr(stub, method), request)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(field_name + " ")
    assert market_state(stub) == before


# NOT_FOUND


def test_publish_unknown_producer_is_not_found(stub, ids):
    request = pb.PublishRequest(producer_id="0" * 32, product=TEA, quantity=1)

    error = call_error(stub.Publish, request)

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "producer_id" in error.details()


def test_publish_empty_producer_is_not_found(stub, ids):
    request = pb.PublishRequest(producer_id="", product=TEA, quantity=1)

    error = call_error(stub.Publish, request)

    assert error.code() == grpc.StatusCode.NOT_FOUND


UNKNOWN_CART_REQUESTS = [
    pytest.param(
        "AddToCart",
        lambda cart_id: pb.AddToCartRequest(cart_id=cart_id, product_id="tea", quantity=1),
        id="add",
    ),
    pytest.param(
        "RemoveFromCart",
        lambda cart_id: pb.RemoveFromCartRequest(
            cart_id=cart_id, product_id="tea", quantity=1
        ),
        id="remove",
    ),
    pytest.param(
        "PlaceOrder", lambda cart_id: pb.PlaceOrderRequest(cart_id=cart_id), id="order"
    ),
]


@pytest.mark.parametrize("method, build", UNKNOWN_CART_REQUESTS)
def test_unknown_cart_is_not_found(stub, ids, method, build):
    before = market_state(stub)

    error = call_error(getattr(stub, method), build("f" * 32))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "cart_id" in error.details()
    assert market_state(stub) == before


@pytest.mark.parametrize("method, build", UNKNOWN_CART_REQUESTS)
def test_producer_id_as_cart_is_not_found(stub, ids, method, build):
    error = call_error(getattr(stub, method), build(ids["producer"]))

    assert error.code() == grpc.StatusCode.NOT_FOUND


# FAILED_PRECONDITION


@pytest.mark.parametrize("method, build", UNKNOWN_CART_REQUESTS)
def test_ordered_cart_is_failed_precondition(stub, method, build):
    publish(stub, register(stub), quantity=2)
    cart = create_cart(stub, "alice")
    add(stub, cart.cart_id)
    place_order(stub, cart.cart_id)
    before = market_state(stub)

    error = call_error(getattr(stub, method), build(cart.cart_id))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert cart.cart_label in error.details()
    assert market_state(stub) == before


# Secrets


def secret_ids(stub) -> list[str]:
    """Fill the market with two shelves, an open and an ordered cart.

    Returns the secret ids of both producers and both carts.
    """
    farm = register(stub, "farm")
    apiary = register(stub, "apiary")
    publish(stub, farm, quantity=2)
    publish(stub, apiary, product=HONEY, quantity=2)
    open_cart = create_cart(stub, "alice").cart_id
    add(stub, open_cart)
    ordered_cart = create_cart(stub, "bob").cart_id
    add(stub, ordered_cart, product_id="honey")
    place_order(stub, ordered_cart)
    return [farm, apiary, open_cart, ordered_cart]


def test_market_state_hides_secret_ids(stub):
    secrets = secret_ids(stub)

    state = market_state(stub)
    text = str(state)
    encoded = state.SerializeToString()

    for secret in secrets:
        assert secret not in text
        assert secret.encode() not in encoded


def test_error_details_hide_secret_ids(stub):
    secrets = secret_ids(stub)
    farm, _, open_cart, ordered_cart = secrets
    failing_calls = [
        (stub.Publish, pb.PublishRequest(producer_id=farm, quantity=0, product=TEA)),
        (stub.Publish, pb.PublishRequest(producer_id=farm, quantity=1)),
        (
            stub.Publish,
            pb.PublishRequest(
                producer_id=farm, quantity=1, product=bad_product(name="Sencha")
            ),
        ),
        (stub.Publish, pb.PublishRequest(producer_id=open_cart, quantity=1, product=TEA)),
        (
            stub.AddToCart,
            pb.AddToCartRequest(cart_id=open_cart, product_id="", quantity=1),
        ),
        (
            stub.AddToCart,
            pb.AddToCartRequest(cart_id=farm, product_id="tea", quantity=1),
        ),
        (
            stub.AddToCart,
            pb.AddToCartRequest(cart_id=ordered_cart, product_id="tea", quantity=1),
        ),
        (
            stub.RemoveFromCart,
            pb.RemoveFromCartRequest(cart_id=ordered_cart, product_id="tea", quantity=1),
        ),
        (stub.PlaceOrder, pb.PlaceOrderRequest(cart_id=ordered_cart)),
        (stub.PlaceOrder, pb.PlaceOrderRequest(cart_id=farm)),
    ]

    details = [call_error(method, request).details() for method, request in failing_calls]

    for text in details:
        for secret in secrets:
            assert secret not in text


def test_logs_hide_secret_ids(stub, caplog):
    caplog.set_level(logging.DEBUG)

    secrets = secret_ids(stub)
    cart_id = create_cart(stub, "carol").cart_id
    secrets.append(cart_id)
    add(stub, cart_id, product_id="missing")
    remove(stub, cart_id, product_id="missing")
    publish(stub, secrets[0], quantity=3)
    ordered_cart = secrets[3]
    call_error(
        stub.AddToCart,
        pb.AddToCartRequest(cart_id=ordered_cart, product_id="tea", quantity=1),
    )
    call_error(
        stub.Publish, pb.PublishRequest(producer_id=secrets[0], quantity=0, product=TEA)
    )

    assert caplog.records
    for record in caplog.records:
        for secret in secrets:
            assert secret not in record.getMessage()
