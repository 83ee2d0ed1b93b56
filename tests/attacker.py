"""Sends malformed requests to a market server until a deadline, then prints the codes.

Used by the tests as a separate hostile client process. Every request is
invalid or names an unknown id, so none of them may change the market.
Usage: python tests/attacker.py HOST:PORT SECONDS MAX_CALLS
"""

from __future__ import annotations

import collections
import json
import math
import random
import signal
import sys
import time

import grpc

from marketplace.v1 import marketplace_pb2 as pb

METHODS = {
    "RegisterProducer": pb.RegisterProducerRequest,
    "Publish": pb.PublishRequest,
    "CreateCart": pb.CreateCartRequest,
    "AddToCart": pb.AddToCartRequest,
    "RemoveFromCart": pb.RemoveFromCartRequest,
    "PlaceOrder": pb.PlaceOrderRequest,
    "GetMarketState": pb.GetMarketStateRequest,
    "Withdraw": pb.WithdrawRequest,
    "ListProducts": pb.ListProductsRequest,
    "SearchProducts": pb.SearchProductsRequest,
}


def malformed_requests(rng: random.Random):
    """Yield (method, request bytes) pairs that no server may apply."""
    unknown = "%032x" % rng.getrandbits(128)
    yield "RegisterProducer", pb.RegisterProducerRequest(name="").SerializeToString()
    yield "RegisterProducer", pb.RegisterProducerRequest(name="x" * 5000).SerializeToString()
    yield "CreateCart", pb.CreateCartRequest(consumer="").SerializeToString()
    yield "CreateCart", pb.CreateCartRequest(consumer="a\nb").SerializeToString()
    product = pb.Product(product_id="id1", kind="Tea", name="Linden")
    product.attributes.add(key="acidity", float_value=math.nan)
    yield "Publish", pb.PublishRequest(
        producer_id=unknown, product=product, quantity=1
    ).SerializeToString()
    yield "Publish", pb.PublishRequest(producer_id=unknown, quantity=-5).SerializeToString()
    for quantity in (0, -1, 10**15):
        yield "AddToCart", pb.AddToCartRequest(
            cart_id=unknown, product_id="id1", quantity=quantity
        ).SerializeToString()
    yield "AddToCart", pb.AddToCartRequest(
        cart_id=unknown, product_id="id1", quantity=1
    ).SerializeToString()
    yield "RemoveFromCart", pb.RemoveFromCartRequest(
        cart_id=unknown, product_id="id1", quantity=1
    ).SerializeToString()
    yield "PlaceOrder", pb.PlaceOrderRequest(cart_id=unknown).SerializeToString()
    yield "PlaceOrder", pb.PlaceOrderRequest(cart_id="").SerializeToString()
    yield "Withdraw", pb.WithdrawRequest(
        producer_id=unknown, product_id="id1", quantity=1
    ).SerializeToString()
    yield "GetMarketState", pb.GetMarketStateRequest(page_token="!!").SerializeToString()
    yield "ListProducts", pb.ListProductsRequest(page_size=-1).SerializeToString()
    yield "SearchProducts", pb.SearchProductsRequest(
        attribute_value="x"
    ).SerializeToString()
    for method in METHODS:
        if method == "GetMarketState":
            continue
        yield method, rng.randbytes(rng.randrange(1, 64))
        yield method, b"\x0a\xff\xff\xff\xff\x0f"


def main() -> int:
    address, seconds, max_calls = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(7)
    codes: collections.Counter[str] = collections.Counter()
    deadline = time.monotonic() + seconds
    calls = 0
    stopped = []
    # SIGTERM ends the run early, and the codes seen so far are still printed.
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.append(signum))
    with grpc.insecure_channel(address) as channel:
        callables = {
            method: channel.unary_unary(
                f"/marketplace.v1.MarketService/{method}",
                request_serializer=None,
                response_deserializer=None,
            )
            for method in METHODS
        }
        while time.monotonic() < deadline and calls < max_calls and not stopped:
            for method, raw in malformed_requests(rng):
                try:
                    callables[method](raw, timeout=5)
                    codes[f"{method} OK"] += 1
                except grpc.RpcError as error:
                    codes[f"{method} {error.code().name}"] += 1
                calls += 1
    print(json.dumps(codes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
