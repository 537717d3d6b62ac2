#!/usr/bin/env bash
# make demo: the whole job life on the embedded local market.
#
# Installs containerd, runc and busybox-static with apt when missing (as root), starts a
# private containerd under /tmp/hn-demo-ctd when none is given, builds the worker and the
# offline test image, starts the worker with its embedded localnet, posts the four sample
# jobs of testdata/jobs, waits for them to end and prints each one's final state, its
# verified result and the node's balance change; then stops the worker and replays the
# journal. Everything it starts it stops. Re-runnable: the demo's data is recreated.
#
# Environment: DEMO_DIR (default .demo), CONTAINERD_ADDRESS (use this containerd instead
# of a private one), LOCALNET_ADDR (default 127.0.0.1:8899).
set -euo pipefail
cd "$(dirname "$0")/.."

demo=$(realpath -m "${DEMO_DIR:-.demo}")
addr=${LOCALNET_ADDR:-127.0.0.1:8899}
rpc=http://$addr
bin=$PWD/bin/hypernode-worker
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

say "Checking prerequisites"
missing=()
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v go >/dev/null || die "Go is needed to build the worker (https://go.dev/dl, 1.26 or newer)"
if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" = 0 ] || die "missing ${missing[*]}: run as root (the worker runs containers) or install them"
	echo "installing ${missing[*]} with apt-get"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi
[ "$(id -u)" = 0 ] || die "the worker runs containers with containerd: run the demo as root"

say "Building hypernode-worker and the offline test image"
go build -o "$bin" ./cmd/hypernode-worker
mkdir -p "$demo"
bash testdata/image/build.sh "$demo/hypernode-test.tar"

own_containerd=""
if [ -z "${CONTAINERD_ADDRESS:-}" ]; then
	ctd=/tmp/hn-demo-ctd
	CONTAINERD_ADDRESS=$(bash scripts/containerd.sh start "$ctd")
	if ! bash scripts/containerd.sh status "$ctd" >/dev/null 2>&1; then die "containerd did not start (see $ctd/containerd.log)"; fi
	own_containerd=$ctd
fi
echo "containerd: $CONTAINERD_ADDRESS"

data=$demo/data
rm -rf "$data"
worker_pid=""
cleanup() {
	if [ -n "$worker_pid" ] && kill -0 "$worker_pid" 2>/dev/null; then
		kill -TERM "$worker_pid" 2>/dev/null || true
		wait "$worker_pid" 2>/dev/null || true
	fi
	[ -z "$own_containerd" ] || bash scripts/containerd.sh stop "$own_containerd" >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "Starting the worker on the embedded local market ($rpc)"
HYPERNODE_DATA_DIR=$data "$bin" start --network localnet --localnet-addr "$addr" \
	--containerd-address "$CONTAINERD_ADDRESS" --import-image "$demo/hypernode-test.tar" \
	--polling-interval 500 --log-format json >"$demo/worker.out" 2>"$demo/worker.log" &
worker_pid=$!
for _ in $(seq 1 120); do
	grep -q "Watching for jobs" "$demo/worker.out" 2>/dev/null && break
	kill -0 "$worker_pid" 2>/dev/null || { cat "$demo/worker.out" "$demo/worker.log" >&2; die "the worker exited"; }
	sleep 0.5
done
grep -q "Watching for jobs" "$demo/worker.out" || die "the worker did not start in 60 s (see $demo/worker.log)"
cat "$demo/worker.out"

node=$("$bin" config --data-dir "$data" --network localnet | awk '$1 == "node:" || $1 == "node" {print $2; exit}')
[ -n "$node" ] || die "config did not name the node (its keypair is $data/node-keypair.json)"
before=$("$bin" localnet balance --rpc "$rpc" "$node")

say "Posting the sample jobs"
declare -A file_of
jobs=()
for f in succeed fail timeout invalid; do
	job=$("$bin" localnet post --rpc "$rpc" "testdata/jobs/$f.json" 2>/dev/null)
	file_of[$job]=$f
	jobs+=("$job")
	printf '  %-8s -> job %s\n' "$f.json" "$job"
done

say "Waiting for the jobs to end (chain and journal)"
"$bin" localnet show --rpc "$rpc" --data-dir "$data" --wait 3m "${jobs[@]}" | tee "$demo/jobs.txt"

say "Expected outcomes"
ok=1
for job in "${jobs[@]}"; do
	line=$(grep "^$job" "$demo/jobs.txt")
	case ${file_of[$job]} in
	succeed) want="Completed finished succeeded" ;;
	fail) want="Completed failed failed" ;;
	timeout) want="Completed failed timeout" ;;
	invalid) want="Completed failed rejected" ;;
	esac
	got=$(echo "$line" | awk '{print $2, $3, $4}')
	if [ "$got" = "$want" ]; then mark="✔"; else mark="✘ (got: $got)"; ok=0; fi
	printf '  %-8s chain/journal/result = %-30s %s\n' "${file_of[$job]}" "$want" "$mark"
done

after=$("$bin" localnet balance --rpc "$rpc" "$node")
say "Node balance"
delta=$((after - before))
prices=$(awk '/^prices:/ {print $2}' "$demo/jobs.txt")
paid=$((prices * 99 / 100))
printf '  before %d lamports, after %d: change %+d lamports\n' "$before" "$after" "$delta"
printf '  99%% of the %d lamports the 4 jobs cost = %d; fees = %d lamports (%d signatures × 5000)\n' \
	"$prices" "$paid" "$((paid - delta))" "$(((paid - delta) / 5000))"

say "Stopping the worker, then replaying its journal"
kill -TERM "$worker_pid"
wait "$worker_pid" || true
worker_pid=""
"$bin" replay --data-dir "$data" | tail -n 8

if grep -rq "hn-demo-secret" "$demo/worker.log" "$data/journal.db" "$data/jobs"; then
	echo "demo: the job's secret reached the log, the journal or a job directory" >&2
	ok=0
fi
[ "$ok" = 1 ] || die "some jobs did not end as expected"
say "Demo passed: every job ended in its expected state"
