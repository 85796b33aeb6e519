#!/usr/bin/env bash
# Builds the pinned test tools (etcd, the Kubernetes control plane, kubectl,
# kwok, helm) from their official Go modules into a cache outside the
# repository, and keeps a directory of symlinks to them.
#
#   hack/tools.sh build    build whatever is missing, then print the bin dir
#   hack/tools.sh bindir   print the bin dir (builds nothing)
#   hack/tools.sh list     print each tool's cache dir and whether it is built
#   hack/tools.sh prune    remove cached builds this checkout does not use
#   hack/tools.sh crds     fetch the pinned Argo CD and Flux CRDs (tools/crds.env)
#                          if missing, then print their dir; `build` does it too
#
# Cache: ${WEBLAB_CACHE_DIR:-$HOME/.cache/weblab-operator}/tools/
#   <tool>-<version>-<hash>/   binaries of one tool; <hash> covers the tool's
#                              go.mod, go.sum and build recipe, so any change
#                              to them builds into a new directory
#   bin-<hash>/                symlinks to every tool's binaries; <hash> covers
#                              versions.env and every tool's directory key;
#                              bin-<hash>/gitops-crds links to the CRDs below
#   gitops-crds-<hash>/        the Argo CD Application and Flux Kustomization and
#                              HelmRelease CRDs; <hash> covers crds.env and
#                              tools/go/fluxcrds
#
# Adding a tool: create tools/go/<tool>/go.mod with a `tool` directive, add
# <TOOL>_VERSION to tools/versions.env, and add one block to the registry
# below (module, packages, binaries, optionally tags and ldflags).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
versions_file="${repo_root}/tools/versions.env"
go_dir="${repo_root}/tools/go"
cache_dir="${WEBLAB_CACHE_DIR:-${HOME}/.cache/weblab-operator}/tools"

# Plain KEY=value lines; `shellcheck -x` follows them.
# shellcheck source=tools/versions.env source-path=SCRIPTDIR/.. disable=SC1091
source "${versions_file}"
crds_file="${repo_root}/tools/crds.env"
# shellcheck source=tools/crds.env source-path=SCRIPTDIR/.. disable=SC1091
source "${crds_file}"

# ---- registry ---------------------------------------------------------------
# TOOLS lists the tools in build order. Per tool:
#   MODULE    the Go module whose version is pinned in versions.env
#   VERSION   the pinned version
#   PACKAGES  main packages, built in ONE `go build` so shared packages compile once
#   BINARIES  output names, in the order of PACKAGES
#   TAGS      build tags (optional)
#   LDFLAGS   extra -X flags (optional; -s -w is always added)
declare -a TOOLS=()
declare -A MODULE=() VERSION=() PACKAGES=() BINARIES=() TAGS=() LDFLAGS=()

TOOLS+=(etcd)
MODULE[etcd]=go.etcd.io/etcd/server/v3
VERSION[etcd]="${ETCD_VERSION}"
PACKAGES[etcd]="go.etcd.io/etcd/server/v3"
BINARIES[etcd]="etcd"

TOOLS+=(kubernetes)
MODULE[kubernetes]=k8s.io/kubernetes
VERSION[kubernetes]="${KUBERNETES_VERSION}"
PACKAGES[kubernetes]="k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl"
BINARIES[kubernetes]="kube-apiserver kube-controller-manager kube-scheduler kubectl"
# The tags upstream's hack/lib/golang.sh uses for release builds.
TAGS[kubernetes]="selinux,notest,grpcnotrace"
IFS=. read -r kube_major kube_minor _ <<<"${KUBERNETES_VERSION#v}"
# Without these the binaries report v0.0.0-master, which kubectl and clients
# use for version skew checks. buildDate is computed at build time (the
# module's publication time) and so is not part of the cache key.
LDFLAGS[kubernetes]=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDFLAGS[kubernetes]+=" -X ${pkg}.gitVersion=${KUBERNETES_VERSION}"
  LDFLAGS[kubernetes]+=" -X ${pkg}.gitMajor=${kube_major}"
  LDFLAGS[kubernetes]+=" -X ${pkg}.gitMinor=${kube_minor}"
  LDFLAGS[kubernetes]+=" -X ${pkg}.gitTreeState=archive"
