#!/usr/bin/env bash
# Builds the worker's test image offline: an OCI image layout (oci-layout, index.json,
# blobs/sha256/...) holding one gzip tar layer with Debian's static busybox and its
# applets, packed into one tar that `ctr images import` and the containerd client's
# Import accept.
#
# usage: testdata/image/build.sh [OUT.tar]   (default: testdata/image/hypernode-test.tar)
#
# Image name: hypernode.local/test:latest (annotations io.containerd.image.name and
# org.opencontainers.image.ref.name in index.json); IMAGE_NAME overrides it. IMAGE_USER
# (e.g. 65534:65534) sets the config's User; the default is none, i.e. root.
# EXTRA_FILES (space-separated absolute host paths) are copied into the rootfs at the
# same paths, symlinks dereferenced (scripts/device-gpu-check.sh adds the glibc that the
# host's nvidia-smi needs).
#
# Deterministic: sorted tar entries, mtime 0, uid/gid 0, gzip without name or time, so
# the same busybox binary always gives the same manifest digest. Needs only bash, GNU
# tar, gzip, sha256sum, and busybox-static (installed with apt when missing and root;
# or point BUSYBOX at a static busybox binary).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-$here/hypernode-test.tar}
name=${IMAGE_NAME:-hypernode.local/test:latest}
busybox=${BUSYBOX:-/bin/busybox}
user=${IMAGE_USER:-}
case "$user" in *[!A-Za-z0-9_:.-]*) echo "build.sh: IMAGE_USER $user has characters outside [A-Za-z0-9_:.-]" >&2; exit 1 ;; esac
case "$name" in *[!A-Za-z0-9_:./-]*) echo "build.sh: IMAGE_NAME $name is not an image reference" >&2; exit 1 ;; esac

die() { echo "build.sh: $*" >&2; exit 1; }

for tool in tar gzip sha256sum; do
	command -v "$tool" >/dev/null || die "$tool is required"
done
tar --version 2>/dev/null | grep -q 'GNU tar' || die "GNU tar is required (for --sort=name)"

if [ ! -x "$busybox" ] && [ -z "${BUSYBOX:-}" ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "build.sh: installing busybox-static with apt-get" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >&2 ||
			die "apt-get install busybox-static failed"
	else
		die "$busybox is missing: install Debian's busybox-static (apt-get install busybox-static) or set BUSYBOX=/path/to/static/busybox"
	fi
fi
[ -x "$busybox" ] || die "$busybox is not an executable file"
# A dynamically linked busybox would not run in a rootfs without its libc.
if command -v ldd >/dev/null && ldd "$busybox" >/dev/null 2>&1; then
	die "$busybox is dynamically linked; the image needs busybox-static"
fi

case "$(uname -m)" in
x86_64) arch=amd64 ;;
aarch64 | arm64) arch=arm64 ;;
armv7l) arch=arm ;;
ppc64le) arch=ppc64le ;;
s390x) arch=s390x ;;
riscv64) arch=riscv64 ;;
*) die "unsupported machine $(uname -m)" ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/hn-image.XXXXXX")
tmp_out=
trap 'rm -rf "$work"; [ -z "$tmp_out" ] || rm -f "$tmp_out"' EXIT
umask 022

# --- rootfs --------------------------------------------------------------------------
root=$work/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/workspace" "$root/proc" \
	"$root/sys" "$root/dev" "$root/root" "$root/home"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
# One symlink per applet (what `busybox --install -s` does, without depending on the
# build machine's busybox supporting --install).
for applet in $("$root/bin/busybox" --list); do
	case "$applet" in busybox | */*) continue ;; esac
	ln -s busybox "$root/bin/$applet"
done
for applet in sh echo cat sleep ls mkdir dd head true false id ps grep wc; do
	[ -e "$root/bin/$applet" ] || die "busybox lacks the applet $applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
: >"$root/etc/hostname"
for f in ${EXTRA_FILES:-}; do
	case "$f" in /*) ;; *) die "EXTRA_FILES entry $f is not an absolute path" ;; esac
	[ -e "$f" ] || die "EXTRA_FILES entry $f does not exist"
	mkdir -p "$root$(dirname "$f")"
	cp -L "$f" "$root$f"
done

# --- blobs ---------------------------------------------------------------------------
layout=$work/layout
blobs=$layout/blobs/sha256
mkdir -p "$blobs"

tarflags=(--sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix
	--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime)

tar "${tarflags[@]}" -C "$root" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -9 -c "$work/layer.tar" >"$work/layer.tar.gz"

# put FILE: moves FILE into blobs/sha256 under its digest; prints "digest size".
put() {
	local dgst size
	dgst=$(sha256sum "$1" | cut -d' ' -f1)
	size=$(wc -c <"$1" | tr -d ' ')
	mv "$1" "$blobs/$dgst"
	echo "$dgst $size"
}

read -r layer_digest layer_size < <(put "$work/layer.tar.gz")

user_field=
[ -z "$user" ] || user_field=$(printf '"User":"%s",' "$user")
printf '{"architecture":"%s","os":"linux","config":{'"$user_field"'"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"testdata/image/build.sh: busybox-static"}]}' \
	"$arch" "$diff_id" >"$work/config.json"
read -r config_digest config_size < <(put "$work/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
	"$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
read -r manifest_digest manifest_size < <(put "$work/manifest.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
	"$manifest_digest" "$manifest_size" "$arch" "$name" "$name" >"$layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"

# --- archive -------------------------------------------------------------------------
mkdir -p "$(dirname "$out")"
tmp_out=$(mktemp "$(dirname "$out")/.hn-image.XXXXXX")
tar "${tarflags[@]}" -C "$layout" -cf "$tmp_out" oci-layout index.json blobs
chmod 0644 "$tmp_out"
mv -f "$tmp_out" "$out"
echo "built $out: $name sha256:$manifest_digest" >&2
