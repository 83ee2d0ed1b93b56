"""scripts/gen_stubs.sh for every language it supports.

Only the Python generator is sure to be installed here. For the others the
script either generates or exits 1 naming the package to install. The tests
check that contract with the tools found on PATH, with none at all, and
with stand-in generators that record how they were called.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

SCRIPT = ROOT / "scripts" / "gen_stubs.sh"
BASH = shutil.which("bash") or "/bin/bash"
PROTO = "marketplace/v1/marketplace.proto"

# Files each language writes under OUT_DIR, and a text that the message
# for a missing generator must contain: the package that provides it.
EXPECTED = {
    "node": (["marketplace/v1/marketplace_pb.js", "marketplace/v1/marketplace_grpc_pb.js"], "grpc-tools"),
    "go": (["marketplace/v1/marketplace.pb.go", "marketplace/v1/marketplace_grpc.pb.go"], "protoc-gen-go"),
    "java": (["marketplace/v1/Marketplace.java", "marketplace/v1/MarketServiceGrpc.java"], "protoc-gen-grpc-java"),
    "cpp": (
        [
            "marketplace/v1/marketplace.pb.h",
            "marketplace/v1/marketplace.pb.cc",
            "marketplace/v1/marketplace.grpc.pb.h",
            "marketplace/v1/marketplace.grpc.pb.cc",
        ],
        "protobuf-compiler-grpc",
    ),
    "ruby": (["marketplace/v1/marketplace_pb.rb", "marketplace/v1/marketplace_services_pb.rb"], "grpc-tools"),
}
OTHER_LANGUAGES = sorted(EXPECTED)


def gen(lang: str, out, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BASH, str(SCRIPT), lang, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def bare_env(tmp_path, tools: dict[str, str] | None = None) -> dict:
    """An environment whose PATH has `dirname` and `mkdir` plus `tools`.

    `tools` maps a program name to the text of a script put on that PATH.
    HOME is empty too, so that no ~/go/bin is found.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("dirname", "mkdir"):
        (bin_dir / name).symlink_to(shutil.which(name))
    for name, text in (tools or {}).items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    return {"PATH": str(bin_dir), "HOME": str(home), "PYTHON": sys.executable}


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_python(tmp_path):
    out = tmp_path / "a" / "b"
    result = gen("python", out)

    assert result.returncode == 0, result.stderr
    assert files_under(out) == [
        "marketplace/__init__.py",
        "marketplace/v1/__init__.py",
        "marketplace/v1/marketplace_pb2.py",
        "marketplace/v1/marketplace_pb2.pyi",
        "marketplace/v1/marketplace_pb2_grpc.py",
    ]


def test_python_without_grpc_tools(tmp_path):
    env = {**os.environ, "PYTHON": "/nonexistent/python"}
    result = gen("python", tmp_path / "out", env)

    assert result.returncode == 1
    assert "grpcio-tools" in result.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_language(tmp_path):
    result = gen("cobol", tmp_path / "out")

    assert result.returncode == 2
    assert "supported: python, node, go, java, cpp, ruby" in result.stderr


@pytest.mark.parametrize("lang", OTHER_LANGUAGES)
def test_generates_or_names_package(lang, tmp_path):
    """With whatever this machine has installed."""
    out = tmp_path / "out"
    files, package = EXPECTED[lang]
    result = gen(lang, out)

    if result.returncode == 0:
        assert set(files) <= set(files_under(out))
    else:
        assert result.returncode == 1
        assert package in result.stderr
        assert not out.exists()


@pytest.mark.parametrize("lang", OTHER_LANGUAGES)
def test_missing_generator(lang, tmp_path):
    out = tmp_path / "out"
    result = gen(lang, out, bare_env(tmp_path))

    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gen_stubs.sh: ")
    assert EXPECTED[lang][1] in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("lang", ["cpp", "java"])
