"""The market's state and rules, with no transport: shelves, carts and orders.

Every operation costs time independent of the number of products, shelves and
carts, except `snapshot`, which copies the whole market.
"""

from __future__ import annotations

import itertools
import math
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

MAX_QUANTITY = 1_000_000
MAX_NAME_LENGTH = 128
MAX_PRODUCT_NAME_LENGTH = 256
MAX_KIND_LENGTH = 64
MAX_ATTRIBUTE_KEY_LENGTH = 64
MAX_STRING_VALUE_LENGTH = 1024
MAX_ATTRIBUTES = 64
MAX_PRICE_UNITS = 10**15
NANOS_PER_UNIT = 1_000_000_000
DEFAULT_LEASE_SECONDS = 60.0
# Ordered and expired carts remembered so that a late call on one gets a
# clear FailedPrecondition; older ones get NotFound.
REMEMBERED_CLOSED_CARTS = 100_000


class MarketError(Exception):
    """Base of the errors the market raises for a request it cannot apply."""


class InvalidArgument(MarketError):
    """A request field is malformed; the message names the field and value."""


class NotFound(MarketError):
    """A producer, cart or product id is not known to the market."""


class FailedPrecondition(MarketError):
    """The request is well formed but the market's state forbids it."""


class ResourceExhausted(MarketError):
    """A market-wide limit, such as the number of open carts, is reached."""


class CartOrdered(FailedPrecondition):
    """The cart was already ordered."""


class CartExpired(FailedPrecondition):
    """The cart's lease ran out and its items went back to their shelves."""


AttributeValue = str | int | float | bool


@dataclass(frozen=True)
class Limits:
    """Largest values a request may carry; bigger ones are InvalidArgument."""

    max_quantity: int = MAX_QUANTITY
    max_name_length: int = MAX_NAME_LENGTH
    max_attributes: int = MAX_ATTRIBUTES
    max_string_value_length: int = MAX_STRING_VALUE_LENGTH
    max_open_carts: int = 100_000
    max_producers: int = 100_000
    max_products: int = 100_000


@dataclass(frozen=True)
class Money:
    """A non-negative amount: whole units plus billionths of a unit."""

    units: int
    nanos: int = 0
    currency_code: str = ""

    def __mul__(self, count: int) -> Money:
        total = (self.units * NANOS_PER_UNIT + self.nanos) * count
        units, nanos = divmod(total, NANOS_PER_UNIT)
        return Money(units, nanos, self.currency_code)


@dataclass(frozen=True)
class Product:
    """A product: kind, name, price and typed attributes in display order."""

    product_id: str
    kind: str
    name: str
    price: Money
    attributes: tuple[tuple[str, AttributeValue], ...] = ()


@dataclass
class PublishResult:
    published: int
    shelf_size: int


@dataclass
class RemoveResult:
    removed: int
    missing: int


@dataclass
class Order:
    cart_label: str
    consumer: str
    lines: list[tuple[Product, int]]
    total: Money


@dataclass
class ShelfState:
    producer: str
    capacity: int
    size: int
    items: dict[str, int]


@dataclass
class CartState:
    cart_label: str
    consumer: str
    items: dict[str, int]


@dataclass
class MarketState:
    shelves: list[ShelfState]
    carts: list[CartState]
    orders: int
    items_ordered: int
    items_published: int
    carts_expired: int = 0
    publishes_refused: int = 0
    adds_refused: int = 0


@dataclass
class MarketStats:
    """Totals and shelf sizes, cheaper to take than a full snapshot."""

    shelf_sizes: dict[str, int]
    open_carts: int
    orders: int
    items_ordered: int
    items_published: int
    carts_expired: int
    publishes_refused: int
    adds_refused: int


@dataclass
class _Shelf:
    producer: str
    size: int = 0
    # Items per product id; a product with no item has no key.
    items: dict[str, int] = field(default_factory=dict)


