# syntax=docker/dockerfile:1
# podiam: the node agent image (see manifests/ for the DaemonSet that runs it).
#
#   docker build -t ghcr.io/podiam/podiam:0.1.0 .
#
# Two stages. "build" installs every dependency (TypeScript and esbuild are dev dependencies),
# type-checks src/ and bundles it with everything it loads into dist/podiam.js and the chunks it
# imports, dist/chunks/ (scripts/build.mjs). The runtime stage starts again from the same slim base
# and gets only those and package.json (podiam reads its --version from it): no node_modules, no compiler, no
# test code, no build context secrets. .dockerignore is an allowlist, so the context holds nothing
# but package*.json, tsconfig*.json, scripts/build.mjs and src/.

FROM node:22-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/build.mjs ./scripts/build.mjs
COPY src ./src
RUN npm run build

FROM node:22-bookworm-slim

# iptables (and ip6tables): --iptables installs podiam's rules with them; conntrack: podiam cuts
# connections pods opened to the real metadata service before a rule was in place. Debian's default
# backend is iptables-nft; it is set explicitly because it talks netlink and so needs only
# CAP_NET_ADMIN, the one capability the DaemonSet grants (iptables-legacy opens a raw socket and
# would also need CAP_NET_RAW). nftables: its `nft monitor` is the ruleset watch (--iptables-watch):
# deletions of podiam's rules reported as they happen, no process per reconcile round.
# iproute2: --token-interface adds the token addresses with `ip`.
# Package versions are not pinned: Debian's security updates
# replace them within a release, and a pin would break the build when they do.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables nftables conntrack iproute2 \
    && update-alternatives --set iptables /usr/sbin/iptables-nft \
    && update-alternatives --set ip6tables /usr/sbin/ip6tables-nft \
    && rm -rf /var/lib/apt/lists/*

# npm, npx, corepack and yarn are removed: nothing in the running agent needs a package manager.
RUN rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack \
        /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack \
        /opt/yarn-* /usr/local/bin/yarn /usr/local/bin/yarnpkg

WORKDIR /app
# MALLOC_ARENA_MAX: at most two malloc arenas (scripts/build.mjs, PROCESS_ENV; the bundle's shebang
# sets it too): ~2-4 MB less RSS under load.
ENV NODE_ENV=production MALLOC_ARENA_MAX=2
# The bundle is the whole agent (its dependencies are inside it): no node_modules in the image.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/dist/podiam.js ./dist/podiam.js
COPY --from=build /app/dist/chunks ./dist/chunks

# No USER: podiam runs as root (uid 0) on purpose. Changing the nat table needs CAP_NET_ADMIN,
# and a non-root process gets no capabilities from the pod's securityContext unless the binary
# carries file capabilities, which iptables here does not. The DaemonSet keeps root small:
# every capability dropped but NET_ADMIN, no privilege escalation, a read-only root filesystem.
EXPOSE 8181
# The V8 flags of the bundle's shebang (scripts/build.mjs, NODE_FLAGS; README "Memory and start-up"):
# semi-spaces of at most 2 MB, a 192 MB old-space ceiling (under the DaemonSet's 256Mi limit), and no
# allocation-site pretenuring (request objects tenured after a start-up burst made every request a
# mark-compact's work).
ENTRYPOINT ["node", "--max-semi-space-size=2", "--max-old-space-size=192", "--no-allocation-site-pretenuring", "/app/dist/podiam.js"]