done

TOOLS+=(kwok)
MODULE[kwok]=sigs.k8s.io/kwok
VERSION[kwok]="${KWOK_VERSION}"
PACKAGES[kwok]="sigs.k8s.io/kwok/cmd/kwok"
BINARIES[kwok]="kwok"
LDFLAGS[kwok]="-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"

TOOLS+=(helm)
MODULE[helm]=helm.sh/helm/v3
VERSION[helm]="${HELM_VERSION}"
PACKAGES[helm]="helm.sh/helm/v3/cmd/helm"
BINARIES[helm]="helm"
LDFLAGS[helm]="-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.metadata= -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
# ---- end of registry --------------------------------------------------------

log() { printf 'tools: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

short_hash() { sha256sum | cut -c1-12; }

# The cache key of one tool: its go.mod (comments aside), go.sum and everything
# passed to go build.
tool_key() {
  local tool="$1" dir="${go_dir}/$1"
  [[ -f "${dir}/go.mod" && -f "${dir}/go.sum" ]] || die "missing ${dir}/go.mod or go.sum"
  local hash
  hash="$({
    grep -v '^[[:space:]]*//' "${dir}/go.mod"
    cat "${dir}/go.sum"
    printf '%s\n' "${PACKAGES[$tool]}" "${BINARIES[$tool]}" "${TAGS[$tool]:-}" "${LDFLAGS[$tool]:-}"
  } | short_hash)"
  printf '%s-%s-%s' "${tool}" "${VERSION[$tool]}" "${hash}"
}

tool_dir() { printf '%s/%s' "${cache_dir}" "$(tool_key "$1")"; }

bin_dir() {
  local hash
  hash="$({
    cat "${versions_file}"
    local tool
    for tool in "${TOOLS[@]}"; do tool_key "${tool}"; echo; done
  } | short_hash)"
  printf '%s/bin-%s' "${cache_dir}" "${hash}"
}

is_built() {
  local tool="$1" dir bin
  dir="$(tool_dir "${tool}")"
  for bin in ${BINARIES[$tool]}; do
    [[ -x "${dir}/${bin}" ]] || return 1
  done
}

# go.mod is the source of truth for what gets built; versions.env names it for
# humans and make. Refuse to build when the two disagree.
check_version() {
  local tool="$1" pinned
  pinned="$(cd "${go_dir}/${tool}" && GOWORK=off GOFLAGS=-mod=readonly go list -m -f '{{.Version}}' "${MODULE[$tool]}")"
  [[ "${pinned}" == "${VERSION[$tool]}" ]] ||
    die "${tool}: tools/versions.env says ${VERSION[$tool]} but tools/go/${tool}/go.mod requires ${MODULE[$tool]} ${pinned}"
}

