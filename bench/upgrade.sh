#!/usr/bin/env bash
# Upgrade and rollback benchmark, under load through nginx over HTTPS
# (HTTP/2 and HTTP/1.1 readers and writers, a 16 MB upload across each
# upgrade's flip): N → N+1 with a migration and its rollback (restoring the
# pre-upgrade backup), then UPGRADE_RUNS rounds of an upgrade without
# migration and its rollback. Prints each duration with the requests sent
# and failed, then the medians. Needs root and `make setup`. Go runs the
# benchmark once with a single round before the UPGRADE_RUNS; only the last
# figures count.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:$HOME/go/bin
export VKIMG_TEST_CACHE=${VKIMG_TEST_CACHE:-/var/cache/vkimg-test}
go test -run '^$' -bench '^BenchmarkUpgradeRollback$' -benchtime "${UPGRADE_RUNS:-5}x" -timeout 60m ./internal/deploy
