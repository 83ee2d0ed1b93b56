"""A producer or consumer process for tests/test_conservation_stress.py.

Makes random calls on a market server until it has made --operations calls
or --seconds have passed, whichever comes first, then prints one JSON object
on stdout: what it published, or what each of its carts got and lost. A
consumer places the order of its last open cart before it stops, so that
every cart it opened ends ordered or expired.

Exits 0 when every call got an expected response. Otherwise it exits 1,
and the "errors" list of the JSON object names each unexpected status.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections import Counter

import grpc

from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc
from marketplace_clients.retry import RetryPolicy, call, new_request_id

# Products shared by all workers, so that consumers add what producers
# publish. Each id has the same data in every process, as Publish requires.
PRODUCTS = {
    product_id: pb.Product(
        product_id=product_id,
        kind="Tea",
        name=product_id.title(),
        price=pb.Money(units=units),
    )
    for product_id, units in (("linden", 9), ("sencha", 12), ("oolong", 7))
}

POLICY = RetryPolicy(refusal_wait=0.0, deadline=20.0, call_timeout=10.0)
REASON_KEY = "marketplace-reason"


def reason_of(error: grpc.RpcError) -> str:
    """Return the marketplace-reason trailing metadata of a failed call, or ""."""
    for key, value in error.trailing_metadata() or ():
        if key == REASON_KEY:
            return value
    return ""


class Worker:
    def __init__(self, stub, name: str, rng: random.Random, stop_at: float) -> None:
        self.stub = stub
        self.name = name
        self.rng = rng
        self.stop_at = stop_at
        # Never set: the worker stops by its own count and time limits.
        self.stop = threading.Event()
        self.errors: list[str] = []

    def call(self, method, request, what: str):
        return call(method, request, POLICY, self.stop, what=f"{self.name} {what}")

    def time_is_up(self) -> bool:
        return time.monotonic() >= self.stop_at


class Producer(Worker):
    """A producer that registers one shelf and publishes random products onto it."""

    def run(self, operations: int) -> dict:
        response = self.call(
            self.stub.RegisterProducer,
            pb.RegisterProducerRequest(request_id=new_request_id(), name=self.name),
            "register",
        )
        publishes = []
        for _ in range(operations):
            if self.time_is_up():
                break
            product_id = self.rng.choice(sorted(PRODUCTS))
            quantity = self.rng.randint(1, 4)
            request = pb.PublishRequest(
                request_id=new_request_id(),
                producer_id=response.producer_id,
                product=PRODUCTS[product_id],
                quantity=quantity,
            )
            result = self.call(self.stub.Publish, request, "publish")
            publishes.append(
                {
                    "product_id": product_id,
                    "quantity": quantity,
                    "published": result.published,
                    "shelf_size": result.shelf_size,
                }
            )
        return {
            "role": "producer",
            "name": self.name,
            "capacity": response.capacity,
            "publishes": publishes,
            "errors": self.errors,
        }


class Consumer(Worker):
    """A consumer that fills carts one at a time with random adds and removes."""

    def run(self, operations: int) -> dict:
        carts = []
        cart = None
        for _ in range(operations):
            if self.time_is_up():
                break
            if cart is None:
                cart = self.create_cart()
                carts.append(cart)
                continue
            choice = self.rng.random()
            if choice < 0.55:
                self.add(cart)
            elif choice < 0.85:
                self.remove(cart)
            else:
                self.place_order(cart)
            if cart["status"] != "open":
                cart = None
        if cart is not None:
            self.place_order(cart)
        return {
            "role": "consumer",
            "name": self.name,
            "carts": [{k: v for k, v in c.items() if k != "id"} for c in carts],
            "errors": self.errors,
        }

    def create_cart(self) -> dict:
        request = pb.CreateCartRequest(request_id=new_request_id(), consumer=self.name)
        response = self.call(self.stub.CreateCart, request, "create cart")
        return {
            "id": response.cart_id,
            "label": response.cart_label,
            "status": "open",
            "added": Counter(),
            "removed": Counter(),
            "ordered": Counter(),
        }

    def on_cart(self, cart: dict, method, request, what: str):
        """Make a call on `cart`, or return None when the cart turns out closed."""
        try:
            return self.call(method, request, f"{what} on {cart['label']}")
        except grpc.RpcError as error:
            if (
                error.code() == grpc.StatusCode.FAILED_PRECONDITION
                and reason_of(error) == "CART_EXPIRED"
            ):
                cart["status"] = "expired"
                return None
            self.errors.append(
                f"{what} on {cart['label']}: {error.code().name}: {error.details()}"
            )
            cart["status"] = "failed"
            return None

    def add(self, cart: dict) -> None:
        product_id = self.rng.choice(sorted(PRODUCTS))
        request = pb.AddToCartRequest(
            request_id=new_request_id(),
            cart_id=cart["id"],
            product_id=product_id,
            quantity=self.rng.randint(1, 3),
        )
        response = self.on_cart(cart, self.stub.AddToCart, request, "add")
        if response is not None:
            cart["added"][product_id] += response.added

    def remove(self, cart: dict) -> None:
        in_cart = cart["added"] - cart["removed"]
        # Mostly a product in the cart, sometimes any, to remove missing items.
        if in_cart and self.rng.random() < 0.8:
            product_id = self.rng.choice(sorted(in_cart))
        else:
            product_id = self.rng.choice(sorted(PRODUCTS))
        request = pb.RemoveFromCartRequest(
            request_id=new_request_id(),
            cart_id=cart["id"],
            product_id=product_id,
            quantity=self.rng.randint(1, 3),
        )
        response = self.on_cart(cart, self.stub.RemoveFromCart, request, "remove")
        if response is not None:
            cart["removed"][product_id] += response.removed

    def place_order(self, cart: dict) -> None:
        request = pb.PlaceOrderRequest(request_id=new_request_id(), cart_id=cart["id"])
        response = self.on_cart(cart, self.stub.PlaceOrder, request, "order")
        if response is not None:
            for line in response.lines:
                cart["ordered"][line.product.product_id] += line.quantity
            cart["status"] = "ordered"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="HOST:PORT of the server")
    parser.add_argument("--role", required=True, choices=["producer", "consumer"])
    parser.add_argument("--name", required=True, help="producer or consumer name")
    parser.add_argument("--seed", type=int, required=True, help="random seed")
    parser.add_argument(
        "--operations", type=int, required=True, help="max calls to make"
    )
    parser.add_argument(
        "--seconds", type=float, required=True, help="max seconds to run"
    )
    args = parser.parse_args()

    stop_at = time.monotonic() + args.seconds
    worker_type = Producer if args.role == "producer" else Consumer
    with grpc.insecure_channel(args.server) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        worker = worker_type(stub, args.name, random.Random(args.seed), stop_at)
        report = worker.run(args.operations)
    json.dump(report, sys.stdout)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
