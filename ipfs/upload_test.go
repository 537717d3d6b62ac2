package ipfs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUploaderRoundTripThroughGateway(t *testing.T) {
	s := newTestStore(t)
	srv := serve(t, NewGatewayHandler(s))
	ctx := context.Background()
	tests := []struct {
		name   string
		apiURL string
		data   []byte
	}{
		{"hello", srv.URL, []byte("hello world\n")},
		{"empty", srv.URL + "/", nil},
		{"multi-chunk", srv.URL + "/api/v0", pattern(2*ChunkSize + 1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := &Uploader{APIURL: tc.apiURL}
			want := handBuiltCID(t, tc.data)
			c, n, err := u.Add(ctx, "result.json", bytes.NewReader(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			if c != want || n != int64(len(tc.data)) {
				t.Fatalf("Add = %s, %d; want %s, %d", c, n, want, len(tc.data))
			}
			rc, _, err := s.Open(c)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(rc)
			rc.Close()
			if !bytes.Equal(got, tc.data) {
				t.Error("stored bytes differ from the uploaded ones")
			}
			// And back through the gateway with verification.
			f := &Fetcher{Gateways: []string{srv.URL}}
			if fetched, err := f.Fetch(ctx, c); err != nil || !bytes.Equal(fetched, tc.data) {
				t.Errorf("Fetch after upload: %v", err)
			}
		})
	}
}

func TestUploaderAddBytesAndFile(t *testing.T) {
	s := newTestStore(t)
	u := &Uploader{APIURL: serve(t, NewGatewayHandler(s)).URL}
	c, n, err := u.AddBytes(context.Background(), "hello", []byte("hello world\n"))
	if err != nil || c != helloCID || n != 12 {
		t.Fatalf("AddBytes = %s, %d, %v", c, n, err)
	}
	data := pattern(ChunkSize + 7)
	p := filepath.Join(t.TempDir(), "out.bin")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	c, n, err = u.AddFile(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if want := handBuiltCID(t, data); c != want || n != int64(len(data)) || !s.Has(c) {
		t.Errorf("AddFile = %s, %d (stored %v); want %s, %d", c, n, s.Has(c), want, len(data))
	}
	if _, _, err := u.AddFile(context.Background(), filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("AddFile(missing) err = %v, want os.ErrNotExist", err)
	}
}

// fakeAddServer answers every add with answer after reading the whole body.
func fakeAddServer(t *testing.T, status int, answer string) string {
	t.Helper()
	return serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, answer)
	})).URL
}

func TestUploaderRejectsWrongCID(t *testing.T) {
	other := "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
	v1 := "bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby"
	for _, remote := range []string{other, v1} {
		api := fakeAddServer(t, 200, `{"Name":"x","Hash":"`+remote+`","Size":"20"}`+"\n")
		u := &Uploader{APIURL: api}
		_, _, err := u.AddBytes(context.Background(), "x", []byte("hello world\n"))
		var me *UploadMismatchError
		if !errors.As(err, &me) || me.Local != helloCID || me.Remote != remote || me.API != api {
			t.Errorf("err = %v, want *UploadMismatchError{%s %s %s}", err, api, helloCID, remote)
		}
		// AddFile fails the same way.
		p := filepath.Join(t.TempDir(), "f")
		os.WriteFile(p, []byte("hello world\n"), 0o600)
		if _, _, err := u.AddFile(context.Background(), p); !errors.As(err, &me) {
			t.Errorf("AddFile err = %v, want *UploadMismatchError", err)
		}
	}
}

func TestUploaderServerErrors(t *testing.T) {
	kuboErr, err := os.ReadFile("testdata/kubo-0.42.0-add-error.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		status int
		answer string
		says   string
	}{
		{"kubo JSON error", 500, string(kuboErr), "HTTP 500: unknown CID version: 5"},
		{"kubo text error", 400, "file argument 'path' is required\n", "HTTP 400: file argument 'path' is required"},
		{"not JSON", 200, "<html>hello</html>", "not a JSON add event"},
		{"no hash", 200, `{"Name":"x","Bytes":12}` + "\n", "no CID"},
		{"empty", 200, "", "no CID"},
		{"error object", 200, `{"Message":"disk full","Code":0,"Type":"error"}`, "disk full"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := &Uploader{APIURL: fakeAddServer(t, tc.status, tc.answer), Retry: NoRetry}
			_, _, err := u.AddBytes(context.Background(), "x", []byte("hello world\n"))
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("err = %v, want one saying %q", err, tc.says)
			}
			var se *HTTPStatusError
			if tc.status != 200 && (!errors.As(err, &se) || se.StatusCode != tc.status) {
				t.Errorf("err = %v, want *HTTPStatusError %d", err, tc.status)
			}
		})
	}
}

