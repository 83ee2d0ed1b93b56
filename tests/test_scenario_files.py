"""Invalid scenario files given to the client programs, run as real processes.

Each program validates the file before it connects, so no server runs here.
The clients still get --server pointing at a loopback port where nothing
listens, so that a file wrongly taken as valid fails fast instead of
reaching any real server.
"""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any, Callable

import pytest

from conftest import BIN

PROCESS_TIMEOUT = 30
EXIT_INVALID_SCENARIO = 2

VALID = {
    "products": {
        "tea": {"product_type": "Tea", "name": "Linden", "type": "Herbal", "price": 9},
        "coffee": {
            "product_type": "Coffee",
            "name": "Indonezia",
            "acidity": 5.05,
            "price": 1,
        },
        "cocoa": {"product_type": "Cocoa", "name": "Criollo", "price": 4},
    },
    "producers": [
        {
            "name": "farm",
            "products": [["tea", 2, 0.1], ["coffee", 1, 0.1], ["cocoa", 0, 0.1]],
            "republish_wait_time": 0.2,
        },
    ],
    "consumers": [
        {
            "name": "alice",
            "retry_wait_time": 0.3,
            "carts": [
                [
                    {"type": "add", "product": "tea", "quantity": 1},
                    {"type": "add", "product": "coffee", "quantity": 2},
                    {"type": "remove", "product": "cocoa", "quantity": 1},
                ]
            ],
        },
    ],
    "marketplace": {"queue_size_per_producer": 5},
}


def changed(change: Callable[[dict], Any]) -> str:
    """Return the JSON text of VALID after `change` edits a copy of it in place."""
    data = copy.deepcopy(VALID)
    change(data)
    return json.dumps(data, ensure_ascii=False)


def first_producer(data: dict) -> dict:
    return data["producers"][0]


def first_consumer(data: dict) -> dict:
    return data["consumers"][0]


def first_operation(data: dict) -> dict:
    return data["consumers"][0]["carts"][0][0]


def set_item(container, key, value) -> None:
    container[key] = value


def delete_item(container, key) -> None:
    del container[key]


