#!/usr/bin/env bash
# Other projects' programs the real tests and benchmarks run, built from their Go modules once per version and cached
# outside the repository (see tools/build.sh): the Kubernetes control plane and kubelet, etcd 3.6, and upstream
# flanneld v0.28.9 with its CNI plugin for the side-by-side tests. About 15 minutes on a fresh 2-core machine, a
# stat per set afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
for set_name in k8s etcd flannel cni-flannel; do
  bash tools/build.sh "$set_name" >/dev/null
done
