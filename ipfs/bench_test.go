package ipfs

import (
	"bytes"
	"crypto/sha256"
	"sync"
	"testing"
)

// benchBytes is 64 MiB of pseudo-random content, the same for both benchmarks.
var benchBytes = sync.OnceValue(func() []byte { return pattern(64 << 20) })

// BenchmarkComputeCID measures the CIDv0 computation over 64 MiB (MB/s).
func BenchmarkComputeCID(b *testing.B) {
	data := benchBytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ComputeCID(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSHA256 is the floor for BenchmarkComputeCID: one sha2-256 pass over the same
// 64 MiB.
func BenchmarkSHA256(b *testing.B) {
	data := benchBytes()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sha256.Sum256(data)
	}
}