build_tool() {
  local tool="$1" dir tmp start ldflags
  dir="$(tool_dir "${tool}")"
  if is_built "${tool}"; then
    log "${tool} ${VERSION[$tool]}: up to date (${dir})"
    return
  fi
  check_version "${tool}"
  start="$(date +%s)"
  log "${tool} ${VERSION[$tool]}: building ${BINARIES[$tool]} (cold builds take minutes)"

  ldflags="-s -w ${LDFLAGS[$tool]:-}"
  if [[ "${tool}" == kubernetes ]]; then
    # The release time of the module, so rebuilds are reproducible.
    local build_date
    build_date="$(cd "${go_dir}/${tool}" && GOWORK=off GOFLAGS=-mod=readonly go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
    ldflags+=" -X k8s.io/component-base/version.buildDate=${build_date} -X k8s.io/client-go/pkg/version.buildDate=${build_date}"
  fi

  # Build into a scratch directory and rename it at the end, so an interrupted
  # build never leaves a directory that looks complete.
  mkdir -p "${cache_dir}"
  tmp="$(mktemp -d "${dir}.tmp.XXXXXX")"
  chmod 755 "${tmp}"
  trap 'rm -rf "${tmp}"' EXIT
  local -a pkgs bins out
  read -ra pkgs <<<"${PACKAGES[$tool]}"
  read -ra bins <<<"${BINARIES[$tool]}"
  if ((${#pkgs[@]} == 1)); then
    out=("${tmp}/${bins[0]}")
  else
    out=("${tmp}/")
  fi
  (
    cd "${go_dir}/${tool}"
    GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=0 go build -trimpath \
      ${TAGS[$tool]:+-tags "${TAGS[$tool]}"} \
      -ldflags "${ldflags}" \
      -o "${out[@]}" "${pkgs[@]}"
  )
  local bin
  for bin in "${bins[@]}"; do
    [[ -x "${tmp}/${bin}" ]] || die "${tool}: go build did not produce ${bin}"
  done
  rm -rf "${dir}"
  mv "${tmp}" "${dir}"
  trap - EXIT
  log "${tool} ${VERSION[$tool]}: built in $(($(date +%s) - start))s (${dir})"
}

link_bins() {
  local bdir tool bin tdir
  bdir="$(bin_dir)"
  mkdir -p "${bdir}"
  for tool in "${TOOLS[@]}"; do
    tdir="$(tool_dir "${tool}")"
    for bin in ${BINARIES[$tool]}; do
      ln -sfn "${tdir}/${bin}" "${bdir}/${bin}"
    done
  done
}

# ---- third-party CRDs ---------------------------------------------------------
# Argo CD and Flux CRDs for the tests of GitOps-aware rollbacks, taken from the
# projects' own Go modules through the module proxy (never built): the Argo CD
# and kustomize-controller modules carry their CRD manifests; helm-controller's
# module is not served, so its CRD is generated from its API module by
# controller-gen, the way upstream generates it.
crds_go_dir="${go_dir}/fluxcrds"
readonly CRD_FILES="argoproj.io_applications.yaml kustomize.toolkit.fluxcd.io_kustomizations.yaml helm.toolkit.fluxcd.io_helmreleases.yaml"

crds_dir() {
  local hash
  hash="$({
    grep -v '^[[:space:]]*#' "${crds_file}"
    grep -v '^[[:space:]]*//' "${crds_go_dir}/go.mod"
    cat "${crds_go_dir}/go.sum" "${crds_go_dir}/api.go"
    printf '%s\n' "${CRD_FILES}"
  } | short_hash)"
  printf '%s/gitops-crds-%s' "${cache_dir}" "${hash}"
}

crds_fetched() {
  local dir file
  dir="$(crds_dir)"
  for file in ${CRD_FILES}; do
    [[ -s "${dir}/${file}" ]] || return 1
  done
}

# The extracted module directory of module@version, from the module cache
# (downloaded through the proxy if missing).
module_dir() {
  local json dir
  json="$(cd "${crds_go_dir}" && GOWORK=off GOTOOLCHAIN=local go mod download -json "$1@$2" 2>&1)" ||
    die "cannot download $1@$2: ${json}"
  dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"${json}")"
  [[ -n "${dir}" && -d "${dir}" ]] || die "go mod download $1@$2 gave no module directory: ${json}"
  printf '%s' "${dir}"
}

