#!/usr/bin/env bash
# Creates (once) the Python virtualenv the OFREP tests run the real
# OpenFeature SDK in, and prints its path.
#
#   hack/python-env.sh [requirements.txt]   default: tests/ofrep/requirements.txt
#
# The venv lives outside the repository, in
# ${WEBLAB_CACHE_DIR:-$HOME/.cache/weblab-operator}/venv-<hash>, where <hash>
# covers the requirements file: a changed pin gets a new venv, an unchanged
# one is reused without touching the network. Progress goes to stderr so that
# stdout is only the path.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requirements="${1:-${repo_root}/tests/ofrep/requirements.txt}"
cache_dir="${WEBLAB_CACHE_DIR:-${HOME}/.cache/weblab-operator}"

if [[ ! -f "${requirements}" ]]; then
  echo "python-env: no requirements file at ${requirements}" >&2
  exit 1
fi
command -v python3 >/dev/null || {
  echo "python-env: python3 is missing; install Python >= 3.9 with the venv module" >&2
  exit 1
}

hash="$(sha256sum "${requirements}" | cut -c1-12)"
venv="${cache_dir}/venv-${hash}"
# Written last, so that an interrupted install is redone rather than reused.
stamp="${venv}/.weblab-complete"

if [[ ! -f "${stamp}" ]]; then
  mkdir -p "${cache_dir}"
  # Concurrent test runs wait for one another instead of building the same
  # venv twice; the stamp is checked again once the lock is held.
  exec 9>"${venv}.lock"
  flock 9
  if [[ ! -f "${stamp}" ]]; then
    # A venv records its own path in its scripts, so it is built in place;
    # whatever an interrupted run left there is discarded first.
    rm -rf "${venv}"
    echo "python-env: creating ${venv}" >&2
    python3 -m venv "${venv}" >&2
    "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check \
      --requirement "${requirements}" >&2
    touch "${stamp}"
  fi
  exec 9>&-
fi
echo "${venv}"
