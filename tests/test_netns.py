"""A classic scenario across three network namespaces, over mutual TLS.

The server, the producers and the consumers each get a network namespace
and an address of their own. A bridge in the server's namespace joins two
veth pairs, one to the producers and one to the consumers:

    producers 10.231.0.2 -- bridge with 10.231.0.1 (server) -- consumers 10.231.0.3

Every interface is created inside one of these namespaces, so deleting the
namespaces removes all of them. Certificates are made with the same openssl
commands as the README's section on two machines. Mid-run the consumers'
link goes down for a few seconds and comes back, and the output must still
match the scenario's .expected file.

Needs root and iproute2's `ip`; the test is skipped, with the reason, where
`ip netns add` cannot create a namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field

import pytest

from conftest import BIN, CLASSIC

SCENARIO = CLASSIC / "05.json"
EXPECTED = CLASSIC / "05.expected"
SUBNET_PREFIX = 24
SERVER_ADDRESS = "10.231.0.1"
PRODUCERS_ADDRESS = "10.231.0.2"
CONSUMERS_ADDRESS = "10.231.0.3"
# Seconds the consumers' link stays down. The consumers ping every second
# and give up on a ping after another, so the outage outlasts their
# keepalive: they drop the connection, reconnect once the link is back, and
# retry the calls in flight with the same request ids.
OUTAGE = 3.0
CONSUMER_KEEPALIVE = ["--keepalive-time", "1", "--keepalive-timeout", "1"]
COMMAND_TIMEOUT = 30
START_TIMEOUT = 30
RUN_TIMEOUT = 150
STOP_TIMEOUT = 15


def ip(*args: str) -> subprocess.CompletedProcess:
    """Run `ip ARGS`; raise with its stderr when it fails."""
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


@dataclass
class Network:
    """The namespaces of one test run and the processes started in them."""

    server: str
    producers: str
    consumers: str
    bridge: str
    # Interface of the consumers' namespace, the one taken down mid-run.
    consumers_link: str
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)

    def start(self, namespace: str, command: list[str], stdout, stderr) -> subprocess.Popen:
        """Start `command` in `namespace`. `ip netns exec` execs it, keeping the pid."""
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *command],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
        self.processes.append(process)
        return process


def stop(process: subprocess.Popen) -> None:
    """Send SIGTERM, then SIGKILL after STOP_TIMEOUT, and reap the process."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


@pytest.fixture
def network():
    """Create the three namespaces and links; remove them all afterwards."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("network namespaces need iproute2's ip command")
    pid = os.getpid()
    net = Network(
        server=f"mkt{pid}-server",
        producers=f"mkt{pid}-producers",
        consumers=f"mkt{pid}-consumers",
        bridge=f"mkbr{pid}",
        consumers_link=f"mkc{pid}",
    )
    try:
        for namespace in (net.server, net.producers, net.consumers):
            try:
                ip("netns", "add", namespace)
            except RuntimeError as error:
                pytest.skip(f"cannot create a network namespace: {error}")
            net.namespaces.append(namespace)
            ip("-n", namespace, "link", "set", "lo", "up")

        ip("-n", net.server, "link", "add", net.bridge, "type", "bridge")
        ip("-n", net.server, "addr", "add", f"{SERVER_ADDRESS}/{SUBNET_PREFIX}", "dev", net.bridge)
        ip("-n", net.server, "link", "set", net.bridge, "up")
        for namespace, link, port, address in (
            (net.producers, f"mkp{pid}", f"mkbp{pid}", PRODUCERS_ADDRESS),
            (net.consumers, net.consumers_link, f"mkbc{pid}", CONSUMERS_ADDRESS),
        ):
            # Both ends are created in their namespaces, never in this one.
            ip("link", "add", link, "netns", namespace, "type", "veth",
               "peer", "name", port, "netns", net.server)
            ip("-n", net.server, "link", "set", port, "master", net.bridge)
            ip("-n", net.server, "link", "set", port, "up")
            ip("-n", namespace, "addr", "add", f"{address}/{SUBNET_PREFIX}", "dev", link)
            ip("-n", namespace, "link", "set", link, "up")
        yield net
    finally:
        for process in net.processes:
            stop(process)
        failures = []
        for namespace in net.namespaces:
            # Deleting a namespace deletes the interfaces in it, and a veth
            # pair goes with either of its ends.
            try:
                ip("netns", "delete", namespace)
            except RuntimeError as error:
                failures.append(str(error))
        if failures:
            pytest.fail("cleanup failed: " + "; ".join(failures))


def openssl(*args: str, cwd) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    assert result.returncode == 0, f"openssl {' '.join(args)}: {result.stderr}"


def make_certificates(directory, producer_names: list[str]) -> None:
    """Run the README's openssl commands for a CA, the server and the two client hosts."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "30", "-subj", "/CN=market CA", cwd=directory)
    alt_names = {
        "server": f"IP:{SERVER_ADDRESS}",
        "producers": ", ".join(f"DNS:{name}" for name in producer_names),
        "consumers": "DNS:consumers",
    }
    for stem, alt_name in alt_names.items():
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{stem}.key",
                "-out", f"{stem}.csr", "-subj", f"/CN={stem}", cwd=directory)
        (directory / f"{stem}.ext").write_text(f"subjectAltName = {alt_name}\n")
        openssl("x509", "-req", "-in", f"{stem}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "30", "-extfile", f"{stem}.ext",
                "-out", f"{stem}.pem", cwd=directory)


