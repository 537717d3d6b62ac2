package ipfs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strings"
	"testing"
)

func TestGatewayServesCID(t *testing.T) {
	s := newTestStore(t)
	c := mustPut(t, s, []byte("hello world\n"))
	srv := serve(t, NewGatewayHandler(s))

	resp, err := http.Get(srv.URL + "/ipfs/" + c)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello world\n" {
		t.Fatalf("GET = %d %q", resp.StatusCode, body)
	}
	for k, want := range map[string]string{
		"Content-Length":         "12",
		"Etag":                   `"` + c + `"`,
		"X-Ipfs-Path":            "/ipfs/" + c,
		"Content-Type":           "application/octet-stream",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}

	req, _ := http.NewRequest(http.MethodHead, srv.URL+"/ipfs/"+c, nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != 12 || resp.Header.Get("Etag") != `"`+c+`"` {
		t.Errorf("HEAD = %d, length %d, etag %q", resp.StatusCode, resp.ContentLength, resp.Header.Get("Etag"))
	}

	req, _ = http.NewRequest(http.MethodGet, srv.URL+"/ipfs/"+c, nil)
	req.Header.Set("Range", "bytes=6-10")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || string(body) != "world" {
		t.Errorf("Range GET = %d %q, want 206 \"world\"", resp.StatusCode, body)
	}

	req, _ = http.NewRequest(http.MethodGet, srv.URL+"/ipfs/"+c, nil)
	req.Header.Set("If-None-Match", `"`+c+`"`)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match GET = %d, want 304", resp.StatusCode)
	}
}

// rawStatus sends a request line with exactly this target (no client-side cleaning or
// escaping) and returns the status code.
func rawStatus(t *testing.T, addr, method, target string) int {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", method, target, addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestGatewayStatusCodes(t *testing.T) {
	root := t.TempDir()
	s, err := NewStore(root + "/store")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root+"/secret", []byte("keypair"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := mustPut(t, s, []byte("hello world\n"))
	srv := serve(t, NewGatewayHandler(s))
	addr := srv.Listener.Addr().String()
	tests := []struct {
		method, target string
		want           int
	}{
		{"GET", "/ipfs/" + c, 200},
		{"GET", "/ipfs/QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH", 404},
		{"GET", "/ipfs/not-a-cid", 400},
		{"GET", "/ipfs/", 400},
		{"GET", "/ipfs/bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby", 400},
		{"GET", "/ipfs/" + c + "/sub/path", 400},
		{"GET", "/ipfs/" + c + "/", 400},
		{"GET", "/ipfs/../secret", 400},
		{"GET", "/ipfs/..%2Fsecret", 400},
		{"GET", "/ipfs/%2E%2E%2Fsecret", 400},
		{"GET", "/ipfs/" + c + "/../../secret", 400},
		{"GET", "/ipfs/..", 400},
		{"GET", "/ipfs/.put-123", 400},
		{"GET", "/ipfs/%00", 400},
		{"HEAD", "/ipfs/not-a-cid", 400},
		{"POST", "/ipfs/" + c, 405},
		{"DELETE", "/ipfs/" + c, 405},
		{"GET", "/api/v0/add", 405},
		{"GET", "/", 404},
		{"GET", "/secret", 404},
		{"GET", "/ipns/" + c, 404},
		{"POST", "/api/v0/cat", 404},
	}
	for _, tc := range tests {
		if got := rawStatus(t, addr, tc.method, tc.target); got != tc.want {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.target, got, tc.want)
		}
	}
}

