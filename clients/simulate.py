"""Scenario runner: a server plus producer and consumer processes, output on stdout."""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import resources

import grpc

from marketplace.v1 import marketplace_pb2_grpc as pb_grpc

from . import common
from .diagnosis import StallWatch, describe_stall, fetch_state, is_unavailable
from .scenario import money_nanos, render_product

EXIT_INTERRUPTED = 130
EXIT_STALLED = 4
# Above this many clients, `--clients-per-process auto` groups them so that
# the run starts about this many client processes.
AUTO_PROCESS_LIMIT = 32


@dataclass
class Child:
    role: str
    names: list[str]
    process: subprocess.Popen
    pump: threading.Thread | None = None


@dataclass
class Output:
    """Copies consumer stdout to ours, line by line, and totals the purchases."""

    # Price in billionths of a unit of each purchase line's product text.
    prices: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    lines: int = 0
    # Amount spent per consumer name, in billionths of a unit.
    spent: dict[str, int] = field(default_factory=dict)

    # Set when our stdout was closed, for example by `| head`.
    closed: threading.Event = field(default_factory=threading.Event)

    def pump(self, stream) -> None:
        for line in stream:
            consumer, _, product = line.decode("utf-8", "replace").partition(" bought ")
            with self.lock:
                if not self.closed.is_set():
                    try:
                        sys.stdout.buffer.write(line)
                        sys.stdout.buffer.flush()
                    except BrokenPipeError:
                        self.closed.set()
                        # Point stdout at /dev/null, so that the flush at
                        # exit does not raise again.
                        devnull = os.open(os.devnull, os.O_WRONLY)
                        os.dup2(devnull, sys.stdout.fileno())
                        os.close(devnull)
                self.lines += 1
                price = self.prices.get(product.rstrip("\n"), 0)
                self.spent[consumer] = self.spent.get(consumer, 0) + price
        stream.close()


def _format_nanos(amount: int) -> str:
    units, nanos = divmod(amount, 1_000_000_000)
    return str(units) if nanos == 0 else f"{units}.{nanos:09d}".rstrip("0")


def budget_summary(scenario, spent: dict[str, int]) -> list[str]:
    """Return one line per consumer with what it spent and its budget."""
    if not any(spec.budget is not None for spec in scenario.consumers):
        return []
    lines = []
    for spec in scenario.consumers:
        budget = (
            f"budget {_format_nanos(money_nanos(spec.budget))} per order"
            if spec.budget is not None
            else "no budget"
        )
        lines.append(
            f"simulate: {spec.name} spent {_format_nanos(spent.get(spec.name, 0))}, "
            f"{budget}"
        )
    return lines


def bundled_example() -> str:
    return str(resources.files("marketplace_clients") / "examples" / "example.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marketplace-simulate",
        description="Run a whole scenario: a market server on a free loopback "
        "port (unless --server is given), every producer and consumer as OS "
        "processes, and print each item bought on stdout. A summary goes to "
        "stderr.",
        formatter_class=common.HelpFormatter,
    )
    parser.add_argument(
        "scenario",
        nargs="?",
        help="scenario JSON file; a small bundled example when not given",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="factor applied to every wait of the scenario",
    )
    parser.add_argument(
        "--server",
        help="HOST:PORT of a running market server to use instead of starting "
        "one; its shelf capacity then applies, not the scenario's",
    )
    # Passed on to every producer and consumer; only with --server, because
    # the server this runner starts serves plaintext.
    common.add_tls_arguments(parser)
    parser.add_argument(
        "--local",
        action="store_true",
        help="run every producer and consumer as a thread of this process, "
        "calling the market directly with no server and no gRPC",
    )
    parser.add_argument(
        "--clients-per-process",
        default="auto",
        help="clients run as threads of one process; 'auto' runs one process "
        f"per client up to {AUTO_PROCESS_LIMIT} clients of a role and groups "
        "them beyond",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        help="seconds after which the run is stopped and fails; 0 waits for ever",
    )
    parser.add_argument(
        "--add-wait",
        type=float,
        help="seconds each consumer's add waits on the server for an item; 0 "
        "makes consumers poll (default: 2, the consumer's own default)",
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=30.0,
        help="seconds without any item moving, while consumers still run, after "
        f"which the run stops, prints a diagnosis and exits with {EXIT_STALLED}; "
        "0 never stops",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the server to start and accept connections",
    )
    parser.add_argument(
        "--server-log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the server this runner starts",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the client processes",
    )
    return parser


def group(names: list[str], per_process: str) -> list[list[str]]:
    """Split client names into the groups that share a process."""
    if not names:
        return []
    if per_process == "auto":
        size = math.ceil(len(names) / AUTO_PROCESS_LIMIT)
    else:
        size = int(per_process)
    return [names[start : start + size] for start in range(0, len(names), size)]


