#!/usr/bin/env bash
# Runs every benchmark and prints its figures (medians or per-op means; no
# thresholds). Needs root and `make setup`. Set VKIMG_BENCH_LAYOUT to an OCI
# layout with a built template to time its publish and pull (default: the
# stand-in built by bench/template.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:$HOME/go/bin

echo "== template build (bench/template.sh)"
bench/template.sh
export VKIMG_BENCH_LAYOUT=${VKIMG_BENCH_LAYOUT:-${BENCH_DIR:-/tmp/vkimg-bench}/warm}

echo "== SHA-256 of a 500 MB blob: crypto/sha256 vs minio/sha256-simd"
go run ./bench/sha256

echo "== create + start until healthy: LXC backend, then through the Proxmox API simulator"
go test -run '^$' -bench BenchmarkCreateStartHealthy -benchtime 5x ./internal/lxc ./internal/proxmox

echo "== nginx flip (write upstream, nginx -t, reload, proven through the edge)"
go test -run '^$' -bench BenchmarkFlip -benchtime 50x ./internal/edge

echo "== publish and pull ($VKIMG_BENCH_LAYOUT)"
go test -run '^$' -bench BenchmarkPublishPull -benchtime 3x ./internal/registry

echo "== deploy from a cached template to healthy through nginx; 20 deploys in a row (bench/deploy.sh)"
bench/deploy.sh

echo "== upgrade and rollback under load through nginx (bench/upgrade.sh)"
bench/upgrade.sh

echo "== backup, verify and restore: 10,000 tasks + 1 GB of attachments, SQLite and PostgreSQL (bench/backup.sh)"
bench/backup.sh
