#!/usr/bin/env bash
# Quick start 1: install dependencies, build, and run the demo: Pipeline-D
# style traffic through the datapath in memory, printing what was forwarded
# and the megaflows it built.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
exec "${SF_BUILD_DIR:-$root/build}/sf-demo" "$@"
