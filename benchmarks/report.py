"""Render the results of benchmarks/bench.py as Markdown.

Text below NOTES_MARKER in an existing RESULTS.md is written by hand and kept
when the file is rewritten.
"""

from __future__ import annotations

import pathlib

NOTES_MARKER = "<!-- Hand-written notes below this line are kept by benchmarks/bench.py. -->"

DIMENSION_TITLES = {
    "producers": "registered producers",
    "items": "items on shelves",
    "carts": "idle open carts",
    "kinds": "product kinds",
}


def _spread(values: dict, digits: int = 0) -> str:
    """Format min/median/max as `median (min–max)`."""
    return (
        f"{values['median']:,.{digits}f} "
        f"({values['min']:,.{digits}f}–{values['max']:,.{digits}f})"
    )


def _latency(result: dict) -> str:
    return f"{result['p50_ms']['median']:.2f} / {result['p99_ms']['median']:.2f}"


def _mib(kib: int) -> str:
    return f"{kib / 1024:,.1f}"


def render(results: dict) -> str:
    settings = results["settings"]
    machine = results["machine"]
    lines = [
        "# Benchmark results",
        "",
        "Written by `benchmarks/bench.py`; rerun with `scripts/bench.sh`. Servers "
        "and clients are separate processes on 127.0.0.1 of one machine, so the "
        "load processes compete with the server for the same cores.",
        "",
        f"- Command: `{results['command']}` (`{results['python_command']}`)",
        f"- Started {results['started_at']}, took {results['duration_s']:.0f} s; "
        f"configuration `{settings['name']}`.",
        f"- Machine: {machine['cpu_count']} CPUs ({machine['cpus_usable']} usable), "
        f"{machine['cpu_model'] or 'unknown model'}; Python {machine['python']}, "
        f"grpcio {machine['grpcio']}, protobuf {machine['protobuf']}; load average "
        f"at start {', '.join(f'{x:.2f}' for x in machine['load_average_at_start'])}.",
        f"- Each throughput figure is `median (min–max)` over {settings['windows']} "
        f"windows of {settings['window']:g} s, after {settings['warmup']:g} s of "
        "uncounted warm-up. Latencies are p50 / p99 in ms, medians over the "
        "windows. Concurrency is client processes x threads per process, one "
        "channel per process.",
        "- The market mix: each round is CreateCart, Publish(b), AddToCart(b), "
        "AddToCart(b), RemoveFromCart(b), PlaceOrder on a fresh server stocked so "
        "that no add comes back short and no shelf fills (shelf capacity "
        "1,000,000). Items/s counts the items moved by Publish, AddToCart and "
        "RemoveFromCart.",
        "- The ceiling: a no-op unary call (empty bytes in and out) served by "
        "the market server itself, as built by `create_server` with its thread "
        "pool and options, with one generic handler added "
        "(`benchmarks/server.py`).",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "| --- | ---: | --- |",
    ]
    for target in results["targets"]:
        lines.append(
            f"| {target['target']} | {target['measured']} | "
            f"{'yes' if target['met'] else 'no'} |"
        )

    lines += [
        "",
        "## Ceiling and market mix at the same concurrency",
        "",
        "Both run on one server process in alternating windows, no-op first, "
        "so that each market window is measured right after a ceiling window. "
        "Market / ceiling is the ratio of the two medians; per pair is "
        "`median (min–max)` of the ratio within each pair of windows.",
        "",
        "| clients | ceiling calls/s | market calls/s | market items/s | "
        "market / ceiling | per pair | ceiling p50 / p99 ms | market p50 / p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["ceiling_vs_market"]:
        ceiling, market = row["ceiling"], row["market"]
        lines.append(
            f"| {row['concurrency']} | {_spread(ceiling['calls_per_s'])} | "
            f"{_spread(market['calls_per_s'])} | {_spread(market['items_per_s'])} | "
            f"{row['ratio']:.2f} | {_spread(row['pair_ratio'], 2)} | "
            f"{_latency(ceiling)} | {_latency(market)} |"
        )
    market_rows = [row["market"] for row in results["ceiling_vs_market"]]
    lines += [
        "",
        f"Market {market_rows[0]['market']['producers']} producers, "
        f"{market_rows[0]['market']['kinds']} product kinds, b = 1. Short adds: "
        f"{sum(m['short_adds'] for m in market_rows)}, short publishes: "
        f"{sum(m['short_publishes'] for m in market_rows)}, failed calls: "
        f"{sum(m['errors'] for m in market_rows)}.",
    ]

    batching = results["batching"]
    market = batching["market"]
    lines += [
        "",
        "## Batching",
        "",
        f"The same mix at {batching['concurrency']} with b = {batching['batch']} "
        "items per Publish, AddToCart and RemoveFromCart, again in windows "
        "alternating with the no-op on the same server. Items/s per ceiling "
        "call/s is the ratio of the medians; per pair as above.",
        "",
        "| ceiling calls/s | calls/s | items/s | p50 / p99 ms | "
        "items/s per ceiling call/s | per pair |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {_spread(batching['ceiling']['calls_per_s'])} | "
        f"{_spread(market['calls_per_s'])} | {_spread(market['items_per_s'])} | "
        f"{_latency(market)} | {batching['items_per_ceiling_call']:.1f} | "
        f"{_spread(batching['pair_items_per_ceiling_call'], 1)} |",
        "",
        f"Short adds: {market['short_adds']}, short publishes: "
        f"{market['short_publishes']}, failed calls: {market['errors']}.",
    ]

    growth = results["cost_growth"]
    lines += [
        "",
        "## Cost growth",
        "",
        f"The mix with b = 1 at {growth['concurrency']}, one dimension changed at a "
        "time from the baseline market (the first value of each dimension). For "
        "each dimension, one server per value runs at the same time and the "
        "windows cycle over them, so that the values are measured close in time. "
        "Idle open carts are carts no load thread touches. A market with many "
        "product kinds is stocked with more items, enough for every kind.",
        "",
        "| dimension | value | market (producers, items, idle carts, kinds) | "
        "calls/s | p50 / p99 ms | vs smallest |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for dimension, data in growth["dimensions"].items():
        smallest = data["rows"][0]["calls_per_s"]["median"]
        for row in data["rows"]:
            shape = row["market"]
            lines.append(
                f"| {DIMENSION_TITLES[dimension]} | {row['value']:,} | "
                f"{shape['producers']:,}, {shape['items']:,}, {shape['carts']:,}, "
                f"{shape['kinds']:,} | {_spread(row['calls_per_s'])} | "
                f"{_latency(row)} | {row['calls_per_s']['median'] / smallest:.2f} |"
            )
    short = sum(
        row["short_adds"] + row["short_publishes"] + row["errors"]
        for data in growth["dimensions"].values()
        for row in data["rows"]
    )
    lines += ["", f"Short adds, short publishes and failed calls in all: {short}."]

    memory = results["memory"]
    lines += [
        "",
        "## Memory",
        "",
        f"One `{memory['server_command']}` process, grown step by step; VmRSS "
        "from /proc/PID/status after each step.",
        "",
        "| step | VmRSS MiB | change MiB |",
        "| --- | ---: | ---: |",
    ]
    for step in memory["steps"]:
        delta = step.get("delta_kib")
        lines.append(
            f"| {step['what']} | {_mib(step['rss_kib'])} | "
            f"{'' if delta is None else f'{delta / 1024:+,.1f}'} |"
        )
    lines += ["", *_memory_explanation(memory)]

    scenarios = results["scenarios"]
    lines += [
        "",
        "## Whole scenarios",
        "",
        f"A generated market of {scenarios['producers']} producers and "
        f"{scenarios['consumers']} consumers (`benchmarks/generate.py`, seed 1, "
        f"waits as in the classic scenarios: 0.05 to 0.35 s), which buys "
        f"{scenarios['items_expected']:,} items. Distributed: "
        "`marketplace-simulate --server ADDRESS --clients-per-process "
        f"{scenarios['clients_per_process']}` against a server started beforehand, "
        "which counts calls with an interceptor; the wall time excludes that "
        "server's start. Distributed, polling: the same with `--add-wait 0`, so "
        "consumers ask again after each retry wait instead of waiting on the "
        "server for an item. Local: `marketplace-simulate --local`, which counts its "
        "market calls. Wall time is from starting the simulate process until it "
        "exits.",
        "",
        "| mode | time scale | wall s | calls | calls per item bought |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for run in scenarios["runs"]:
        lines.append(
            f"| {run['mode']} | {run['time_scale']:g} | {_spread(run['wall_s'], 2)} | "
            f"{_spread(run['calls'])} | {_spread(run['calls_per_item'], 2)} |"
        )
    if "persistence" in results:
        lines += _persistence_lines(results["persistence"])
    lines += [
        "",
        "Phase durations in seconds: "
        + ", ".join(f"{name} {secs:g}" for name, secs in results["phase_seconds"].items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def _persistence_lines(persistence: dict) -> list[str]:
    memory, durable = persistence["memory"], persistence["durable"]
    shape = persistence["startup"]["market"]
    lines = [
        "",
        "## Durable against memory-only",
        "",
        f"The mix with b = 1 at {persistence['concurrency']} on two servers in "
        "alternating windows: one with `--data-dir` (SQLite in WAL mode, "
        "synchronous=FULL, a reply only after its change is committed) and one "
        "without. Durable / memory-only is the ratio of the medians; per pair "
        "as above.",
        "",
        "| memory-only calls/s | durable calls/s | durable / memory-only | per pair | "
        "memory-only p50 / p99 ms | durable p50 / p99 ms |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {_spread(memory['calls_per_s'])} | {_spread(durable['calls_per_s'])} | "
        f"{persistence['ratio']:.2f} | {_spread(persistence['pair_ratio'], 2)} | "
        f"{_latency(memory)} | {_latency(durable)} |",
        "",
        f"Start-up time, from launching the server until it replies, with "
        f"{shape['items']:,} items on {shape['producers']:,} shelves "
        f"({shape['kinds']:,} products) in the data folder:",
        "",
        "| case | start s |",
        "| --- | ---: |",
    ]
    for row in persistence["startup"]["rows"]:
        lines.append(f"| {row['case']} | {_spread(row['start_s'], 3)} |")
    return lines


def _memory_explanation(memory: dict) -> list[str]:
    steps = {step["step"]: step for step in memory["steps"]}
    settings_counts = {
        "carts": memory["counts"]["carts"],
        "cart_items": memory["counts"]["carts"],
        "producers": memory["counts"]["producers"],
        "spread_items": memory["counts"]["producers"],
        "request_ids": memory["counts"]["carts"],
    }

    def per_unit(name: str) -> str:
        return f"{steps[name]['delta_kib'] * 1024 / settings_counts[name]:,.0f} bytes"

    return [
        "What the figures show: the market keeps a count per (shelf, product) "
        "and per (cart, product, origin shelf), not an object per item, so "
        "memory follows the number of shelves, carts and such counts, whatever "
        f"the number of items. {memory['counts']['items']:,} items of one "
        f"product on one shelf are a single count: VmRSS changed by "
        f"{steps['items']['delta_kib'] / 1024:+.1f} MiB. Measured per unit: "
        f"{per_unit('carts')} per open empty cart (the cart object, its secret "
        f"id, label and dictionary entries); {per_unit('cart_items')} per cart "
        f"for its first item (a count in two nested dictionaries); "
        f"{per_unit('producers')} per registered producer with an empty shelf; "
        f"{per_unit('spread_items')} per shelf for a count of "
        f"{memory['counts']['items'] // memory['counts']['producers']:,} items "
        "of one product. These are changes of RSS, so they also contain heap "
        "that the calls themselves grew (gRPC buffers, protobuf messages) and "
        "that the allocator kept; the 'empty' step shows that effect alone "
        "for the same number of read-only calls. Request ids are left empty "
        "in every step but the last, which shows what the server's record of "
        f"recent request ids costs: {per_unit('request_ids')} per id. It keeps "
        "up to 100,000 ids by default.",
    ]


def write_markdown(results: dict, path: pathlib.Path) -> None:
    """Write RESULTS.md, keeping the hand-written notes of an existing file."""
    notes = ""
    if path.exists():
        existing = path.read_text(encoding="utf-8")
        if NOTES_MARKER in existing:
            notes = existing.split(NOTES_MARKER, 1)[1].lstrip("\n")
    text = render(results) + "\n" + NOTES_MARKER + "\n"
    if notes:
        text += "\n" + notes
    path.write_text(text, encoding="utf-8")
