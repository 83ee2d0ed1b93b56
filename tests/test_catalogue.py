"""The catalogue (ListProducts, SearchProducts), GetMarketState paging and Withdraw."""

from __future__ import annotations

import base64
import math

import grpc
import pytest

from marketplace.v1 import marketplace_pb2 as pb
from marketplace_server import core

CALL_TIMEOUT = 30
# gRPC clients reject a received message above 4 MiB by default.
CLIENT_RECEIVE_LIMIT = 4 * 1024 * 1024


@pytest.fixture
def market() -> core.Market:
    return core.Market(capacity=100)


def money(units: int, nanos: int = 0) -> pb.Money:
    return pb.Money(units=units, nanos=nanos)


def product(product_id, kind, name, price, **attributes) -> pb.Product:
    message = pb.Product(product_id=product_id, kind=kind, name=name, price=price)
    for key, value in attributes.items():
        attribute = message.attributes.add(key=key)
        if isinstance(value, bool):
            attribute.bool_value = value
        elif isinstance(value, int):
            attribute.int_value = value
        elif isinstance(value, float):
            attribute.float_value = value
        else:
            attribute.string_value = value
    return message


# In the order of their first publish.
CATALOGUE = [
    product("tea-1", "Tea", "Sencha", money(0, 100_000_000), type="Green"),
    product(
        "coffee-1", "Coffee", "Indonezia", money(1), acidity=5.05, roast_level="MEDIUM"
    ),
    product("tea-2", "Tea", "Linden", money(9), type="Herbal"),
    product(
        "honey-1", "Honey", "Acacia", money(7, 500_000_000), grams=250, organic=True
    ),
    product("coffee-2", "Coffee", "Arabica", money(7, 250_000_000), roast_level="DARK"),
    product("tea-3", "Tea", "Kabuse SENCHA", money(12, 500_000_000), type="Green"),
    product("jam-1", "Jam", "Apricot", money(4), organic=False),
]
IDS = [p.product_id for p in CATALOGUE]


def register(stub, name: str) -> str:
    return stub.RegisterProducer(
        pb.RegisterProducerRequest(name=name), timeout=CALL_TIMEOUT
    ).producer_id


def publish(stub, producer_id: str, message: pb.Product, quantity: int = 1):
    return stub.Publish(
        pb.PublishRequest(producer_id=producer_id, product=message, quantity=quantity),
        timeout=CALL_TIMEOUT,
    )


@pytest.fixture
def catalogue(stub):
    producer_id = register(stub, "prod1")
    for message in CATALOGUE:
        publish(stub, producer_id, message)
    # Publishing a product again does not list it twice.
    publish(stub, producer_id, CATALOGUE[0])
    return stub


def list_pages(stub, page_size: int) -> list[pb.ListProductsResponse]:
    pages = [
        stub.ListProducts(
            pb.ListProductsRequest(page_size=page_size), timeout=CALL_TIMEOUT
        )
    ]
    while pages[-1].next_page_token and len(pages) <= len(IDS):
        request = pb.ListProductsRequest(
            page_size=page_size, page_token=pages[-1].next_page_token
        )
        pages.append(stub.ListProducts(request, timeout=CALL_TIMEOUT))
    return pages


def search_ids(stub, page_size: int = 0, **filters) -> list[str]:
    """Return the ids of every match, following page tokens."""
    ids: list[str] = []
    token = ""
    for _ in range(len(IDS) + 2):
        request = pb.SearchProductsRequest(
            page_size=page_size, page_token=token, **filters
        )
        response = stub.SearchProducts(request, timeout=CALL_TIMEOUT)
        ids.extend(p.product_id for p in response.products)
        token = response.next_page_token
        if not token:
            return ids
    pytest.fail(f"SearchProducts {filters} returned more pages than products")


