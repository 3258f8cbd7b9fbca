#!/usr/bin/env bash
# Installs what flannel-ts needs on a Debian machine, idempotently: Debian packages (etcd, iproute2, iptables,
# nftables, the reference CNI plugins, ping, iperf3, wireguard-go, tcpdump; containerd, runc and what builds images
# without Docker for the kubelet lab; BIRD 2 and FRR as the BGP routers the tests start in their own namespaces), npm
# dependencies, and the build. No daemon these packages ship is started, now or at boot: the root network namespace
# stays as it was.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "flannel-ts: this needs root (it creates network namespaces and runs etcd); try: sudo $0" >&2
  exit 1
fi

packages=(etcd-server etcd-client iproute2 iptables nftables containernetworking-plugins iputils-ping iperf3 openssl g++ make python3
  containerd runc umoci debootstrap catatonit busybox-static wireguard-go tcpdump bird2 frr)
# The routing daemons among them: the tests run their own copies in namespaces, never these services.
routing_services=(bird frr)

# Maintainer scripts start a package's service unless policy-rc.d answers 101 (invoke-rc.d and deb-systemd-invoke
# both ask it). For the duration of the install the machine gets one that does, unless its own already does; its own
# is put back afterwards, also when the install fails.
policy=/usr/sbin/policy-rc.d
saved_policy=$policy.flannel-ts-saved
forbid_service_starts() {
  if [ -e "$policy" ]; then
    local answer=0
    "$policy" frr start >/dev/null 2>&1 || answer=$?
    [ "$answer" = 101 ] && return 0
    mv "$policy" "$saved_policy"
  fi
  replaced_policy=1
  trap allow_service_starts EXIT
  printf '#!/bin/sh\n# flannel-ts install-deps: no service starts while it installs packages\nexit 101\n' >"$policy"
  chmod 755 "$policy"
}

allow_service_starts() {
  [ -n "${replaced_policy:-}" ] || return 0
  trap - EXIT
  replaced_policy=
  rm -f "$policy"
  if [ -e "$saved_policy" ]; then mv "$saved_policy" "$policy"; fi
}

# Installing enabled the routing services for the next boot (systemd and sysvinit links): disable both.
disable_routing_services_at_boot() {
  local s
  for s in "${routing_services[@]}"; do
    if [ -e "/lib/systemd/system/$s.service" ] && command -v deb-systemd-helper >/dev/null; then
      deb-systemd-helper disable "$s.service" >/dev/null 2>&1 || true
    fi
    if [ -e "/etc/init.d/$s" ] && command -v update-rc.d >/dev/null; then
      update-rc.d "$s" disable >/dev/null 2>&1 || true
    fi
  done
}

# After an install, a routing daemon in the root network namespace is one the install started (the tests' own live
# in their namespaces): name it and fail, without stopping it.
check_no_routing_daemon_in_root_netns() {
  local root_net pid comm found=0
  root_net=$(readlink /proc/self/ns/net)
  for pid in /proc/[0-9]*; do
    comm=$(cat "$pid/comm" 2>/dev/null) || continue
    case "$comm" in
      bird | bird6 | zebra | bgpd | staticd | watchfrr | mgmtd) ;;
      *) continue ;;
    esac
    [ "$(readlink "$pid/ns/net" 2>/dev/null)" = "$root_net" ] || continue
    echo "flannel-ts: $comm (PID ${pid#/proc/}) runs in the root network namespace; the tests start their own routers in namespaces, stop this one" >&2
    found=1
  done
  return "$found"
}

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "flannel-ts: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  forbid_service_starts
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  allow_service_starts
  disable_routing_services_at_boot
  check_no_routing_daemon_in_root_netns
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
