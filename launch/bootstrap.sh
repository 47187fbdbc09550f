#!/usr/bin/env bash
# Per-host bootstrap for a Cloud TPU VM (every worker of a pod runs the same command).
#
#   launch/bootstrap.sh install                        # only set up .venv (idempotent)
#   launch/bootstrap.sh train --config experiments/stn.py:ST-CNN-Aff,RTS --workdir gs://BUCKET/runs/st_cnn_rts
#
# Creates the repo's .venv if missing, installs the package with the TPU build of JAX
# ("jax[tpu]" pulls the matching libtpu wheel from PyPI) when missing or when pyproject.toml
# changed, then runs `python -m segattn_jax.main "$@"`.
#
# SEGATTN_DISTRIBUTED=1 is exported so that main calls jax.distributed.initialize() with no
# arguments, which auto-detects the pod's coordinator, process count and process id. Every host
# must run the same command at about the same time (tpu_pod.sh run does: ssh --worker=all).
#
# Environment:
#   PYTHON          interpreter to build the venv from (default: first python3.13/3.12/3.11/python3
#                   found that is >= 3.11, the package's minimum)
#   SEGATTN_VENV    venv directory (default: <repo>/.venv)
set -euo pipefail

readonly REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly VENV_DIR="${SEGATTN_VENV:-${REPO_DIR}/.venv}"
readonly STAMP="${VENV_DIR}/.installed-tpu"

die() { echo "bootstrap.sh: $*" >&2; exit 1; }

# Prints the header comment; exits with $1 (0 for --help, 2 for a usage error).
usage() {
  sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

find_python() {
  local candidate
  for candidate in ${PYTHON:-} python3.13 python3.12 python3.11 python3; do
    if command -v "${candidate}" >/dev/null 2>&1 \
        && "${candidate}" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "${candidate}"
      return 0
    fi
  done
  return 1
}

install() {
  if [[ -x "${VENV_DIR}/bin/python" && -f "${STAMP}" && "${STAMP}" -nt "${REPO_DIR}/pyproject.toml" ]]; then
    return 0
  fi
  if [[ ! -x "${VENV_DIR}/bin/python" ]]; then
    local python
    python="$(find_python)" || die "segattn_jax needs Python >= 3.11 and none was found on this host.
  Install one, e.g.: sudo apt-get update && sudo apt-get install -y python3.11 python3.11-venv
  (or set PYTHON=/path/to/python3.11), then run this again."
    echo "bootstrap.sh: creating ${VENV_DIR} with $("${python}" --version)" >&2
    "${python}" -m venv "${VENV_DIR}" \
      || die "could not create ${VENV_DIR}; on Debian/Ubuntu install the venv module: sudo apt-get install -y python3.11-venv"
  fi
  echo "bootstrap.sh: installing segattn_jax with jax[tpu] into ${VENV_DIR}" >&2
  "${VENV_DIR}/bin/python" -m pip install --quiet --upgrade pip
  # One resolve: the TPU extra picks libtpu within the package's jax version bounds.
  "${VENV_DIR}/bin/python" -m pip install --quiet -e "${REPO_DIR}" "jax[tpu]"
  touch "${STAMP}"
}

main() {
  [[ $# -ge 1 ]] || usage
  case "$1" in
    -h|--help) usage 0 ;;
    install) install ;;
    *)
      install
      export SEGATTN_DISTRIBUTED=1
      cd "${REPO_DIR}"
      exec "${VENV_DIR}/bin/python" -m segattn_jax.main "$@"
      ;;
  esac
}

main "$@"
