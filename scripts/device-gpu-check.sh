#!/usr/bin/env bash
# GPU passthrough check for a machine with an NVIDIA GPU: runs nvidia-smi inside
# containers given GPU 0, all GPUs and none, through the worker's runtime package
# (runtime.TestDeviceGPU), on a private containerd. Prints PASS or FAIL (exit 0 / 1)
# within about 5 minutes. Needs root.
#
# usage:
#   scripts/device-gpu-check.sh --prepare   on the development machine: writes .device/
#                                           (test binary, containerd, shim, runc, busybox)
#                                           for a GPU machine without Go or containerd
#   scripts/device-gpu-check.sh             on the GPU machine (uses .device/ when Go or
#                                           containerd is missing there)
#
# CDI: an NVIDIA spec already in /etc/cdi or /var/run/cdi is used; else, when nvidia-ctk
# is installed, one is generated into a private directory (nvidia-ctk cdi generate);
# else the runtime falls back to nvidia-container-runtime-hook, and without that the
# check fails saying so. The container image is the busybox test image plus the host's
# glibc for nvidia-smi (the driver's libraries and nvidia-smi come from CDI or the hook).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
dev=.device

fail() { echo "device-gpu-check: $*" >&2; echo FAIL; exit 1; }

if [ "${1:-}" = --prepare ]; then
	set -e
	mkdir -p "$dev"
	go test -c -o "$dev/runtime.test" ./runtime/
	stage=$(mktemp -d)
	trap 'rm -rf "$stage"' EXIT
	mkdir -p "$stage/lib"
	for b in containerd containerd-shim-runc-v2 runc ctr busybox; do
		p=$(command -v "$b") || { echo "device-gpu-check: $b not found" >&2; exit 1; }
		cp -L "$p" "$stage/$b"
	done
	# Debian's runc links libseccomp dynamically; carry it for hosts without it.
	seccomp=$(ldd "$(command -v runc)" | awk '$1 == "libseccomp.so.2" {print $3}')
	[ -z "$seccomp" ] || cp -L "$seccomp" "$stage/lib/libseccomp.so.2"
	tar -cJf "$dev/tools.tar.xz" -C "$stage" .
	du -sh "$dev"/*
	exit 0
fi

[ "$(id -u)" = 0 ] || fail "needs root (containers)"
command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: no NVIDIA driver on this machine"
nvidia-smi -L || fail "nvidia-smi -L failed: the driver does not answer"

work=$(mktemp -d /tmp/hngpu.XXXXXX)
trap 'rm -rf "$work"' EXIT

# containerd, runc, the shim and busybox: the machine's, else the carried ones.
if ! command -v containerd >/dev/null || ! command -v containerd-shim-runc-v2 >/dev/null || ! command -v runc >/dev/null || [ ! -x /bin/busybox ]; then
	[ -f "$dev/tools.tar.xz" ] || fail "containerd, runc or busybox missing and no $dev/tools.tar.xz (run --prepare on a machine that has them, and carry $dev)"
	mkdir -p "$work/bin"
	tar -xJf "$dev/tools.tar.xz" -C "$work/bin" || fail "unpack $dev/tools.tar.xz"
	export PATH="$work/bin:$PATH"
	if ! "$work/bin/runc" --version >/dev/null 2>&1; then
		export LD_LIBRARY_PATH="$work/bin/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
		"$work/bin/runc" --version >/dev/null 2>&1 || fail "the carried runc does not run here"
	fi
fi
busybox=/bin/busybox
[ -x "$busybox" ] || busybox=$work/bin/busybox

# The test binary: built here when Go is present, else the carried one.
if command -v go >/dev/null; then
	go test -c -o "$work/runtime.test" ./runtime/ || fail "go test -c ./runtime failed"
	testbin=$work/runtime.test
else
	[ -x "$dev/runtime.test" ] || fail "no Go here and no $dev/runtime.test (run --prepare and carry $dev)"
	testbin=$(readlink -f "$dev/runtime.test")
fi

# CDI specs.
cdi_dirs=/etc/cdi:/var/run/cdi
if ! grep -qs 'nvidia.com/gpu' /etc/cdi/* /var/run/cdi/*; then
	if command -v nvidia-ctk >/dev/null; then
		mkdir -p "$work/cdi"
		nvidia-ctk cdi generate --output="$work/cdi/nvidia.yaml" >"$work/nvidia-ctk.log" 2>&1 ||
			{ cat "$work/nvidia-ctk.log" >&2; fail "nvidia-ctk cdi generate failed"; }
		cdi_dirs=$work/cdi
		echo "device-gpu-check: CDI spec generated with $(nvidia-ctk --version | head -1)"
		grep -o 'name: .*' "$work/cdi/nvidia.yaml" | head
	elif command -v nvidia-container-runtime-hook >/dev/null; then
		echo "device-gpu-check: no CDI spec and no nvidia-ctk: using nvidia-container-runtime-hook"
	else
		echo "device-gpu-check: no CDI spec, nvidia-ctk or nvidia-container-runtime-hook: the check will show the runtime's refusal"
	fi
else
	echo "device-gpu-check: using the CDI specs in /etc/cdi, /var/run/cdi"
fi

# The image: busybox plus the glibc nvidia-smi links against (ELF interpreter included).
extra=$(ldd "$(command -v nvidia-smi)" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u | tr '\n' ' ')
[ -n "$extra" ] || fail "ldd nvidia-smi listed no libraries"
BUSYBOX=$busybox EXTRA_FILES="$extra" IMAGE_NAME=hypernode.local/gpucheck:latest \
	bash testdata/image/build.sh "$work/image.tar" || fail "building the check image failed"

echo "device-gpu-check: running TestDeviceGPU"
(cd runtime && HN_GPU_CHECK=1 HN_GPU_IMAGE="$work/image.tar" HN_CDI_DIRS="$cdi_dirs" \
	timeout 240 "$testbin" -test.run '^TestDeviceGPU$' -test.v -test.timeout 230s)
rc=$?
if [ $rc -eq 0 ]; then
	echo PASS
	exit 0
fi
echo FAIL
exit 1
