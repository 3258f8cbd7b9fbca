#!/usr/bin/env bash
# Installs what flannel-ts needs on a Debian machine, idempotently: Debian packages (etcd, iproute2, iptables,
# nftables, the reference CNI plugins, ping, iperf3, wireguard-go, tcpdump; containerd, runc and what builds images
# without Docker for the kubelet lab), npm dependencies, and the build.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "flannel-ts: this needs root (it creates network namespaces and runs etcd); try: sudo $0" >&2
  exit 1
fi

packages=(etcd-server etcd-client iproute2 iptables nftables containernetworking-plugins iputils-ping iperf3 openssl g++ make python3
  containerd runc umoci debootstrap catatonit busybox-static wireguard-go tcpdump)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "flannel-ts: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm ci only when the lock file changed since the last install.
stamp=node_modules/.flannel-ts-lock
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  echo "flannel-ts: installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error </dev/null
  cp package-lock.json "$stamp"
fi

# Build only when a source changed since the last complete build, so `npm run lab -- status` stays quick.
stamp=dist/.flannel-ts-build
if [ ! -f "$stamp" ] || [ -n "$(find flanneld backends cni-plugin native lab image test scripts manifests package.json package-lock.json \
    tsconfig.json -newer "$stamp" -print -quit 2>/dev/null)" ]; then
  npm run --silent build
  # The self-contained CNI executable too, so its tests run (about 4 s).
  node scripts/build-cni.mjs --sea
  touch "$stamp"
fi
