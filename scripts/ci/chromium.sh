#!/usr/bin/env bash
# CI: Debian's chromium for the dashboard's browser test (cmd/hypernode-worker
# TestDashboardInBrowser, driven with chromedp). Idempotent: does nothing when
# chromium is installed. Its screenshot goes to $HYPERNODE_ARTIFACTS (default
# /tmp/hypernode-artifacts).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
	exit 0
fi
echo "ci: installing chromium"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
