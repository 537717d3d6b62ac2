# hypernode-worker — see README.md.
GO ?= go
BIN := bin/hypernode-worker

.PHONY: build demo test test-short fuzz vet clean bench

build:
	$(GO) build -o $(BIN) ./cmd/hypernode-worker

# The whole job life on the embedded local market (needs root for containerd).
demo:
	bash scripts/demo.sh

# Unit and integration tests. Integration tests start their own containerd
# (root, containerd and runc needed; they skip with a reason otherwise).
test:
	bash scripts/test.sh

# Unit tests only (no containerd).
test-short:
	$(GO) test -short -count=1 ./...

# The product's benchmarks in one table, each figure next to its baseline
# measured in the same run; also written to bench/results.json.
bench:
	bash scripts/bench.sh

# Each fuzz target for FUZZTIME (default 20s).
fuzz:
	bash scripts/fuzz.sh $(or $(FUZZTIME),20s)

vet:
	gofmt -l $$(git ls-files '*.go') | (! grep .)
	$(GO) vet ./...

clean:
	rm -rf bin .demo
