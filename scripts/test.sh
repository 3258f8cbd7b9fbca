#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine as root: installs what it needs, builds, runs unit and
# real-component tests, and ends with one plain summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh || exit 1
bash scripts/build-tools.sh || exit 1
# The images the kubelet tests run (flannel-ts from this build, pause, the lab pod): about 85 s once per machine,
# then only when our build output changed (see image/).
node dist/image/main.js >/dev/null || exit 1
# Lint (Biome, rules in biome.json; about a second) before the tests, so a finding fails the run in one clear place.
npm run --silent lint </dev/null || { echo "flannel-ts: lint failed, see the findings above (reproduce with: npm run lint)" >&2; exit 1; }

report=$(mktemp /tmp/flannel-ts-vitest.XXXXXX.json)
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@" </dev/null
status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
' "$report" 2>/dev/null || echo "tests: 0 passed, 1 failed"
rm -f "$report"
exit $status
