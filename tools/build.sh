#!/usr/bin/env bash
# Builds other projects' programs that the tests and the lab run for real (Kubernetes, etcd 3.6) from their
# published Go modules, through the Go module proxy only. Nothing of theirs is committed: each folder here holds a
# go.mod/go.sum of ours that requires the upstream module and pins what its own go.mod replaces locally.
#
#   tools/build.sh k8s|etcd|flannel|cni-flannel   build (or find in the cache) and print the folder holding the binaries
#
# Binaries go to $FLANNEL_TS_TOOLS_CACHE (default /var/cache/flannel-ts/tools)/<set>-<version>/, outside the
# repository and keyed by version, so a second run costs a stat. A build is written to a temporary folder and
# renamed into place, so an interrupted build never leaves a half-filled cache entry.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${FLANNEL_TS_TOOLS_CACHE:-/var/cache/flannel-ts/tools}
set_name=${1:?usage: tools/build.sh k8s|etcd|flannel|cni-flannel}

# The version is the one our go.mod requires: one place to change it.
required_version() { awk -v m="$2" '$1 == m || ($1 == "require" && $2 == m) { print ($1 == m ? $2 : $3); exit }' "$1/go.mod"; }

case "$set_name" in
  k8s)
    module=k8s.io/kubernetes
    commands=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
    ;;
  etcd)
    module=go.etcd.io/etcd/server/v3
    commands=(etcd etcdctl)
    ;;
  flannel)
    # Upstream flanneld, for side-by-side tests and benchmarks against ours.
    module=github.com/flannel-io/flannel
    commands=(flanneld)
    ;;
  cni-flannel)
    # Upstream's flannel CNI plugin, for pods added by one plugin and deleted by the other.
    module=github.com/containernetworking/plugins
    commands=(flannel)
    ;;
  *) echo "tools/build.sh: unknown set '$set_name' (expected k8s, etcd, flannel or cni-flannel)" >&2; exit 2 ;;
esac

dir="$here/$set_name"
version=$(required_version "$dir" "$module")
[ -n "$version" ] || { echo "tools/build.sh: $dir/go.mod requires no $module" >&2; exit 1; }
out="$cache/$set_name-$version"

# Only what the cache lacks is built: a set that gained a command builds that one, not the whole set again.
missing=()
for c in "${commands[@]}"; do [ -x "$out/$c" ] || missing+=("$c"); done
if [ "${#missing[@]}" = 0 ]; then echo "$out"; exit 0; fi

command -v go >/dev/null || { echo "tools/build.sh: needs the Go toolchain (go) on PATH" >&2; exit 1; }
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.$set_name-$version.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "tools/build.sh: building $module $version (${missing[*]}) into $out; the first build takes minutes" >&2

case "$set_name" in
  k8s)
    # Stamp the version the way Kubernetes' own build does, so `kubectl version` and the apiserver's /version
    # report it (without it they say v0.0.0-master).
    minor=$(echo "$version" | cut -d. -f2)
    ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
      ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    package_of() { echo "k8s.io/kubernetes/cmd/$1"; }
    ;;
  etcd)
    ldflags="-s -w"
    # Both main packages end in /v3, so each is built to its own name.
    package_of() { case "$1" in etcd) echo go.etcd.io/etcd/server/v3 ;; etcdctl) echo go.etcd.io/etcd/etcdctl/v3 ;; esac; }
    ;;
  flannel)
    # As upstream's Makefile: cgo on (the udp backend's C), the version stamped where `flanneld --version` reads it.
    ldflags="-s -w -X github.com/flannel-io/flannel/pkg/version.Version=$version"
    package_of() { echo github.com/flannel-io/flannel; }
    ;;
  cni-flannel)
    ldflags="-s -w"
    package_of() { echo github.com/containernetworking/plugins/plugins/meta/flannel; }
    ;;
esac
cgo=0
[ "$set_name" = flannel ] && cgo=1

for c in "${missing[@]}"; do
  (cd "$dir" && CGO_ENABLED=$cgo GOFLAGS=-mod=readonly go build -trimpath -ldflags "$ldflags" -o "$tmp/$c" "$(package_of "$c")")
done
# Each binary is renamed into place on its own, so a program already running from the cache is never disturbed.
mkdir -p "$out"
for c in "${missing[@]}"; do mv "$tmp/$c" "$out/$c"; done
echo "tools/build.sh: built $set_name $version in $(( $(date +%s) - start )) s" >&2
echo "$out"
