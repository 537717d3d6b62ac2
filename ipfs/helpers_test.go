package ipfs

import (
	"crypto/sha256"
	"encoding/binary"
	"net/http"
	"net/http/httptest"
	"testing"
)

// pattern returns n deterministic pseudo-random bytes: the concatenation of
// sha256(uint64 big-endian k) for k = 0, 1, 2…. The known answers from kubo were computed
// over files made the same way.
func pattern(n int) []byte {
	out := make([]byte, 0, n+sha256.Size)
	var k uint64
	for len(out) < n {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], k)
		s := sha256.Sum256(b[:])
		out = append(out, s[:]...)
		k++
	}
	return out[:n]
}

// newTestStore is a Store in a fresh temporary directory.
func newTestStore(t testing.TB) *Store {
	t.Helper()
	s, err := NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serve starts h on 127.0.0.1 for the test's lifetime.
func serve(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h) // binds 127.0.0.1:0
	t.Cleanup(srv.Close)
	return srv
}

// mustPut stores b and returns its CID.
func mustPut(t testing.TB, s *Store, b []byte) string {
	t.Helper()
	c, n, err := s.Put(bytesReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(b)) {
		t.Fatalf("Put size = %d, want %d", n, len(b))
	}
	return c
}
