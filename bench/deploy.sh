#!/usr/bin/env bash
# Deploy benchmark: from a cached, signed template to healthy through nginx
# over HTTPS, per step (median) and in total, then the success rate of
# DEPLOY_RUNS deploys in a row (each created, checked through nginx and
# removed). Needs root and `make setup`. Go runs the benchmark once with a
# single deploy before the DEPLOY_RUNS; only the last figures count.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:$HOME/go/bin
export VKIMG_TEST_CACHE=${VKIMG_TEST_CACHE:-/var/cache/vkimg-test}
go test -run '^$' -bench '^BenchmarkDeploy$' -benchtime "${DEPLOY_RUNS:-20}x" -timeout 60m ./internal/deploy