def rpc_error(method, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        method(request, timeout=CALL_TIMEOUT)
    return raised.value


# ListProducts.


@pytest.mark.parametrize("page_size", range(1, len(IDS) + 2))
def test_list_pages_cover_catalogue(catalogue, page_size):
    pages = list_pages(catalogue, page_size)
    ids = [p.product_id for page in pages for p in page.products]

    assert ids == IDS
    assert len(pages) == math.ceil(len(IDS) / page_size)
    assert pages[-1].next_page_token == ""
    assert all(page.next_page_token for page in pages[:-1])


def test_list_default_page_holds_all(catalogue):
    response = catalogue.ListProducts(pb.ListProductsRequest(), timeout=CALL_TIMEOUT)

    assert [p.product_id for p in response.products] == IDS
    assert response.next_page_token == ""


def test_list_returns_product_data(catalogue):
    response = catalogue.ListProducts(pb.ListProductsRequest(), timeout=CALL_TIMEOUT)

    assert list(response.products) == CATALOGUE


def test_list_empty_market(stub):
    response = stub.ListProducts(pb.ListProductsRequest(), timeout=CALL_TIMEOUT)

    assert list(response.products) == []
    assert response.next_page_token == ""


@pytest.mark.parametrize(
    "token",
    [
        "not a token",
        base64.urlsafe_b64encode(b"products:-1").decode(),
        base64.urlsafe_b64encode(b"products:x").decode(),
        base64.urlsafe_b64encode(b"search:2").decode(),
    ],
)
def test_list_malformed_token(catalogue, token):
    error = rpc_error(catalogue.ListProducts, pb.ListProductsRequest(page_token=token))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in error.details()


def test_list_negative_page_size(catalogue):
    error = rpc_error(catalogue.ListProducts, pb.ListProductsRequest(page_size=-1))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in error.details()


# SearchProducts.


@pytest.mark.parametrize(
    "filters, expected",
    [
        ({"kind": "Tea"}, ["tea-1", "tea-2", "tea-3"]),
        ({"kind": "tea"}, []),
        ({"name_contains": "sencha"}, ["tea-1", "tea-3"]),
        ({"name_contains": "SeNcHa"}, ["tea-1", "tea-3"]),
        ({"name_contains": "ar"}, ["coffee-2"]),
        ({"attribute_key": "roast_level"}, ["coffee-1", "coffee-2"]),
        ({"attribute_key": "roast_level", "attribute_value": "MEDIUM"}, ["coffee-1"]),
        ({"attribute_key": "acidity", "attribute_value": "5.05"}, ["coffee-1"]),
        ({"attribute_key": "grams", "attribute_value": "250"}, ["honey-1"]),
        ({"attribute_key": "organic", "attribute_value": "true"}, ["honey-1"]),
        ({"attribute_key": "organic", "attribute_value": "false"}, ["jam-1"]),
        ({"attribute_key": "colour"}, []),
        (
            {"min_price": money(7, 250_000_000), "max_price": money(9)},
            ["tea-2", "honey-1", "coffee-2"],
        ),
        (
            {"min_price": money(0, 100_000_000), "max_price": money(0, 100_000_000)},
            ["tea-1"],
        ),
        ({"min_price": money(9)}, ["tea-2", "tea-3"]),
        ({"max_price": money(1)}, ["tea-1", "coffee-1"]),
        (
            {
                "kind": "Tea",
                "attribute_key": "type",
                "attribute_value": "Green",
                "max_price": money(10),
            },
            ["tea-1"],
        ),
        ({"kind": "Coffee", "name_contains": "a", "min_price": money(2)}, ["coffee-2"]),
        ({}, IDS),
    ],
)
def test_search_filters(catalogue, filters, expected):
    assert search_ids(catalogue, **filters) == expected


@pytest.mark.parametrize("page_size", [1, 2, 3])
@pytest.mark.parametrize(
    "filters",
    [{"kind": "Tea"}, {"name_contains": "a"}, {"attribute_key": "organic"}],
)
def test_search_pages_match_one_page(catalogue, filters, page_size):
    assert search_ids(catalogue, page_size, **filters) == search_ids(
        catalogue, **filters
    )


def test_search_page_size_limits_page(catalogue):
    response = catalogue.SearchProducts(
        pb.SearchProductsRequest(kind="Tea", page_size=2), timeout=CALL_TIMEOUT
    )

    assert [p.product_id for p in response.products] == ["tea-1", "tea-2"]
    assert response.next_page_token != ""


@pytest.mark.parametrize(
    "request_fields, field",
    [
        ({"attribute_value": "Green"}, "attribute_key"),
        ({"min_price": money(5), "max_price": money(4)}, "min_price"),
        ({"page_size": -2}, "page_size"),
        ({"page_token": "garbage"}, "page_token"),
        (
            {"page_token": base64.urlsafe_b64encode(b"products:1").decode()},
            "page_token",
        ),
    ],
)
def test_search_invalid_request(catalogue, request_fields, field):
    error = rpc_error(
        catalogue.SearchProducts, pb.SearchProductsRequest(**request_fields)
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.details()


# Withdraw.


def state(stub) -> pb.GetMarketStateResponse:
    return stub.GetMarketState(pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT)


def shelf_items(stub, producer: str) -> dict[str, int]:
    for shelf in state(stub).shelves:
        if shelf.producer == producer:
            return {c.product_id: c.quantity for c in shelf.items}
    pytest.fail(f"no shelf of {producer}")


def withdraw(stub, producer_id: str, product_id: str, quantity: int):
    return stub.Withdraw(
        pb.WithdrawRequest(
            producer_id=producer_id, product_id=product_id, quantity=quantity
        ),
        timeout=CALL_TIMEOUT,
    )


def test_withdraw_from_own_shelf(stub):
    producer_id = register(stub, "prod1")
    publish(stub, producer_id, CATALOGUE[0], 5)

    response = withdraw(stub, producer_id, "tea-1", 2)

    assert response.withdrawn == 2
    assert response.shelf_size == 3
    assert shelf_items(stub, "prod1") == {"tea-1": 3}
    assert state(stub).items_withdrawn == 2


def test_withdraw_more_than_held(stub):
    producer_id = register(stub, "prod1")
    publish(stub, producer_id, CATALOGUE[0], 2)
    publish(stub, producer_id, CATALOGUE[1], 1)

    response = withdraw(stub, producer_id, "tea-1", 5)

    assert response.withdrawn == 2
    assert response.shelf_size == 1
    assert shelf_items(stub, "prod1") == {"coffee-1": 1}


def test_withdraw_absent_product(stub):
    producer_id = register(stub, "prod1")
    publish(stub, producer_id, CATALOGUE[0], 2)

    response = withdraw(stub, producer_id, "never-published", 1)

    assert response.withdrawn == 0
    assert response.shelf_size == 2
    assert state(stub).items_withdrawn == 0


def test_withdrawn_items_leave_market(stub):
    producer_id = register(stub, "prod1")
    publish(stub, producer_id, CATALOGUE[0], 2)
    withdraw(stub, producer_id, "tea-1", 2)
    cart_id = stub.CreateCart(
        pb.CreateCartRequest(consumer="cons1"), timeout=CALL_TIMEOUT
    ).cart_id

    added = stub.AddToCart(
        pb.AddToCartRequest(cart_id=cart_id, product_id="tea-1", quantity=1),
        timeout=CALL_TIMEOUT,
    ).added

    assert added == 0


def test_withdraw_only_own_shelf(stub):
    first = register(stub, "prod1")
    second = register(stub, "prod2")
    publish(stub, first, CATALOGUE[0], 4)
    publish(stub, first, CATALOGUE[1], 2)
    publish(stub, second, CATALOGUE[0], 1)

    other = withdraw(stub, second, "coffee-1", 2)
    own = withdraw(stub, second, "tea-1", 3)

    assert other.withdrawn == 0
    assert own.withdrawn == 1
    assert own.shelf_size == 0
    assert shelf_items(stub, "prod1") == {"tea-1": 4, "coffee-1": 2}
    assert state(stub).items_withdrawn == 1


def test_withdraw_unknown_producer(stub):
    error = rpc_error(
        stub.Withdraw,
        pb.WithdrawRequest(producer_id="0" * 32, product_id="tea-1", quantity=1),
    )

    assert error.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("quantity", [0, -1])
def test_withdraw_invalid_quantity(stub, quantity):
    producer_id = register(stub, "prod1")

    error = rpc_error(
        stub.Withdraw,
        pb.WithdrawRequest(
            producer_id=producer_id, product_id="tea-1", quantity=quantity
        ),
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "quantity" in error.details()


def test_withdraw_keeps_conservation(stub):
    first = register(stub, "prod1")
    second = register(stub, "prod2")
    publish(stub, first, CATALOGUE[0], 6)
    publish(stub, second, CATALOGUE[0], 3)
    publish(stub, second, CATALOGUE[1], 4)
    ordered_cart = stub.CreateCart(
        pb.CreateCartRequest(consumer="a"), timeout=CALL_TIMEOUT
    )
    open_cart = stub.CreateCart(
        pb.CreateCartRequest(consumer="b"), timeout=CALL_TIMEOUT
    )
    for cart, product_id, quantity in [
        (ordered_cart, "tea-1", 7),
        (ordered_cart, "coffee-1", 1),
        (open_cart, "coffee-1", 2),
    ]:
        stub.AddToCart(
            pb.AddToCartRequest(
                cart_id=cart.cart_id, product_id=product_id, quantity=quantity
            ),
            timeout=CALL_TIMEOUT,
        )
    stub.PlaceOrder(
        pb.PlaceOrderRequest(cart_id=ordered_cart.cart_id), timeout=CALL_TIMEOUT
    )
    withdraw(stub, second, "tea-1", 5)
    withdraw(stub, second, "coffee-1", 5)
    stub.RemoveFromCart(
        pb.RemoveFromCartRequest(
            cart_id=open_cart.cart_id, product_id="coffee-1", quantity=1
        ),
        timeout=CALL_TIMEOUT,
    )

    totals = state(stub)
    on_shelves = sum(s.size for s in totals.shelves)
    in_carts = sum(c.quantity for cart in totals.carts for c in cart.items)

    # 13 items published and 8 ordered. Withdrawn: 2 tea and 1 coffee. One
    # coffee is in the open cart and 1 is back on prod2's shelf.
    assert totals.items_published == 13
    assert totals.items_ordered == 8
    assert totals.items_withdrawn == 3
    assert (on_shelves, in_carts) == (1, 1)
    assert totals.items_published == (
        on_shelves + in_carts + totals.items_ordered + totals.items_withdrawn
    )


# GetMarketState paging over a large market.

PRODUCERS = 100
PRODUCTS_PER_PRODUCER = 10
CARTS = 10_000
ITEMS_PER_CART = 20
PRODUCTS = PRODUCERS * PRODUCTS_PER_PRODUCER
# Items published of each product: what the carts take, and 5 left on shelves.
PER_PRODUCT = CARTS * ITEMS_PER_CART // PRODUCTS + 5


class TestLargeMarketState:
    """10,000 open carts holding 20 of 1,000 products each, on 100 shelves."""

    @pytest.fixture(scope="class")
    @classmethod
    def market(cls) -> core.Market:
        market = core.Market(capacity=10_000, limits=core.Limits(max_open_carts=CARTS))
        for p in range(PRODUCERS):
            producer_id = market.register_producer(f"producer-{p:03d}")
            for k in range(PRODUCTS_PER_PRODUCER):
                number = p * PRODUCTS_PER_PRODUCER + k
                item = core.Product(
                    f"catalogue-item-{number:04d}",
                    f"Kind{number:04d}",
                    f"Product {number}",
                    core.Money(number, 500_000_000),
                )
                market.publish(producer_id, item, PER_PRODUCT)
        for c in range(CARTS):
            cart_id, _ = market.create_cart(f"consumer-{c:05d}")
            # 20 distinct products, and every product in 200 carts.
            for j in range(ITEMS_PER_CART):
                number = (c + j * 50) % PRODUCTS
                market.add_to_cart(cart_id, f"catalogue-item-{number:04d}", 1)
        return market

    def read_all_pages(self, stub, page_size: int) -> list[pb.GetMarketStateResponse]:
        pages = []
        token = ""
        for _ in range(PRODUCERS + CARTS + 1):
            request = pb.GetMarketStateRequest(page_size=page_size, page_token=token)
            pages.append(stub.GetMarketState(request, timeout=CALL_TIMEOUT))
            token = pages[-1].next_page_token
            if not token:
                return pages
        pytest.fail("GetMarketState returned more pages than shelves and carts")

    @pytest.mark.parametrize("page_size", [0, 10_000])
    def test_pages_cover_market_once(self, stub, market, page_size):
        pages = self.read_all_pages(stub, page_size)
        producers = [s.producer for page in pages for s in page.shelves]
        labels = [c.cart_label for page in pages for c in page.carts]
        expected = market.snapshot()

        assert len(pages) > 1
        assert producers == [s.producer for s in expected.shelves]
        assert labels == [c.cart_label for c in expected.carts]
        assert len(set(labels)) == CARTS

    @pytest.mark.parametrize("page_size", [0, 10_000])
    def test_pages_under_size_limit(self, stub, page_size):
        pages = self.read_all_pages(stub, page_size)

        assert max(page.ByteSize() for page in pages) < CLIENT_RECEIVE_LIMIT * 3 // 4

    def test_page_totals(self, stub):
        pages = self.read_all_pages(stub, 0)

        assert {page.total_shelves for page in pages} == {PRODUCERS}
        assert {page.total_carts for page in pages} == {CARTS}
        assert {page.items_published for page in pages} == {PRODUCTS * PER_PRODUCT}

    def test_cart_contents_complete(self, stub, market):
        pages = self.read_all_pages(stub, 10_000)
        in_carts = sum(
            c.quantity for page in pages for cart in page.carts for c in cart.items
        )
        on_shelves = sum(s.size for page in pages for s in page.shelves)

        assert in_carts == CARTS * ITEMS_PER_CART
        assert on_shelves + in_carts == pages[0].items_published

    def test_large_page_cut_by_size(self, stub):
        first = stub.GetMarketState(
            pb.GetMarketStateRequest(page_size=10_000), timeout=CALL_TIMEOUT
        )

        assert len(first.shelves) == PRODUCERS
        assert 0 < len(first.carts) < CARTS - PRODUCERS
        assert first.next_page_token != ""
