"""Consumer program: fills a scenario consumer's carts, orders them, prints purchases."""

from __future__ import annotations

import logging
import sys
import threading

import grpc

from marketplace.v1 import marketplace_pb2 as pb

from . import common
from .retry import RetryPolicy, call, move_all, new_request_id
from .scenario import render_product

# Trailing metadata key the server sets on FAILED_PRECONDITION for a cart.
REASON_KEY = "marketplace-reason"

log = logging.getLogger(__name__)

# Serialises whole purchase lines from the consumer threads of one process.
_output_lock = threading.Lock()


def write_lines(lines: list[str]) -> None:
    """Write purchase lines to stdout, each whole, and flush."""
    with _output_lock:
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()


# A cart that was lost (the server restarted) or expired is filled again from
# the start, at most this many times before the consumer fails.
MAX_CART_RESTARTS = 10


def run_consumer(stub, scenario, name, time_scale, retry_deadline, stop) -> None:
    """Run every cart of consumer `name`: add, remove, place order, print."""
    spec = scenario.consumer(name)
    policy = RetryPolicy(
        refusal_wait=spec.retry_wait_time * time_scale, deadline=retry_deadline
    )
    for operations in spec.carts:
        restarts = 0
        while True:
            try:
                lines = _run_cart(stub, policy, stop, name, operations)
                break
            except grpc.RpcError as error:
                reason = cart_lost_reason(error)
                if reason is None or restarts >= MAX_CART_RESTARTS:
                    raise
                restarts += 1
                log.warning(
                    "consumer %s: cart %s; filling a new cart from the start "
                    "(%d of %d)",
                    name,
                    reason,
                    restarts,
                    MAX_CART_RESTARTS,
                )
        write_lines(lines)


def cart_lost_reason(error: grpc.RpcError) -> str | None:
    """Return why a cart is gone for good, or None for other errors."""
    code = error.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return "is unknown to the server, which may have restarted"
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        metadata = dict(error.trailing_metadata() or ())
        if metadata.get(REASON_KEY) == "CART_EXPIRED":
            return "expired, and its items went back to their shelves"
    return None


def _run_cart(stub, policy, stop, name, operations) -> list[str]:
    """Create a cart, run its operations, place the order; return the lines."""
    created = call(
        stub.CreateCart,
        pb.CreateCartRequest(request_id=new_request_id(), consumer=name),
        policy,
        stop,
        what=f"consumer {name} create cart",
    )
    cart_id, label = created.cart_id, created.cart_label

    for operation in operations:
        if operation.quantity == 0:
            continue
        if operation.kind == "add":
            _add(stub, policy, stop, cart_id, label, operation)
        else:
            _remove(stub, policy, stop, name, cart_id, label, operation)

    order = call(
        stub.PlaceOrder,
        pb.PlaceOrderRequest(request_id=new_request_id(), cart_id=cart_id),
        policy,
        stop,
        what=f"consumer {name} place order for cart {label}",
    )
    lines = []
    for line in order.lines:
        text = f"{name} bought {render_product(line.product)}"
        lines.extend([text] * line.quantity)
    log.info("cart %s ordered: %d items", label, len(lines))
    return lines


def _add(stub, policy, stop, cart_id, label, operation) -> None:
    what = f"cart {label} add {operation.product_id}"

    def attempt(remaining: int) -> int:
        request = pb.AddToCartRequest(
            request_id=new_request_id(),
            cart_id=cart_id,
            product_id=operation.product_id,
            quantity=remaining,
        )
        return call(stub.AddToCart, request, policy, stop, what=what).added

    move_all(attempt, operation.quantity, policy, stop, what=what)


def _remove(stub, policy, stop, name, cart_id, label, operation) -> None:
    request = pb.RemoveFromCartRequest(
        request_id=new_request_id(),
        cart_id=cart_id,
        product_id=operation.product_id,
        quantity=operation.quantity,
    )
    what = f"cart {label} remove {operation.product_id}"
    response = call(stub.RemoveFromCart, request, policy, stop, what=what)
    if response.missing:
        # Waiting cannot put an item into the cart, so this is not retried.
        log.warning(
            "consumer %s, cart %s: could not remove %d of %d %s, "
            "the cart did not hold them",
            name,
            label,
            response.missing,
            operation.quantity,
            operation.product_id,
        )


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser(
        "marketplace-consumer",
        "Run consumers of a scenario: fill and order each of their carts and "
        "print one line per item bought.",
    )
    args = common.parse(parser, argv)
    scenario = common.load_scenario(args.scenario)
    common.check_names(scenario, args.name, "consumer")

    stop = threading.Event()
    common.install_stop_handlers(stop)
    channel, stub = common.connect(args.server, args.connect_timeout)
    with channel:
        return common.run_clients(
            args.name,
            lambda name: run_consumer(
                stub, scenario, name, args.time_scale, args.retry_deadline, stop
            ),
            stop,
        )


if __name__ == "__main__":
    sys.exit(main())
