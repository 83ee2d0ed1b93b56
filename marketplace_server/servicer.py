"""The gRPC servicer: converts messages to market calls and errors to status codes."""

from __future__ import annotations

import functools
import logging

import grpc

from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc

from . import core

log = logging.getLogger(__name__)

_STATUS_BY_ERROR = {
    core.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    core.NotFound: grpc.StatusCode.NOT_FOUND,
    core.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
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


def _map_errors(method):
    """Abort the call with the status code that matches a MarketError."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except core.MarketError as error:
            code = _STATUS_BY_ERROR[type(error)]
            log.warning(
                "%s rejected with %s from %s: %s",
                method.__name__,
                code.name,
                context.peer(),
                error,
            )
            context.abort(code, str(error))

    return wrapper


class MarketServicer(pb_grpc.MarketServiceServicer):
    """Serves one core.Market over gRPC."""

    def __init__(self, market: core.Market) -> None:
        self.market = market

    @_map_errors
    def RegisterProducer(self, request, context):
        producer_id = self.market.register_producer(request.name)
        log.info("producer %s registered", request.name)
        return pb.RegisterProducerResponse(
            producer_id=producer_id, capacity=self.market.capacity
        )

    @_map_errors
    def Publish(self, request, context):
        if not request.HasField("product"):
            raise core.InvalidArgument("product is not set; give the product to publish")
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

    @_map_errors
    def CreateCart(self, request, context):
        cart_id, label = self.market.create_cart(request.consumer)
        log.debug("cart %s created", label)
        return pb.CreateCartResponse(cart_id=cart_id, cart_label=label)

    @_map_errors
    def AddToCart(self, request, context):
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

    @_map_errors
    def RemoveFromCart(self, request, context):
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

    @_map_errors
    def PlaceOrder(self, request, context):
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

    def GetMarketState(self, request, context):
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
        )


def _counts(items: dict[str, int]) -> list[pb.ProductCount]:
    return [pb.ProductCount(product_id=pid, quantity=n) for pid, n in items.items()]
