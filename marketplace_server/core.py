"""The market's state and rules, with no transport: shelves, carts and orders.

Every operation that moves items costs time independent of the number of
products, shelves and carts. Only the read-only views cost more: `snapshot`
copies the whole market, `state_page` and `list_products` cost the page's
offset plus its size, and `search_products` reads the catalogue.
"""

from __future__ import annotations

import itertools
import math
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, fields
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


class OverBudget(FailedPrecondition):
    """The cart's total exceeds the budget it was created with."""


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
    blocked_product_id: str = ""


@dataclass
class CartState:
    cart_label: str
    consumer: str
    items: dict[str, int]
    waiting_product_id: str = ""


@dataclass
class Sale:
    product_id: str
    quantity: int
    price: Money
    cart_label: str
    sold_at: float  # seconds since the Unix epoch


@dataclass
class StatePage:
    """Totals of the whole market, and one page of its shelves and carts."""

    state: MarketState
    total_shelves: int
    total_carts: int
    next_offset: int | None
    moves: int


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
    items_withdrawn: int = 0


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
    # Product of the last refused publish, "" after a successful one.
    blocked_product_id: str = ""
    # Queues of the WatchSales calls following this shelf's sales.
    sale_queues: list = field(default_factory=list)
    # Who may use the shelf (the fingerprint of the client certificate that
    # registered it), or None when anyone holding the id may.
    owner: str | None = None


@dataclass
class _Cart:
    label: str
    consumer: str
    expires_at: float
    budget: Money | None = None
    # Product of the last add that found too few items, "" after a full add.
    waiting_product_id: str = ""
    size: int = 0
    # Items per product id, then per origin shelf (producer id). Empty
    # entries are deleted, so every count is at least 1.
    items: dict[str, dict[str, int]] = field(default_factory=dict)
    # Who may use the cart (the fingerprint of the client certificate that
    # created it), or None when anyone holding the id may.
    owner: str | None = None


