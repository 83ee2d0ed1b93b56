#!/usr/bin/env bash
# Generate client and server stubs from proto/ for one language.
#
# Usage: scripts/gen_stubs.sh [LANG] [OUT_DIR]
#   LANG     python (default), node, go, java, cpp or ruby
#   OUT_DIR  folder to write into; default gen/LANG. gen/python is the copy
#            the Python package imports and is committed; the other
#            gen/LANG folders are ignored by git.
#
# Python uses grpcio-tools from .venv (or $PYTHON). The other languages need
# their generator installed. When it is missing, the script writes nothing,
# prints which package provides it and how to install it, and exits 1.
# An unknown LANG exits 2.
#
# Environment:
#   PYTHON          Python with grpcio-tools (default .venv/bin/python)
#   PROTOC          protoc to run for go, java, cpp and ruby (default: protoc
#                   on PATH; for go, also the protoc bundled with grpcio-tools)
#   GO_IMPORT_PATH  Go import path and package of the generated code
#                   (default marketplace/v1;marketplacev1); the proto sets no
#                   go_package, so it is passed to the Go generators here.
#
# The protoc bundled with grpcio-tools only has the Python generators: C++,
# Java and Ruby message code needs a full protoc, such as Debian's
# protobuf-compiler. For C++ that protoc must also be the version of the
# libprotobuf you compile against.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
  exit 0
fi
lang="${1:-python}"
out="${2:-$root/gen/$lang}"
proto_file="marketplace/v1/marketplace.proto"

# Print the arguments as one line on stderr and exit 1.
fail() {
  echo "gen_stubs.sh: $*" >&2
  exit 1
}

# Print the path of the first of the given programs found on PATH.
find_tool() {
  local name
  for name in "$@"; do
    if command -v "$name" >/dev/null 2>&1; then
      command -v "$name"
      return 0
    fi
  done
  return 1
}

# Set the array `protoc` to a protoc with the built-in generators (cpp,
# java, ruby), or else to nothing and `protoc_problem` to what to install.
full_protoc() {
  protoc=()
  protoc_problem=""
  if [[ -n "${PROTOC:-}" ]]; then
    protoc=("$PROTOC")
  elif command -v protoc >/dev/null 2>&1; then
    protoc=(protoc)
  else
    protoc_problem="$lang needs protoc with its built-in $lang generator,"
    protoc_problem+=" and none is on PATH (the protoc inside grpcio-tools only"
    protoc_problem+=" generates Python): install package protobuf-compiler"
    protoc_problem+=" (apt-get install protobuf-compiler) or a protoc release"
    protoc_problem+=" for your platform, or set PROTOC=/path/to/protoc."
  fi
}

# Print the Python whose grpcio-tools bundles a protoc, if there is one.
bundled_python() {
  local python="${PYTHON:-$root/.venv/bin/python}"
  if "$python" -c "import grpc_tools" 2>/dev/null; then
    printf '%s\n' "$python"
    return 0
  fi
  return 1
}

