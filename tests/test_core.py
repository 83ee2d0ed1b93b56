"""The market's rules, tested on core.Market directly with no gRPC."""

from __future__ import annotations

import math

import pytest

from marketplace_server import core
from marketplace_server.core import Money, Product

TEA = Product("tea", "Tea", "Linden", Money(9), (("type", "Herbal"),))
COFFEE = Product(
    "coffee",
    "Coffee",
    "Indonezia",
    Money(1),
    (("acidity", 5.05), ("roast_level", "MEDIUM")),
)


def shelf_items(market: core.Market, producer: str) -> dict[str, int]:
    """Return the items per product on the shelf of the producer named `producer`."""
    for shelf in market.snapshot().shelves:
        if shelf.producer == producer:
            return shelf.items
    raise AssertionError(f"no shelf for producer {producer!r}")


def shelf_size(market: core.Market, producer: str) -> int:
    for shelf in market.snapshot().shelves:
        if shelf.producer == producer:
            return shelf.size
    raise AssertionError(f"no shelf for producer {producer!r}")


def cart_items(market: core.Market, label: str) -> dict[str, int]:
    for cart in market.snapshot().carts:
        if cart.cart_label == label:
            return cart.items
    raise AssertionError(f"no open cart labelled {label!r}")


def items_held(state: core.MarketState) -> int:
    """Return the items on shelves, in open carts and in placed orders."""
    on_shelves = sum(sum(shelf.items.values()) for shelf in state.shelves)
    in_carts = sum(sum(cart.items.values()) for cart in state.carts)
    return on_shelves + in_carts + state.items_ordered


# Shelf capacity


def test_publish_fills_shelf_to_capacity():
    market = core.Market(capacity=3)
    producer = market.register_producer("p")

    results = [market.publish(producer, TEA, 1) for _ in range(3)]

    assert [r.published for r in results] == [1, 1, 1]
    assert [r.shelf_size for r in results] == [1, 2, 3]


def test_publish_at_capacity_publishes_nothing():
    market = core.Market(capacity=2)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 2)

    result = market.publish(producer, TEA, 1)

    assert result.published == 0
    assert result.shelf_size == 2
    assert market.snapshot().items_published == 2


def test_publish_quantity_partly_fits():
    market = core.Market(capacity=5)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 2)

    result = market.publish(producer, COFFEE, 10)

    assert result.published == 3
    assert result.shelf_size == 5
    assert shelf_items(market, "p") == {"tea": 2, "coffee": 3}


def test_capacity_is_per_shelf():
    market = core.Market(capacity=2)
    first = market.register_producer("first")
    second = market.register_producer("second")
    market.publish(first, TEA, 2)

    result = market.publish(second, TEA, 2)

    assert result.published == 2
    assert shelf_size(market, "second") == 2


def test_register_producer_starts_empty_shelf():
    market = core.Market(capacity=4)
    market.register_producer("p")

    shelf = market.snapshot().shelves[0]

    assert shelf.producer == "p"
    assert shelf.capacity == 4
    assert shelf.size == 0
    assert shelf.items == {}


def test_register_producer_ids_differ():
    market = core.Market(capacity=1)

    first = market.register_producer("same")
    second = market.register_producer("same")

    assert first != second
    assert len(market.snapshot().shelves) == 2


@pytest.mark.parametrize("capacity", [0, -1, core.MAX_QUANTITY + 1, True, 2.0])
def test_market_rejects_bad_capacity(capacity):
    with pytest.raises(core.InvalidArgument, match="capacity"):
        core.Market(capacity=capacity)


# Adding to carts


def test_add_takes_from_any_shelf():
    market = core.Market(capacity=2)
    first = market.register_producer("first")
    second = market.register_producer("second")
    market.publish(first, TEA, 2)
    market.publish(second, TEA, 2)
    cart, label = market.create_cart("c")

    added = market.add_to_cart(cart, "tea", 3)

    assert added == 3
    assert cart_items(market, label) == {"tea": 3}
    assert shelf_size(market, "first") + shelf_size(market, "second") == 1