// multipartBody builds an add request body of files (name → content) in order, with a
// part header shaped like kubo's client.
func multipartBody(t *testing.T, files ...[2]string) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, f := range files {
		h := make(textproto.MIMEHeader)
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="file"; filename="%s"`, f[0]))
		h.Set("Content-Type", "application/octet-stream")
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, f[1])
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf, mw.FormDataContentType()
}

func postAdd(t *testing.T, url, query string, body io.Reader, contentType string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url+"/api/v0/add"+query, contentType, body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestAddAnswersLikeKubo(t *testing.T) {
	s := newTestStore(t)
	srv := serve(t, NewGatewayHandler(s))
	// The same two files kubo 0.42.0 was sent for testdata/kubo-0.42.0-add-two.jsonl.
	body, ct := multipartBody(t, [2]string{"hello_nl", "hello world\n"}, [2]string{"hello", "hello world"})
	code, got := postAdd(t, srv.URL, "?cid-version=0&pin=true", body, ct)
	want, err := os.ReadFile("testdata/kubo-0.42.0-add-two.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if code != 200 || !bytes.Equal(got, want) {
		t.Errorf("add answer = %d\n%s\nwant kubo's\n%s", code, got, want)
	}
	for _, c := range []string{helloCID, "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"} {
		if !s.Has(c) {
			t.Errorf("store lacks %s after add", c)
		}
	}

	// Escaped names are unescaped as kubo does (testdata/kubo-0.42.0-add-one.jsonl).
	body, ct = multipartBody(t, [2]string{"hello%20there.txt", "hello world\n"})
	code, got = postAdd(t, srv.URL, "?cid-version=0&pin=true", body, ct)
	want, err = os.ReadFile("testdata/kubo-0.42.0-add-one.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if code != 200 || !bytes.Equal(got, want) {
		t.Errorf("add answer = %d\n%s\nwant kubo's\n%s", code, got, want)
	}
}

func TestAddOnlyHashDoesNotStore(t *testing.T) {
	s := newTestStore(t)
	srv := serve(t, NewGatewayHandler(s))
	body, ct := multipartBody(t, [2]string{"x", "hello world\n"})
	code, got := postAdd(t, srv.URL, "?only-hash=true", body, ct)
	if code != 200 || !strings.Contains(string(got), helloCID) {
		t.Fatalf("only-hash add = %d %s", code, got)
	}
	if s.Has(helloCID) {
		t.Error("only-hash stored the content")
	}
}

func TestAddRejects(t *testing.T) {
	s := newTestStore(t)
	srv := serve(t, NewGatewayHandler(s, WithMaxUploadBytes(1<<20)))
	good, goodCT := func() (string, string) {
		b, ct := multipartBody(t, [2]string{"a", "hello world\n"})
		return b.String(), ct
	}()
	dirBody := "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d\"\r\nContent-Type: application/x-directory\r\n\r\n\r\n--B--\r\n"
	truncated := "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nhello wor"
	big, bigCT := multipartBody(t, [2]string{"big", strings.Repeat("x", 1<<20+1)})
	tests := []struct {
		name, query, body, contentType string
		want                           int
		says                           string
	}{
		{"cid-version 1", "?cid-version=1", good, goodCT, 400, "CIDv0"},
		{"raw leaves", "?raw-leaves=true", good, goodCT, 400, "raw-leaves"},
		{"trickle", "?trickle=1", good, goodCT, 400, "trickle"},
		{"other chunker", "?chunker=size-1024", good, goodCT, 400, "chunker"},
		{"other hash", "?hash=blake3", good, goodCT, 400, "hash"},
		{"wrap", "?wrap-with-directory=true", good, goodCT, 400, "wrap-with-directory"},
		{"bad boolean", "?pin=maybe", good, goodCT, 400, "pin"},
		{"not multipart", "", "hello", "text/plain", 400, "multipart/form-data"},
		{"no boundary", "", good, "multipart/form-data", 400, "boundary"},
		{"no parts", "", "--B--\r\n", "multipart/form-data; boundary=B", 400, "no file part"},
		{"garbage framing", "", "not multipart at all", "multipart/form-data; boundary=B", 400, "request body"},
		{"directory", "", dirBody, "multipart/form-data; boundary=B", 400, "directories"},
		{"truncated", "", truncated, "multipart/form-data; boundary=B", 400, "ends before its closing boundary"},
		{"too large", "", big.String(), bigCT, 413, "limit of 1048576 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, b := postAdd(t, srv.URL, tc.query, strings.NewReader(tc.body), tc.contentType)
			if code != tc.want {
				t.Fatalf("status = %d (%s), want %d", code, b, tc.want)
			}
			var ke kuboError
			if err := json.Unmarshal(b, &ke); err != nil || ke.Type != "error" || ke.Code != 1 {
				t.Fatalf("body %s is not kubo's client error JSON", b)
			}
			if !strings.Contains(ke.Message, tc.says) {
				t.Errorf("message %q does not say %q", ke.Message, tc.says)
			}
		})
	}
	ents, err := os.ReadDir(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("store holds %d entries after rejected adds, want 0: %s", len(ents), ents[0].Name())
	}
}

func TestParseGatewayPath(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"/ipfs/" + helloCID, helloCID, true},
		{"/ipfs/" + helloCID + "/", "", false},
		{"/ipfs/" + helloCID + "/a", "", false},
		{"/ipfs/", "", false},
		{"/ipns/" + helloCID, "", false},
		{"ipfs/" + helloCID, "", false},
		{"/ipfs/../" + helloCID, "", false},
	}
	for _, tc := range tests {
		got, err := parseGatewayPath(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseGatewayPath(%q) = %q, %v; want %q ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
