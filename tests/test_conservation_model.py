"""core.Market checked step by step against a plain Python model of the market.

Hypothesis runs random sequences of valid and invalid calls, with a fake clock
and a short cart lease. After every step the market's snapshot must equal the
model, and for every product the items ever published must equal the items on
shelves, in open carts, ordered and withdrawn.

The model follows the documented contract, not the implementation. An add may
take items from any shelves that hold the product, and a remove may return any
of the cart's items of that product. For those two calls the model checks the
market's choice of shelves against the rules, then adopts it.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from marketplace_server import core
from marketplace_server.core import Money, Product

CAPACITY = 3
LEASE_SECONDS = 5.0
MAX_PRODUCERS = 4

# Every product id has three versions that differ in one field each. The
# first publish of an id defines it, so publishing another version of the
# same id afterwards must raise InvalidArgument. The third version differs
# only in the type of an attribute value (1 == True in Python).
PRODUCT_IDS = ("tea", "coffee", "honey")
PRICE = Money(2, 500_000_000)
VERSIONS = {
    product_id: (
        Product(product_id, "Tea", product_id.title(), PRICE, (("grade", 1),)),
        Product(product_id, "Tea", product_id.title(), Money(3), (("grade", 1),)),
        Product(product_id, "Tea", product_id.title(), PRICE, (("grade", True),)),
    )
    for product_id in PRODUCT_IDS
}

quantities = st.integers(min_value=1, max_value=5)
invalid_quantities = st.sampled_from([0, -1, core.MAX_QUANTITY + 1])
product_ids = st.sampled_from(PRODUCT_IDS)
# Mostly the first version, so that most publishes are accepted.
version_indexes = st.sampled_from([0] * 6 + [1, 2])
invalid_names = st.sampled_from(["", "x" * (core.MAX_NAME_LENGTH + 1)])
INVALID_CALLS = (
    "publish to unknown producer",
    "publish invalid quantity",
    "publish nameless product",
    "withdraw from unknown producer",
    "withdraw invalid quantity",
    "add invalid quantity",
    "add empty product id",
    "remove invalid quantity",
    "add to unknown cart",
    "remove from unknown cart",
    "order unknown cart",
    "register invalid name",
    "create cart invalid consumer",
)


class FakeClock:
    """A clock for Market that moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class ModelCart:
    label: str
    expires_at: float
    status: str = "open"  # "open", "ordered" or "expired"
    # Items per product id, then per origin shelf (producer id).
    items: dict[str, Counter] = field(default_factory=dict)

    def count(self, product_id: str) -> int:
        return sum(self.items.get(product_id, Counter()).values())

    def contents(self) -> dict[str, int]:
        counts = {pid: sum(origins.values()) for pid, origins in self.items.items()}
        return {pid: n for pid, n in counts.items() if n > 0}


def money_nanos(money: Money) -> int:
    return money.units * core.NANOS_PER_UNIT + money.nanos


def shelf_counts(state: core.MarketState, product_id: str) -> list[int]:
    """Return the count of `product_id` on each shelf, in registration order."""
    return [shelf.items.get(product_id, 0) for shelf in state.shelves]


