package ipfs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const helloCID = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o" // "hello world\n"

func TestStorePutOpenHas(t *testing.T) {
	s := newTestStore(t)
	tests := []struct {
		name string
		data []byte
		want string // "" = compute independently
	}{
		{"hello", []byte("hello world\n"), helloCID},
		{"empty", nil, "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"},
		{"multi-chunk", pattern(3*ChunkSize + 5), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == "" {
				want = handBuiltCID(t, tc.data)
			}
			c, n, err := s.Put(bytes.NewReader(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			if c != want || n != int64(len(tc.data)) {
				t.Fatalf("Put = %s, %d; want %s, %d", c, n, want, len(tc.data))
			}
			if !s.Has(c) {
				t.Error("Has after Put = false")
			}
			rc, size, err := s.Open(c)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			if size != int64(len(tc.data)) || !bytes.Equal(got, tc.data) {
				t.Errorf("Open: %d bytes (size %d), want the %d bytes put", len(got), size, len(tc.data))
			}
			if fi, err := os.Stat(filepath.Join(s.Dir(), c)); err != nil || fi.Size() != int64(len(tc.data)) {
				t.Errorf("file <dir>/<cid>: %v", err)
			}
			// Putting it again is harmless.
			if c2, _, err := s.Put(bytes.NewReader(tc.data)); err != nil || c2 != c {
				t.Errorf("second Put = %s, %v", c2, err)
			}
		})
	}
	assertNoTempFiles(t, s)
}

func assertNoTempFiles(t *testing.T, s *Store) {
	t.Helper()
	ents, err := os.ReadDir(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			t.Errorf("temporary file %s left in the store", e.Name())
		}
	}
}

func TestStoreNotFound(t *testing.T) {
	s := newTestStore(t)
	_, _, err := s.Open(helloCID)
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("Open(absent) err = %v, want ErrNotFound", err)
	}
	if s.Has(helloCID) {
		t.Error("Has(absent) = true")
	}
}

func TestStoreRejectsPathTraversal(t *testing.T) {
	root := t.TempDir()
	s, err := NewStore(filepath.Join(root, "store"))
	if err != nil {
		t.Fatal(err)
	}
	// A file beside the store that a traversal would reach.
	if err := os.WriteFile(filepath.Join(root, "secret"), []byte("keypair"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, []byte("hello world\n"))
	for _, name := range []string{
		"../secret", "..", ".", "", "/etc/passwd", "store/../secret",
		helloCID + "/../../secret", "./" + helloCID, helloCID + "/", tempPrefix + "x",
		"..%2fsecret", "\x00", strings.Repeat("Qm", 500),
	} {
		if s.Has(name) {
			t.Errorf("Has(%q) = true", name)
		}
		rc, _, err := s.Open(name)
		if !errors.Is(err, ErrInvalidCID) {
			t.Errorf("Open(%q) err = %v, want ErrInvalidCID", name, err)
		}
		if rc != nil {
			rc.Close()
		}
	}
}

func TestStoreOpenRejectsNonRegularFile(t *testing.T) {
	s := newTestStore(t)
	if err := os.Mkdir(filepath.Join(s.Dir(), helloCID), 0o700); err != nil {
		t.Fatal(err)
	}
	if s.Has(helloCID) {
		t.Error("Has(directory) = true")
	}
	if _, _, err := s.Open(helloCID); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Open(directory) err = %v, want a not-a-regular-file error", err)
	}
}

func TestStorePutReaderErrorLeavesNothing(t *testing.T) {
	s := newTestStore(t)
	boom := errors.New("connection reset")
	for _, n := range []int{0, 100, 2*ChunkSize + 1} {
		c, _, err := s.Put(&failingReader{left: n, err: boom})
		if !errors.Is(err, boom) || c != "" {
			t.Errorf("Put after %d bytes = %q, %v; want wrapping %v", n, c, err, boom)
		}
	}
	ents, err := os.ReadDir(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("store holds %d entries after failed puts, want 0", len(ents))
	}
}

func TestStoreConcurrentPutsOfSameContent(t *testing.T) {
	s := newTestStore(t)
	data := pattern(ChunkSize + 3)
	want := handBuiltCID(t, data)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	cids := make([]string, 4)
	for i := range 4 {
		wg.Go(func() { cids[i], _, errs[i] = s.Put(bytes.NewReader(data)) })
	}
	wg.Wait()
	for i := range 4 {
		if errs[i] != nil || cids[i] != want {
			t.Errorf("put %d = %s, %v; want %s", i, cids[i], errs[i], want)
		}
	}
	rc, _, err := s.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got, _ := io.ReadAll(rc); !bytes.Equal(got, data) {
		t.Error("content after concurrent puts differs")
	}
	assertNoTempFiles(t, s)
}

func TestNewStoreErrors(t *testing.T) {
	if _, err := NewStore(""); err == nil {
		t.Error("NewStore(\"\") succeeded")
	}
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewStore(f); err == nil {
		t.Error("NewStore(regular file) succeeded")
	}
}
