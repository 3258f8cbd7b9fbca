#!/usr/bin/env bash
# `npm run lab -- <sub-command>`: installs what the lab needs (idempotent), then runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh >&2
exec node dist/lab/lab.js "$@"
