#!/usr/bin/env bash
# make bench: run the product's benchmarks and print one table (bench/main.go),
# writing bench/results.json. Integration benchmarks need root, containerd and
# runc (as make test); without them they print "skipped".
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./bench "$@"