@dataclass
class _Cart:
    label: str
    consumer: str
    expires_at: float
    size: int = 0
    # Items per product id, then per origin shelf (producer id). Empty
    # entries are deleted, so every count is at least 1.
    items: dict[str, dict[str, int]] = field(default_factory=dict)


def _check_name(value: str, field_name: str, max_length: int) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{field_name} is empty; give a non-empty string")
    if len(value) > max_length:
        raise InvalidArgument(
            f"{field_name} is {len(value)} characters long; "
            f"the maximum is {max_length}"
        )


def _check_quantity(quantity: int, limits: Limits) -> None:
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise InvalidArgument(f"quantity {quantity!r} is not an integer")
    if not 1 <= quantity <= limits.max_quantity:
        raise InvalidArgument(
            f"quantity {quantity} is out of range; give 1 to {limits.max_quantity}"
        )


def check_product(product: Product, limits: Limits = Limits()) -> None:
    """Raise InvalidArgument unless every field of `product` is well formed."""
    _check_name(product.product_id, "product.product_id", limits.max_name_length)
    _check_name(product.kind, "product.kind", MAX_KIND_LENGTH)
    _check_name(product.name, "product.name", MAX_PRODUCT_NAME_LENGTH)

    price = product.price
    if not 0 <= price.units <= MAX_PRICE_UNITS:
        raise InvalidArgument(
            f"product.price.units {price.units} is out of range; "
            f"give 0 to {MAX_PRICE_UNITS}"
        )
    if not 0 <= price.nanos < NANOS_PER_UNIT:
        raise InvalidArgument(
            f"product.price.nanos {price.nanos} is out of range; "
            f"give 0 to {NANOS_PER_UNIT - 1}"
        )
    if price.currency_code and not (
        len(price.currency_code) == 3 and price.currency_code.isascii()
        and price.currency_code.isalpha() and price.currency_code.isupper()
    ):
        raise InvalidArgument(
            f"product.price.currency_code {price.currency_code!r} is not a "
            "three-letter ISO 4217 code such as 'EUR'; give one or leave it empty"
        )

    if len(product.attributes) > limits.max_attributes:
        raise InvalidArgument(
            f"product.attributes has {len(product.attributes)} entries; "
            f"the maximum is {limits.max_attributes}"
        )
    seen: set[str] = set()
    for index, (key, value) in enumerate(product.attributes):
        where = f"product.attributes[{index}]"
        _check_name(key, f"{where}.key", MAX_ATTRIBUTE_KEY_LENGTH)
        if key in seen or key in ("name", "price"):
            raise InvalidArgument(
                f"{where}.key {key!r} is repeated or reserved; "
                "give each attribute a distinct key other than name and price"
            )
        seen.add(key)
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument(f"{where} value {value!r} is not a finite number")
        if isinstance(value, str) and len(value) > limits.max_string_value_length:
            raise InvalidArgument(
                f"{where} value is {len(value)} characters long; "
                f"the maximum is {limits.max_string_value_length}"
            )


