#!/usr/bin/env bash
# Installs what the chain/conformance suite needs: Node.js and npm (apt, when
# missing) and the litesvm shim's locked dependencies (npm ci in
# chain/conformance/litesvm-shim; litesvm's native binary ships inside its
# npm package). Idempotent: skips each step that is already done. npm's
# download cache lives under .cache/npm (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/../.."
shim=chain/conformance/litesvm-shim

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	echo "litesvm: installing nodejs and npm"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
	echo "litesvm: node $(node --version) is older than 20; the conformance suite will skip" >&2
	exit 0
fi

# npm ci only when the installed tree is not the one the lock file names.
stamp="$shim/node_modules/.lock-sha256"
want=$(sha256sum "$shim/package-lock.json" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$shim/node_modules/litesvm/package.json" ]; then
	echo "litesvm: shim dependencies up to date"
	exit 0
fi
echo "litesvm: npm ci in $shim"
(cd "$shim" && npm ci --no-audit --no-fund --loglevel=error --cache "$PWD/../../../.cache/npm")
echo "$want" >"$stamp"
node -e "require('./$shim/node_modules/litesvm/dist/internal'); console.log('litesvm: native binary loads')"
