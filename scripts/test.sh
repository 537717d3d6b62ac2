#!/usr/bin/env bash
# make test: formatting, vet, then every package's tests (unit and integration). The
# integration tests start a private containerd each (needs root, containerd and runc;
# they skip with the reason otherwise) and the localnet on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${HYPERNODE_NO_SETUP:-}" != 1 ]; then
	bash scripts/ci/setup.sh
fi
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi
go vet ./...
go test -count=1 -timeout 25m ./...