fetch_crds() {
  local dir tmp pinned start argocd kustomize
  dir="$(crds_dir)"
  if crds_fetched; then
    log "gitops CRDs: up to date (${dir})"
    return
  fi
  command -v go >/dev/null || die "go is not installed (need Go >= 1.26)"
  start="$(date +%s)"
  for pinned in "github.com/fluxcd/helm-controller/api ${HELM_CONTROLLER_VERSION}" \
    "sigs.k8s.io/controller-tools ${CONTROLLER_TOOLS_VERSION}"; do
    read -r module version <<<"${pinned}"
    local required
    required="$(cd "${crds_go_dir}" && GOWORK=off GOFLAGS=-mod=readonly GOTOOLCHAIN=local go list -m -f '{{.Version}}' "${module}")"
    [[ "${required}" == "${version}" ]] ||
      die "tools/crds.env pins ${module} ${version} but tools/go/fluxcrds/go.mod requires ${required}"
  done
  mkdir -p "${cache_dir}"
  tmp="$(mktemp -d "${dir}.tmp.XXXXXX")"
  chmod 755 "${tmp}"
  trap 'rm -rf "${tmp}"' EXIT
  argocd="$(module_dir github.com/argoproj/argo-cd/v3 "${ARGOCD_VERSION}")"
  cp "${argocd}/manifests/crds/application-crd.yaml" "${tmp}/argoproj.io_applications.yaml"
  kustomize="$(module_dir github.com/fluxcd/kustomize-controller "${KUSTOMIZE_CONTROLLER_VERSION}")"
  cp "${kustomize}/config/crd/bases/kustomize.toolkit.fluxcd.io_kustomizations.yaml" "${tmp}/"
  (
    cd "${crds_go_dir}"
    GOWORK=off GOFLAGS=-mod=readonly GOTOOLCHAIN=local go tool controller-gen crd:crdVersions=v1 \
      paths=github.com/fluxcd/helm-controller/api/... output:crd:dir="${tmp}/helm"
  )
  mv "${tmp}/helm/helm.toolkit.fluxcd.io_helmreleases.yaml" "${tmp}/"
  rm -rf "${tmp}/helm"
  chmod 644 "${tmp}"/*.yaml
  rm -rf "${dir}"
  mv "${tmp}" "${dir}"
  trap - EXIT
  crds_fetched || die "gitops CRDs incomplete in ${dir}"
  log "gitops CRDs: Argo CD ${ARGOCD_VERSION}, kustomize-controller ${KUSTOMIZE_CONTROLLER_VERSION}, helm-controller ${HELM_CONTROLLER_VERSION} in $(($(date +%s) - start))s (${dir})"
}

cmd_crds() {
  fetch_crds
  mkdir -p "$(bin_dir)"
  ln -sfn "$(crds_dir)" "$(bin_dir)/gitops-crds"
  crds_dir
  echo
}
# ---- end of third-party CRDs --------------------------------------------------

cmd_build() {
  local start tool
  start="$(date +%s)"
  if (($# > 0)); then
    for tool in "$@"; do
      [[ -n "${MODULE[$tool]:-}" ]] || die "unknown tool ${tool} (known: ${TOOLS[*]})"
    done
  else
    set -- "${TOOLS[@]}"
  fi
  command -v go >/dev/null || die "go is not installed (need Go >= 1.26)"
  for tool in "$@"; do
    build_tool "${tool}"
  done
  link_bins
  cmd_crds >/dev/null
  log "done in $(($(date +%s) - start))s"
  bin_dir
  echo
}

cmd_list() {
  local tool state
  for tool in "${TOOLS[@]}"; do
    if is_built "${tool}"; then state=built; else state=missing; fi
    printf '%-12s %-10s %-8s %s\n' "${tool}" "${VERSION[$tool]}" "${state}" "$(tool_dir "${tool}")"
  done
  if crds_fetched; then state=fetched; else state=missing; fi
  printf '%-12s %-10s %-8s %s\n' gitops-crds "${ARGOCD_VERSION}" "${state}" "$(crds_dir)"
}

# Removes cached builds and bin dirs that this checkout does not use (other
# checkouts or branches may still want them: they rebuild on demand).
cmd_prune() {
  local keep=() tool entry name
  for tool in "${TOOLS[@]}"; do keep+=("$(tool_key "${tool}")"); done
  keep+=("$(basename "$(bin_dir)")" "$(basename "$(crds_dir)")")
  [[ -d "${cache_dir}" ]] || return 0
  for entry in "${cache_dir}"/*; do
    name="$(basename "${entry}")"
    if [[ " ${keep[*]} " != *" ${name} "* ]]; then
      log "removing ${entry}"
      rm -rf "${entry}"
    fi
  done
}

# Everything runs from inside main, parsed in full before it starts, so a
# checkout that rewrites this file during a long build cannot derail it.
main() {
  case "${1:-}" in
  build) shift; cmd_build "$@" ;;
  crds) cmd_crds ;;
  bindir) bin_dir; echo ;;
  list) cmd_list ;;
  prune) cmd_prune ;;
  *)
    echo "usage: $0 build [TOOL...] | bindir | crds | list | prune" >&2
    exit 2
    ;;
  esac
}

main "$@"; exit