class Run:
    def __init__(self, args: argparse.Namespace, scenario_path: str, scenario) -> None:
        self.args = args
        self.scenario_path = scenario_path
        self.scenario = scenario
        self.server: subprocess.Popen | None = None
        self.producers: list[Child] = []
        self.consumers: list[Child] = []
        self.output = Output(
            {render_product(p): money_nanos(p.price) for p in scenario.products.values()}
        )
        self.stall: list[str] = []
        self.address: str | None = None
        self.interrupted = threading.Event()
        self.env = dict(
            os.environ,
            PYTHONIOENCODING="utf-8",
            PYTHONUNBUFFERED="1",
            # The children stop when this process dies, even by SIGKILL.
            MARKETPLACE_PARENT_PID=str(os.getpid()),
        )

    def start_server(self, workdir: str) -> str:
        port_file = os.path.join(workdir, "port")
        command = [
            sys.executable,
            "-m",
            "marketplace_server.server",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            port_file,
            "--queue-size",
            str(self.scenario.queue_size),
            "--log-level",
            self.args.server_log_level,
        ]
        self.server = subprocess.Popen(command, env=self.env)
        deadline = time.monotonic() + self.args.connect_timeout
        while not os.path.exists(port_file):
            if self.server.poll() is not None:
                raise RuntimeError(
                    f"the market server exited with status {self.server.returncode} "
                    "before serving; see its log above"
                )
            if time.monotonic() > deadline or self.interrupted.wait(0.02):
                raise RuntimeError(
                    f"the market server did not start within "
                    f"{self.args.connect_timeout:g} s"
                )
        with open(port_file, encoding="ascii") as file:
            return f"127.0.0.1:{int(file.read())}"

    def start_clients(self, role: str, names: list[str], address: str) -> list[Child]:
        children = []
        for names_in_process in group(names, self.args.clients_per_process):
            command = [
                sys.executable,
                "-m",
                f"marketplace_clients.{role}",
                "--server",
                address,
                "--scenario",
                self.scenario_path,
                "--time-scale",
                repr(self.args.time_scale),
                "--connect-timeout",
                repr(self.args.connect_timeout),
                "--log-level",
                self.args.log_level,
            ]
            for flag in ("tls_ca", "tls_cert", "tls_key", "tls_server_name"):
                value = getattr(self.args, flag)
                if value is not None:
                    command += ["--" + flag.replace("_", "-"), value]
            if role == "consumer" and self.args.add_wait is not None:
                command += ["--add-wait", repr(self.args.add_wait)]
            for name in names_in_process:
                command += ["--name", name]
            stdout = subprocess.PIPE if role == "consumer" else subprocess.DEVNULL
            process = subprocess.Popen(command, stdout=stdout, env=self.env)
            child = Child(role, names_in_process, process)
            if role == "consumer":
                child.pump = threading.Thread(
                    target=self.output.pump, args=(process.stdout,), daemon=True
                )
                child.pump.start()
            children.append(child)
        return children

    def wait_for_consumers(self) -> list[str]:
        """Wait until every consumer exits; return a failure per failed client."""
        failures = []
        deadline = None
        if self.args.timeout > 0:
            deadline = time.monotonic() + self.args.timeout
        pending = list(self.consumers)
        while pending:
            for child in list(pending):
                if child.process.poll() is not None:
                    pending.remove(child)
                    if child.process.returncode != 0:
                        failures.append(
                            f"consumer {', '.join(child.names)} exited with "
                            f"status {child.process.returncode}"
                        )
            for child in self.producers:
                code = child.process.poll()
                if code is not None and code != 0:
                    failures.append(
                        f"producer {', '.join(child.names)} exited with status {code}"
                    )
                    return failures
            if pending and deadline is not None and time.monotonic() > deadline:
                names = [name for child in pending for name in child.names]
                failures.append(
                    f"timed out after {self.args.timeout:g} s waiting for "
                    f"consumers {', '.join(names)}"
                )
                return failures
            if self.stall:
                failures.append("the market stalled")
                return failures
            if self.output.closed.is_set():
                failures.append("standard output was closed; stopping the run")
                return failures
            if self.interrupted.wait(0.05):
                failures.append("interrupted")
                return failures
        for child in self.consumers:
            if child.pump is not None:
                child.pump.join()
        return failures

    def watch_for_stall(self, done: threading.Event) -> None:
        """Poll the market until `done`; on a stall, fill self.stall and return."""
        timeout = self.args.stall_timeout
        if timeout <= 0 or self.address is None:
            return
        settings = common.ChannelSettings(common.tls_files(self.args))
        try:
            channel = common.open_channel(self.address, settings)
        except Exception as error:  # a bad TLS file is reported by the clients
            print(f"simulate: cannot watch for stalls: {error}", file=sys.stderr)
            return
        with channel:
            stub = pb_grpc.MarketServiceStub(channel)
            watch = StallWatch(timeout)
            while not done.wait(min(0.5, timeout / 4)):
                try:
                    first, shelves, carts = fetch_state(stub)
                except grpc.RpcError as error:
                    if is_unavailable(error):
                        continue
                    print(
                        f"simulate: cannot watch for stalls: {error.code().name}",
                        file=sys.stderr,
                    )
                    return
                idle = watch.stalled(first.moves)
                if idle is not None and not done.is_set():
                    self.stall = describe_stall(shelves, carts, idle)
                    return

    def show_progress(self, done: threading.Event) -> None:
        """Rewrite one progress line on stderr until `done`."""
        total = len(self.scenario.consumers)
        while True:
            finished = sum(
                len(child.names)
                for child in self.consumers
                if child.process.poll() is not None
            )
            sys.stderr.write(
                f"\rsimulate: {finished} of {total} consumers finished, "
                f"{self.output.lines} items bought"
            )
            sys.stderr.flush()
            if done.wait(0.5):
                break
        sys.stderr.write("\n")
        sys.stderr.flush()

    def stop_all(self) -> None:
        """Stop every process this run started, by its pid: SIGTERM, then SIGKILL."""
        children = [child.process for child in self.producers + self.consumers]
        for process in children:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        _reap(children, timeout=10.0)
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            _reap([self.server], timeout=15.0)


