"""Generate classic-style scenario files of any size for the benchmarks.

The generated market cannot deadlock: each producer makes a single product,
so a producer stuck on a full shelf has filled it with items that consumers
can take. Every remove takes back at most what the cart holds, so the number
of items bought is known in advance.

Usage: python -m benchmarks.generate PRODUCERS CONSUMERS OUT.json [--seed N]
"""

from __future__ import annotations

import argparse
import json
import random
import sys

PRODUCTS = (
    ("Tea", "Sencha", {"type": "Green"}),
    ("Tea", "Linden", {"type": "Herbal"}),
    ("Tea", "Assam", {"type": "Black"}),
    ("Coffee", "Indonezia", {"acidity": 5.05, "roast_level": "MEDIUM"}),
    ("Coffee", "Brasil", {"acidity": 5.09, "roast_level": "MEDIUM"}),
    ("Coffee", "Yirgacheffe", {"acidity": 6.1, "roast_level": "LIGHT"}),
    ("Honey", "Acacia", {"organic": True, "grams": 250}),
    ("Honey", "Heather", {"organic": False, "grams": 500}),
    ("Honey", "Linden", {"organic": True, "grams": 250}),
    ("Tea", "Wild Cherry", {"type": "Black"}),
)


def generate(
    producers: int, consumers: int, seed: int = 1, queue_size: int = 15
) -> tuple[dict, int]:
    """Return a scenario as a JSON-ready dict, and the number of items it buys.

    Waits are in the range of the classic scenarios: 0.05 to 0.35 s between
    publishes, 0.1 to 0.3 s before retrying a refused publish or add.
    """
    rng = random.Random(seed)
    products = {}
    for number, (kind, name, attributes) in enumerate(PRODUCTS):
        products[f"id{number + 1}"] = {
            "product_type": kind,
            "name": name,
            **attributes,
            "price": rng.choice([1, 5, 7, 9, 12, 15, 7.5]),
        }
    # Products that some producer makes; consumers buy only these.
    product_ids = list(products)[: max(1, min(producers, len(products)))]

    producer_specs = []
    for number in range(producers):
        product_id = product_ids[number % len(product_ids)]
        producer_specs.append(
            {
                "name": f"prod{number + 1}",
                "products": [
                    [product_id, rng.randint(1, 3), _wait(rng, 0.05, 0.35)],
                    [product_id, 1, _wait(rng, 0.05, 0.35)],
                ],
                "republish_wait_time": _wait(rng, 0.1, 0.3),
            }
        )

    consumer_specs = []
    items_bought = 0
    for number in range(consumers):
        carts = []
        for _ in range(rng.randint(1, 2)):
            in_cart: dict[str, int] = {}
            operations = []
            for _ in range(rng.randint(1, 3)):
                product_id = rng.choice(product_ids)
                quantity = rng.randint(1, 3)
                operations.append(
                    {"type": "add", "product": product_id, "quantity": quantity}
                )
                in_cart[product_id] = in_cart.get(product_id, 0) + quantity
            if rng.random() < 0.4:
                product_id = rng.choice(sorted(in_cart))
                operations.append(
                    {"type": "remove", "product": product_id, "quantity": 1}
                )
                in_cart[product_id] -= 1
            items_bought += sum(in_cart.values())
            carts.append(operations)
        consumer_specs.append(
            {
                "name": f"cons{number + 1}",
                "retry_wait_time": _wait(rng, 0.1, 0.3),
                "carts": carts,
            }
        )

    scenario = {
        "products": products,
        "producers": producer_specs,
        "consumers": consumer_specs,
        "marketplace": {"queue_size_per_producer": queue_size},
    }
    return scenario, items_bought


def _wait(rng: random.Random, low: float, high: float) -> float:
    return round(rng.uniform(low, high), 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.generate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("producers", type=int)
    parser.add_argument("consumers", type=int)
    parser.add_argument("out", help="scenario file to write")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    scenario, items = generate(args.producers, args.consumers, args.seed)
    with open(args.out, "w", encoding="utf-8") as file:
        json.dump(scenario, file, indent=1)
    print(f"{args.out}: {items} items bought", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