def test_add_missing_product_adds_nothing():
    market = core.Market(capacity=2)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 1)
    cart, label = market.create_cart("c")

    added = market.add_to_cart(cart, "coffee", 1)

    assert added == 0
    assert cart_items(market, label) == {}


def test_add_unpublished_id_adds_nothing():
    market = core.Market(capacity=2)
    cart, _ = market.create_cart("c")

    assert market.add_to_cart(cart, "never-published", 1) == 0


def test_add_more_than_available_adds_all():
    market = core.Market(capacity=5)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 2)
    cart, label = market.create_cart("c")

    added = market.add_to_cart(cart, "tea", 4)

    assert added == 2
    assert cart_items(market, label) == {"tea": 2}
    assert shelf_items(market, "p") == {}


def test_add_frees_room_for_publish():
    market = core.Market(capacity=1)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 1)
    cart, _ = market.create_cart("c")
    market.add_to_cart(cart, "tea", 1)

    result = market.publish(producer, TEA, 1)

    assert result.published == 1


def test_cart_labels_name_consumer():
    market = core.Market(capacity=1)

    _, first = market.create_cart("alice")
    _, second = market.create_cart("bob")
    _, third = market.create_cart("alice")

    assert first.startswith("alice/")
    assert second.startswith("bob/")
    assert len({first, second, third}) == 3


def test_cart_ids_are_not_labels():
    market = core.Market(capacity=1)

    cart, label = market.create_cart("alice")

    assert cart != label
    assert "alice" not in cart


# Removing from carts


def test_remove_returns_item_to_origin_shelf():
    market = core.Market(capacity=2)
    first = market.register_producer("first")
    second = market.register_producer("second")
    market.publish(first, TEA, 1)
    cart, _ = market.create_cart("c")
    market.add_to_cart(cart, "tea", 1)
    market.publish(second, TEA, 1)

    result = market.remove_from_cart(cart, "tea", 1)

    assert result.removed == 1
    assert shelf_items(market, "first") == {"tea": 1}
    assert shelf_items(market, "second") == {"tea": 1}


def test_remove_to_full_origin_shelf():
    market = core.Market(capacity=2)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 2)
    cart, _ = market.create_cart("c")
    market.add_to_cart(cart, "tea", 2)
    market.publish(producer, COFFEE, 2)

    result = market.remove_from_cart(cart, "tea", 2)

    assert result.removed == 2
    assert shelf_size(market, "p") == 4
    assert shelf_items(market, "p") == {"coffee": 2, "tea": 2}


def test_over_capacity_shelf_blocks_publish():
    market = core.Market(capacity=2)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 2)
    cart, _ = market.create_cart("c")
    market.add_to_cart(cart, "tea", 2)
    market.publish(producer, COFFEE, 2)
    market.remove_from_cart(cart, "tea", 2)

    over_capacity = market.publish(producer, COFFEE, 1)
    other_cart, _ = market.create_cart("d")
    market.add_to_cart(other_cart, "coffee", 2)
    at_capacity = market.publish(producer, COFFEE, 1)
    market.add_to_cart(other_cart, "tea", 1)
    accepted = market.publish(producer, COFFEE, 1)

    assert over_capacity.published == 0
    assert over_capacity.shelf_size == 4
    assert at_capacity.published == 0
    assert at_capacity.shelf_size == 2
    assert accepted.published == 1
    assert accepted.shelf_size == 2


def test_remove_splits_across_origin_shelves():
    market = core.Market(capacity=3)
    first = market.register_producer("first")
    second = market.register_producer("second")
    market.publish(first, TEA, 2)
    market.publish(second, TEA, 2)
    cart, label = market.create_cart("c")
    market.add_to_cart(cart, "tea", 4)

    result = market.remove_from_cart(cart, "tea", 4)

    assert result.removed == 4
    assert shelf_items(market, "first") == {"tea": 2}
    assert shelf_items(market, "second") == {"tea": 2}
    assert cart_items(market, label) == {}


