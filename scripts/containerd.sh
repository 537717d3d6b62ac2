#!/usr/bin/env bash
# Starts and stops a private containerd daemon for the demo and for manual tests: its
# root, state, config, log, pid file and socket all live under one directory, so it never
# touches the host's /var/lib/containerd or /run/containerd/containerd.sock.
#
# usage:
#   scripts/containerd.sh start DIR   start (or reuse) the daemon; prints its socket path
#   scripts/containerd.sh stop DIR    SIGKILL its tasks, stop the daemon, remove the pid file
#   scripts/containerd.sh status DIR  exit 0 and print the socket path when it answers
#
# Layout under DIR: config.toml, root/, state/, opt/, containerd.sock, containerd.pid,
# containerd.log. The socket path must stay under 108 bytes (a unix socket limit), so
# keep DIR short (e.g. /tmp/hn-ctd).
#
# Needs root. When containerd or runc is missing and this runs as root on Debian/Ubuntu,
# they are installed with apt-get.
set -euo pipefail

die() { echo "containerd.sh: $*" >&2; exit 1; }
usage() { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }

[ $# -eq 2 ] || usage
cmd=$1
dir=$(realpath -m -- "$2")
sock=$dir/containerd.sock
pidfile=$dir/containerd.pid
[ ${#sock} -lt 108 ] || die "socket path $sock is ${#sock} bytes; unix sockets allow 107: use a shorter DIR"
mkdir -p "$dir"

answers() { command -v ctr >/dev/null && timeout 5 ctr --address "$sock" version >/dev/null 2>&1; }

ensure_installed() {
	local missing=()
	command -v containerd >/dev/null || missing+=(containerd)
	command -v runc >/dev/null || missing+=(runc)
	command -v ctr >/dev/null || missing+=(containerd)
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "containerd.sh: installing ${missing[*]} with apt-get" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q containerd runc >&2 ||
			die "apt-get install containerd runc failed"
	else
		die "missing ${missing[*]}: install them (Debian: apt-get install containerd runc) and run as root"
	fi
}

write_config() {
	# cri is disabled (no Kubernetes here, and it is the slowest plugin to start); the
	# opt plugin would otherwise write to /opt/containerd.
	cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"

[debug]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
EOF
}

start() {
	if answers; then
		echo "$sock"
		return 0
	fi
	[ "$(id -u)" = 0 ] || die "containerd needs root (run with sudo)"
	ensure_installed
	if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
		die "containerd pid $(cat "$pidfile") holds $dir but $sock does not answer; run: $0 stop $dir"
	fi
	rm -f "$sock" "$sock.ttrpc"
	mkdir -p "$dir/root" "$dir/state" "$dir/opt"
	write_config
	setsid containerd --config "$dir/config.toml" >>"$dir/containerd.log" 2>&1 </dev/null &
	echo $! >"$pidfile"
	local pid
	pid=$(cat "$pidfile")
	for _ in $(seq 1 100); do
		if answers; then
			echo "$sock"
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || die "containerd exited at start; last lines of $dir/containerd.log:
$(tail -n 20 "$dir/containerd.log")"
		sleep 0.2
	done
	die "containerd (pid $pid) did not answer on $sock within 20s; see $dir/containerd.log"
}

stop() {
	if answers; then
		# Tasks live in their shims, not in the daemon: without this they would outlive it.
		for ns in $(ctr --address "$sock" namespaces list -q 2>/dev/null); do
			for task in $(ctr --address "$sock" -n "$ns" tasks list -q 2>/dev/null); do
				ctr --address "$sock" -n "$ns" tasks kill -a -s SIGKILL "$task" >/dev/null 2>&1 || true
				for _ in $(seq 1 50); do
					ctr --address "$sock" -n "$ns" tasks delete "$task" >/dev/null 2>&1 && break
					sleep 0.1
				done
			done
		done
	fi
	if [ -f "$pidfile" ]; then
		local pid
		pid=$(cat "$pidfile")
		if kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid"
			for _ in $(seq 1 100); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
			if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
		fi
		rm -f "$pidfile"
	fi
	rm -f "$sock" "$sock.ttrpc"
}

case "$cmd" in
start) start ;;
stop) stop ;;
status) answers && echo "$sock" || { echo "containerd.sh: nothing answers on $sock" >&2; exit 1; } ;;
*) usage ;;
esac
