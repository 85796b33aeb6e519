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
  # The Alertmanager webhook's token: Alertmanager reads the file, the
  # operator the Secret made from it.
  [[ -s $dir/webhook-token ]] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/webhook-token"
  echo "starting a local control plane, Prometheus and Alertmanager in $dir ..."
  setsid nohup "$bin/weblab-testenv" up --dir "$dir/controlplane" --workloads --crds "$root/crds" \
    --monitoring --alertmanager-webhook "http://127.0.0.1:$port/v1/webhooks/alertmanager" \
    --alertmanager-token-file "$dir/webhook-token" \
    >"$dir/controlplane.log" 2>&1 &
  echo $! >"$dir/controlplane.pid"
  if ! wait_for "the control plane (see $dir/controlplane.log)" 180 test -s "$dir/controlplane/kubeconfig"; then
    tail -n 40 "$dir/controlplane.log" >&2
    exit 1
  fi
  cp "$dir/controlplane/kubeconfig" "$dir/kubeconfig"
  export KUBECONFIG=$dir/kubeconfig
  kubectl=$WEBLAB_TOOLS_BIN/kubectl

  "$kubectl" create namespace demo --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
  "$kubectl" -n demo create secret generic weblab-webhook --from-file=token="$dir/webhook-token" \
    --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null

  echo "starting the operator on 127.0.0.1:$port ..."
  setsid nohup "$bin/weblab-operator" run --kubeconfig "$dir/kubeconfig" --listen "127.0.0.1:$port" \
    --leader-election --lease-namespace kube-system --webhook-token-secret demo/weblab-webhook \
    --allow-outbound-url-prefix http://127.0.0.1: \
    >"$dir/operator.log" 2>&1 &
  echo $! >"$dir/operator.pid"
  if ! wait_for "the operator to be ready (see $dir/operator.log)" 120 curl -fsS "http://127.0.0.1:$port/readyz"; then
    tail -n 40 "$dir/operator.log" >&2
    exit 1
  fi

  "$kubectl" apply -n demo -f "$root/examples/"
  guarded "$(<"$dir/controlplane/prometheus-url")" | "$kubectl" apply -n demo -f -
  cat <<MSG

The demo is running: a local control plane and weblab-operator (logs in $dir).

  export KUBECONFIG=$dir/kubeconfig
  $kubectl get weblab -A
  $kubectl -n demo get weblabdials -w          # quickstart moves within two minutes
  $kubectl -n demo describe weblabdial holiday-device-sync

  # Raise the error ratio that Prometheus scrapes: demo-errors (pulled) and,
  # through a Prometheus rule and Alertmanager, demo-errors-pushed fire, and
  # the dial 'guarded' rolls back within seconds. Lower it and retry:
  curl -X PUT --data 0.3 "$(<"$dir/controlplane/metrics-url")/demo_error_ratio?service=checkout"
  $kubectl -n demo get alarms,weblabdials -w
  curl -X PUT --data 0 "$(<"$dir/controlplane/metrics-url")/demo_error_ratio?service=checkout"
  $kubectl -n demo annotate --overwrite weblabdial guarded weblab.dev/action="retry \$(date +%s)"
  curl -s "http://127.0.0.1:$port/v1/weblabs/demo/quickstart/treatment?unit=customer-42&realm=NA"
  curl -s http://127.0.0.1:$port/metrics | grep ^weblab_

Stop it with: make demo-down
MSG
}

# The demo's own alarms (the Prometheus URL is only known now) and a dial
# they guard.
guarded() {
  cat <<YAML
apiVersion: weblab.dev/v1alpha1
kind: Alarm
metadata:
  name: demo-errors
  labels: {demo: guarded}
spec:
  severity: Sev2
  description: checkout error ratio above 5%, pulled from Prometheus every 5s.
  prometheus:
    url: $1
    query: max(demo_error_ratio)
    interval: 5s
    comparison: GreaterThan
    threshold: 0.05
---
apiVersion: weblab.dev/v1alpha1
kind: Alarm
metadata:
  name: demo-errors-pushed
  labels: {demo: guarded}
spec:
  severity: Sev2
  description: the same signal as a Prometheus alerting rule, pushed by Alertmanager.
  alertmanager:
    matchers:
      - {name: alertname, value: DemoErrorRatioHigh}
---
apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: guarded
spec:
  weblab: GUARDED_CHECKOUT
  treatments: [C, T1]
  realms: [NA, EU]
  allocation: {C: 50, T1: 50}
  rollback:
    alarms:
      selector: {matchLabels: {demo: guarded}}
YAML
}

case $cmd in
  up) up ;;
  down) down ;;
  *) echo "usage: demo.sh up|down DIR [PORT]" >&2; exit 2 ;;
esac
