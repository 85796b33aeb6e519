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
# Prometheus and Alertmanager are the real monitoring parts the end-to-end
# tests start (tools/testenv); WEBLAB_PROMETHEUS / WEBLAB_ALERTMANAGER point
# the harness at other binaries, and then nothing is installed for them.
debs=()
command -v curl >/dev/null || debs+=(curl)
if [[ -z ${WEBLAB_PROMETHEUS:-} && ! -x /usr/bin/prometheus ]]; then
  debs+=(prometheus)
fi
if [[ -z ${WEBLAB_ALERTMANAGER:-} && ! -x /usr/bin/prometheus-alertmanager ]]; then
  debs+=(prometheus-alertmanager)
fi

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

# Installs without starting services: the packages ship init scripts and
# systemd units, and the harness runs its own instances on free ports. A
# machine without systemd (containers, CI) would otherwise try invoke-rc.d.
# An existing policy-rc.d belongs to the machine's owner and stays as it is.
install_debs() {
  local policy=/usr/sbin/policy-rc.d
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# temporary, from weblab-operator hack/prereqs.sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f '"$policy" EXIT
  fi
  # Waits for the dpkg lock instead of failing when another install runs.
  local wait=(-o DPkg::Lock::Timeout=600)
  apt-get "${wait[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive apt-get "${wait[@]}" install -y -qq --no-install-recommends "$@"
}

if ((${#debs[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    install_debs "${debs[@]}"
  else
    echo "prereqs: please install the Debian packages: ${debs[*]}" >&2
    exit 1
  fi
fi
