#!/usr/bin/env bash
# npm run demo: podiam in a node simulated with network namespaces (see scripts/lab/demo.ts and
# README "The node lab and the demo"). Needs root, iproute2, iptables, curl, /usr/bin/aws (AWS CLI
# v2), moto_server and python3 with botocore. Touches nothing outside its own namespaces.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "demo: needs root (it creates network namespaces and iptables rules inside them): sudo npm run demo" >&2
  exit 1
fi
if [ ! -f dist/scripts/lab/demo.js ]; then
  echo "demo: dist/ is not built: run npm run build (npm run demo does)" >&2
  exit 1
fi

# Whatever happens to the demo (even SIGKILL), remove its namespaces afterwards. cleanup only
# removes labs whose process is gone, so it never touches another running lab.
trap 'node dist/scripts/lab/lab.js cleanup --quiet' EXIT
node dist/scripts/lab/demo.js "$@"