def test_remove_more_than_held_reports_missing():
    market = core.Market(capacity=3)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 2)
    cart, label = market.create_cart("c")
    market.add_to_cart(cart, "tea", 2)

    result = market.remove_from_cart(cart, "tea", 5)

    assert result.removed == 2
    assert result.missing == 3
    assert cart_items(market, label) == {}
    assert shelf_items(market, "p") == {"tea": 2}


def test_remove_absent_product_reports_missing():
    market = core.Market(capacity=3)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 1)
    cart, label = market.create_cart("c")
    market.add_to_cart(cart, "tea", 1)

    result = market.remove_from_cart(cart, "coffee", 2)

    assert result.removed == 0
    assert result.missing == 2
    assert cart_items(market, label) == {"tea": 1}


def test_removed_item_can_be_added_again():
    market = core.Market(capacity=1)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 1)
    first, _ = market.create_cart("a")
    second, label = market.create_cart("b")
    market.add_to_cart(first, "tea", 1)
    market.remove_from_cart(first, "tea", 1)

    added = market.add_to_cart(second, "tea", 1)

    assert added == 1
    assert cart_items(market, label) == {"tea": 1}


# Orders


def test_order_returns_lines_in_add_order():
    market = core.Market(capacity=5)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 2)
    market.publish(producer, COFFEE, 3)
    cart, label = market.create_cart("c")
    market.add_to_cart(cart, "coffee", 3)
    market.add_to_cart(cart, "tea", 2)
    market.remove_from_cart(cart, "coffee", 1)

    order = market.place_order(cart)

    assert order.cart_label == label
    assert order.consumer == "c"
    assert order.lines == [(COFFEE, 2), (TEA, 2)]
    assert order.total == Money(2 * 1 + 2 * 9)


def test_order_total_carries_nanos():
    market = core.Market(capacity=5)
    producer = market.register_producer("p")
    cheap = Product("cheap", "Gum", "Mint", Money(0, 600_000_000))
    market.publish(producer, cheap, 3)
    cart, _ = market.create_cart("c")
    market.add_to_cart(cart, "cheap", 3)

    order = market.place_order(cart)

    assert order.total == Money(1, 800_000_000)


def test_empty_cart_order_has_no_lines():
    market = core.Market(capacity=1)
    cart, label = market.create_cart("c")

    order = market.place_order(cart)

    assert order.lines == []
    assert order.total == Money(0)
    assert order.cart_label == label
    assert market.snapshot().orders == 1


def test_order_closes_cart():
    market = core.Market(capacity=2)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 2)
    cart, _ = market.create_cart("c")
    market.add_to_cart(cart, "tea", 2)

    market.place_order(cart)
    state = market.snapshot()

    assert state.carts == []
    assert state.orders == 1
    assert state.items_ordered == 2


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(lambda m, cart: m.add_to_cart(cart, "tea", 1), id="add"),
        pytest.param(lambda m, cart: m.remove_from_cart(cart, "tea", 1), id="remove"),
        pytest.param(lambda m, cart: m.place_order(cart), id="order"),
    ],
)
def test_ordered_cart_is_failed_precondition(operation):
    market = core.Market(capacity=2)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 2)
    cart, label = market.create_cart("c")
    market.place_order(cart)
    before = market.snapshot()

    with pytest.raises(core.FailedPrecondition, match=label):
        operation(market, cart)
    assert market.snapshot() == before


def test_ordered_cart_label_still_known():
    market = core.Market(capacity=1)
    cart, label = market.create_cart("c")
    market.place_order(cart)

    assert market.cart_label(cart) == label


# Unknown ids


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(lambda m: m.publish("unknown", TEA, 1), id="publish"),
        pytest.param(lambda m: m.producer_name("unknown"), id="producer_name"),
        pytest.param(lambda m: m.add_to_cart("unknown", "tea", 1), id="add"),
        pytest.param(lambda m: m.remove_from_cart("unknown", "tea", 1), id="remove"),
        pytest.param(lambda m: m.place_order("unknown"), id="order"),
    ],
)
def test_unknown_id_is_not_found(operation):
    market = core.Market(capacity=1)
    market.register_producer("p")
    market.create_cart("c")
    before = market.snapshot()

    with pytest.raises(core.NotFound):
        operation(market)
    assert market.snapshot() == before


