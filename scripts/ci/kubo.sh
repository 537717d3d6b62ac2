#!/usr/bin/env bash
# Builds kubo (the `ipfs` daemon) once for the ipfs package's integration tests and
# benchmark, into a cache outside the repository; prints the binary's path.
#
# kubo cannot be `go install`ed from the module proxy (v0.43.x replaces a dependency by an
# unserved fork; v0.42.0 has exclude directives), so the module directory of v0.42.0 is
# downloaded, copied, made writable and built in place (~3 min on 2 cores).
#
# The tests find the binary through $HYPERNODE_KUBO or at the default path below
# (ipfs/kubotest.DefaultBinary). Idempotent: a cached binary of the right version is kept.
set -euo pipefail
version=v0.42.0
cache=${HYPERNODE_CACHE:-$HOME/.cache/hypernode}
bin=$cache/kubo/$version/ipfs
if [ -x "$bin" ] && "$bin" version 2>/dev/null | grep -qx "ipfs version ${version#v}"; then
	echo "$bin"
	exit 0
fi
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
dir=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/ipfs/kubo@$version" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
if [ -z "$dir" ] || [ ! -d "$dir" ]; then
	echo "kubo.sh: go mod download of github.com/ipfs/kubo@$version gave no module directory" >&2
	exit 1
fi
cp -r "$dir" "$work/kubo"
chmod -R u+w "$work/kubo"
mkdir -p "$(dirname "$bin")"
(cd "$work/kubo" && CGO_ENABLED=0 GOFLAGS= go build -trimpath -o "$bin.tmp" ./cmd/ipfs) >&2
mv "$bin.tmp" "$bin"
"$bin" version >&2
echo "$bin"