def _reap(processes: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> int:
    common.stop_with_parent()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.clients_per_process != "auto" and not (
        args.clients_per_process.isdigit() and int(args.clients_per_process) >= 1
    ):
        parser.error(
            f"--clients-per-process {args.clients_per_process!r} is invalid; "
            "give 'auto' or a whole number >= 1"
        )
    for flag in ("timeout", "stall_timeout"):
        value = getattr(args, flag)
        if not (value >= 0 and math.isfinite(value)):
            option = "--" + flag.replace("_", "-")
            parser.error(f"{option} {value} is invalid; give 0 or more seconds")
    if args.add_wait is not None and not 0 <= args.add_wait <= 3600:
        parser.error(f"--add-wait {args.add_wait} is invalid; give 0 to 3600 seconds")
    if not (args.time_scale >= 0 and math.isfinite(args.time_scale)):
        parser.error(f"--time-scale {args.time_scale} is invalid; give a number >= 0")
    common.check_tls_args(parser, args)
    if args.tls_ca is not None and not args.server:
        parser.error(
            "--tls-ca and the other --tls flags need --server: the server that "
            "simulate starts itself serves plaintext on loopback"
        )
    if args.local and args.server:
        parser.error(
            "--local runs the market in this process, so it cannot use --server; "
            "give one of them"
        )

    if args.server is not None:
        common.check_server_address(parser, args.server)
    scenario_path = os.path.abspath(args.scenario or bundled_example())
    scenario = common.load_scenario(scenario_path)
    if args.local:
        # Imported here because clients.local imports this module.
        from . import local

        return local.main(args, scenario)

    run = Run(args, scenario_path, scenario)

    def request_stop(signum, frame):
        run.interrupted.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGHUP, request_stop)

    started = time.monotonic()
    failures: list[str] = []
    done = threading.Event()
    with tempfile.TemporaryDirectory(prefix="marketplace-simulate-") as workdir:
        try:
            address = args.server or run.start_server(workdir)
            run.address = address
            watcher = threading.Thread(
                target=run.watch_for_stall, args=(done,), daemon=True
            )
            watcher.start()
            if sys.stderr.isatty():
                threading.Thread(
                    target=run.show_progress, args=(done,), daemon=True
                ).start()
            run.producers = run.start_clients(
                "producer", [spec.name for spec in scenario.producers], address
            )
            run.consumers = run.start_clients(
                "consumer", [spec.name for spec in scenario.consumers], address
            )
            failures = run.wait_for_consumers()
        except (RuntimeError, OSError) as error:
            failures.append(str(error))
        finally:
            done.set()
            run.stop_all()

    elapsed = time.monotonic() - started
    print(
        f"simulate: {len(scenario.consumers)} consumers, {run.output.lines} items "
        f"bought, {elapsed:.2f} s elapsed",
        file=sys.stderr,
    )
    for line in budget_summary(scenario, run.output.spent):
        print(line, file=sys.stderr)
    for failure in failures:
        print(f"simulate: failed: {failure}", file=sys.stderr)
    if run.stall:
        for line in run.stall:
            print(f"simulate: stalled: {line}", file=sys.stderr)
        return EXIT_STALLED
    if run.interrupted.is_set():
        return EXIT_INTERRUPTED
    return common.EXIT_FAILED if failures else 0


if __name__ == "__main__":
    sys.exit(main())
