# The flannel-ts image used by manifests/kube-flannel.yml: flanneld (ENTRYPOINT) and the `flannel` CNI plugin that
# the install-cni-plugin init container copies to the host. Build from the repository root:
#   docker build -t ghcr.io/flannel-ts/flannel-ts:0.1.0 .
#
# Without a Docker engine, `npm run image` builds the same image (image/flannel-image.ts: the same files at the same
# paths on a Debian root filesystem, packed by umoci); a unit test keeps the two recipes in step.
#
# Debian, not alpine: our N-API addons (dist/native) and raw-socket's are compiled here against glibc, and the CNI
# plugin is this stage's node binary with the plugin injected (Node SEA), run on the HOST: an alpine build would be
# linked against musl's loader, which hosts do not have. The official Node 20 build needs glibc >= 2.28 and
# libstdc++ on the host, which mainstream distributions have.

# ---- build: compile TypeScript, bundle the CNI plugin into a single executable, drop dev dependencies ----
FROM node:20-bookworm-slim AS build
WORKDIR /src
# Dependencies first, so source edits do not re-run npm ci. raw-socket (the peer probes' ICMP sockets) ships only
# C++ source, which node-gyp compiles at npm ci, and `npm run build` compiles native/: that needs python3, make and
# g++ here. The runtime stage needs none of them (the addon only links libstdc++, which the node
# image has).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts/ scripts/
COPY flanneld/ flanneld/
COPY backends/ backends/
COPY cni-plugin/ cni-plugin/
# The udp backend's N-API addon, compiled by `npm run build` with the g++ toolchain installed above.
COPY native/ native/
# tsconfig.json compiles the lab, its image builder and the bench too; they are built here but not shipped.
COPY lab/ lab/
COPY image/ image/
COPY test/ test/
# The SEA is injected into process.execPath, i.e. into this image's official Node build; build-cni.mjs smoke-tests
# it with no node on PATH, so a broken executable fails the build rather than pod creation.
RUN npm run build \
 && node scripts/build-cni.mjs --sea \
 && npm prune --omit=dev

# ---- runtime ----
FROM node:20-bookworm-slim
# flanneld runs iptables-save/-restore or nft for its traffic rules (links and routes go over netlink, not `ip`);
# iproute2 is there, as in upstream's image, to look around with `kubectl exec ... ip route`. Debian's iptables
# uses the nf_tables backend by default (iptables-legacy is installed too); upstream picks one with iptables-wrapper.
# wireguard-go carries the wireguard backend's devices on nodes whose kernel has no WireGuard module.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables nftables iproute2 wireguard-go \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/flannel-ts
# package.json is needed at run time: it says "type": "module" and flanneld --version reads its version.
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules/ node_modules/
# Only the daemon's compiled modules: dist/ also holds the lab, the bench and the ~100 MB SEA, none needed here.
COPY --from=build /src/dist/flanneld/ dist/flanneld/
COPY --from=build /src/dist/backends/ dist/backends/
# Our N-API addons: the rtnetlink sockets every backend uses, and the udp backend's packet path.
COPY --from=build /src/dist/native/ dist/native/
# The path the install-cni-plugin init container copies from.
COPY --from=build /src/dist/cni/flannel-sea /opt/cni-bin/flannel
# A symlink keeps main.js's shebang (node --max-semi-space-size=4) in force; Node resolves it to the real path, so
# its relative imports and package.json are found.
RUN ln -s /opt/flannel-ts/dist/flanneld/main.js /usr/local/bin/flanneld
ENTRYPOINT ["/usr/local/bin/flanneld"]
