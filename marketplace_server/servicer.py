"""The gRPC servicer: converts messages to market calls and errors to status codes."""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import logging
import queue
import threading
import time

import grpc
from google.protobuf.message import DecodeError

from marketplace.v1 import marketplace_pb2 as pb

from . import core, persistence, security
from .requests import RequestLog

log = logging.getLogger(__name__)

_STATUS_BY_ERROR = {
    core.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    core.NotFound: grpc.StatusCode.NOT_FOUND,
    core.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    core.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    core.CartOrdered: grpc.StatusCode.FAILED_PRECONDITION,
    core.CartExpired: grpc.StatusCode.FAILED_PRECONDITION,
    core.OverBudget: grpc.StatusCode.FAILED_PRECONDITION,
    security.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}

# Trailing metadata key that distinguishes the reasons behind one status
# code, as documented in the proto.
REASON_KEY = "marketplace-reason"
_REASON_BY_ERROR = {
    core.CartOrdered: "CART_ORDERED",
    core.CartExpired: "CART_EXPIRED",
    core.OverBudget: "OVER_BUDGET",
}


def money_to_proto(money: core.Money) -> pb.Money:
    return pb.Money(
        currency_code=money.currency_code, units=money.units, nanos=money.nanos
    )


def product_to_proto(product: core.Product) -> pb.Product:
    message = pb.Product(
        product_id=product.product_id,
        kind=product.kind,
        name=product.name,
        price=money_to_proto(product.price),
    )
    for key, value in product.attributes:
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


def product_from_proto(message: pb.Product) -> core.Product:
    """Convert a Product message, raising InvalidArgument for an unset value."""
    attributes = []
    for index, attribute in enumerate(message.attributes):
        which = attribute.WhichOneof("value")
        if which is None:
            raise core.InvalidArgument(
                f"product.attributes[{index}] ({attribute.key!r}) has no value; "
                "set one of string_value, int_value, float_value, bool_value"
            )
        attributes.append((attribute.key, getattr(attribute, which)))
    price = core.Money(
        units=message.price.units,
        nanos=message.price.nanos,
        currency_code=message.price.currency_code,
    )
    return core.Product(
        product_id=message.product_id,
        kind=message.kind,
        name=message.name,
        price=price,
        attributes=tuple(attributes),
    )