class MarketModel(RuleBasedStateMachine):
    producers = Bundle("producers")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.market = core.Market(
            CAPACITY, lease_seconds=LEASE_SECONDS, clock=self.clock
        )
        # Producer ids in registration order, with each shelf's items.
        self.producer_order: list[str] = []
        self.producer_names: dict[str, str] = {}
        self.shelves: dict[str, Counter] = {}
        self.carts_by_id: dict[str, ModelCart] = {}
        self.cart_order: list[str] = []
        self.defined_versions: dict[str, int] = {}
        self.published = Counter()
        self.ordered = Counter()
        self.withdrawn = Counter()
        self.orders = 0
        self.carts_expired = 0

    # Helpers on the model.

    def shelf_size(self, producer_id: str) -> int:
        return sum(self.shelves[producer_id].values())

    def available(self, product_id: str) -> int:
        return sum(shelf[product_id] for shelf in self.shelves.values())

    def expire_in_model(self, cart: ModelCart) -> None:
        for product_id, origins in cart.items.items():
            for producer_id, count in origins.items():
                self.shelves[producer_id][product_id] += count
        cart.items = {}
        cart.status = "expired"
        self.carts_expired += 1

    def expected_cart_error(self, cart: ModelCart) -> type[core.MarketError] | None:
        """Return the error a call on `cart` must raise, expiring it if due."""
        if cart.status == "open" and cart.expires_at <= self.clock.now:
            self.expire_in_model(cart)
        if cart.status == "ordered":
            return core.CartOrdered
        if cart.status == "expired":
            return core.CartExpired
        return None

    def renew(self, cart: ModelCart) -> None:
        cart.expires_at = self.clock.now + LEASE_SECONDS

    def cart_ids(self, open_: bool) -> list[str]:
        """Return the ids of open carts, or else of ordered and expired carts.

        A cart whose lease ran out counts as open until a call or
        expire_carts closes it.
        """
        return [
            cart_id
            for cart_id in self.cart_order
            if (self.carts_by_id[cart_id].status == "open") == open_
        ]

    def draw_product(self, data, likely: list[str]) -> str:
        """Draw any product id, those in `likely` three times as likely.

        Favouring products that are there makes more calls move items, so
        that runs reach full shelves, returns and expiry of non-empty carts.
        """
        return data.draw(st.sampled_from(likely * 2 + list(PRODUCT_IDS)), "product")

    # Valid calls.

    @initialize(target=producers)
    def register_first_producer(self):
        return self.register("p0")

    @initialize()
    def create_first_cart(self):
        self.create_cart("ann")

    @precondition(lambda self: len(self.producer_order) < MAX_PRODUCERS)
    @rule(target=producers)
    def register_producer(self):
        return self.register(f"p{len(self.producer_order)}")

    def register(self, name: str) -> str:
        producer_id = self.market.register_producer(name)
        assert producer_id not in self.shelves
        self.producer_order.append(producer_id)
        self.producer_names[producer_id] = name
        self.shelves[producer_id] = Counter()
        return producer_id

    @rule(
        producer_id=producers,
        product_id=product_ids,
        version=version_indexes,
        quantity=quantities,
    )
    def publish(self, producer_id, product_id, version, quantity):
        product = VERSIONS[product_id][version]
        defined = self.defined_versions.get(product_id, version)
        if defined != version:
            with pytest.raises(core.InvalidArgument):
                self.market.publish(producer_id, product, quantity)
            return

        size_before = self.shelf_size(producer_id)
        result = self.market.publish(producer_id, product, quantity)
        self.defined_versions[product_id] = version

        if size_before >= CAPACITY:
            assert result.published == 0, (size_before, result)
        expected = max(0, min(quantity, CAPACITY - size_before))
        assert result.published == expected
        self.shelves[producer_id][product_id] += result.published
        self.published[product_id] += result.published
        assert result.shelf_size == size_before + result.published

    @rule(producer_id=producers, data=st.data(), quantity=quantities)
    def withdraw(self, producer_id, data, quantity):
        shelf = self.shelves[producer_id]
        product_id = self.draw_product(data, sorted(p for p in shelf if shelf[p]))
        size_before = self.shelf_size(producer_id)
        result = self.market.withdraw(producer_id, product_id, quantity)
        assert result.published == min(quantity, shelf[product_id])
        shelf[product_id] -= result.published
        self.withdrawn[product_id] += result.published
        assert result.shelf_size == size_before - result.published

    @rule(consumer=st.sampled_from(["ann", "bob"]))
    def create_cart(self, consumer):
        cart_id, label = self.market.create_cart(consumer)
        assert cart_id not in self.carts_by_id
        assert label.startswith(f"{consumer}/")
        labels = {cart.label for cart in self.carts_by_id.values()}
        assert label not in labels
        self.carts_by_id[cart_id] = ModelCart(label, self.clock.now + LEASE_SECONDS)
        self.cart_order.append(cart_id)

    @precondition(lambda self: self.cart_ids(open_=True))
    @rule(data=st.data(), quantity=quantities)
    def add(self, data, quantity):
        cart_id = data.draw(st.sampled_from(self.cart_ids(open_=True)), "cart")
        cart = self.carts_by_id[cart_id]
        on_shelves = [pid for pid in PRODUCT_IDS if self.available(pid)]
        product_id = self.draw_product(data, on_shelves)
        error = self.expected_cart_error(cart)
        if error is not None:
            with pytest.raises(error):
                self.market.add_to_cart(cart_id, product_id, quantity)
            return

        expected = min(quantity, self.available(product_id))
        added = self.market.add_to_cart(cart_id, product_id, quantity)
        self.renew(cart)
        assert added == expected

        after = shelf_counts(self.market.snapshot(), product_id)
        origins = cart.items.setdefault(product_id, Counter())
        taken_total = 0
        for producer_id, count_after in zip(self.producer_order, after):
            taken = self.shelves[producer_id][product_id] - count_after
            assert taken >= 0, f"add put {-taken} {product_id} onto a shelf"
            self.shelves[producer_id][product_id] = count_after
            origins[producer_id] += taken
            taken_total += taken
        assert taken_total == added

    @precondition(lambda self: self.cart_ids(open_=True))
    @rule(data=st.data(), quantity=quantities)
    def remove(self, data, quantity):
        cart_id = data.draw(st.sampled_from(self.cart_ids(open_=True)), "cart")
        cart = self.carts_by_id[cart_id]
        product_id = self.draw_product(data, sorted(cart.contents()))
        error = self.expected_cart_error(cart)
        if error is not None:
            with pytest.raises(error):
                self.market.remove_from_cart(cart_id, product_id, quantity)
            return

        in_cart = cart.count(product_id)
        result = self.market.remove_from_cart(cart_id, product_id, quantity)
        self.renew(cart)
        assert result.removed == min(quantity, in_cart)
        assert result.missing == quantity - result.removed

        # Each item must go back to the shelf it came from.
        after = shelf_counts(self.market.snapshot(), product_id)
        origins = cart.items.get(product_id, Counter())
        returned_total = 0
        for producer_id, count_after in zip(self.producer_order, after):
            returned = count_after - self.shelves[producer_id][product_id]
            assert returned >= 0, f"remove took {-returned} {product_id} off a shelf"
            assert returned <= origins[producer_id], (
                f"remove put {returned} {product_id} onto "
                f"{self.producer_names[producer_id]}, which gave the cart "
                f"{origins[producer_id]}"
            )
            self.shelves[producer_id][product_id] = count_after
            origins[producer_id] -= returned
            returned_total += returned
        assert returned_total == result.removed

    @precondition(lambda self: self.cart_ids(open_=True))
    @rule(data=st.data())
    def place_order(self, data):
        cart_id = data.draw(st.sampled_from(self.cart_ids(open_=True)), "cart")
        cart = self.carts_by_id[cart_id]
        error = self.expected_cart_error(cart)
        if error is not None:
            with pytest.raises(error):
                self.market.place_order(cart_id)
            return

        order = self.market.place_order(cart_id)
        expected = cart.contents()
        line_ids = [product.product_id for product, _ in order.lines]
        assert len(line_ids) == len(set(line_ids)), line_ids
        assert {product.product_id: n for product, n in order.lines} == expected
        assert order.cart_label == cart.label
        for product, _ in order.lines:
            version = self.defined_versions[product.product_id]
            assert product == VERSIONS[product.product_id][version]
        expected_total = sum(
            money_nanos(product.price) * n for product, n in order.lines
        )
        assert money_nanos(order.total) == expected_total

        cart.status = "ordered"
        cart.items = {}
        self.ordered.update(expected)
        self.orders += 1

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 4.5, 5.0]))
    def advance_clock(self, seconds):
        self.clock.now += seconds

    @rule()
    def expire_carts(self):
        due = []
        for cart_id in self.cart_order:
            cart = self.carts_by_id[cart_id]
            if cart.status == "open" and cart.expires_at <= self.clock.now:
                self.expire_in_model(cart)
                due.append(cart.label)
        expired = self.market.expire_carts()
        assert sorted(expired) == sorted(due)

    @precondition(lambda self: self.cart_ids(open_=False))
    @rule(
        data=st.data(),
        call=st.sampled_from(["add", "remove", "order"]),
        product_id=product_ids,
    )
    def call_closed_cart(self, data, call, product_id):
        cart_id = data.draw(st.sampled_from(self.cart_ids(open_=False)), "cart")
        cart = self.carts_by_id[cart_id]
        error = core.CartOrdered if cart.status == "ordered" else core.CartExpired
        with pytest.raises(error):
            if call == "add":
                self.market.add_to_cart(cart_id, product_id, 1)
            elif call == "remove":
                self.market.remove_from_cart(cart_id, product_id, 1)
            else:
                self.market.place_order(cart_id)

    # Invalid calls: each must raise its error and change nothing. They share
    # one rule so that they do not crowd out the valid calls.

    @rule(
        call=st.sampled_from(INVALID_CALLS),
        producer_id=producers,
        product_id=product_ids,
        quantity=invalid_quantities,
        name=invalid_names,
        data=st.data(),
    )
    def invalid_call(self, call, producer_id, product_id, quantity, name, data):
        cart_id = data.draw(st.sampled_from(self.cart_order), "cart")
        product = VERSIONS[product_id][self.defined_versions.get(product_id, 0)]
        unknown_id = secrets.token_hex(16)
        market = self.market
        if call == "publish to unknown producer":
            with pytest.raises(core.NotFound):
                market.publish(unknown_id, product, 1)
        elif call == "publish invalid quantity":
            with pytest.raises(core.InvalidArgument):
                market.publish(producer_id, product, quantity)
        elif call == "publish nameless product":
            nameless = Product(product_id, "Tea", "", Money(1))
            with pytest.raises(core.InvalidArgument):
                market.publish(producer_id, nameless, 1)
        elif call == "withdraw from unknown producer":
            with pytest.raises(core.NotFound):
                market.withdraw(unknown_id, product_id, 1)
        elif call == "withdraw invalid quantity":
            with pytest.raises(core.InvalidArgument):
                market.withdraw(producer_id, product_id, quantity)
        elif call == "add invalid quantity":
            with pytest.raises(core.InvalidArgument):
                market.add_to_cart(cart_id, product_id, quantity)
        elif call == "add empty product id":
            with pytest.raises(core.InvalidArgument):
                market.add_to_cart(cart_id, "", 1)
        elif call == "remove invalid quantity":
            with pytest.raises(core.InvalidArgument):
                market.remove_from_cart(cart_id, product_id, quantity)
        elif call == "add to unknown cart":
            with pytest.raises(core.NotFound):
                market.add_to_cart(unknown_id, product_id, 1)
        elif call == "remove from unknown cart":
            with pytest.raises(core.NotFound):
                market.remove_from_cart(unknown_id, product_id, 1)
        elif call == "order unknown cart":
            with pytest.raises(core.NotFound):
                market.place_order(unknown_id)
        elif call == "register invalid name":
            with pytest.raises(core.InvalidArgument):
                market.register_producer(name)
        elif call == "create cart invalid consumer":
            with pytest.raises(core.InvalidArgument):
                market.create_cart(name)
        else:
            raise AssertionError(f"no case for invalid call {call!r}")

    # Invariants, checked after every step.

    @invariant()
    def items_conserved_per_product(self):
        state = self.market.snapshot()
        for product_id in PRODUCT_IDS:
            on_shelves = sum(shelf_counts(state, product_id))
            in_carts = sum(cart.items.get(product_id, 0) for cart in state.carts)
            left = self.ordered[product_id] + self.withdrawn[product_id]
            accounted = on_shelves + in_carts + left
            assert accounted == self.published[product_id], product_id

    @invariant()
    def shelves_match_model(self):
        state = self.market.snapshot()
        names = [self.producer_names[pid] for pid in self.producer_order]
        assert [shelf.producer for shelf in state.shelves] == names
        for producer_id, shelf in zip(self.producer_order, state.shelves):
            expected = {pid: n for pid, n in self.shelves[producer_id].items() if n}
            assert shelf.items == expected, shelf.producer
            assert shelf.capacity == CAPACITY

    @invariant()
    def carts_match_model(self):
        state = self.market.snapshot()
        open_carts = [
            self.carts_by_id[cart_id]
            for cart_id in self.cart_order
            if self.carts_by_id[cart_id].status == "open"
        ]
        assert [cart.cart_label for cart in state.carts] == [
            cart.label for cart in open_carts
        ]
        for model_cart, cart in zip(open_carts, state.carts):
            assert cart.items == model_cart.contents(), cart.cart_label

    @invariant()
    def counters_match_model(self):
        state = self.market.snapshot()
        assert state.orders == self.orders
        assert state.items_ordered == sum(self.ordered.values())
        assert state.items_published == sum(self.published.values())
        assert state.items_withdrawn == sum(self.withdrawn.values())
        assert state.carts_expired == self.carts_expired

    @invariant()
    def snapshot_totals_consistent(self):
        state = self.market.snapshot()
        for shelf in state.shelves:
            assert shelf.size == sum(shelf.items.values()), shelf.producer
            assert all(n > 0 for n in shelf.items.values()), shelf
        for cart in state.carts:
            assert all(n > 0 for n in cart.items.values()), cart
        on_shelves = sum(shelf.size for shelf in state.shelves)
        in_carts = sum(sum(cart.items.values()) for cart in state.carts)
        left = state.items_ordered + state.items_withdrawn
        assert on_shelves + in_carts + left == state.items_published


MarketModel.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=200,
    deadline=None,
    derandomize=True,
    database=None,
)
TestMarketModel = MarketModel.TestCase
