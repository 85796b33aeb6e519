#!/usr/bin/env bash
# `make demo` / `make demo-down`: a local control plane (etcd, kube-apiserver,
# controller-manager, scheduler, kwok) and the operator, in the background.
set -euo pipefail

cmd=${1:?usage: demo.sh up|down DIR [PORT]}
dir=${2:?usage: demo.sh up|down DIR [PORT]}
port=${3:-8080}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CARGO_TARGET_DIR:-$root/target}/debug

stop_pidfile() {
  local file=$1
  [[ -f $file ]] || return 0
  local pid
  pid=$(<"$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

down() {
  stop_pidfile "$dir/operator.pid"
  stop_pidfile "$dir/controlplane.pid"
  echo "demo stopped"
}

wait_for() { # description, seconds, command...
  local what=$1 seconds=$2
  shift 2
  for _ in $(seq $((seconds * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "demo: timed out waiting for $what" >&2
  return 1
}

up() {
  down >/dev/null
  mkdir -p "$dir"
  rm -f "$dir/kubeconfig"
  echo "starting a local control plane in $dir ..."
  setsid nohup "$bin/weblab-testenv" up --dir "$dir/controlplane" --workloads --crds "$root/crds" \
    >"$dir/controlplane.log" 2>&1 &
  echo $! >"$dir/controlplane.pid"
  if ! wait_for "the control plane (see $dir/controlplane.log)" 180 test -s "$dir/controlplane/kubeconfig"; then
    tail -n 40 "$dir/controlplane.log" >&2
    exit 1
  fi
  cp "$dir/controlplane/kubeconfig" "$dir/kubeconfig"
  export KUBECONFIG=$dir/kubeconfig
  kubectl=$WEBLAB_TOOLS_BIN/kubectl

  echo "starting the operator on 127.0.0.1:$port ..."
  setsid nohup "$bin/weblab-operator" run --kubeconfig "$dir/kubeconfig" --listen "127.0.0.1:$port" \
    --leader-election --lease-namespace kube-system >"$dir/operator.log" 2>&1 &
  echo $! >"$dir/operator.pid"
  if ! wait_for "the operator to be ready (see $dir/operator.log)" 120 curl -fsS "http://127.0.0.1:$port/readyz"; then
    tail -n 40 "$dir/operator.log" >&2
    exit 1
  fi

  "$kubectl" create namespace demo --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
  "$kubectl" apply -n demo -f "$root/examples/"
  cat <<MSG

The demo is running: a local control plane and weblab-operator (logs in $dir).

  export KUBECONFIG=$dir/kubeconfig
  $kubectl get weblab -A
  $kubectl -n demo get weblabdials -w          # quickstart moves within two minutes
  $kubectl -n demo describe weblabdial holiday-device-sync
  curl -s "http://127.0.0.1:$port/v1/weblabs/demo/quickstart/treatment?unit=customer-42&realm=NA"
  curl -s http://127.0.0.1:$port/metrics | grep ^weblab_

Stop it with: make demo-down
MSG
}

case $cmd in
  up) up ;;
  down) down ;;
  *) echo "usage: demo.sh up|down DIR [PORT]" >&2; exit 2 ;;
esac
