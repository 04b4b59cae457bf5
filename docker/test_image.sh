#!/usr/bin/env bash
# The image, built and run as a cluster runs it; .ci/run runs this after the unit tests.
#   sudo docker/test_image.sh        (root: it installs packages and may start dockerd)
# 1. Installs docker.io and debootstrap from Debian when missing; starts dockerd when none runs
#    (and stops the one it started).
# 2. Builds the stand-in for tensorflow/tensorflow:2.21.0-gpu (docker/standin_base.sh), once per
#    content hash of what makes it, and the image from docker/Dockerfile on it.
# 3. Runs docker/check_image.py: the image's commands, the manifests' pod specs, stop/resume.
# Every step has a time limit; the image's size and each step's time are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
IMAGE=imdb-bilstm-trainer:ci
started_dockerd=

timed() {  # timed NAME SECONDS COMMAND...: COMMAND with a time limit; prints its duration.
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "== $name (limit ${limit} s)"
  if ! timeout --kill-after=30 "$limit" "$@"; then
    echo "FAILED: $name (exit code or time limit of ${limit} s)" >&2
    return 1
  fi
  echo "== $name: $((SECONDS - start)) s"
}

cleanup() {  # Removes the work folder; stops the dockerd this script started.
  rm -rf "$work"
  if [[ -n $started_dockerd ]]; then
    kill "$started_dockerd" 2>/dev/null || true
    timeout 60 tail --pid="$started_dockerd" -f /dev/null || kill -9 "$started_dockerd" || true
  fi
}

work=$(mktemp -d /var/tmp/imdb-image-test.XXXXXX)
trap cleanup EXIT

if ! command -v dockerd > /dev/null || ! command -v debootstrap > /dev/null; then
  timed "install docker.io and debootstrap" 900 bash -c \
    'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap > /dev/null'
fi
if ! timeout 20 docker info > /dev/null 2>&1; then
  dockerd --storage-driver=overlay2 > "$work/dockerd.log" 2>&1 &
  started_dockerd=$!
  timed "start dockerd" 60 bash -c 'until docker info > /dev/null 2>&1; do sleep 1; done' \
    || { tail -20 "$work/dockerd.log"; exit 1; }
fi

base_hash=$(cat docker/standin_base.sh "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" \
  | sha256sum | cut -c1-16)
base=imdb-standin-base:$base_hash
if docker image inspect "$base" > /dev/null 2>&1; then
  echo "== stand-in base $base: cached"
else
  timed "build the stand-in base $base" 1200 docker/standin_base.sh "$base"
fi
timed "build $IMAGE on $base" 1800 docker build --network=host --quiet \
  --build-arg "BASE_IMAGE=$base" -f docker/Dockerfile -t "$IMAGE" .
echo "image size: $(docker image inspect --format '{{.Size}}' "$IMAGE" \
  | awk '{printf "%.2f GB", $1 / 1e9}') (the base $(docker image inspect --format '{{.Size}}' \
  "$base" | awk '{printf "%.2f GB", $1 / 1e9}'))"
timed "run the image as the manifests do" 3000 env PYTHONPATH=.:docker \
  "$PYTHON" docker/check_image.py --image="$IMAGE" --base_image="$base" --work_dir="$work"