class MarketServicer:
    """Turns request messages into market calls and results into responses.

    Methods raise core.MarketError subclasses; `add_market_service` maps
    them to status codes.
    """

    def __init__(
        self, market: core.Market, max_waiters: int = 8, max_wait: float = 10.0
    ) -> None:
        self.market = market
        self.max_wait = max_wait
        # Calls that may hold a server thread for long: AddToCart with a wait
        # and WatchSales. Kept below the thread pool size so they cannot
        # starve other calls.
        self._waiter_slots = threading.BoundedSemaphore(max_waiters)
        # Caches of converted products; a dict operation is atomic, so the
        # worker threads share them without a lock.
        self._products_by_bytes: dict[bytes, core.Product] = {}
        self._messages_by_id: dict[str, tuple[core.Product, pb.Product]] = {}
        self.max_waiters = max_waiters

    def RegisterProducer(
        self,
        request: pb.RegisterProducerRequest,
        context,
        producer_id: str | None = None,
    ):
        # `producer_id` forces the id when a journal is replayed.
        security.check_producer_name(security.peer_identity(context), request.name)
        producer_id = self.market.register_producer(
            request.name, producer_id=producer_id, owner=_owner(context)
        )
        log.info("producer %s registered", request.name)
        return pb.RegisterProducerResponse(
            producer_id=producer_id, capacity=self.market.capacity
        )

    def Publish(self, request: pb.PublishRequest, context):
        if not request.HasField("product"):
            raise core.InvalidArgument(
                "product is not set; give the product to publish"
            )
        product = self._product(request.product)
        result = self.market.publish(
            request.producer_id, product, request.quantity, owner=_owner(context)
        )
        if result.published < request.quantity and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "shelf of %s full: published %d of %d %s",
                self.market.producer_name(request.producer_id),
                result.published,
                request.quantity,
                product.product_id,
            )
        return pb.PublishResponse(
            published=result.published, shelf_size=result.shelf_size
        )

    def CreateCart(
        self, request: pb.CreateCartRequest, context, cart_id: str | None = None
    ):
        # `cart_id` forces the id when a journal is replayed.
        budget = None
        if request.HasField("budget"):
            budget = money_from_proto(request.budget)
        cart_id, label = self.market.create_cart(
            request.consumer, budget, owner=_owner(context), cart_id=cart_id
        )
        log.debug("cart %s created", label)
        return pb.CreateCartResponse(
            cart_id=cart_id,
            cart_label=label,
            lease_ms=round(self.market.lease_seconds * 1000),
        )

    def AddToCart(self, request: pb.AddToCartRequest, context):
        if request.wait_ms < 0:
            raise core.InvalidArgument(
                f"wait_ms {request.wait_ms} is negative; give 0 or more milliseconds"
            )
        wait = min(request.wait_ms / 1000, self.max_wait, self.market.lease_seconds / 2)
        if wait > 0:
            with self._waiter_slot("AddToCart with wait_ms"):
                added = self.market.add_to_cart(
                    request.cart_id,
                    request.product_id,
                    request.quantity,
                    wait=wait,
                    is_active=context.is_active if context is not None else None,
                    owner=_owner(context),
                )
        else:
            added = self.market.add_to_cart(
                request.cart_id,
                request.product_id,
                request.quantity,
                owner=_owner(context),
            )
        if added < request.quantity and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "cart %s: added %d of %d %s, no more on any shelf",
                self.market.cart_label(request.cart_id),
                added,
                request.quantity,
                request.product_id,
            )
        return pb.AddToCartResponse(added=added)

    def RemoveFromCart(self, request: pb.RemoveFromCartRequest, context):
        result = self.market.remove_from_cart(
            request.cart_id, request.product_id, request.quantity, owner=_owner(context)
        )
        if result.missing and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "cart %s: %d of %d %s to remove were not in the cart",
                self.market.cart_label(request.cart_id),
                result.missing,
                request.quantity,
                request.product_id,
            )
        return pb.RemoveFromCartResponse(
            removed=result.removed, missing=result.missing
        )

    def PlaceOrder(self, request: pb.PlaceOrderRequest, context):
        order = self.market.place_order(request.cart_id, owner=_owner(context))
        log.info(
            "order placed for cart %s: %d items, total %s",
            order.cart_label,
            sum(count for _, count in order.lines),
            core.format_money(order.total),
        )
        return pb.PlaceOrderResponse(
            lines=[
                pb.OrderLine(product=self._product_message(product), quantity=count)
                for product, count in order.lines
            ],
            total=money_to_proto(order.total),
        )

    def GetMarketState(self, request: pb.GetMarketStateRequest, context):
        offset = _decode_page_token(request.page_token, "state")
        limit = _page_size(request.page_size, default=1000, maximum=10_000)
        page = self.market.state_page(offset, limit)
        state = page.state
        response = pb.GetMarketStateResponse(
            orders=state.orders,
            items_ordered=state.items_ordered,
            items_published=state.items_published,
            carts_expired=state.carts_expired,
            publishes_refused=state.publishes_refused,
            adds_refused=state.adds_refused,
            items_withdrawn=state.items_withdrawn,
            moves=page.moves,
            total_shelves=page.total_shelves,
            total_carts=page.total_carts,
        )
        # Stop adding entries before the reply outgrows MAX_STATE_REPLY_BYTES.
        size = response.ByteSize()
        taken = 0
        for shelf in state.shelves:
            entry = pb.Shelf(
                producer=shelf.producer,
                capacity=shelf.capacity,
                size=shelf.size,
                items=_counts(shelf.items),
                blocked_product_id=shelf.blocked_product_id,
                more_products=_more(shelf.items),
            )
            size += entry.ByteSize() + 8
            if taken and size > MAX_STATE_REPLY_BYTES:
                break
            response.shelves.append(entry)
            taken += 1
        if taken == len(state.shelves):
            for cart in state.carts:
                entry = pb.Cart(
                    cart_label=cart.cart_label,
                    consumer=cart.consumer,
                    items=_counts(cart.items),
                    waiting_product_id=cart.waiting_product_id,
                    more_products=_more(cart.items),
                )
                size += entry.ByteSize() + 8
                if taken and size > MAX_STATE_REPLY_BYTES:
                    break
                response.carts.append(entry)
                taken += 1
        if taken < len(state.shelves) + len(state.carts):
            response.next_page_token = _encode_page_token("state", offset + taken)
        elif page.next_offset is not None:
            response.next_page_token = _encode_page_token("state", page.next_offset)
        return response

    def Withdraw(self, request: pb.WithdrawRequest, context):
        result = self.market.withdraw(
            request.producer_id,
            request.product_id,
            request.quantity,
            owner=_owner(context),
        )
        log.info(
            "producer %s withdrew %d of %d %s",
            self.market.producer_name(request.producer_id),
            result.published,
            request.quantity,
            request.product_id,
        )
        return pb.WithdrawResponse(
            withdrawn=result.published, shelf_size=result.shelf_size
        )

    def WatchSales(self, request: pb.WatchSalesRequest, context):
        with self._waiter_slot("WatchSales"):
            sales: queue.SimpleQueue[core.Sale] = queue.SimpleQueue()
            stop = self.market.watch_sales(
                request.producer_id, sales, owner=_owner(context)
            )
            name = self.market.producer_name(request.producer_id)
            log.info("producer %s follows its sales", name)
            try:
                while context is None or context.is_active():
                    try:
                        sale = sales.get(timeout=0.2)
                    except queue.Empty:
                        continue
                    yield pb.WatchSalesResponse(
                        product_id=sale.product_id,
                        quantity=sale.quantity,
                        price=money_to_proto(sale.price),
                        cart_label=sale.cart_label,
                        sold_at_unix_ms=round(sale.sold_at * 1000),
                    )
            finally:
                stop()
                log.info("producer %s stopped following its sales", name)

    def ListProducts(self, request: pb.ListProductsRequest, context):
        offset = _decode_page_token(request.page_token, "products")
        limit = _page_size(request.page_size, default=100, maximum=1000)
        products, next_offset = self.market.list_products(offset, limit)
        response = pb.ListProductsResponse(
            products=[product_to_proto(product) for product in products]
        )
        if next_offset is not None:
            response.next_page_token = _encode_page_token("products", next_offset)
        return response

    def SearchProducts(self, request: pb.SearchProductsRequest, context):
        matches = _search_filter(request)
        offset = _decode_page_token(request.page_token, "search")
        limit = _page_size(request.page_size, default=100, maximum=1000)
        products, next_offset = self.market.search_products(matches, offset, limit)
        response = pb.SearchProductsResponse(
            products=[product_to_proto(product) for product in products]
        )
        if next_offset is not None:
            response.next_page_token = _encode_page_token("search", next_offset)
        return response

    def _product(self, message: pb.Product) -> core.Product:
        """Convert a Product message, reusing the result for equal messages.

        Producers publish the same product over and over, and the market
        skips its checks for a product object it already holds.
        """
        key = message.SerializeToString()
        product = self._products_by_bytes.get(key)
        if product is None:
            product = product_from_proto(message)
            if len(self._products_by_bytes) >= PRODUCT_CACHE_SIZE:
                self._products_by_bytes.clear()
            self._products_by_bytes[key] = product
        return product

    def _product_message(self, product: core.Product) -> pb.Product:
        """Return the message of a product, built once per product object."""
        cached = self._messages_by_id.get(product.product_id)
        if cached is None or cached[0] is not product:
            cached = (product, product_to_proto(product))
            if len(self._messages_by_id) >= PRODUCT_CACHE_SIZE:
                self._messages_by_id.clear()
            self._messages_by_id[product.product_id] = cached
        return cached[1]

    @contextlib.contextmanager
    def _waiter_slot(self, what: str):
        if not self._waiter_slots.acquire(blocking=False):
            raise core.ResourceExhausted(
                f"the server already has its maximum of {self.max_waiters} "
                f"waiting calls, so this {what} cannot wait; retry with back-off"
            )
        try:
            yield
        finally:
            self._waiter_slots.release()