class Market:
    """A market of bounded shelves, carts and orders, safe to share by threads.

    Producer and cart ids are 128-bit random secrets; names and cart labels
    are public. A cart expires `lease_seconds` after the last call on it, as
    measured by `clock`, and its items go back to their shelves.
    """

    def __init__(
        self,
        capacity: int,
        *,
        limits: Limits = Limits(),
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise InvalidArgument(f"capacity {capacity!r} is not an integer")
        if not 1 <= capacity <= MAX_QUANTITY:
            raise InvalidArgument(
                f"capacity {capacity} is out of range; give 1 to {MAX_QUANTITY}"
            )
        if not (lease_seconds > 0 and math.isfinite(lease_seconds)):
            raise InvalidArgument(
                f"lease_seconds {lease_seconds!r} is invalid; give a number above 0"
            )
        self.capacity = capacity
        self.limits = limits
        self.lease_seconds = lease_seconds
        self._clock = clock

        # Held whenever any state below is read or changed, and never across
        # I/O or logging. It keeps one invariant for every product: items
        # published = items on shelves + items in open carts + items ordered.
        self._lock = threading.Lock()
        self._products: dict[str, Product] = {}
        self._shelves: dict[str, _Shelf] = {}
        # For each product id, the shelves (producer ids) holding at least one
        # item of it, in the order they got it, so that an add finds a shelf
        # without scanning. Mirrors _Shelf.items exactly.
        self._holders: dict[str, dict[str, None]] = {}
        # Open carts in creation order.
        self._carts: dict[str, _Cart] = {}
        # The ids of open carts, least recently used first. Every lease has
        # the same length, so this is also the order in which they expire,
        # and expiry looks only at the carts that are due.
        self._leases: OrderedDict[str, None] = OrderedDict()
        # Why each recently closed cart is closed ("ordered" or "expired"),
        # with its label, oldest first, at most REMEMBERED_CLOSED_CARTS.
        self._closed: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._cart_numbers = itertools.count(1)
        self._carts_expired = 0
        self._publishes_refused = 0
        self._adds_refused = 0
        self._orders = 0
        self._items_ordered = 0
        self._items_published = 0

    def register_producer(self, name: str) -> str:
        """Create an empty shelf for producer `name` and return its secret id."""
        _check_name(name, "name", self.limits.max_name_length)
        producer_id = secrets.token_hex(16)
        with self._lock:
            if len(self._shelves) >= self.limits.max_producers:
                raise ResourceExhausted(
                    f"the market has its maximum of {self.limits.max_producers} "
                    "producers; the server's --max-producers sets it"
                )
            self._shelves[producer_id] = _Shelf(producer=name)
        return producer_id

    def producer_name(self, producer_id: str) -> str:
        """Return the public name of a producer, for logs."""
        with self._lock:
            return self._shelf(producer_id).producer

    def publish(self, producer_id: str, product: Product, quantity: int) -> PublishResult:
        """Put up to `quantity` items of `product` on the producer's shelf.

        Publishes only while the shelf is below capacity. A product id seen
        for the first time defines the product; a later publish must carry
        equal data, or InvalidArgument is raised.
        """
        _check_quantity(quantity, self.limits)
        check_product(product, self.limits)
        with self._lock:
            shelf = self._shelf(producer_id)
            known = self._products.get(product.product_id)
            if known is None:
                if len(self._products) >= self.limits.max_products:
                    raise ResourceExhausted(
                        f"the market has its maximum of {self.limits.max_products} "
                        "products, so product.product_id "
                        f"{product.product_id!r} cannot be added; the server's "
                        "--max-products sets it"
                    )
                self._products[product.product_id] = product
            elif _typed(known) != _typed(product):
                raise InvalidArgument(
                    f"product.product_id {product.product_id!r} is already "
                    "defined with other data; publish it with the same kind, "
                    "name, price and attributes, or use a new id"
                )

            published = max(0, min(quantity, self.capacity - shelf.size))
            if published:
                shelf.size += published
                count = shelf.items.get(product.product_id, 0)
                shelf.items[product.product_id] = count + published
                if count == 0:
                    self._holders.setdefault(product.product_id, {})[producer_id] = None
                self._items_published += published
            if published < quantity:
                self._publishes_refused += 1
            return PublishResult(published=published, shelf_size=shelf.size)

    def create_cart(self, consumer: str) -> tuple[str, str]:
        """Open an empty cart for `consumer`; return its secret id and label."""
        _check_name(consumer, "consumer", self.limits.max_name_length)
        cart_id = secrets.token_hex(16)
        with self._lock:
            if len(self._carts) >= self.limits.max_open_carts:
                raise ResourceExhausted(
                    f"the market has its maximum of {self.limits.max_open_carts} "
                    "open carts; place or abandon carts, or raise the server's "
                    "--max-open-carts"
                )
            label = f"{consumer}/cart-{next(self._cart_numbers)}"
            expires_at = self._clock() + self.lease_seconds
            self._carts[cart_id] = _Cart(label, consumer, expires_at)
            self._leases[cart_id] = None
        return cart_id, label

    def cart_label(self, cart_id: str) -> str:
        """Return the public label of an open or closed cart, for logs."""
        with self._lock:
            closed = self._closed.get(cart_id)
            if closed is not None:
                return closed[1]
            cart = self._carts.get(cart_id)
            return cart.label if cart is not None else "unknown cart"

    def expire_carts(self) -> list[str]:
        """Close every cart whose lease has run out; return their labels.

        Each expired cart's items go back to the shelves they came from. The
        cost is proportional to the number of carts that expire.
        """
        expired = []
        with self._lock:
            now = self._clock()
            while self._leases:
                cart_id = next(iter(self._leases))
                cart = self._carts[cart_id]
                if cart.expires_at > now:
                    break
                self._expire(cart_id, cart)
                expired.append(cart.label)
        return expired

    def add_to_cart(self, cart_id: str, product_id: str, quantity: int) -> int:
        """Move up to `quantity` items from any shelves into the cart.

        Returns the number moved, 0 when no shelf holds the product. A product
        id never published is not an error, because a producer may publish it
        later.
        """
        _check_quantity(quantity, self.limits)
        _check_name(product_id, "product_id", self.limits.max_name_length)
        with self._lock:
            cart = self._cart(cart_id)
            holders = self._holders.get(product_id)
            added = 0
            while holders and added < quantity:
                producer_id = next(iter(holders))
                shelf = self._shelves[producer_id]
                on_shelf = shelf.items[product_id]
                taken = min(on_shelf, quantity - added)
                if taken == on_shelf:
                    del shelf.items[product_id]
                    del holders[producer_id]
                else:
                    shelf.items[product_id] = on_shelf - taken
                shelf.size -= taken
                origins = cart.items.setdefault(product_id, {})
                origins[producer_id] = origins.get(producer_id, 0) + taken
                added += taken
            if holders is not None and not holders:
                del self._holders[product_id]
            cart.size += added
            if added < quantity:
                self._adds_refused += 1
            return added

    def remove_from_cart(self, cart_id: str, product_id: str, quantity: int) -> RemoveResult:
        """Move up to `quantity` items out of the cart, each to its origin shelf.

        A returned item goes back even when its shelf is full. Items the cart
        does not hold are reported as missing.
        """
        _check_quantity(quantity, self.limits)
        _check_name(product_id, "product_id", self.limits.max_name_length)
        with self._lock:
            cart = self._cart(cart_id)
            removed = self._return_items(cart, product_id, quantity)
            return RemoveResult(removed=removed, missing=quantity - removed)

    def place_order(self, cart_id: str) -> Order:
        """Close the cart and return its items as an order."""
        with self._lock:
            cart = self._cart(cart_id)
            del self._carts[cart_id]
            del self._leases[cart_id]
            self._remember_closed(cart_id, "ordered", cart.label)
            lines = []
            total = Money(0)
            for product_id, origins in cart.items.items():
                product = self._products[product_id]
                count = sum(origins.values())
                lines.append((product, count))
                total = _add_money(total, product.price * count)
            self._orders += 1
            self._items_ordered += cart.size
        return Order(cart.label, cart.consumer, lines, total)

    def snapshot(self) -> MarketState:
        """Return a copy of the whole market, taken at one instant."""
        with self._lock:
            shelves = [
                ShelfState(s.producer, self.capacity, s.size, dict(s.items))
                for s in self._shelves.values()
            ]
            carts = [
                CartState(
                    c.label,
                    c.consumer,
                    {pid: sum(o.values()) for pid, o in c.items.items()},
                )
                for c in self._carts.values()
            ]
            return MarketState(
                shelves,
                carts,
                self._orders,
                self._items_ordered,
                self._items_published,
                self._carts_expired,
                self._publishes_refused,
                self._adds_refused,
            )

    def stats(self) -> MarketStats:
        """Return totals and each producer's shelf size, summed by producer name."""
        with self._lock:
            sizes: dict[str, int] = {}
            for shelf in self._shelves.values():
                sizes[shelf.producer] = sizes.get(shelf.producer, 0) + shelf.size
            return MarketStats(
                sizes,
                len(self._carts),
                self._orders,
                self._items_ordered,
                self._items_published,
                self._carts_expired,
                self._publishes_refused,
                self._adds_refused,
            )

    # The helpers below run with self._lock held.

    def _shelf(self, producer_id: str) -> _Shelf:
        shelf = self._shelves.get(producer_id)
        if shelf is None:
            raise NotFound(
                "producer_id is not registered in this market; "
                "call RegisterProducer and use the id it returns"
            )
        return shelf

    def _cart(self, cart_id: str) -> _Cart:
        """Return an open cart and renew its lease, or raise."""
        cart = self._carts.get(cart_id)
        if cart is not None:
            now = self._clock()
            if cart.expires_at <= now:
                self._expire(cart_id, cart)
            else:
                cart.expires_at = now + self.lease_seconds
                self._leases.move_to_end(cart_id)
                return cart
        closed = self._closed.get(cart_id)
        if closed is not None:
            reason, label = closed
            if reason == "expired":
                raise CartExpired(
                    f"cart {label} expired after {self.lease_seconds:g} s without "
                    "a call, and its items went back to their shelves; "
                    "create a new cart"
                )
            raise CartOrdered(f"cart {label} was already ordered; create a new cart")
        raise NotFound(
            "cart_id is not an open cart of this market; "
            "call CreateCart and use the id it returns"
        )

    def _return_items(self, cart: _Cart, product_id: str, quantity: int) -> int:
        """Move up to `quantity` items of a product back to their origin shelves."""
        origins = cart.items.get(product_id)
        removed = 0
        while origins and removed < quantity:
            producer_id, in_cart = next(reversed(origins.items()))
            moved = min(in_cart, quantity - removed)
            if moved == in_cart:
                del origins[producer_id]
            else:
                origins[producer_id] = in_cart - moved
            shelf = self._shelves[producer_id]
            count = shelf.items.get(product_id, 0)
            shelf.items[product_id] = count + moved
            if count == 0:
                self._holders.setdefault(product_id, {})[producer_id] = None
            shelf.size += moved
            removed += moved
        if origins is not None and not origins:
            del cart.items[product_id]
        cart.size -= removed
        return removed

    def _expire(self, cart_id: str, cart: _Cart) -> None:
        for product_id, origins in list(cart.items.items()):
            self._return_items(cart, product_id, sum(origins.values()))
        del self._carts[cart_id]
        del self._leases[cart_id]
        self._remember_closed(cart_id, "expired", cart.label)
        self._carts_expired += 1

    def _remember_closed(self, cart_id: str, reason: str, label: str) -> None:
        self._closed[cart_id] = (reason, label)
        if len(self._closed) > REMEMBERED_CLOSED_CARTS:
            self._closed.popitem(last=False)


def _typed(product: Product) -> tuple:
    """Return a product's data with each attribute's type, because 1 == True == 1.0."""
    attributes = tuple((key, type(value), value) for key, value in product.attributes)
    return (product.kind, product.name, product.price, attributes)


def _add_money(left: Money, right: Money) -> Money:
    if left.units == 0 and left.nanos == 0:
        return right
    if left.currency_code != right.currency_code:
        # NOTE: a cart mixing currencies has no single total; the total keeps
        # the first currency and adds the amounts as they are.
        pass
    units, nanos = divmod(
        (left.units + right.units) * NANOS_PER_UNIT + left.nanos + right.nanos,
        NANOS_PER_UNIT,
    )
    return Money(units, nanos, left.currency_code)
