"""End-to-end run of tests/data/extra/mixed.json through scripts/simulate.sh.

The scenario has kinds other than Tea and Coffee, with bool, int and float
attributes. Names and string attributes contain quotes and non-ASCII letters.
It also has a consumer with no carts, an empty cart, a producer with nothing
to publish, and removes of items that a cart does not hold. Every add can be
filled, so the multiset of purchase lines does not depend on timing.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from conftest import DATA, ROOT

MIXED = DATA / "extra" / "mixed.json"
EXPECTED = DATA / "extra" / "mixed.expected"


@pytest.fixture(scope="module")
def mixed_run() -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "bash",
            str(ROOT / "scripts" / "simulate.sh"),
            str(MIXED),
            "--time-scale",
            "0.1",
            "--timeout",
            "120",
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=240,
    )


def test_mixed_scenario_exits_0(mixed_run):
    assert mixed_run.returncode == 0, mixed_run.stderr


def test_mixed_scenario_output_matches(mixed_run):
    expected = EXPECTED.read_text(encoding="utf-8").splitlines()

    assert sorted(mixed_run.stdout.splitlines()) == sorted(expected)


def test_mixed_scenario_summary(mixed_run):
    assert "3 consumers, 11 items bought" in mixed_run.stderr


@pytest.mark.parametrize(
    "consumer, product, missing, requested",
    [("Zoë", "bread", 1, 1), ("d'Artagnan", "jam", 3, 5)],
)
def test_mixed_scenario_warns_on_remove(mixed_run, consumer, product, missing, requested):
    pattern = (
        rf"WARNING .*consumer {re.escape(consumer)}, "
        rf"cart {re.escape(consumer)}/cart-\d+: "
        rf"could not remove {missing} of {requested} {product}\b"
    )

    assert re.search(pattern, mixed_run.stderr), mixed_run.stderr


def test_mixed_scenario_has_edge_cases():
    scenario = json.loads(MIXED.read_text(encoding="utf-8"))
    attribute_types = {
        type(value)
        for product in scenario["products"].values()
        for key, value in product.items()
        if key not in ("product_type", "name", "price")
    }
    kinds = {product["product_type"] for product in scenario["products"].values()}
    carts = [cart for consumer in scenario["consumers"] for cart in consumer["carts"]]

    assert attribute_types == {str, int, float, bool}
    assert kinds.isdisjoint({"Tea", "Coffee"})
    assert any(consumer["carts"] == [] for consumer in scenario["consumers"])
    assert [] in carts
    assert any(producer["products"] == [] for producer in scenario["producers"])
