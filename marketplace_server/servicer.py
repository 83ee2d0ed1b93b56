"""The gRPC servicer: converts messages to market calls and errors to status codes."""

from __future__ import annotations

import logging
import threading
import time

import grpc
from google.protobuf.message import DecodeError

from marketplace.v1 import marketplace_pb2 as pb

from . import core
from .requests import RequestLog

log = logging.getLogger(__name__)

_STATUS_BY_ERROR = {
    core.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    core.NotFound: grpc.StatusCode.NOT_FOUND,
    core.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    core.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    core.CartOrdered: grpc.StatusCode.FAILED_PRECONDITION,
    core.CartExpired: grpc.StatusCode.FAILED_PRECONDITION,
}

# Trailing metadata key that tells clients apart the reasons behind one
# status code, as documented in the proto.
REASON_KEY = "marketplace-reason"
_REASON_BY_ERROR = {
    core.CartOrdered: "CART_ORDERED",
    core.CartExpired: "CART_EXPIRED",
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

    def __init__(self, market: core.Market) -> None:
        self.market = market

    def RegisterProducer(self, request: pb.RegisterProducerRequest):
        producer_id = self.market.register_producer(request.name)
        log.info("producer %s registered", request.name)
        return pb.RegisterProducerResponse(
            producer_id=producer_id, capacity=self.market.capacity
        )

    def Publish(self, request: pb.PublishRequest):
        if not request.HasField("product"):
            raise core.InvalidArgument(
                "product is not set; give the product to publish"
            )
        product = product_from_proto(request.product)
        result = self.market.publish(request.producer_id, product, request.quantity)
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

    def CreateCart(self, request: pb.CreateCartRequest):
        cart_id, label = self.market.create_cart(request.consumer)
        log.debug("cart %s created", label)
        return pb.CreateCartResponse(
            cart_id=cart_id,
            cart_label=label,
            lease_ms=round(self.market.lease_seconds * 1000),
        )

    def AddToCart(self, request: pb.AddToCartRequest):
        added = self.market.add_to_cart(
            request.cart_id, request.product_id, request.quantity
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

    def RemoveFromCart(self, request: pb.RemoveFromCartRequest):
        result = self.market.remove_from_cart(
            request.cart_id, request.product_id, request.quantity
        )
        if result.missing:
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

    def PlaceOrder(self, request: pb.PlaceOrderRequest):
        order = self.market.place_order(request.cart_id)
        log.info(
            "order placed for cart %s: %d items",
            order.cart_label,
            sum(count for _, count in order.lines),
        )
        return pb.PlaceOrderResponse(
            lines=[
                pb.OrderLine(product=product_to_proto(product), quantity=count)
                for product, count in order.lines
            ],
            total=money_to_proto(order.total),
        )

    def GetMarketState(self, request: pb.GetMarketStateRequest):
        state = self.market.snapshot()
        return pb.GetMarketStateResponse(
            shelves=[
                pb.Shelf(
                    producer=shelf.producer,
                    capacity=shelf.capacity,
                    size=shelf.size,
                    items=_counts(shelf.items),
                )
                for shelf in state.shelves
            ],
            carts=[
                pb.Cart(
                    cart_label=cart.cart_label,
                    consumer=cart.consumer,
                    items=_counts(cart.items),
                )
                for cart in state.carts
            ],
            orders=state.orders,
            items_ordered=state.items_ordered,
            items_published=state.items_published,
            carts_expired=state.carts_expired,
            publishes_refused=state.publishes_refused,
            adds_refused=state.adds_refused,
        )


SERVICE_NAME = "marketplace.v1.MarketService"

# Method name, request type, response type, and whether it changes the market
# (and so goes through the request log).
METHODS = (
    ("RegisterProducer", pb.RegisterProducerRequest, pb.RegisterProducerResponse, True),
    ("Publish", pb.PublishRequest, pb.PublishResponse, True),
    ("CreateCart", pb.CreateCartRequest, pb.CreateCartResponse, True),
    ("AddToCart", pb.AddToCartRequest, pb.AddToCartResponse, True),
    ("RemoveFromCart", pb.RemoveFromCartRequest, pb.RemoveFromCartResponse, True),
    ("PlaceOrder", pb.PlaceOrderRequest, pb.PlaceOrderResponse, True),
    ("GetMarketState", pb.GetMarketStateRequest, pb.GetMarketStateResponse, False),
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
    mutating: bool,
) -> grpc.RpcMethodHandler:
    method = getattr(servicer, name)

    def handle(raw: bytes, context: grpc.ServicerContext):
        try:
            request = request_type.FromString(raw)
        except DecodeError as error:
            _warn(limiter, name, context, "INVALID_ARGUMENT", str(error))
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request is not a valid {request_type.DESCRIPTOR.full_name} "
                f"message ({error}); send one encoded from the published proto",
            )
        try:
            if mutating:
                return request_log.run(
                    name, request.request_id, raw, lambda: method(request)
                )
            return method(request)
        except core.MarketError as error:
            code = _STATUS_BY_ERROR[type(error)]
            _warn(limiter, name, context, code.name, str(error))
            reason = _REASON_BY_ERROR.get(type(error))
            if reason is not None:
                context.set_trailing_metadata(((REASON_KEY, reason),))
            context.abort(code, str(error))
        except Exception:
            log.exception("%s from %s failed unexpectedly", name, context.peer())
            context.abort(
                grpc.StatusCode.INTERNAL,
                f"{name} failed inside the server; the server log has the details",
            )

    return grpc.unary_unary_rpc_method_handler(
        handle,
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
    server: grpc.Server, market: core.Market, request_log: RequestLog
) -> None:
    """Register the MarketService for `market` on `server`.

    Requests arrive as raw bytes and are parsed here, so that a malformed
    message gets INVALID_ARGUMENT rather than the library's INTERNAL.
    """
    servicer = MarketServicer(market)
    limiter = _WarningLimiter()
    handlers = {
        name: _make_handler(
            servicer, request_log, limiter, name, request_type, response_type, mutating
        )
        for name, request_type, response_type, mutating in METHODS
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
    )


def _counts(items: dict[str, int]) -> list[pb.ProductCount]:
    return [pb.ProductCount(product_id=pid, quantity=n) for pid, n in items.items()]
