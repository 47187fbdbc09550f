#!/usr/bin/env bash
# Run segattn_jax experiments on a Cloud TPU VM or TPU pod slice (run from your workstation).
#
# Usage: launch/tpu_pod.sh SUBCOMMAND [ARGS...]
#
#   create            create the TPU VM (ACCELERATOR_TYPE, TPU_VERSION, SPOT)
#   copy              copy this repo (without .venv/.git/runs) to REMOTE_DIR on every worker
#   install           run `launch/bootstrap.sh install` on every worker (venv + jax[tpu])
#   run [FLAGS...]    run `launch/bootstrap.sh MAIN_COMMAND --config CONFIG --workdir WORKDIR FLAGS...`
#                     on every worker at once (FLAGS e.g. --config.train.num_steps=1000)
#   logs              follow LOG_FILE of a detached run on worker WORKER
#   stop              stop a detached run on every worker
#   delete            delete the TPU VM
#
# Required variables:   TPU_NAME, ZONE;  for run also CONFIG and WORKDIR (a gs:// path)
# Optional variables:
#   PROJECT           GCP project (default: gcloud's configured project)
#   ACCELERATOR_TYPE  default v4-32 (4 hosts); e.g. v4-8 (1 host), v5litepod-16, v6e-16
#   TPU_VERSION       TPU VM software version, default tpu-ubuntu2204-base (v4); for v5e use
#                     v2-alpha-tpuv5-lite, for v6e v2-alpha-tpuv6e
#   SPOT=1            create a Spot (preemptible) TPU VM
#   REMOTE_DIR        repo location on the workers, relative to home (default segattn_jax)
#   MAIN_COMMAND      train (default) | eval | predict | table
#   DETACH=1          run in the background on every worker (survives ssh disconnects),
#                     output to LOG_FILE (default segattn_jax.log in the home directory)
#   WORKER            worker whose log `logs` follows (default 0, the one that prints metrics)
#   ALLOW_LOCAL_WORKDIR=1  accept a non-gs:// WORKDIR (single-host VMs only)
#   TFDS_DATA_DIR     forwarded to the workers when set (e.g. gs://BUCKET/tensorflow_datasets)
#   DRY_RUN=1         print the commands instead of running them
#
# Example:
#   export TPU_NAME=segattn ZONE=us-central2-b ACCELERATOR_TYPE=v4-32
#   launch/tpu_pod.sh create && launch/tpu_pod.sh copy && launch/tpu_pod.sh install
#   CONFIG=experiments/stn.py:ST-CNN-Aff,RTS WORKDIR=gs://my-bucket/runs/st_cnn_rts launch/tpu_pod.sh run
#   launch/tpu_pod.sh delete
set -euo pipefail

readonly REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-32}"
TPU_VERSION="${TPU_VERSION:-tpu-ubuntu2204-base}"
REMOTE_DIR="${REMOTE_DIR:-segattn_jax}"
MAIN_COMMAND="${MAIN_COMMAND:-train}"
LOG_FILE="${LOG_FILE:-segattn_jax.log}"
WORKER="${WORKER:-0}"

die() { echo "tpu_pod.sh: $*" >&2; exit 1; }

# Prints the header comment; exits with $1 (0 for --help, 2 for a usage error).
usage() {
  sed -n '2,/^set -euo pipefail$/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

require() {
  local name
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || die "${name} is not set. Export it first, e.g. export ${name}=...  (see launch/tpu_pod.sh --help)"
  done
}

# Runs a command, or only prints it (shell-quoted) when DRY_RUN=1.
run_cmd() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}

gcloud_tpu() {
  local subcommand="$1"
  shift
  if [[ "${DRY_RUN:-0}" != 1 ]] && ! command -v gcloud >/dev/null 2>&1; then
    die "gcloud not found: install the Google Cloud SDK (https://cloud.google.com/sdk/docs/install) and run gcloud auth login."
  fi
  run_cmd gcloud compute tpus tpu-vm "${subcommand}" "$@" --zone="${ZONE}" ${PROJECT:+--project="${PROJECT}"}
}

