#!/usr/bin/env bash
# Builds a stand-in for tensorflow/tensorflow:2.21.0-gpu where no image registry is reachable:
# Debian bookworm (Python 3.11, pip) from the Debian mirror apt uses, trusting the CAs the host's
# pip trusts, with TensorFlow 2.21.0 from PyPI (no CUDA libraries: docker/Dockerfile installs
# them). Needs root, debootstrap and a running dockerd.
#   docker/standin_base.sh TAG
set -euo pipefail
tag=$1
tensorflow_version=2.21.0

# The Debian mirror apt uses (its sources in either format).
mirror=$(apt-get indextargets --format '$(SITE)' 'Identifier: Packages' \
  | grep -m1 -E '/debian/?$' || true)
mirror=${mirror:-http://deb.debian.org/debian}
ca_bundle=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}

root=$(mktemp -d /var/tmp/imdb-standin-root.XXXXXX)
trap 'rm -rf "$root" "$root.log"' EXIT
echo "stand-in base: debootstrap bookworm from $mirror, CA bundle $ca_bundle"
debootstrap --variant=minbase \
  --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
  bookworm "$root" "$mirror" > "$root.log" 2>&1 || { tail -20 "$root.log"; exit 1; }
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
cp "$ca_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$root/etc/pip.conf"
tar -C "$root" -c . | docker import - "$tag-root" > /dev/null
docker build --network=host --quiet -t "$tag" - > /dev/null <<DOCKERFILE
FROM $tag-root
RUN pip install --no-cache-dir tensorflow==$tensorflow_version
CMD ["bash"]
DOCKERFILE
docker rmi "$tag-root" > /dev/null
