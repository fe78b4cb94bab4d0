#!/usr/bin/env bash
# Everything the test suite drives for real: OCI clients, containerd, redis, the reference
# registry, plus the Python test dependencies. Needs root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker.io skopeo containerd redis-server docker-registry apache2-utils debootstrap hey)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  # policy-rc.d on some images refuses to start services; the tests start their own.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
bash scripts/install.sh requirements-test.lock
