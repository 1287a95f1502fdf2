#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian machine, when it is missing:
# cmake and libclang (to build llama.cpp, the C++ reference), and a Python virtual environment
# in .venv with the `gguf` and `numpy` packages (the independent oracle for GGUF files).
# Idempotent: a second run installs nothing. Says clearly what is missing when it cannot install.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
# bindgen loads libclang itself (libclang.so or libclang-N.so); libclang-cpp, which other
# packages bring, is a different library and does not count.
have_libclang() {
  local f
  for f in /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* \
           /usr/lib/*/libclang.so* /usr/lib/*/libclang-[0-9]*.so* /usr/lib/libclang.so*; do
    [ -e "$f" ] && return 0
  done
  [ -n "${LIBCLANG_PATH:-}" ] && ls "$LIBCLANG_PATH"/libclang*.so* >/dev/null 2>&1
}
have_libclang || need_apt+=(libclang-dev)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} with apt-get" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "setup: missing ${need_apt[*]} and not root (no sudo): install them, then run again" >&2
      exit 1
    fi
  fi
  $SUDO apt-get update -qq || { echo "setup: apt-get update failed; install ${need_apt[*]} by hand" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null \
    || { echo "setup: apt-get install ${need_apt[*]} failed; install them by hand" >&2; exit 1; }
fi

# Optional: headless Chromium renders the HTML report in harness/tests/report_html.rs; without
# it those checks are skipped, saying so. A failed install does not stop the setup.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    echo "setup: installing chromium with apt-get (optional: the HTML report's browser test)" >&2
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 $SUDO apt-get install -y -qq chromium >/dev/null; } \
      || echo "setup: chromium could not be installed; the HTML report's browser checks will be skipped" >&2
  else
    echo "setup: no chromium and not root: the HTML report's browser checks will be skipped" >&2
  fi
fi

if ! command -v python3 >/dev/null 2>&1; then
  echo "setup: python3 is missing: install Python 3.9 or newer" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import gguf, numpy, blake3, jsonschema' >/dev/null 2>&1; then
  # gguf and numpy: the independent oracle for files and quants; numpy and blake3: the second
  # reference implementation (ci/refs/numpy-ref) the bitnet-b1.58 and I2_S scenarios run against;
  # jsonschema: a standard validator over scenarios/schema.json (harness/tests/schema_validator.rs).
  echo "setup: creating .venv with the gguf, numpy, blake3 and jsonschema Python packages" >&2
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check 'gguf==0.19.0' 'numpy>=1.26' 'blake3>=0.4' 'jsonschema>=4.18' \
    || { echo "setup: pip could not install gguf, numpy, blake3 and jsonschema into .venv" >&2; exit 1; }
fi
echo "setup: ok (cmake $(cmake --version | head -1 | awk '{print $3}'), gguf $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("gguf"))'))" >&2