# Each case: file text, JSON path named in the message, part of the problem.
INVALID_FILES = [
    pytest.param('{"products": {', "$", "malformed JSON at line 1", id="malformed-json"),
    pytest.param("", "$", "malformed JSON", id="empty-file"),
    pytest.param("[]", "$", "expected an object, found list", id="root-not-object"),
    pytest.param(
        "[" * 100_000 + "]" * 100_000, "$", "nested too deeply", id="deeply-nested"
    ),
    pytest.param(
        changed(lambda d: delete_item(d, "marketplace")),
        "$",
        "missing key 'marketplace'",
        id="missing-marketplace",
    ),
    pytest.param(
        changed(lambda d: delete_item(first_producer(d), "republish_wait_time")),
        "$.producers[0]",
        "missing key 'republish_wait_time'",
        id="missing-republish-wait",
    ),
    pytest.param(
        changed(lambda d: delete_item(first_operation(d), "quantity")),
        "$.consumers[0].carts[0][0]",
        "missing key 'quantity'",
        id="missing-operation-quantity",
    ),
    pytest.param(
        changed(lambda d: delete_item(d["products"]["tea"], "price")),
        "$.products.tea",
        "missing key 'price'",
        id="missing-price",
    ),
    pytest.param(
        changed(lambda d: set_item(first_producer(d)["products"][0], 0, "chai")),
        "$.producers[0].products[0][0]",
        "unknown product id 'chai'",
        id="producer-unknown-product",
    ),
    pytest.param(
        changed(lambda d: set_item(first_operation(d), "product", "chai")),
        "$.consumers[0].carts[0][0].product",
        "unknown product id 'chai'",
        id="consumer-unknown-product",
    ),
    pytest.param(
        changed(lambda d: set_item(first_producer(d)["products"][1], 1, -1)),
        "$.producers[0].products[1][1]",
        "quantity -1 is negative",
        id="producer-negative-quantity",
    ),
    pytest.param(
        changed(lambda d: set_item(first_operation(d), "quantity", -3)),
        "$.consumers[0].carts[0][0].quantity",
        "quantity -3 is negative",
        id="consumer-negative-quantity",
    ),
    pytest.param(
        changed(lambda d: set_item(first_operation(d), "quantity", 1_000_001)),
        "$.consumers[0].carts[0][0].quantity",
        "quantity 1000001 is too big",
        id="consumer-quantity-too-big",
    ),
    pytest.param(
        changed(lambda d: set_item(first_operation(d), "quantity", True)),
        "$.consumers[0].carts[0][0].quantity",
        "expected a whole number of items, found boolean true",
        id="consumer-bool-quantity",
    ),
    pytest.param(
        changed(lambda d: set_item(first_producer(d)["products"][0], 2, "soon")),
        "$.producers[0].products[0][2]",
        'expected a number of seconds, found string "soon"',
        id="producer-text-wait",
    ),
    pytest.param(
        changed(lambda d: set_item(first_consumer(d), "retry_wait_time", [1])),
        "$.consumers[0].retry_wait_time",
        "expected a number of seconds, found list [1]",
        id="consumer-list-wait",
    ),
    pytest.param(
        changed(lambda d: set_item(first_producer(d), "republish_wait_time", -0.5)),
        "$.producers[0].republish_wait_time",
        "not a finite number of seconds",
        id="negative-wait",
    ),
    pytest.param(
        changed(lambda d: d["consumers"].append(copy.deepcopy(first_consumer(d)))),
        "$.consumers[1].name",
        "duplicate name 'alice'",
        id="duplicate-consumer",
    ),
    pytest.param(
        changed(lambda d: d["producers"].append(copy.deepcopy(first_producer(d)))),
        "$.producers[1].name",
        "duplicate name 'farm'",
        id="duplicate-producer",
    ),
    pytest.param(
        changed(lambda d: set_item(first_operation(d), "product", "cocoa")),
        "$.consumers[0].carts[0][0].product",
        "no producer makes product 'cocoa'",
        id="add-product-nobody-makes",
    ),
    pytest.param(
        changed(lambda d: set_item(first_operation(d), "type", "buy")),
        "$.consumers[0].carts[0][0].type",
        "unknown operation 'buy'",
        id="unknown-operation",
    ),
    pytest.param(
        changed(lambda d: set_item(d["products"]["tea"], "name", "")),
        "$.products.tea.name",
        "expected a non-empty string",
        id="empty-product-name",
    ),
    pytest.param(
        changed(lambda d: set_item(d["products"]["tea"], "name", "L" * 257)),
        "$.products.tea.name",
        "257 characters long",
        id="long-product-name",
    ),
    pytest.param(
        changed(lambda d: set_item(first_consumer(d), "name", "a" * 129)),
        "$.consumers[0].name",
        "129 characters long",
        id="long-consumer-name",
    ),
    pytest.param(
        changed(lambda d: set_item(d["products"]["tea"], "price", 9.1234567891)),
        "$.products.tea.price",
        "more than 9 decimal places",
        id="price-too-precise",
    ),
    pytest.param(
        changed(lambda d: set_item(d["products"]["tea"], "origin", None)),
        "$.products.tea.origin",
        "expected a string, number or boolean, found null",
        id="null-attribute",
    ),
    pytest.param(
        changed(lambda d: set_item(d["marketplace"], "queue_size_per_producer", 0)),
        "$.marketplace.queue_size_per_producer",
        "shelf capacity is 0",
        id="zero-capacity",
    ),
]


def run_program(program: str, scenario: str, address: str) -> subprocess.CompletedProcess:
    """Run one client program on `scenario` and return its completed process."""
    if program == "simulate":
        command = [str(BIN / "marketplace-simulate"), scenario]
    else:
        name = "alice" if program == "consumer" else "farm"
        command = [
            str(BIN / f"marketplace-{program}"),
            "--scenario",
            scenario,
            "--name",
            name,
            "--server",
            address,
            "--connect-timeout",
            "1",
        ]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=PROCESS_TIMEOUT,
    )