func TestUploaderStreamErrorTrailer(t *testing.T) {
	api := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "X-Stream-Error")
		io.WriteString(w, `{"Name":"x","Hash":"`+helloCID+`","Size":"20"}`+"\n")
		w.Header().Set("X-Stream-Error", "pinning failed")
	})).URL
	_, _, err := (&Uploader{APIURL: api}).AddBytes(context.Background(), "x", []byte("hello world\n"))
	if err == nil || !strings.Contains(err.Error(), "pinning failed") {
		t.Errorf("err = %v, want the stream error", err)
	}
}

func TestUploaderReaderError(t *testing.T) {
	u := &Uploader{APIURL: serve(t, NewGatewayHandler(newTestStore(t))).URL}
	boom := errors.New("result file unreadable")
	_, _, err := u.Add(context.Background(), "x", &failingReader{left: ChunkSize + 5, err: boom})
	if !errors.Is(err, boom) {
		t.Errorf("err = %v, want wrapping %v", err, boom)
	}
}

func TestUploaderEarlyAnswerIsNotTrusted(t *testing.T) {
	// Answers with the right CID of the full content without reading the body.
	data := pattern(8 << 20)
	want := handBuiltCID(t, data)
	api := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"Name":"x","Hash":"`+want+`","Size":"1"}`+"\n")
	})).URL
	c, _, err := (&Uploader{APIURL: api}).AddBytes(context.Background(), "x", data)
	if err == nil {
		t.Errorf("Add = %s, nil; want an error: the node never read the content", c)
	}
	if err != nil {
		t.Log(err)
	}
}

func TestUploaderContextCancel(t *testing.T) {
	release := make(chan struct{})
	srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release) })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	r, w := io.Pipe()
	go func() {
		_, _, err := (&Uploader{APIURL: srv.URL}).Add(ctx, "x", r)
		errc <- err
	}()
	// The owner of a blocking reader unblocks it when ctx is done, as Add's doc asks.
	go func() {
		<-ctx.Done()
		w.CloseWithError(ctx.Err())
	}()
	w.Write([]byte("some bytes")) // the upload is under way once the writer has read this
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestUploaderFileChangedDuringUpload(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 48 MiB file; skipped under -short")
	}
	p := filepath.Join(t.TempDir(), "result.bin")
	if err := os.WriteFile(p, make([]byte, 48<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newTestStore(t)
	inner := NewGatewayHandler(s)
	// Before reading the body, rewrite the file: everything the client has not yet sent
	// (all but what the loopback socket buffers hold) is now different.
	api := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := os.WriteFile(p, bytes.Repeat([]byte{0xff}, 48<<20+1), 0o600); err != nil {
			t.Error(err)
		}
		inner.ServeHTTP(w, r)
	})).URL
	_, _, err := (&Uploader{APIURL: api}).AddFile(context.Background(), p)
	if !errors.Is(err, ErrChangedDuringUpload) {
		t.Errorf("err = %v, want ErrChangedDuringUpload", err)
	}
}

func TestUploaderBadAPIURL(t *testing.T) {
	for _, api := range []string{"", "127.0.0.1:5001", "ftp://x", "http://x/?q=1", "http://u:secret@"} {
		_, _, err := (&Uploader{APIURL: api}).AddBytes(context.Background(), "x", nil)
		if err == nil || strings.Contains(err.Error(), "secret") {
			t.Errorf("APIURL %q: err = %v, want an error without credentials", api, err)
		}
	}
}

func TestParseAddResponseKuboCaptures(t *testing.T) {
	tests := []struct {
		file, hash, name string
	}{
		{"testdata/kubo-0.42.0-add-one.jsonl", helloCID, "hello there.txt"},
		{"testdata/kubo-0.42.0-add-two.jsonl", "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD", "hello"},
		{"testdata/kubo-0.42.0-add-progress.jsonl", "Qmf1pNpWHeRjfapTMNsWkyr5wUJpX2SXk5PPfRVBfKrxV7", "zeros_2c1"},
	}
	for _, tc := range tests {
		b, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := parseAddResponse(bytes.NewReader(b))
		if err != nil || ev.Hash != tc.hash || ev.Name != tc.name {
			t.Errorf("%s: %+v, %v; want Hash %s Name %q", tc.file, ev, err, tc.hash, tc.name)
		}
	}
}
