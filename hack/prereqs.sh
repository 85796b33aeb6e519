#!/usr/bin/env bash
# Checks (and where possible installs) what the build and tests need beyond
# the repository: Go and Rust toolchains with rustfmt and clippy, and a few
# command-line tools from Debian's packages. Usage: prereqs.sh [bench|image]
set -euo pipefail

missing=()
for tool in go cargo rustc; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "prereqs: missing toolchains: ${missing[*]} (install Go >= 1.24 and Rust >= 1.89)" >&2
  exit 1
fi
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

# Debian packages used by tests and scripts ("bench" adds the load tool).
debs=()
command -v curl >/dev/null || debs+=(curl)
# The Argo CD health checks are tested with Lua 5.1, the level of gopher-lua.
command -v lua5.1 >/dev/null || debs+=(lua5.1)
# promtool checks the chart's alerts and dashboard queries.
command -v promtool >/dev/null || debs+=(prometheus)
if [[ ${1:-} == bench ]]; then
  command -v wrk >/dev/null || debs+=(wrk)
fi
if [[ ${1:-} == image ]]; then
  command -v buildah >/dev/null || debs+=(buildah)
fi
if ((${#debs[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${debs[@]}"
  else
    echo "prereqs: please install: ${debs[*]}" >&2
    exit 1
  fi
fi