def test_plugin_missing_with_protoc(lang, tmp_path):
    """Plain protoc could write the message classes; the script refuses."""
    recorder = "#!/bin/sh\necho \"$@\" >> \"$(dirname \"$0\")/calls\"\n"
    env = bare_env(tmp_path, {"protoc": recorder})
    result = gen(lang, tmp_path / "out", env)

    assert result.returncode == 1
    assert EXPECTED[lang][1] in result.stderr
    assert f"--{lang}_out" in result.stderr  # how to get the messages alone
    assert not (tmp_path / "bin" / "calls").exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "lang, plugin",
    [("cpp", "grpc_cpp_plugin"), ("java", "grpc_java_plugin"), ("ruby", "grpc_ruby_plugin")],
)
def test_protoc_and_plugin_found(lang, plugin, tmp_path):
    recorder = "#!/bin/sh\necho \"$@\" >> \"$(dirname \"$0\")/calls\"\n"
    env = bare_env(tmp_path, {"protoc": recorder, plugin: "#!/bin/sh\n"})
    out = tmp_path / "out"
    result = gen(lang, out, env)

    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "bin" / "calls").read_text().splitlines()
    assert len(calls) == 1
    args = calls[0].split()
    assert f"--{lang}_out={out}" in args
    assert f"--plugin=protoc-gen-grpc={tmp_path / 'bin' / plugin}" in args
    assert f"--grpc_out={out}" in args
    assert args[-1] == str(ROOT / "proto" / PROTO)


# A stand-in for protoc-gen-go and protoc-gen-go-grpc, run by the protoc of
# grpcio-tools: it writes one file named after the proto and holding the
# parameter it was given.
FAKE_GO_PLUGIN = textwrap.dedent(
    """\
    #!{python}
    import sys
    from google.protobuf.compiler import plugin_pb2
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse()
    for name in request.file_to_generate:
        out = response.file.add()
        out.name = name.replace(".proto", "{suffix}")
        out.content = request.parameter
    sys.stdout.buffer.write(response.SerializeToString())
    """
)


def test_go_plugins_get_import_path(tmp_path):
    tools = {
        "protoc-gen-go": FAKE_GO_PLUGIN.format(python=sys.executable, suffix=".pb.go"),
        "protoc-gen-go-grpc": FAKE_GO_PLUGIN.format(python=sys.executable, suffix="_grpc.pb.go"),
    }
    env = bare_env(tmp_path, tools)
    env["GO_IMPORT_PATH"] = "example.com/shop/gen/marketplace/v1;marketplacev1"
    out = tmp_path / "out"
    result = gen("go", out, env)

    assert result.returncode == 0, result.stderr
    assert set(files_under(out)) == set(EXPECTED["go"][0])
    for name in EXPECTED["go"][0]:
        parameter = (out / name).read_text()
        assert "paths=source_relative" in parameter
        assert f"M{PROTO}=example.com/shop/gen/marketplace/v1;marketplacev1" in parameter


def test_node_with_grpc_tools(tmp_path):
    recorder = "#!/bin/sh\necho \"$@\" >> \"$(dirname \"$0\")/calls\"\n"
    env = bare_env(tmp_path, {"grpc_tools_node_protoc": recorder})
    out = tmp_path / "out"
    result = gen("node", out, env)

    assert result.returncode == 0, result.stderr
    args = (tmp_path / "bin" / "calls").read_text().split()
    assert f"--js_out=import_style=commonjs,binary:{out}" in args
    assert f"--grpc_out=grpc_js:{out}" in args


def test_node_without_js_generator(tmp_path):
    failing = "#!/bin/sh\necho 'protoc-gen-js: program not found' >&2\nexit 1\n"
    env = bare_env(tmp_path, {"grpc_tools_node_protoc": failing})
    result = gen("node", tmp_path / "out", env)

    assert result.returncode == 1
    assert "npm package protoc-gen-js" in result.stderr
