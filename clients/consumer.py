"""Consumer program: fills a scenario consumer's carts, orders them, prints purchases."""

from __future__ import annotations

import logging
import sys
import threading
import time

import grpc

from marketplace.v1 import marketplace_pb2 as pb

from . import common
from .retry import RETRYABLE_CODES, RetryPolicy, add_all, call, new_request_id
from .scenario import Operation, items_over_budget, render_product

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


# Seconds an add waits on the server for an item before the server replies.
DEFAULT_ADD_WAIT = 2.0

# Seconds during which adds poll after the server had no room for a waiting
# add.
POLL_AFTER_BUSY = 5.0

# A cart that was lost (the server restarted) or expired is filled again from
# the start, at most this many times before the consumer fails.
MAX_CART_RESTARTS = 10


def run_consumer(
    stub, scenario, name, time_scale, retry_deadline, stop, add_wait=DEFAULT_ADD_WAIT
) -> None:
    """Run every cart of consumer `name`: add, remove, place order, print.

    An add that finds no item waits up to `add_wait` seconds on the server
    for one (0 polls instead), and never retries sooner than the scenario's
    retry_wait_time.
    """
    spec = scenario.consumer(name)
    policy = RetryPolicy(
        refusal_wait=spec.retry_wait_time * time_scale, deadline=retry_deadline
    )
    cart = CartRunner(stub, policy, stop, name, spec.budget, scenario.products, add_wait)
    for operations in spec.carts:
        restarts = 0
        while True:
            try:
                lines = cart.run(operations)
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


class CartRunner:
    """Fills, trims to budget and orders the carts of one consumer."""

    def __init__(self, stub, policy, stop, name, budget, products, add_wait) -> None:
        self.stub = stub
        self.policy = policy
        self.stop = stop
        self.name = name
        self.budget = budget
        self.products = products
        self.add_wait = add_wait
        # Until this time, adds poll instead of waiting on the server.
        self._poll_until = 0.0

    def run(self, operations) -> list[str]:
        """Create a cart, run its operations, place the order; return the lines."""
        request = pb.CreateCartRequest(request_id=new_request_id(), consumer=self.name)
        if self.budget is not None:
            request.budget.CopyFrom(self.budget)
        created = call(
            self.stub.CreateCart,
            request,
            self.policy,
            self.stop,
            what=f"consumer {self.name} create cart",
        )
        cart_id, label = created.cart_id, created.cart_label

        # Items in the cart per product id, as the server reported them.
        contents: dict[str, int] = {}
        for operation in operations:
            if operation.quantity == 0:
                continue
            product_id = operation.product_id
            if operation.kind == "add":
                self._add(cart_id, label, operation)
                contents[product_id] = contents.get(product_id, 0) + operation.quantity
            else:
                removed = self._remove(cart_id, label, operation)
                contents[product_id] = contents.get(product_id, 0) - removed

        order = self._place_order(cart_id, label, contents)
        lines = []
        for line in order.lines:
            text = f"{self.name} bought {render_product(line.product)}"
            lines.extend([text] * line.quantity)
        log.info("cart %s ordered: %d items", label, len(lines))
        return lines

    def _add(self, cart_id, label, operation) -> None:
        what = f"cart {label} add {operation.product_id}"
        add_all(
            lambda remaining: self._add_once(
                cart_id, operation.product_id, remaining, what
            ),
            operation.quantity,
            self.policy,
            self.stop,
            what=what,
        )

    def _add_once(self, cart_id, product_id, quantity, what) -> int:
        request = pb.AddToCartRequest(
            request_id=new_request_id(),
            cart_id=cart_id,
            product_id=product_id,
            quantity=quantity,
        )
        if self.add_wait > 0 and time.monotonic() >= self._poll_until:
            request.wait_ms = round(self.add_wait * 1000)
            try:
                return call(
                    self.stub.AddToCart,
                    request,
                    self.policy,
                    self.stop,
                    what=what,
                    retryable=RETRYABLE_CODES - {grpc.StatusCode.RESOURCE_EXHAUSTED},
                ).added
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                # Too many calls already wait on the server: poll for a while
                # rather than ask to wait, and be refused, on every attempt.
                log.debug("%s: server has no room for a waiting call", what)
                self._poll_until = time.monotonic() + POLL_AFTER_BUSY
                request.request_id = new_request_id()
                request.wait_ms = 0
        return call(self.stub.AddToCart, request, self.policy, self.stop, what=what).added

    def _remove(self, cart_id, label, operation, quantity=None) -> int:
        """Remove items and return how many were removed."""
        quantity = quantity or operation.quantity
        request = pb.RemoveFromCartRequest(
            request_id=new_request_id(),
            cart_id=cart_id,
            product_id=operation.product_id,
            quantity=quantity,
        )
        what = f"cart {label} remove {operation.product_id}"
        response = call(self.stub.RemoveFromCart, request, self.policy, self.stop, what=what)
        if response.missing:
            # Waiting cannot put an item into the cart, so this is not retried.
            log.warning(
                "consumer %s, cart %s: could not remove %d of %d %s, "
                "the cart did not hold them",
                self.name,
                label,
                response.missing,
                quantity,
                operation.product_id,
            )
        return response.removed

    def _place_order(self, cart_id, label, contents):
        what = f"consumer {self.name} place order for cart {label}"
        request = pb.PlaceOrderRequest(request_id=new_request_id(), cart_id=cart_id)
        try:
            return call(self.stub.PlaceOrder, request, self.policy, self.stop, what=what)
        except grpc.RpcError as error:
            metadata = dict(error.trailing_metadata() or ())
            if metadata.get(REASON_KEY) != "OVER_BUDGET":
                raise
            log.warning("consumer %s: %s", self.name, error.details())

        for product_id, count in items_over_budget(self.budget, self.products, contents):
            removed = self._remove(
                cart_id, label, Operation("remove", product_id, count), count
            )
            log.warning(
                "consumer %s, cart %s: dropped %d %s to stay within the budget",
                self.name,
                label,
                removed,
                product_id,
            )
        request = pb.PlaceOrderRequest(request_id=new_request_id(), cart_id=cart_id)
        return call(self.stub.PlaceOrder, request, self.policy, self.stop, what=what)


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser(
        "marketplace-consumer",
        "Run consumers of a scenario: fill and order each of their carts and "
        "print one line per item bought.",
    )
    parser.add_argument(
        "--add-wait",
        type=float,
        default=DEFAULT_ADD_WAIT,
        help="seconds an add that finds no item waits on the server for one; "
        "0 polls every retry_wait_time instead",
    )
    args = common.parse(parser, argv)
    if not (0 <= args.add_wait <= 3600):
        parser.error(f"--add-wait {args.add_wait} is invalid; give 0 to 3600 seconds")
    scenario = common.load_scenario(args.scenario)
    common.check_names(scenario, args.name, "consumer")

    stop = threading.Event()
    common.install_stop_handlers(stop)
    channel, stub = common.connect(
        args.server, args.connect_timeout, common.channel_settings(args)
    )
    with channel:
        return common.run_clients(
            args.name,
            lambda name: run_consumer(
                stub,
                scenario,
                name,
                args.time_scale,
                args.retry_deadline,
                stop,
                args.add_wait,
            ),
            stop,
        )


if __name__ == "__main__":
    sys.exit(main())