case "$lang" in
  python)
    python="${PYTHON:-$root/.venv/bin/python}"
    if ! "$python" -c "import grpc_tools" 2>/dev/null; then
      echo "gen_stubs.sh: grpcio-tools is not installed for $python;" \
        "run 'pip install grpcio-tools' or scripts/test.sh once" >&2
      exit 1
    fi
    mkdir -p "$out"
    "$python" -m grpc_tools.protoc -I "$root/proto" \
      --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
      "$root/proto/$proto_file"
    touch "$out/marketplace/__init__.py" "$out/marketplace/v1/__init__.py"
    ;;

  node)
    # The grpc-tools npm package bundles protoc and the grpc_node_plugin.
    # Node clients can also skip generation: @grpc/proto-loader reads the
    # .proto at run time, as clients/node does.
    if ! node_protoc="$(find_tool grpc_tools_node_protoc)"; then
      fail "node needs grpc_tools_node_protoc from the npm package grpc-tools," \
        "which is not on PATH. Install it with 'npm install --global grpc-tools'" \
        "(the generated code then needs the npm packages google-protobuf and" \
        "@grpc/grpc-js at run time)." \
        "Or generate nothing: load proto/$proto_file at run time with" \
        "@grpc/proto-loader, as clients/node does."
    fi
    mkdir -p "$out"
    if ! "$node_protoc" -I "$root/proto" \
      --js_out="import_style=commonjs,binary:$out" \
      --grpc_out="grpc_js:$out" \
      "$root/proto/$proto_file"; then
      # protoc 3.21 and later have no JavaScript generator built in.
      fail "grpc_tools_node_protoc failed. If protoc says protoc-gen-js is" \
        "missing, install the JavaScript generator, the npm package" \
        "protoc-gen-js ('npm install --global protoc-gen-js'), and run again."
    fi
    ;;

  go)
    # The Go generators are plugins, so any protoc runs them, including the
    # one bundled with grpcio-tools. `go install` puts them in GOPATH/bin,
    # which is often not on PATH.
    gobin=""
    if command -v go >/dev/null 2>&1; then
      gobin="$(go env GOPATH)/bin"
    fi
    PATH="$PATH${gobin:+:$gobin}:${HOME:-/nonexistent}/go/bin"
    missing=()
    find_tool protoc-gen-go >/dev/null || missing+=(protoc-gen-go)
    find_tool protoc-gen-go-grpc >/dev/null || missing+=(protoc-gen-go-grpc)
    if ((${#missing[@]})); then
      joined="${missing[0]}${missing[1]:+ and ${missing[1]}}"
      fail "go needs $joined on PATH. Install them with" \
        "'go install google.golang.org/protobuf/cmd/protoc-gen-go@latest' and" \
        "'go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@latest'" \
        "(Go modules google.golang.org/protobuf and" \
        "google.golang.org/grpc/cmd/protoc-gen-go-grpc), or on Debian and" \
        "Ubuntu 'apt-get install protoc-gen-go protoc-gen-go-grpc'."
    fi
    if [[ -n "${PROTOC:-}" ]]; then
      protoc=("$PROTOC")
    elif python="$(bundled_python)"; then
      protoc=("$python" -m grpc_tools.protoc)
    elif command -v protoc >/dev/null 2>&1; then
      protoc=(protoc)
    else
      fail "go needs a protoc: run scripts/test.sh once to install grpcio-tools" \
        "into .venv, or install package protobuf-compiler."
    fi
    go_import="${GO_IMPORT_PATH:-marketplace/v1;marketplacev1}"
    mkdir -p "$out"
    "${protoc[@]}" -I "$root/proto" \
      --go_out="$out" --go_opt=paths=source_relative \
      --go_opt="M$proto_file=$go_import" \
      --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
      --go-grpc_opt="M$proto_file=$go_import" \
      "$root/proto/$proto_file"
    ;;

  java | cpp)
    # Without the gRPC plugin, plain protoc could still write the message
    # classes. The script exits 1 instead and writes nothing, because a user
    # who requests stubs expects the MarketService client: a run that exits
    # 0 with half the code would only fail later, at compile time, far from
    # the cause. The error message shows how to get the message classes
    # alone.
    if [[ "$lang" == java ]]; then
      # Upstream calls the plugin protoc-gen-grpc-java; Debian ships it as
      # grpc_java_plugin.
      plugin_names=(protoc-gen-grpc-java grpc_java_plugin)
      how="download the executable io.grpc:protoc-gen-grpc-java for your"
      how+=" platform from Maven Central (or let the protobuf Gradle or Maven"
      how+=" plugin fetch it), make it executable and put it on PATH; on"
      how+=" Debian and Ubuntu 'apt-get install protobuf-compiler-grpc-java-plugin'"
      how+=" provides it as grpc_java_plugin"
    else
      plugin_names=(grpc_cpp_plugin)
      how="on Debian and Ubuntu 'apt-get install protobuf-compiler-grpc'"
      how+=" (with libgrpc++-dev and libprotobuf-dev to compile the result);"
      how+=" elsewhere build gRPC from source or take it from vcpkg or Conan"
    fi
    full_protoc
    if ! plugin="$(find_tool "${plugin_names[@]}")"; then
      fail "$lang needs the gRPC plugin ${plugin_names[0]}, which is not on PATH: $how." \
        "${protoc_problem:+$protoc_problem }For the message classes alone," \
        "without the MarketService stubs, run" \
        "'protoc -I proto --${lang}_out=DIR proto/$proto_file' with a full protoc."
    fi
    [[ -z "$protoc_problem" ]] || fail "$protoc_problem"
    mkdir -p "$out"
    "${protoc[@]}" -I "$root/proto" \
      --"${lang}_out=$out" \
      --plugin=protoc-gen-grpc="$plugin" --grpc_out="$out" \
      "$root/proto/$proto_file"
    ;;

  ruby)
    # The grpc-tools gem bundles protoc and the Ruby plugin. Debian's
    # protobuf-compiler-grpc has the plugin alone, as grpc_ruby_plugin.
    if gem_protoc="$(find_tool grpc_tools_ruby_protoc)"; then
      mkdir -p "$out"
      "$gem_protoc" -I "$root/proto" --ruby_out="$out" --grpc_out="$out" \
        "$root/proto/$proto_file"
    elif plugin="$(find_tool grpc_ruby_plugin)"; then
      full_protoc
      [[ -z "$protoc_problem" ]] || fail "$protoc_problem"
      mkdir -p "$out"
      "${protoc[@]}" -I "$root/proto" --ruby_out="$out" \
        --plugin=protoc-gen-grpc="$plugin" --grpc_out="$out" \
        "$root/proto/$proto_file"
    else
      fail "ruby needs grpc_tools_ruby_protoc from the gem grpc-tools, which is" \
        "not on PATH. Install it with 'gem install grpc-tools' (the generated" \
        "code needs the gems grpc and google-protobuf at run time), or on" \
        "Debian and Ubuntu 'apt-get install ruby-grpc-tools'."
    fi
    ;;

  *)
    echo "gen_stubs.sh: unknown language '$lang';" \
      "supported: python, node, go, java, cpp, ruby" >&2
    exit 2
    ;;
esac