def _check_name(value: str, field_name: str, max_length: int) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{field_name} is empty; give a non-empty string")
    if len(value) > max_length:
        raise InvalidArgument(
            f"{field_name} is {len(value)} characters long; "
            f"the maximum is {max_length}"
        )
    if not value.isprintable():
        # Names end up in logs and displays, where a newline or an escape
        # sequence could forge a line.
        raise InvalidArgument(
            f"{field_name} {value!r} contains control characters; "
            "use printable text"
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
    _check_currency(price.currency_code, "product.price.currency_code")

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
        # published = items on shelves + in open carts + ordered + withdrawn.
        self._lock = threading.Lock()
        # Notified whenever items land on a shelf; AddToCart calls that wait
        # for a product wait on it.
        self._product_available = threading.Condition(self._lock)
        # Set when the server stops, so that waiting adds return at once.
        self._stopping = False
        self._products: dict[str, Product] = {}
        # Product ids in the order they were first published, for paging.
        self._product_order: list[str] = []
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
        # with its label and owner, oldest first, at most
        # REMEMBERED_CLOSED_CARTS.
        self._closed: OrderedDict[str, tuple[str, str, str | None]] = OrderedDict()
        self._cart_numbers = itertools.count(1)
        self._carts_expired = 0
        self._items_withdrawn = 0
        self._moves = 0
        self._publishes_refused = 0
        self._adds_refused = 0
        self._orders = 0
        self._items_ordered = 0
        self._items_published = 0

    def register_producer(
        self, name: str, *, producer_id: str | None = None, owner: str | None = None
    ) -> str:
        """Create an empty shelf for producer `name` and return its secret id.

        `producer_id` forces the id, for replaying a journal; it must be new.
        With an `owner`, calls on the shelf that give another owner get
        NotFound, exactly as for an unknown id.
        """
        _check_name(name, "name", self.limits.max_name_length)
        producer_id = producer_id or secrets.token_hex(16)
        with self._lock:
            if producer_id in self._shelves:
                raise InvalidArgument("producer_id is already registered")
            if len(self._shelves) >= self.limits.max_producers:
                raise ResourceExhausted(
                    f"the market has its maximum of {self.limits.max_producers} "
                    "producers; the server's --max-producers sets it"
                )
            self._shelves[producer_id] = _Shelf(producer=name, owner=owner)
        return producer_id

    def producer_name(self, producer_id: str, owner: str | None = None) -> str:
        """Return the public name of a producer, for logs."""
        with self._lock:
            return self._shelf(producer_id, owner).producer

    def publish(
        self,
        producer_id: str,
        product: Product,
        quantity: int,
        *,
        owner: str | None = None,
    ) -> PublishResult:
        """Put up to `quantity` items of `product` on the producer's shelf.

        Publishes only while the shelf is below capacity. A product id seen
        for the first time defines the product; a later publish must carry
        equal data, or InvalidArgument is raised.
        """
        _check_quantity(quantity, self.limits)
        # A product object the market already stores was checked when it
        # was first published.
        if self._products.get(product.product_id) is not product:
            check_product(product, self.limits)
        with self._lock:
            shelf = self._shelf(producer_id, owner)
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
                self._product_order.append(product.product_id)
            elif known is not product and _typed(known) != _typed(product):
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
                self._moved()
            if published < quantity:
                self._publishes_refused += 1
                shelf.blocked_product_id = product.product_id
            else:
                shelf.blocked_product_id = ""
            return PublishResult(published=published, shelf_size=shelf.size)

    def create_cart(
        self,
        consumer: str,
        budget: Money | None = None,
        *,
        owner: str | None = None,
        cart_id: str | None = None,
    ) -> tuple[str, str]:
        """Open an empty cart for `consumer`; return its secret id and label.

        With a `budget`, place_order rejects the cart while its total exceeds it.
        With an `owner`, calls on the cart that give another owner get
        NotFound, exactly as for an unknown id. `cart_id` forces the id, for
        replaying a journal; it must be new.
        """
        _check_name(consumer, "consumer", self.limits.max_name_length)
        if budget is not None:
            _check_money(budget, "budget")
        cart_id = cart_id or secrets.token_hex(16)
        with self._lock:
            if cart_id in self._carts or cart_id in self._closed:
                raise InvalidArgument("cart_id is already in use")
            if len(self._carts) >= self.limits.max_open_carts:
                raise ResourceExhausted(
                    f"the market has its maximum of {self.limits.max_open_carts} "
                    "open carts; place or abandon carts, or raise the server's "
                    "--max-open-carts"
                )
            label = f"{consumer}/cart-{next(self._cart_numbers)}"
            expires_at = self._clock() + self.lease_seconds
            self._carts[cart_id] = _Cart(
                label, consumer, expires_at, budget, owner=owner
            )
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

    def stop_waiting(self) -> None:
        """Make every waiting add return now, and later ones not wait."""
        with self._lock:
            self._stopping = True
            self._product_available.notify_all()

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

    def add_to_cart(
        self,
        cart_id: str,
        product_id: str,
        quantity: int,
        wait: float = 0.0,
        is_active: Callable[[], bool] | None = None,
        *,
        owner: str | None = None,
    ) -> int:
        """Move up to `quantity` items from any shelves into the cart.

        Returns the number moved, 0 when no shelf has the product. A product
        id never published is not an error, because a producer may publish it
        later. With `wait` > 0, waits up to that many seconds for the first
        item, and gives up early once `is_active()` returns False.
        """
        _check_quantity(quantity, self.limits)
        _check_name(product_id, "product_id", self.limits.max_name_length)
        if not (wait >= 0 and math.isfinite(wait)):
            raise InvalidArgument(f"wait {wait!r} is invalid; give 0 or more seconds")
        with self._lock:
            self._cart(cart_id, owner)
            deadline = self._clock() + wait
            added = self._add_now(cart_id, product_id, quantity)
            while added == 0:
                remaining = deadline - self._clock()
                if remaining <= 0 or self._stopping:
                    break
                if is_active is not None and not is_active():
                    break
                # Wake at least 5 times a second to notice a cancelled caller.
                self._product_available.wait(min(remaining, 0.2))
                added = self._add_now(cart_id, product_id, quantity)
            if added < quantity:
                self._adds_refused += 1
            return added

    def _add_now(self, cart_id: str, product_id: str, quantity: int) -> int:
        """Run one add attempt; the caller holds self._lock."""
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
        if added:
            self._moved()
        cart.waiting_product_id = product_id if added < quantity else ""
        return added

    def remove_from_cart(
        self, cart_id: str, product_id: str, quantity: int, *, owner: str | None = None
    ) -> RemoveResult:
        """Move up to `quantity` items out of the cart, each to its origin shelf.

        A returned item goes back even when its shelf is full. Items the cart
        does not hold are reported as missing.
        """
        _check_quantity(quantity, self.limits)
        _check_name(product_id, "product_id", self.limits.max_name_length)
        with self._lock:
            cart = self._cart(cart_id, owner)
            removed = self._return_items(cart, product_id, quantity)
            if removed:
                self._moved()
            return RemoveResult(removed=removed, missing=quantity - removed)

    def place_order(self, cart_id: str, *, owner: str | None = None) -> Order:
        """Close the cart and return its items as an order.

        Raises OverBudget, leaving the cart open and unchanged, when the
        total exceeds the cart's budget.
        """
        sold_at = time.time()
        with self._lock:
            cart = self._cart(cart_id, owner)
            lines = []
            total = Money(0)
            for product_id, origins in cart.items.items():
                product = self._products[product_id]
                count = sum(origins.values())
                lines.append((product, count))
                total = _add_money(total, product.price * count)
            if cart.budget is not None and _nanos(total) > _nanos(cart.budget):
                raise OverBudget(
                    f"cart {cart.label} totals {format_money(total)}, over its "
                    f"budget of {format_money(cart.budget)}; remove items and "
                    "place the order again"
                )

            del self._carts[cart_id]
            del self._leases[cart_id]
            self._remember_closed(cart_id, "ordered", cart.label, cart.owner)
            self._orders += 1
            self._items_ordered += cart.size
            if cart.size:
                self._moved()
            for product_id, origins in cart.items.items():
                price = self._products[product_id].price
                for producer_id, count in origins.items():
                    shelf = self._shelves[producer_id]
                    if shelf.sale_queues:
                        sale = Sale(product_id, count, price, cart.label, sold_at)
                        for sale_queue in shelf.sale_queues:
                            sale_queue.put_nowait(sale)
        return Order(cart.label, cart.consumer, lines, total)

    def withdraw(
        self,
        producer_id: str,
        product_id: str,
        quantity: int,
        *,
        owner: str | None = None,
    ) -> PublishResult:
        """Take up to `quantity` items of a product off the producer's shelf.

        Returns the number taken (as `published`) and the shelf's new size.
        """
        _check_quantity(quantity, self.limits)
        _check_name(product_id, "product_id", self.limits.max_name_length)
        with self._lock:
            shelf = self._shelf(producer_id, owner)
            on_shelf = shelf.items.get(product_id, 0)
            taken = min(on_shelf, quantity)
            if taken:
                if taken == on_shelf:
                    del shelf.items[product_id]
                    holders = self._holders[product_id]
                    del holders[producer_id]
                    if not holders:
                        del self._holders[product_id]
                else:
                    shelf.items[product_id] = on_shelf - taken
                shelf.size -= taken
                self._items_withdrawn += taken
                self._moved()
            return PublishResult(published=taken, shelf_size=shelf.size)

    def watch_sales(
        self, producer_id: str, sale_queue, *, owner: str | None = None
    ) -> Callable[[], None]:
        """Put every later sale of the producer's items into `sale_queue`.

        `sale_queue` needs a non-blocking `put_nowait`. Returns a function
        that stops the watch.
        """
        with self._lock:
            shelf = self._shelf(producer_id, owner)
            shelf.sale_queues.append(sale_queue)

        def stop() -> None:
            with self._lock:
                if sale_queue in shelf.sale_queues:
                    shelf.sale_queues.remove(sale_queue)

        return stop

    def list_products(self, offset: int, limit: int) -> tuple[list[Product], int | None]:
        """Return products in first-publish order from `offset`, and the next offset."""
        with self._lock:
            ids = self._product_order[offset : offset + limit]
            products = [self._products[product_id] for product_id in ids]
            end = offset + len(ids)
            return products, (end if end < len(self._product_order) else None)

    def search_products(
        self, matches: Callable[[Product], bool], offset: int, limit: int
    ) -> tuple[list[Product], int | None]:
        """Return products for which `matches` is true, from catalogue position
        `offset`, and the position to continue from.

        NOTE: a search reads the catalogue from `offset` until it has `limit`
        matches, so one page costs up to the number of products.
        """
        with self._lock:
            order = list(self._product_order[offset:])
            products = dict(self._products)
        found = []
        position = offset
        for product_id in order:
            position += 1
            product = products[product_id]
            if matches(product):
                found.append(product)
                if len(found) == limit:
                    break
        more = position < offset + len(order)
        return found, (position if more else None)

    def state_page(self, offset: int, limit: int) -> StatePage:
        """Return the totals and `limit` shelves then carts from `offset`.

        Costs time proportional to `offset + limit`, not to the market size.
        """
        with self._lock:
            shelves = [
                ShelfState(
                    s.producer, self.capacity, s.size, dict(s.items), s.blocked_product_id
                )
                for s in itertools.islice(self._shelves.values(), offset, offset + limit)
            ]
            cart_offset = max(0, offset - len(self._shelves))
            cart_limit = limit - len(shelves)
            carts = [
                CartState(
                    c.label,
                    c.consumer,
                    {pid: sum(o.values()) for pid, o in c.items.items()},
                    c.waiting_product_id,
                )
                for c in itertools.islice(
                    self._carts.values(), cart_offset, cart_offset + cart_limit
                )
            ]
            end = offset + len(shelves) + len(carts)
            total = len(self._shelves) + len(self._carts)
            state = MarketState(
                shelves,
                carts,
                self._orders,
                self._items_ordered,
                self._items_published,
                self._carts_expired,
                self._publishes_refused,
                self._adds_refused,
                self._items_withdrawn,
            )
            return StatePage(
                state,
                len(self._shelves),
                len(self._carts),
                end if end < total else None,
                self._moves,
            )

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
                self._items_withdrawn,
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

    def _shelf(self, producer_id: str, owner: str | None = None) -> _Shelf:
        shelf = self._shelves.get(producer_id)
        if shelf is not None and owner is not None and shelf.owner != owner:
            shelf = None
        if shelf is None:
            raise NotFound(
                "producer_id is not registered in this market; "
                "call RegisterProducer and use the id it returns"
            )
        return shelf

    def _cart(self, cart_id: str, owner: str | None = None) -> _Cart:
        """Return an open cart and renew its lease, or raise.

        With an `owner`, a cart of another owner, open or closed, is NotFound
        like an unknown id, so that the error reveals nothing about it.
        """
        cart = self._carts.get(cart_id)
        if cart is not None and owner is not None and cart.owner != owner:
            cart = None
        if cart is not None:
            now = self._clock()
            if cart.expires_at <= now:
                self._expire(cart_id, cart)
            else:
                cart.expires_at = now + self.lease_seconds
                self._leases.move_to_end(cart_id)
                return cart
        closed = self._closed.get(cart_id)
        if closed is not None and owner is not None and closed[2] != owner:
            closed = None
        if closed is not None:
            reason, label, _ = closed
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

    def _moved(self) -> None:
        """Count a move of items, and wake the adds that wait for items."""
        self._moves += 1
        self._product_available.notify_all()

    def _expire(self, cart_id: str, cart: _Cart) -> None:
        for product_id, origins in list(cart.items.items()):
            self._return_items(cart, product_id, sum(origins.values()))
        del self._carts[cart_id]
        del self._leases[cart_id]
        self._remember_closed(cart_id, "expired", cart.label, cart.owner)
        self._carts_expired += 1
        if cart.size:
            self._moved()

    def _remember_closed(
        self, cart_id: str, reason: str, label: str, owner: str | None = None
    ) -> None:
        self._closed[cart_id] = (reason, label, owner)
        if len(self._closed) > REMEMBERED_CLOSED_CARTS:
            self._closed.popitem(last=False)

    # Attributes that export_state saves, besides the settings (capacity,
    # limits, lease_seconds, clock) and the locks. export_state refuses to run
    # when the market has others, so that new state cannot be left out of
    # saved copies unnoticed.
    _EXPORTED = frozenset(
        {
            "_products", "_product_order", "_shelves", "_holders", "_carts",
            "_leases", "_closed", "_cart_numbers", "_carts_expired",
            "_items_withdrawn", "_moves", "_publishes_refused", "_adds_refused",
            "_orders", "_items_ordered", "_items_published",
        }
    )
    _NOT_EXPORTED = frozenset(
        {
            "capacity", "limits", "lease_seconds", "_clock", "_lock",
            "_product_available", "_stopping",
        }
    )

    def export_state(self) -> dict:
        """Return the whole state, taken at one instant, as plain JSON data.

        Ids, orders of insertion and lease deadlines (in the market's clock)
        are kept, so that `import_state` gives a market that replies to every
        later call exactly as this one would. WatchSales queues are not kept.
        """
        unknown = set(vars(self)) - self._EXPORTED - self._NOT_EXPORTED
        unknown |= {f.name for f in fields(_Shelf)} - {
            "producer", "size", "items", "blocked_product_id", "sale_queues",
            "owner",
        }
        unknown |= {f.name for f in fields(_Cart)} - {
            "label", "consumer", "expires_at", "budget", "waiting_product_id",
            "size", "items", "owner",
        }
        if unknown:
            raise RuntimeError(
                f"export_state does not save {sorted(unknown)}; extend it and "
                "import_state"
            )
        with self._lock:
            next_cart_number = next(self._cart_numbers)
            self._cart_numbers = itertools.count(next_cart_number)
            return {
                "products": [
                    _product_data(self._products[pid]) for pid in self._product_order
                ],
                "shelves": [
                    [
                        pid,
                        s.producer,
                        s.size,
                        [[k, n] for k, n in s.items.items()],
                        s.blocked_product_id,
                        s.owner,
                    ]
                    for pid, s in self._shelves.items()
                ],
                "holders": [[pid, list(h)] for pid, h in self._holders.items()],
                "carts": [
                    [
                        cid,
                        c.label,
                        c.consumer,
                        c.expires_at,
                        None if c.budget is None else _money_data(c.budget),
                        c.waiting_product_id,
                        c.size,
                        [
                            [pid, [[k, n] for k, n in origins.items()]]
                            for pid, origins in c.items.items()
                        ],
                        c.owner,
                    ]
                    for cid, c in self._carts.items()
                ],
                "leases": list(self._leases),
                "closed": [[cid, *closed] for cid, closed in self._closed.items()],
                "next_cart_number": next_cart_number,
                "counters": {
                    "carts_expired": self._carts_expired,
                    "items_withdrawn": self._items_withdrawn,
                    "moves": self._moves,
                    "publishes_refused": self._publishes_refused,
                    "adds_refused": self._adds_refused,
                    "orders": self._orders,
                    "items_ordered": self._items_ordered,
                    "items_published": self._items_published,
                },
            }

    def import_state(self, state: dict) -> None:
        """Replace the whole state with one that `export_state` returned."""
        products = {}
        for data in state["products"]:
            product = _product_from_data(data)
            products[product.product_id] = product
        shelves = {
            pid: _Shelf(
                producer=producer,
                size=size,
                items=dict(items),
                blocked_product_id=blocked,
                owner=owner,
            )
            for pid, producer, size, items, blocked, owner in state["shelves"]
        }
        holders = {pid: dict.fromkeys(h) for pid, h in state["holders"]}
        carts = {}
        for cid, label, consumer, expires_at, budget, waiting, size, items, owner in (
            state["carts"]
        ):
            carts[cid] = _Cart(
                label=label,
                consumer=consumer,
                expires_at=expires_at,
                budget=None if budget is None else Money(*budget),
                waiting_product_id=waiting,
                size=size,
                items={pid: dict(origins) for pid, origins in items},
                owner=owner,
            )
        counters = state["counters"]
        with self._lock:
            self._products = products
            self._product_order = list(products)
            self._shelves = shelves
            self._holders = holders
            self._carts = carts
            self._leases = OrderedDict.fromkeys(state["leases"])
            self._closed = OrderedDict(
                (cid, (reason, label, owner))
                for cid, reason, label, owner in state["closed"]
            )
            self._cart_numbers = itertools.count(state["next_cart_number"])
            self._carts_expired = counters["carts_expired"]
            self._items_withdrawn = counters["items_withdrawn"]
            self._moves = counters["moves"]
            self._publishes_refused = counters["publishes_refused"]
            self._adds_refused = counters["adds_refused"]
            self._orders = counters["orders"]
            self._items_ordered = counters["items_ordered"]
            self._items_published = counters["items_published"]


def _money_data(money: Money) -> list:
    return [money.units, money.nanos, money.currency_code]


def _product_data(product: Product) -> list:
    return [
        product.product_id,
        product.kind,
        product.name,
        _money_data(product.price),
        [list(attribute) for attribute in product.attributes],
    ]


def _product_from_data(data: list) -> Product:
    product_id, kind, name, price, attributes = data
    return Product(
        product_id, kind, name, Money(*price), tuple(tuple(a) for a in attributes)
    )


def _nanos(money: Money) -> int:
    return money.units * NANOS_PER_UNIT + money.nanos


def format_money(money: Money) -> str:
    """Render an amount as 9, 9.5 or 9.5 EUR."""
    units, nanos = money.units, money.nanos
    text = str(units) if nanos == 0 else f"{units}.{nanos:09d}".rstrip("0")
    return f"{text} {money.currency_code}" if money.currency_code else text


def _check_currency(code: str, field_name: str) -> None:
    if code and not (
        len(code) == 3 and code.isascii() and code.isalpha() and code.isupper()
    ):
        raise InvalidArgument(
            f"{field_name} {code!r} is not a three-letter ISO 4217 code such as "
            "'EUR'; give one or leave it empty"
        )


def _check_money(money: Money, field_name: str) -> None:
    _check_currency(money.currency_code, f"{field_name}.currency_code")
    if not 0 <= money.units <= MAX_PRICE_UNITS:
        raise InvalidArgument(
            f"{field_name}.units {money.units} is out of range; "
            f"give 0 to {MAX_PRICE_UNITS}"
        )
    if not 0 <= money.nanos < NANOS_PER_UNIT:
        raise InvalidArgument(
            f"{field_name}.nanos {money.nanos} is out of range; "
            f"give 0 to {NANOS_PER_UNIT - 1}"
        )


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