def test_producer_id_is_not_cart_id():
    market = core.Market(capacity=1)
    producer = market.register_producer("p")

    with pytest.raises(core.NotFound):
        market.add_to_cart(producer, "tea", 1)


def test_unknown_producer_defines_no_product():
    market = core.Market(capacity=2)
    producer = market.register_producer("p")
    with pytest.raises(core.NotFound):
        market.publish("unknown", TEA, 1)
    other = Product("tea", "Tea", "Other", Money(1))

    result = market.publish(producer, other, 1)

    assert result.published == 1


# Product kinds and definitions


def test_new_kind_with_typed_attributes():
    market = core.Market(capacity=2)
    producer = market.register_producer("apiary")
    honey = Product(
        "honey",
        "Honey",
        "Acacia",
        Money(7, 500_000_000, "EUR"),
        (("origin", "Hungary"), ("grams", 250), ("water", 17.5), ("organic", True)),
    )
    market.publish(producer, honey, 1)
    cart, _ = market.create_cart("c")
    market.add_to_cart(cart, "honey", 1)

    order = market.place_order(cart)
    [(product, count)] = order.lines

    assert product == honey
    assert count == 1
    assert [type(value) for _, value in product.attributes] == [str, int, float, bool]
    assert order.total == Money(7, 500_000_000, "EUR")


def test_same_definition_publishes_again():
    market = core.Market(capacity=3)
    first = market.register_producer("first")
    second = market.register_producer("second")
    market.publish(first, TEA, 1)
    copy_of_tea = Product(
        "tea", "Tea", "Linden", Money(9), (("type", "Herbal"),)
    )

    result = market.publish(second, copy_of_tea, 1)

    assert result.published == 1


@pytest.mark.parametrize(
    "redefined",
    [
        pytest.param(Product("tea", "Coffee", "Linden", Money(9), TEA.attributes), id="kind"),
        pytest.param(Product("tea", "Tea", "Sencha", Money(9), TEA.attributes), id="name"),
        pytest.param(Product("tea", "Tea", "Linden", Money(8), TEA.attributes), id="units"),
        pytest.param(
            Product("tea", "Tea", "Linden", Money(9, 1), TEA.attributes), id="nanos"
        ),
        pytest.param(
            Product("tea", "Tea", "Linden", Money(9, 0, "EUR"), TEA.attributes),
            id="currency",
        ),
        pytest.param(Product("tea", "Tea", "Linden", Money(9)), id="no-attributes"),
        pytest.param(
            Product("tea", "Tea", "Linden", Money(9), (("type", "Green"),)),
            id="attribute-value",
        ),
        pytest.param(
            Product(
                "tea", "Tea", "Linden", Money(9), (("type", "Herbal"), ("bio", True))
            ),
            id="extra-attribute",
        ),
    ],
)
def test_conflicting_redefinition_is_invalid(redefined):
    market = core.Market(capacity=3)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 1)
    before = market.snapshot()

    with pytest.raises(core.InvalidArgument, match="product.product_id 'tea'"):
        market.publish(producer, redefined, 1)
    assert market.snapshot() == before


@pytest.mark.parametrize(
    "first_value, second_value",
    [(1, True), (1, 1.0), (0, False), (True, 1.0)],
    ids=["int-bool", "int-float", "int-zero-bool", "bool-float"],
)
def test_attribute_type_change_is_invalid(first_value, second_value):
    market = core.Market(capacity=3)
    producer = market.register_producer("p")
    first = Product("x", "Kind", "X", Money(1), (("flag", first_value),))
    second = Product("x", "Kind", "X", Money(1), (("flag", second_value),))
    market.publish(producer, first, 1)

    with pytest.raises(core.InvalidArgument, match="product.product_id 'x'"):
        market.publish(producer, second, 1)