def client_command(role: str, names: list[str], address: str, certs, stem: str) -> list[str]:
    command = [
        str(BIN / f"marketplace-{role}"),
        "--server", address,
        "--scenario", str(SCENARIO),
        "--tls-ca", str(certs / "ca.pem"),
        "--tls-cert", str(certs / f"{stem}.pem"),
        "--tls-key", str(certs / f"{stem}.key"),
    ]
    for name in names:
        command += ["--name", name]
    return command


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:g} s")
        time.sleep(0.05)


def test_scenario_across_namespaces(network, tmp_path):
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make the certificates")
    scenario = json.loads(SCENARIO.read_text())
    producer_names = [producer["name"] for producer in scenario["producers"]]
    consumer_names = [consumer["name"] for consumer in scenario["consumers"]]
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certificates(certs, producer_names)
    logs = {name: tmp_path / f"{name}.log" for name in ("server", "producers", "consumers")}
    output = tmp_path / "consumers.out"
    port_file = tmp_path / "port"

    def log_text() -> str:
        return "\n".join(
            f"--- {name}\n{path.read_text(errors='replace')}"
            for name, path in logs.items()
            if path.exists()
        )

    server_command = [
        str(BIN / "marketplace-server"),
        "--host", SERVER_ADDRESS,
        "--port", "0",
        "--port-file", str(port_file),
        "--queue-size", str(scenario["marketplace"]["queue_size_per_producer"]),
        "--tls-cert", str(certs / "server.pem"),
        "--tls-key", str(certs / "server.key"),
        "--tls-client-ca", str(certs / "ca.pem"),
        # Accepts the consumers' pings every second.
        "--keepalive-min-interval", "0.5",
    ]
    with open(logs["server"], "w") as server_log:
        server = network.start(network.server, server_command, subprocess.DEVNULL, server_log)
    wait_for(
        lambda: port_file.exists() or server.poll() is not None,
        START_TIMEOUT,
        "the server wrote no port file",
    )
    assert server.poll() is None, log_text()
    address = f"{SERVER_ADDRESS}:{int(port_file.read_text())}"

    with open(logs["producers"], "w") as producers_log:
        producers = network.start(
            network.producers,
            client_command("producer", producer_names, address, certs, "producers"),
            subprocess.DEVNULL,
            producers_log,
        )
    with open(output, "w") as out, open(logs["consumers"], "w") as consumers_log:
        consumers = network.start(
            network.consumers,
            client_command("consumer", consumer_names, address, certs, "consumers")
            + CONSUMER_KEEPALIVE,
            out,
            consumers_log,
        )

    # Take the link down once the first cart is ordered, so that the
    # consumers are connected and have carts left to fill.
    wait_for(
        lambda: output.stat().st_size > 0 or consumers.poll() is not None,
        RUN_TIMEOUT,
        "the consumers bought nothing",
    )
    assert consumers.poll() is None, "consumers finished before the outage\n" + log_text()
    ip("-n", network.consumers, "link", "set", network.consumers_link, "down")
    time.sleep(OUTAGE)
    still_running = consumers.poll() is None
    ip("-n", network.consumers, "link", "set", network.consumers_link, "up")

    try:
        status = consumers.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"consumers did not finish within {RUN_TIMEOUT} s\n" + log_text())
    stop(producers)
    stop(server)

    assert still_running, "consumers exited while their link was down\n" + log_text()
    assert status == 0, log_text()
    assert producers.returncode == 0, log_text()
    assert server.returncode == 0, log_text()
    expected = EXPECTED.read_text().splitlines()
    assert sorted(output.read_text().splitlines()) == sorted(expected), log_text()