@pytest.mark.parametrize("program", ["consumer", "producer", "simulate"])
@pytest.mark.parametrize("text, json_path, problem", INVALID_FILES)
def test_invalid_file_exits_2(tmp_path, unused_address, program, text, json_path, problem):
    scenario = tmp_path / "scenario.json"
    scenario.write_text(text, encoding="utf-8")

    result = run_program(program, str(scenario), unused_address)
    lines = result.stderr.splitlines()

    assert result.returncode == EXIT_INVALID_SCENARIO, result.stderr
    assert len(lines) == 1, result.stderr
    assert f"{scenario}: " in lines[0]
    assert f": {json_path}: " in lines[0]
    assert problem in lines[0]
    assert result.stdout == ""


def test_missing_file_exits_2(tmp_path, unused_address):
    scenario = tmp_path / "absent.json"

    result = run_program("consumer", str(scenario), unused_address)
    lines = result.stderr.splitlines()

    assert result.returncode == EXIT_INVALID_SCENARIO
    assert len(lines) == 1, result.stderr
    assert f"{scenario}: $: cannot read file" in lines[0]


def test_non_utf8_file_exits_2(tmp_path, unused_address):
    scenario = tmp_path / "latin1.json"
    scenario.write_bytes('{"products": "caf\u00e9"}'.encode("latin-1"))

    result = run_program("simulate", str(scenario), unused_address)
    lines = result.stderr.splitlines()

    assert result.returncode == EXIT_INVALID_SCENARIO
    assert len(lines) == 1, result.stderr
    assert "not UTF-8" in lines[0]


@pytest.mark.parametrize(
    "program, name, json_path",
    [
        ("consumer", "bob", "$.consumers"),
        ("consumer", "farm", "$.consumers"),
        ("producer", "alice", "$.producers"),
    ],
)
def test_unknown_name_exits_2(tmp_path, unused_address, program, name, json_path):
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps(VALID), encoding="utf-8")
    command = [
        str(BIN / f"marketplace-{program}"),
        "--scenario",
        str(scenario),
        "--name",
        name,
        "--server",
        unused_address,
        "--connect-timeout",
        "1",
    ]

    result = subprocess.run(
        command, capture_output=True, text=True, timeout=PROCESS_TIMEOUT
    )
    lines = result.stderr.splitlines()

    assert result.returncode == EXIT_INVALID_SCENARIO, result.stderr
    assert len(lines) == 1, result.stderr
    assert f"{scenario}: " in lines[0]
    assert f": {json_path}: " in lines[0]
    assert f"no {program} named {name!r}" in lines[0]


def test_unknown_name_among_valid_exits_2(tmp_path, unused_address):
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps(VALID), encoding="utf-8")
    command = [
        str(BIN / "marketplace-consumer"),
        "--scenario",
        str(scenario),
        "--name",
        "alice",
        "--name",
        "zed",
        "--server",
        unused_address,
        "--connect-timeout",
        "1",
    ]

    result = subprocess.run(
        command, capture_output=True, text=True, timeout=PROCESS_TIMEOUT
    )

    assert result.returncode == EXIT_INVALID_SCENARIO, result.stderr
    assert "no consumer named 'zed'" in result.stderr


def test_unknown_name_message_is_one_line(tmp_path, unused_address):
    data = copy.deepcopy(VALID)
    data["producers"][0]["name"] = "two\nlines"
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps(data), encoding="utf-8")
    command = [
        str(BIN / "marketplace-producer"),
        "--scenario",
        str(scenario),
        "--name",
        "zed",
        "--server",
        unused_address,
        "--connect-timeout",
        "1",
    ]

    result = subprocess.run(
        command, capture_output=True, text=True, timeout=PROCESS_TIMEOUT
    )
    lines = result.stderr.splitlines()

    assert result.returncode == EXIT_INVALID_SCENARIO, result.stderr
    assert len(lines) == 1, result.stderr
    assert "'two\\nlines'" in lines[0]


def test_valid_file_passes_validation(tmp_path, unused_address):
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps(VALID), encoding="utf-8")

    result = run_program("consumer", str(scenario), unused_address)

    assert result.returncode == 1, result.stderr
    assert f"cannot reach the market server at {unused_address}" in result.stderr
