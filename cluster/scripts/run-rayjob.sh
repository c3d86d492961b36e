#!/usr/bin/env bash
# Create a RayJob from a manifest under cluster/k8s/jobs/, wait until it ends, print the
# Ray job's log, and exit 0 only if the Ray job SUCCEEDED. The release and monitor
# workflows (.github/workflows/) run it; it works the same from a laptop.
#   cluster/scripts/run-rayjob.sh MANIFEST [IMAGE_REPOSITORY VERSION]
# With an image repository and a version, the manifest's pumpfleet images are rewritten
# to them: ghcr.io/pumpfleet/pumpfleet:0.1.0[-gpu] -> IMAGE_REPOSITORY:VERSION[-gpu].
# RAYJOB_TIMEOUT_SECONDS (default 21600) bounds the wait; RAYJOB_POLL_SECONDS (20) paces it.
set -euo pipefail

if [[ $# -ne 1 && $# -ne 3 ]]; then
  echo "usage: $0 MANIFEST [IMAGE_REPOSITORY VERSION]" >&2
  exit 2
fi
manifest=$1
timeout_s=${RAYJOB_TIMEOUT_SECONDS:-21600}
poll_s=${RAYJOB_POLL_SECONDS:-20}

if [[ $# -eq 3 ]]; then
  rendered=$(sed -E "s#ghcr\.io/pumpfleet/pumpfleet:[0-9][0-9A-Za-z.]*#$2:$3#g" "$manifest")
else
  rendered=$(cat "$manifest")
fi

# generateName: every run is a new RayJob; `kubectl create -o name` says which.
name=$(printf '%s\n' "$rendered" | kubectl create -f - -o name)
echo "created ${name}"

deadline=$((SECONDS + timeout_s))
while :; do
  deployment=$(kubectl get "$name" -o jsonpath='{.status.jobDeploymentStatus}')
  case "$deployment" in
    Complete | Failed | ValidationFailed) break ;;
  esac
  if ((SECONDS > deadline)); then
    echo "gave up waiting for ${name} after ${timeout_s} s (deployment: ${deployment:-none})" >&2
    exit 1
  fi
  sleep "$poll_s"
done

status=$(kubectl get "$name" -o jsonpath='{.status.jobStatus}')
# The submitter Job carries the RayJob's name; its log is the Ray job's own log, which
# ends with the entry point's JSON summary.
kubectl logs "job/${name#*/}" --tail=400 || echo "(no submitter log for ${name})" >&2
echo "${name}: deployment ${deployment}, job ${status:-none}"
[[ "$status" == "SUCCEEDED" ]]