def test_redefinition_on_full_shelf_is_invalid():
    market = core.Market(capacity=1)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 1)

    with pytest.raises(core.InvalidArgument):
        market.publish(producer, Product("tea", "Tea", "Sencha", Money(9)), 1)


# Quantities


@pytest.mark.parametrize("quantity", [1, 2, 7])
def test_quantities_move_that_many_items(quantity):
    market = core.Market(capacity=10)
    producer = market.register_producer("p")

    published = market.publish(producer, TEA, quantity).published
    cart, label = market.create_cart("c")
    added = market.add_to_cart(cart, "tea", quantity)
    after_add = cart_items(market, label)
    removed = market.remove_from_cart(cart, "tea", quantity)

    assert published == quantity
    assert added == quantity
    assert after_add == {"tea": quantity}
    assert removed.removed == quantity
    assert removed.missing == 0
    assert shelf_items(market, "p") == {"tea": quantity}


BAD_QUANTITIES = [
    pytest.param(0, "out of range", id="zero"),
    pytest.param(-1, "out of range", id="negative"),
    pytest.param(core.MAX_QUANTITY + 1, "out of range", id="too-big"),
    pytest.param(True, "not an integer", id="bool"),
    pytest.param(1.0, "not an integer", id="float"),
    pytest.param("1", "not an integer", id="string"),
]


@pytest.mark.parametrize("quantity, problem", BAD_QUANTITIES)
@pytest.mark.parametrize("operation", ["publish", "add", "remove"])
def test_bad_quantity_is_invalid(operation, quantity, problem):
    market = core.Market(capacity=3)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 2)
    cart, _ = market.create_cart("c")
    market.add_to_cart(cart, "tea", 1)
    before = market.snapshot()

    with pytest.raises(core.InvalidArgument) as raised:
        if operation == "publish":
            market.publish(producer, TEA, quantity)
        elif operation == "add":
            market.add_to_cart(cart, "tea", quantity)
        else:
            market.remove_from_cart(cart, "tea", quantity)

    assert str(raised.value).startswith("quantity ")
    assert problem in str(raised.value)
    assert market.snapshot() == before


def test_max_quantity_is_accepted():
    market = core.Market(capacity=core.MAX_QUANTITY)
    producer = market.register_producer("p")

    result = market.publish(producer, TEA, core.MAX_QUANTITY)

    assert result.published == core.MAX_QUANTITY


# Validation of names and products


def with_price(**fields) -> Product:
    return Product("x", "Kind", "X", Money(**{"units": 1, **fields}))


def with_attributes(*attributes) -> Product:
    return Product("x", "Kind", "X", Money(1), tuple(attributes))