# ssh to every worker at once and run one bash command line there.
on_all_workers() {
  gcloud_tpu ssh "${TPU_NAME}" --worker=all --command="$1"
}

# Shell-quotes its arguments into one string, for command lines that run on the workers.
quote() {
  local quoted
  quoted="$(printf '%q ' "$@")"
  printf '%s' "${quoted% }"
}

cmd_create() {
  gcloud_tpu create "${TPU_NAME}" --accelerator-type="${ACCELERATOR_TYPE}" --version="${TPU_VERSION}" \
    $([[ "${SPOT:-0}" == 1 ]] && echo --spot)
}

cmd_copy() {
  COPY_TMP="$(mktemp -d)"  # global: the EXIT trap runs after this function's locals are gone
  trap 'rm -rf "${COPY_TMP}"' EXIT
  local archive="${COPY_TMP}/segattn_jax.tar.gz"
  run_cmd tar -czf "${archive}" -C "${REPO_DIR}" \
    --exclude=./.venv --exclude=./.git --exclude=./runs --exclude='__pycache__' \
    --exclude=.pytest_cache --exclude='*.egg-info' .
  gcloud_tpu scp "${archive}" "${TPU_NAME}:segattn_jax.tar.gz" --worker=all
  on_all_workers "mkdir -p $(quote "${REMOTE_DIR}") && tar -xzf segattn_jax.tar.gz -C $(quote "${REMOTE_DIR}") && rm segattn_jax.tar.gz"
}

cmd_install() {
  on_all_workers "cd $(quote "${REMOTE_DIR}") && launch/bootstrap.sh install"
}

cmd_run() {
  require CONFIG WORKDIR
  if [[ "${WORKDIR}" != gs://* && "${ALLOW_LOCAL_WORKDIR:-0}" != 1 ]]; then
    die "WORKDIR=${WORKDIR} is not a gs:// path. On a multi-host pod every host must write checkpoints
  and metrics to the same place: use a bucket, e.g. WORKDIR=gs://my-bucket/runs/st_cnn_rts
  (for a single-host TPU VM, set ALLOW_LOCAL_WORKDIR=1 to accept a local path)."
  fi
  local program environment=""
  program="$(quote launch/bootstrap.sh "${MAIN_COMMAND}" --config "${CONFIG}" --workdir "${WORKDIR}" "$@")"
  [[ -n "${TFDS_DATA_DIR:-}" ]] && environment="TFDS_DATA_DIR=$(quote "${TFDS_DATA_DIR}")"
  if [[ "${DETACH:-0}" == 1 ]]; then
    # The braces make $! the program's pid (bootstrap execs python), which `stop` signals.
    on_all_workers "cd $(quote "${REMOTE_DIR}") && { ${environment} nohup ${program} > ~/$(quote "${LOG_FILE}") 2>&1 < /dev/null & echo \$! > ~/segattn_jax.pid; }"
    echo "tpu_pod.sh: started in the background; follow it with: launch/tpu_pod.sh logs" >&2
  else
    on_all_workers "cd $(quote "${REMOTE_DIR}") && ${environment} ${program}"
  fi
}

cmd_logs() {
  gcloud_tpu ssh "${TPU_NAME}" --worker="${WORKER}" --command="tail -n 100 -F ~/$(quote "${LOG_FILE}")"
}

cmd_stop() {
  on_all_workers 'if [[ -f ~/segattn_jax.pid ]]; then kill "$(cat ~/segattn_jax.pid)" || true; rm -f ~/segattn_jax.pid; fi'
}

cmd_delete() {
  gcloud_tpu delete "${TPU_NAME}" --quiet
}

main() {
  [[ $# -ge 1 ]] || usage
  local subcommand="$1"
  shift
  case "${subcommand}" in
    -h|--help|help) usage 0 ;;
    create|copy|install|run|logs|stop|delete) ;;
    *) echo "tpu_pod.sh: unknown subcommand '${subcommand}'" >&2; usage ;;
  esac
  require TPU_NAME ZONE
  if [[ "${subcommand}" != run && $# -gt 0 ]]; then
    die "${subcommand} takes no arguments (got: $*)."
  fi
  "cmd_${subcommand}" "$@"
}

main "$@"