# Most products each conversion cache keeps before it starts again.
PRODUCT_CACHE_SIZE = 10_000

# Size above which GetMarketState ends a page early, well under the default
# 4 MiB limit that gRPC clients put on a received message.
MAX_STATE_REPLY_BYTES = 2 * 1024 * 1024


def _owner(context) -> str | None:
    """Return the owner key of the caller's carts: its certificate with mutual TLS."""
    return security.owner(security.peer_identity(context))


def money_from_proto(message: pb.Money) -> core.Money:
    return core.Money(
        units=message.units, nanos=message.nanos, currency_code=message.currency_code
    )


def _page_size(requested: int, default: int, maximum: int) -> int:
    if requested < 0:
        raise core.InvalidArgument(
            f"page_size {requested} is negative; give 0 for the default or up to "
            f"{maximum}"
        )
    return min(requested or default, maximum)


# Largest offset a page token may carry; the market has far fewer entries.
MAX_PAGE_OFFSET = 10**12


def _encode_page_token(kind: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{offset}".encode()).decode()


def _decode_page_token(token: str, kind: str) -> int:
    """Return the offset in a page token, or raise InvalidArgument."""
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
        token_kind, offset_text = text.split(":")
        offset = int(offset_text)
        if token_kind != kind or not 0 <= offset <= MAX_PAGE_OFFSET:
            raise ValueError(text)
    except (ValueError, UnicodeError, binascii.Error):
        raise core.InvalidArgument(
            "page_token is not a token this call returned; pass next_page_token "
            "from the previous response, or leave it empty for the first page"
        ) from None
    return offset


def _search_filter(request: pb.SearchProductsRequest):
    """Build a predicate from the request's filters, checking them first."""
    kind = request.kind
    name_part = request.name_contains.casefold()
    key = request.attribute_key
    value_text = request.attribute_value
    if value_text and not key:
        raise core.InvalidArgument(
            "attribute_value is set but attribute_key is empty; give the key too"
        )
    low = core._nanos(money_from_proto(request.min_price)) if request.HasField("min_price") else None
    high = core._nanos(money_from_proto(request.max_price)) if request.HasField("max_price") else None
    if low is not None and high is not None and low > high:
        raise core.InvalidArgument(
            "min_price is above max_price; give a range whose minimum is at most "
            "its maximum"
        )

    def matches(product: core.Product) -> bool:
        if kind and product.kind != kind:
            return False
        if name_part and name_part not in product.name.casefold():
            return False
        price = core._nanos(product.price)
        if low is not None and price < low:
            return False
        if high is not None and price > high:
            return False
        if key:
            for attribute_key, value in product.attributes:
                if attribute_key == key:
                    return not value_text or _value_text(value) == value_text
            return False
        return True

    return matches


def _value_text(value: core.AttributeValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


SERVICE_NAME = "marketplace.v1.MarketService"

UNARY, STREAM = "unary", "stream"

# Method name, request type, response type, response cardinality, and whether
# it changes the market (and so goes through the request log).
METHODS = (
    ("RegisterProducer", pb.RegisterProducerRequest, pb.RegisterProducerResponse, UNARY, True),
    ("Publish", pb.PublishRequest, pb.PublishResponse, UNARY, True),
    ("CreateCart", pb.CreateCartRequest, pb.CreateCartResponse, UNARY, True),
    ("AddToCart", pb.AddToCartRequest, pb.AddToCartResponse, UNARY, True),
    ("RemoveFromCart", pb.RemoveFromCartRequest, pb.RemoveFromCartResponse, UNARY, True),
    ("PlaceOrder", pb.PlaceOrderRequest, pb.PlaceOrderResponse, UNARY, True),
    ("GetMarketState", pb.GetMarketStateRequest, pb.GetMarketStateResponse, UNARY, False),
    ("Withdraw", pb.WithdrawRequest, pb.WithdrawResponse, UNARY, True),
    ("WatchSales", pb.WatchSalesRequest, pb.WatchSalesResponse, STREAM, False),
    ("ListProducts", pb.ListProductsRequest, pb.ListProductsResponse, UNARY, False),
    ("SearchProducts", pb.SearchProductsRequest, pb.SearchProductsResponse, UNARY, False),
)


class _WarningLimiter:
    """Lets at most `per_second` warnings through and counts the rest."""

    def __init__(self, per_second: int = 20) -> None:
        self.per_second = per_second
        self._lock = threading.Lock()
        self._second = 0
        self._count = 0
        self._suppressed = 0

    def allow(self) -> tuple[bool, int]:
        """Return whether to log now, and how many were suppressed before."""
        now = int(time.monotonic())
        with self._lock:
            if now != self._second:
                self._second, self._count = now, 0
            self._count += 1
            if self._count > self.per_second:
                self._suppressed += 1
                return False, 0
            suppressed, self._suppressed = self._suppressed, 0
            return True, suppressed


def _make_handler(
    servicer: MarketServicer,
    request_log: RequestLog,
    limiter: _WarningLimiter,
    name: str,
    request_type,
    response_type,
    cardinality: str,
    mutating: bool,
    journal: persistence.Journal | None = None,
) -> grpc.RpcMethodHandler:
    method = getattr(servicer, name)

    def parse(raw: bytes, context: grpc.ServicerContext):
        try:
            return request_type.FromString(raw)
        except DecodeError as error:
            _warn(limiter, name, context, "INVALID_ARGUMENT", str(error))
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request is not a valid {request_type.DESCRIPTOR.full_name} "
                f"message ({error}); send one encoded from the published proto",
            )

    def fail(error: Exception, context: grpc.ServicerContext):
        if isinstance(error, core.MarketError):
            code = _STATUS_BY_ERROR[type(error)]
            _warn(limiter, name, context, code.name, str(error))
            reason = _REASON_BY_ERROR.get(type(error))
            if reason is not None:
                context.set_trailing_metadata(((REASON_KEY, reason),))
            context.abort(code, str(error))
        log.error(
            "%s from %s failed unexpectedly", name, context.peer(), exc_info=error
        )
        context.abort(
            grpc.StatusCode.INTERNAL,
            f"{name} failed inside the server; the server log has the details",
        )

    def handle_unary(raw: bytes, context: grpc.ServicerContext):
        request = parse(raw, context)
        try:
            if mutating:
                apply = lambda: method(request, context)  # noqa: E731
                if journal is not None:
                    apply = lambda: journal.call(  # noqa: E731
                        name, request, raw, context, method, servicer._waiter_slot
                    )
                return request_log.run(name, request.request_id, raw, apply)
            return method(request, context)
        except Exception as error:
            fail(error, context)

    def handle_stream(raw: bytes, context: grpc.ServicerContext):
        request = parse(raw, context)
        try:
            yield from method(request, context)
        except Exception as error:
            fail(error, context)

    if cardinality == STREAM:
        return grpc.unary_stream_rpc_method_handler(
            handle_stream,
            request_deserializer=None,
            response_serializer=response_type.SerializeToString,
        )
    return grpc.unary_unary_rpc_method_handler(
        handle_unary,
        request_deserializer=None,
        response_serializer=response_type.SerializeToString,
    )


def _warn(limiter, name, context, code_name, message) -> None:
    allowed, suppressed = limiter.allow()
    if not allowed:
        return
    if suppressed:
        log.warning("%d rejected calls were not logged", suppressed)
    log.warning(
        "%s from %s rejected with %s: %s", name, context.peer(), code_name, message
    )


def add_market_service(
    server: grpc.Server,
    market: core.Market,
    request_log: RequestLog,
    max_waiters: int = 8,
    max_wait: float = 10.0,
    journal: persistence.Journal | None = None,
) -> None:
    """Register the MarketService for `market` on `server`.

    Requests arrive as raw bytes and are parsed here, so that a malformed
    message gets INVALID_ARGUMENT rather than the library's INTERNAL. At most
    `max_waiters` calls wait at once (AddToCart with wait_ms, WatchSales),
    each AddToCart for at most `max_wait` seconds. With a `journal`, every
    mutating call is recorded in it and gets its reply once it is on disk.
    """
    servicer = MarketServicer(market, max_waiters, max_wait)
    limiter = _WarningLimiter()
    handlers = {
        name: _make_handler(
            servicer,
            request_log,
            limiter,
            name,
            request_type,
            response_type,
            cardinality,
            mutating,
            journal,
        )
        for name, request_type, response_type, cardinality, mutating in METHODS
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
    )


# Most product counts listed per shelf or cart in GetMarketState, so that one
# entry stays far below the message size limit even with long product ids.
MAX_COUNTS_PER_ENTRY = 5000


def _counts(items: dict[str, int]) -> list[pb.ProductCount]:
    return [
        pb.ProductCount(product_id=pid, quantity=n)
        for pid, n in itertools.islice(items.items(), MAX_COUNTS_PER_ENTRY)
    ]


def _more(items: dict[str, int]) -> int:
    return max(0, len(items) - MAX_COUNTS_PER_ENTRY)
