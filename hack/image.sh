#!/usr/bin/env bash
# Builds the operator's container image without a daemon: stages a root
# filesystem (the binary, the shared libraries ldd reports, CA certificates,
# a passwd entry for the non-root user) and runs `buildah bud` with chroot
# isolation and vfs storage, which work unprivileged-container-in-container.
#
#   hack/image.sh [IMAGE]    default IMAGE: weblab-operator:dev
#
# PROFILE=release builds an optimised binary (CI); the default is the debug
# build the tests use. SMOKE_KUBECONFIG=<file> also runs the operator from the
# image against that cluster until /readyz answers. BUILDAH_STORAGE (default ~/.cache/weblab-operator/buildah)
# holds the image store.
set -euo pipefail

image=${1:-weblab-operator:dev}
profile=${PROFILE:-debug}
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
storage=${BUILDAH_STORAGE:-${WEBLAB_CACHE_DIR:-$HOME/.cache/weblab-operator}/buildah}

command -v buildah >/dev/null || {
  echo "image: buildah is missing (Debian: apt-get install buildah)" >&2
  exit 1
}

cargo_flags=(--locked --bin weblab-operator)
[[ $profile == release ]] && cargo_flags+=(--release)
cargo build "${cargo_flags[@]}"
binary=$target/$profile/weblab-operator

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
rootfs=$context/rootfs
mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp"
cp "$binary" "$rootfs/weblab-operator"
[[ $profile == release ]] || strip --strip-debug "$rootfs/weblab-operator"

# Every shared object the binary loads, at the path the loader expects.
while read -r library; do
  mkdir -p "$rootfs$(dirname "$library")"
  cp -L "$library" "$rootfs$library"
done < <(ldd "$binary" | grep -oE '/[^ ]+' | sort -u)

cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
printf 'root:x:0:0:root:/:/nonexistent\nnonroot:x:65532:65532:nonroot:/:/nonexistent\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
cp "$root/Containerfile" "$context/"

buildah_flags=(--storage-driver vfs --root "$storage/root" --runroot "$storage/run")
buildah "${buildah_flags[@]}" bud --isolation chroot --layers=false \
  --label "org.opencontainers.image.source=https://github.com/weblab-dev/weblab-operator" \
  --label "org.opencontainers.image.version=$(grep -m1 '^version' "$root/Cargo.toml" | cut -d'"' -f2)" \
  -f "$context/Containerfile" -t "$image" "$context"

# vfs keeps whole copies: drop the images this tag replaced.
buildah "${buildah_flags[@]}" rmi --prune >/dev/null || true

# Smoke test: the image runs its binary (as the non-root user) and prints
# the CRDs, which needs no cluster.
container=$(buildah "${buildah_flags[@]}" from "$image")
trap 'buildah "${buildah_flags[@]}" rm "$container" >/dev/null; rm -rf "$context"' EXIT
crds=$(buildah "${buildah_flags[@]}" run --isolation chroot --user 65532:65532 "$container" \
  -- /weblab-operator crd)
grep -q 'name: weblabdials.weblab.dev' <<<"$crds" || {
  echo "image: $image did not print the CRDs" >&2
  exit 1
}
# With SMOKE_KUBECONFIG, also run the operator from the image against that
# cluster (host network, as the non-root user) until it reports ready.
if [[ -n ${SMOKE_KUBECONFIG:-} ]]; then
  cp "$SMOKE_KUBECONFIG" "$context/kubeconfig"
  chmod 0644 "$context/kubeconfig"
  port=${SMOKE_PORT:-18080}
  buildah "${buildah_flags[@]}" run --isolation chroot --user 65532:65532 \
    -v "$context/kubeconfig:/kubeconfig:ro" "$container" \
    -- /weblab-operator run --kubeconfig /kubeconfig --listen "127.0.0.1:$port" \
    >"$context/operator.log" 2>&1 &
  operator=$!
  ready=
  for _ in $(seq 60); do
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
      ready=yes
      break
    fi
    sleep 1
  done
  kill "$operator" 2>/dev/null || true
  wait "$operator" 2>/dev/null || true
  if [[ -z $ready ]]; then
    echo "image: the operator in $image never became ready:" >&2
    cat "$context/operator.log" >&2
    exit 1
  fi
  echo "image: the operator in $image ran against $SMOKE_KUBECONFIG and became ready"
fi
buildah "${buildah_flags[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$image"
echo "image: built and ran $image"
