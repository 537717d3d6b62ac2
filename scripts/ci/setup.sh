#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian/Ubuntu machine (root): containerd,
# runc, busybox-static and docker-registry from apt, then the per-area installers
# (litesvm's shim for the conformance suite, chromium for the dashboard test,
# slirp4netns/e2fsprogs for the sandbox, a kubo binary for the IPFS tests). Each
# step does nothing when its tool is already there. `make test` runs it first
# (HYPERNODE_NO_SETUP=1 skips it); .ci/run runs `make test`.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
	echo "setup: not root; installing nothing (tests needing what is missing will skip)" >&2
	exit 0
fi
need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v docker-registry >/dev/null || need+=(docker-registry)
if [ ${#need[@]} -gt 0 ]; then
	echo "setup: installing ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
bash scripts/ci/litesvm.sh
bash scripts/ci/chromium.sh
bash scripts/ci/sandbox.sh
if ! bash scripts/ci/kubo.sh >/dev/null; then
	echo "setup: building kubo failed; the kubo tests will skip saying so" >&2
fi