BAD_PRODUCTS = [
    pytest.param(Product("", "Kind", "X", Money(1)), "product.product_id", id="empty-id"),
    pytest.param(
        Product("x" * (core.MAX_NAME_LENGTH + 1), "Kind", "X", Money(1)),
        "product.product_id",
        id="long-id",
    ),
    pytest.param(Product("x", "", "X", Money(1)), "product.kind", id="empty-kind"),
    pytest.param(
        Product("x", "K" * (core.MAX_KIND_LENGTH + 1), "X", Money(1)),
        "product.kind",
        id="long-kind",
    ),
    pytest.param(Product("x", "Kind", "", Money(1)), "product.name", id="empty-name"),
    pytest.param(
        Product("x", "Kind", "N" * (core.MAX_PRODUCT_NAME_LENGTH + 1), Money(1)),
        "product.name",
        id="long-name",
    ),
    pytest.param(with_price(units=-1), "product.price.units", id="negative-units"),
    pytest.param(
        with_price(units=core.MAX_PRICE_UNITS + 1),
        "product.price.units",
        id="huge-units",
    ),
    pytest.param(with_price(nanos=-1), "product.price.nanos", id="negative-nanos"),
    pytest.param(
        with_price(nanos=core.NANOS_PER_UNIT), "product.price.nanos", id="nanos-one-unit"
    ),
    pytest.param(
        with_price(currency_code="eur"), "product.price.currency_code", id="lowercase"
    ),
    pytest.param(
        with_price(currency_code="EURO"), "product.price.currency_code", id="four-letters"
    ),
    pytest.param(
        with_price(currency_code="E1R"), "product.price.currency_code", id="digit"
    ),
    pytest.param(
        with_price(currency_code="ÉUR"), "product.price.currency_code", id="non-ascii"
    ),
    pytest.param(
        with_attributes(("a", 1), ("a", 2)), "product.attributes[1].key", id="duplicate-key"
    ),
    pytest.param(
        with_attributes(("name", "x")), "product.attributes[0].key", id="reserved-name"
    ),
    pytest.param(
        with_attributes(("price", 2)), "product.attributes[0].key", id="reserved-price"
    ),
    pytest.param(with_attributes(("", 1)), "product.attributes[0].key", id="empty-key"),
    pytest.param(
        with_attributes(("k" * (core.MAX_ATTRIBUTE_KEY_LENGTH + 1), 1)),
        "product.attributes[0].key",
        id="long-key",
    ),
    pytest.param(
        with_attributes(("ok", 1), ("ratio", math.nan)),
        "product.attributes[1]",
        id="nan",
    ),
    pytest.param(
        with_attributes(("ratio", math.inf)), "product.attributes[0]", id="inf"
    ),
    pytest.param(
        with_attributes(("ratio", -math.inf)), "product.attributes[0]", id="minus-inf"
    ),
    pytest.param(
        with_attributes(("text", "t" * (core.MAX_STRING_VALUE_LENGTH + 1))),
        "product.attributes[0]",
        id="long-string-value",
    ),
    pytest.param(
        with_attributes(*((f"k{i}", i) for i in range(core.MAX_ATTRIBUTES + 1))),
        "product.attributes",
        id="too-many-attributes",
    ),
]


@pytest.mark.parametrize("product, field_name", BAD_PRODUCTS)
def test_bad_product_is_invalid(product, field_name):
    market = core.Market(capacity=3)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 1)
    before = market.snapshot()

    with pytest.raises(core.InvalidArgument) as raised:
        market.publish(producer, product, 1)

    assert str(raised.value).startswith(field_name + " ")
    assert market.snapshot() == before


def test_bad_product_defines_nothing():
    market = core.Market(capacity=3)
    producer = market.register_producer("p")
    bad = Product("x", "Kind", "X", Money(1), (("ratio", math.nan),))
    with pytest.raises(core.InvalidArgument):
        market.publish(producer, bad, 1)
    good = Product("x", "Other", "Y", Money(2))

    result = market.publish(producer, good, 1)

    assert result.published == 1


def test_limits_are_inclusive():
    attributes = [
        (f"{i:0{core.MAX_ATTRIBUTE_KEY_LENGTH}d}", i)
        for i in range(core.MAX_ATTRIBUTES - 1)
    ]
    attributes.append(("text", "v" * core.MAX_STRING_VALUE_LENGTH))
    product = Product(
        "i" * core.MAX_NAME_LENGTH,
        "K" * core.MAX_KIND_LENGTH,
        "N" * core.MAX_PRODUCT_NAME_LENGTH,
        Money(core.MAX_PRICE_UNITS, core.NANOS_PER_UNIT - 1, "EUR"),
        tuple(attributes),
    )
    market = core.Market(capacity=1)
    producer = market.register_producer("p" * core.MAX_NAME_LENGTH)
    _, label = market.create_cart("c" * core.MAX_NAME_LENGTH)

    result = market.publish(producer, product, 1)

    assert len(product.attributes) == core.MAX_ATTRIBUTES
    assert result.published == 1
    assert label.startswith("c" * core.MAX_NAME_LENGTH)


