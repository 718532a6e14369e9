#!/usr/bin/env bash
# npm run demo: podiam in a node simulated with network namespaces (see scripts/lab/demo.ts and
# README "The node lab and the demo"). Needs root, iproute2, iptables, conntrack, curl,
# /usr/bin/aws (AWS CLI v2), moto_server and python3 with botocore. On a Debian/Ubuntu machine it
# installs the missing system packages with apt-get (saying so), as .ci/run does. Touches nothing
# outside its own namespaces.
set -uo pipefail
cd "$(dirname "$0")/.."

# What the demo needs from the system, and the Debian package that provides it.
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
{ command -v iptables >/dev/null 2>&1 && command -v ip6tables >/dev/null 2>&1; } || need+=(iptables)
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -x /usr/bin/aws ] || need+=(awscli)

if [ "$(id -u)" != 0 ]; then
  echo "demo: needs root (it creates network namespaces and iptables rules inside them): sudo npm run demo" >&2
  if [ ${#need[@]} -gt 0 ]; then
    echo "demo: also missing: ${need[*]}; install them first: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  fi
  exit 1
fi
if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "demo: missing ${need[*]} and there is no apt-get here: install the packages that provide ip, iptables, ip6tables, conntrack, curl and the AWS CLI v2 at /usr/bin/aws" >&2
    exit 1
  fi
  echo "demo: installing what is missing with apt-get: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; }; then
    echo "demo: apt-get failed; run it yourself: apt-get update && apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi
if [ ! -f dist/scripts/lab/demo.js ]; then
  echo "demo: dist/ is not built: run npm run build (npm run demo does)" >&2
  exit 1
fi

# Whatever happens to the demo (even SIGKILL), remove its namespaces afterwards. cleanup only
# removes labs whose process is gone, so it never touches another running lab.
trap 'node dist/scripts/lab/lab.js cleanup --quiet' EXIT
node dist/scripts/lab/demo.js "$@"
