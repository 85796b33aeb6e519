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

# Examples that name production endpoints or other clusters: the demo applies
# its own versions from hack/demo/ instead (see hack/demo/README.md).
replaced_examples=(
  alarm-guardrail.yaml
  alarm-prometheus.yaml
  changewindow-merge-protocol.yaml
  mergetrainpause-gitlab.yaml
  mergetrainpause-webhook.yaml
  rollback-armed.yaml
  rollback-graphql.yaml
  notifier-pagerduty.yaml
  notifier-slack.yaml
  notifier-teams.yaml
  notifier-webhook.yaml
  rollback-gitops.yaml
)
# The regions of the GraphQL rollback: namespace and region name.
regions=(prod-na:prodNA prod-fe:prodFE prod-eu:prodEU prod-zaz:prodZAZ)

# A hack/demo/ manifest with the local endpoints filled in, into $dir/manifests.
render() { # file, then NAME=value pairs
  local file=$1 text
  shift
  text=$(<"$root/hack/demo/$file")
  for pair in "$@"; do text=${text//@${pair%%=*}@/${pair#*=}}; done
  printf '%s\n' "$text" >"$dir/manifests/$file"
  echo "$dir/manifests/$file"
}

new_token() { # file
  [[ -s $1 ]] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$1"
}

# Sets a gauge the demo's Prometheus scrapes.
gauge() { # name, labels (a=b), value
  curl -fsS -X PUT --data "$3" "$metrics/$1?$2" >/dev/null
}

up() {
  down >/dev/null
  mkdir -p "$dir/manifests"
  # A kubeconfig left by an earlier run must not pass for this one.
  rm -f "$dir/kubeconfig" "$dir/controlplane/kubeconfig"
  # Alertmanager reads the webhook token from its file, the operator from the
  # Secret made from it; the GitLab contract server accepts the GitLab token.
  new_token "$dir/webhook-token"
  new_token "$dir/gitlab-token"
  echo "starting a local control plane, Prometheus, Alertmanager, a GitLab contract server and a merge-queue receiver in $dir ..."
  setsid nohup "$bin/weblab-testenv" up --dir "$dir/controlplane" --workloads --crds "$root/crds" \
    --monitoring --rules "$root/hack/demo/rules.yml" \
    --alertmanager-webhook "http://127.0.0.1:$port/v1/webhooks/alertmanager" \
    --alertmanager-token-file "$dir/webhook-token" \
    --gitlab platform/graphql-api --gitlab-schedule 118 --gitlab-token-file "$dir/gitlab-token" \
    --merge-queue \
    >"$dir/controlplane.log" 2>&1 &
  echo $! >"$dir/controlplane.pid"
  if ! wait_for "the control plane (see $dir/controlplane.log)" 180 test -s "$dir/controlplane/kubeconfig"; then
    tail -n 40 "$dir/controlplane.log" >&2
    exit 1
  fi
  cp "$dir/controlplane/kubeconfig" "$dir/kubeconfig"
  export KUBECONFIG=$dir/kubeconfig
  kubectl=$WEBLAB_TOOLS_BIN/kubectl
  metrics=$(<"$dir/controlplane/metrics-url")
  prometheus=$(<"$dir/controlplane/prometheus-url")
  gitlab=$(<"$dir/controlplane/gitlab-url")
  merge_queue=$(<"$dir/controlplane/merge-queue-url")

  # Every signal starts healthy, so no alarm waits for data.
  gauge demo_error_ratio service=checkout 0
  gauge device_sync_error_ratio service=device-sync 0
  gauge device_sync_capacity_ratio service=device-sync 0.4
  gauge graphql_error_ratio region=prodNA 0

  "$kubectl" create namespace demo --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
  "$kubectl" -n demo create secret generic weblab-webhook --from-file=token="$dir/webhook-token" \
    --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
  "$kubectl" -n demo create secret generic gitlab-merge-train-token --from-file=token="$dir/gitlab-token" \
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

  local examples=() file name
  for file in "$root"/examples/*.yaml; do
    name=$(basename "$file")
    [[ " ${replaced_examples[*]} " == *" $name "* ]] || examples+=(-f "$file")
  done
  "$kubectl" apply -n demo "${examples[@]}"
  "$kubectl" apply -n demo \
    -f "$(render alarms.yaml PROMETHEUS_URL="$prometheus")" \
    -f "$(render changewindow.yaml)" \
    -f "$(render merge-train-webhook.yaml MERGE_QUEUE_URL="$merge_queue")"
  render merge-train-gitlab.yaml GITLAB_URL="$gitlab" >/dev/null

  release_history
  print_next_steps
}

# The GraphQL API in four regions with the release history of the runbook:
# 3.240.0 runs until the armed Rollback has recorded it stable, then
# 3.241.0 and the bad 3.242.1 follow.
release_history() {
  local region namespace
  echo "deploying the GraphQL API to four regions: 3.240.0 ..."
  for region in "${regions[@]}"; do
    namespace=${region%%:*}
    render graphql.yaml NAMESPACE="$namespace" REGION="${region#*:}" VERSION=3.240.0 >/dev/null
    "$kubectl" apply -f "$dir/manifests/graphql.yaml" >/dev/null
  done
  rollouts
  "$kubectl" apply -n demo -f "$(render rollback.yaml)" >/dev/null
  echo "waiting for the armed Rollback demo/graphql-sev2 to record 3.240.0 as stable (20 s clean) ..."
  for region in "${regions[@]}"; do
    wait_for "3.240.0 marked stable in ${region%%:*}" 120 stable_in "${region%%:*}"
  done
  for version in 3.241.0 3.242.1; do
    echo "releasing $version to every region ..."
    for region in "${regions[@]}"; do
      namespace=${region%%:*}
      "$kubectl" -n "$namespace" set image deployment/graphql-api api="registry.example.com/graphql-api:$version" >/dev/null
      "$kubectl" -n "$namespace" set image deployment/graphql-worker worker="registry.example.com/graphql-worker:$version" >/dev/null
    done
    rollouts
  done
}

rollouts() {
  local region
  for region in "${regions[@]}"; do
    "$kubectl" -n "${region%%:*}" rollout status deployment/graphql-api deployment/graphql-worker --timeout=120s >/dev/null
  done
}

# Whether the newest graphql-api ReplicaSet of a namespace is marked stable.
stable_in() { # namespace
  "$kubectl" -n "$1" get rs -l app.kubernetes.io/name=graphql-api \
    -o jsonpath='{.items[*].metadata.annotations.weblab\.dev/stable-since}' | grep -q .
}

print_next_steps() {
  local api="http://127.0.0.1:$port"
  cat <<MSG

The demo is running: a local control plane, Prometheus, Alertmanager, a GitLab
contract server and weblab-operator (logs in $dir).

  export KUBECONFIG=$dir/kubeconfig
  $kubectl get weblab -A

1. The holiday dial-down. holiday-device-sync serves T1 to everyone; when
   device-sync nears capacity (a Prometheus rule, pushed by Alertmanager as a
   Sev2.5), production returns to 100% control while beta customers keep T1:

  curl -X PUT --data 0.95 "$metrics/device_sync_capacity_ratio?service=device-sync"
  $kubectl -n demo get alarms,weblabdials -w
  curl -s "$api/v1/weblabs/demo/holiday-device-sync/treatment?unit=customer-42&realm=NA"
  curl -s "$api/v1/weblabs/demo/holiday-device-sync/treatment?unit=A2Z0BETA00017&realm=NA"

2. The regional rollback. The GraphQL API runs the bad 3.242.1 in prod-na,
   prod-fe, prod-eu and prod-zaz; its Sev2 fires the armed Rollback, which
   returns each region to the previous stable 3.240.0, one after the other:

  curl -X PUT --data 0.2 "$metrics/graphql_error_ratio?region=prodNA"
  $kubectl -n demo get rollback graphql-sev2 -w
  $kubectl -n prod-zaz rollout history deployment/graphql-api

3. The merge-train pause. Pausing deactivates the GitLab pipeline schedule
   that runs the train; deleting the pause restores it:

  $kubectl -n demo apply -f $dir/manifests/merge-train-gitlab.yaml
  curl -s -H "PRIVATE-TOKEN: \$(cat $dir/gitlab-token)" "$gitlab/api/v4/projects/platform%2Fgraphql-api/pipeline_schedules/118"
  $kubectl -n demo delete mergetrainpause graphql-sev2-freeze

4. The gate CI jobs ask before merging: 423 while a pause, a closed change
   window or a firing Sev2 holds the train, 200 otherwise:

  curl -i "$api/v1/gates/demo/mobile-main"
  curl --fail "$api/v1/gates/demo/graphql-main"

Clear the signals and retry the dial-down:

  curl -X PUT --data 0.4 "$metrics/device_sync_capacity_ratio?service=device-sync"
  curl -X PUT --data 0 "$metrics/graphql_error_ratio?region=prodNA"
  $kubectl -n demo annotate --overwrite weblabdial holiday-device-sync weblab.dev/action="retry \$(date +%s)"

Stop it with: make demo-down
MSG
}

case $cmd in
  up) up ;;
  down) down ;;
  *) echo "usage: demo.sh up|down DIR [PORT]" >&2; exit 2 ;;
esac