@pytest.mark.parametrize(
    "name, problem",
    [
        pytest.param("", "is empty", id="empty"),
        pytest.param("n" * (core.MAX_NAME_LENGTH + 1), "characters long", id="long"),
    ],
)
def test_bad_producer_name_is_invalid(name, problem):
    market = core.Market(capacity=1)

    with pytest.raises(core.InvalidArgument) as raised:
        market.register_producer(name)

    assert str(raised.value).startswith("name ")
    assert problem in str(raised.value)
    assert market.snapshot().shelves == []


@pytest.mark.parametrize(
    "name, problem",
    [
        pytest.param("", "is empty", id="empty"),
        pytest.param("n" * (core.MAX_NAME_LENGTH + 1), "characters long", id="long"),
    ],
)
def test_bad_consumer_name_is_invalid(name, problem):
    market = core.Market(capacity=1)

    with pytest.raises(core.InvalidArgument) as raised:
        market.create_cart(name)

    assert str(raised.value).startswith("consumer ")
    assert problem in str(raised.value)
    assert market.snapshot().carts == []


@pytest.mark.parametrize(
    "product_id",
    [
        pytest.param("", id="empty"),
        pytest.param("p" * (core.MAX_NAME_LENGTH + 1), id="long"),
    ],
)
@pytest.mark.parametrize("operation", ["add", "remove"])
def test_bad_cart_product_id_is_invalid(operation, product_id):
    market = core.Market(capacity=2)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 2)
    cart, _ = market.create_cart("c")
    market.add_to_cart(cart, "tea", 1)
    before = market.snapshot()

    with pytest.raises(core.InvalidArgument) as raised:
        if operation == "add":
            market.add_to_cart(cart, product_id, 1)
        else:
            market.remove_from_cart(cart, product_id, 1)

    assert str(raised.value).startswith("product_id ")
    assert market.snapshot() == before


# Conservation of items


def test_items_conserved_after_mixed_sequence():
    market = core.Market(capacity=4)
    farm = market.register_producer("farm")
    roastery = market.register_producer("roastery")
    market.publish(farm, TEA, 3)
    market.publish(roastery, COFFEE, 4)
    alice, alice_label = market.create_cart("alice")
    bob, _ = market.create_cart("bob")
    market.add_to_cart(alice, "tea", 2)
    market.add_to_cart(alice, "coffee", 3)
    market.publish(farm, TEA, 5)
    market.add_to_cart(bob, "tea", 3)
    market.remove_from_cart(alice, "coffee", 2)
    market.remove_from_cart(alice, "tea", 5)
    market.publish(roastery, COFFEE, 2)
    market.place_order(bob)
    carol, carol_label = market.create_cart("carol")
    market.add_to_cart(carol, "coffee", 6)
    market.remove_from_cart(carol, "coffee", 1)
    market.add_to_cart(alice, "tea", 1)

    state = market.snapshot()

    assert state.items_published == 11
    assert items_held(state) == state.items_published
    assert shelf_items(market, "farm") == {"tea": 2}
    assert shelf_items(market, "roastery") == {"coffee": 1}
    assert cart_items(market, alice_label) == {"coffee": 1, "tea": 1}
    assert cart_items(market, carol_label) == {"coffee": 3}
    assert len(state.carts) == 2
    assert state.orders == 1
    assert state.items_ordered == 3


def test_shelf_size_matches_items():
    market = core.Market(capacity=3)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 2)
    market.publish(producer, COFFEE, 2)
    cart, _ = market.create_cart("c")
    market.add_to_cart(cart, "tea", 2)
    market.publish(producer, COFFEE, 2)
    market.remove_from_cart(cart, "tea", 1)

    shelf = market.snapshot().shelves[0]

    assert shelf.size == sum(shelf.items.values())
    assert shelf.items == {"coffee": 3, "tea": 1}


def test_snapshot_is_not_live():
    market = core.Market(capacity=2)
    producer = market.register_producer("p")
    market.publish(producer, TEA, 1)
    state = market.snapshot()

    market.publish(producer, TEA, 1)
    state.shelves[0].items["tea"] = 99

    assert state.shelves[0].size == 1
    assert market.snapshot().shelves[0].items == {"tea": 2}
