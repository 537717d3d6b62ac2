#!/usr/bin/env bash
# Installs what the sandbox tests need: slirp4netns (EGRESS_POLICY=allow), nsenter and
# ip (util-linux, iproute2), mkfs.ext4 (e2fsprogs: the capped workspace filesystem).
# Idempotent: installs only what is missing.
set -euo pipefail
need=()
command -v slirp4netns >/dev/null || need+=(slirp4netns)
command -v nsenter >/dev/null || need+=(util-linux)
command -v ip >/dev/null || need+=(iproute2)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
	echo "ci/sandbox: installing ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
