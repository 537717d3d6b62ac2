package ipfs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/rs/zerolog"
)

// maxAddAnswerBytes bounds how much of an add answer is read (one JSON line per file).
const maxAddAnswerBytes = 1 << 20

// Adder uploads content to IPFS and returns its CIDv0, checked against the CIDv0
// computed locally from the same bytes, and its length in bytes. *Uploader (kubo's RPC
// API) and *Pinata implement it.
type Adder interface {
	// Add uploads r's bytes under the file name name, streaming; it is not retried (r
	// cannot be read twice).
	Add(ctx context.Context, name string, r io.Reader) (string, int64, error)
	// AddBytes uploads b under name, retrying transient failures.
	AddBytes(ctx context.Context, name string, b []byte) (string, int64, error)
	// AddFile hashes the file at path, then uploads it under its base name, retrying
	// transient failures; memory stays bounded whatever the file's size.
	AddFile(ctx context.Context, path string) (string, int64, error)
}

var (
	_ Adder = (*Uploader)(nil)
	_ Adder = (*Pinata)(nil)
)

// Uploader adds content to an IPFS node through kubo's RPC API
// (POST <APIURL>/api/v0/add?cid-version=0&pin=true, multipart/form-data), which both kubo
// and this package's gateway handler speak. The body is streamed through a pipe, never
// held whole, and the CIDv0 of the bytes sent is computed alongside: an answer with
// another CID fails with *UploadMismatchError.
type Uploader struct {
	// APIURL is the RPC API's base URL, e.g. "http://127.0.0.1:5001" (a trailing "/api/v0"
	// is accepted too).
	APIURL string
	// Client makes the requests; nil means http.DefaultClient. Bound the time with ctx.
	Client *http.Client
	// Retry is how AddBytes and AddFile retry transient failures; the zero value means
	// DefaultRetry.
	Retry Retry
	// Log, when set, gets one warn event per retried attempt.
	Log *zerolog.Logger
}

// addURL is the add endpoint for u.APIURL.
func (u *Uploader) addURL() (string, error) {
	base := strings.TrimRight(strings.TrimSpace(u.APIURL), "/")
	base = strings.TrimSuffix(base, "/api/v0")
	p, err := url.Parse(base)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.RawQuery != "" || p.Fragment != "" {
		return "", fmt.Errorf("ipfs: upload: API URL %s must be an http(s) base URL without query", quoteCID(redactURL(u.APIURL)))
	}
	return base + addPath + "?cid-version=0&pin=true", nil
}

// Add uploads the bytes of r under the file name name and returns their CIDv0 and length
// in bytes (the bytes sent, not kubo's DAG "Size"). Errors: *HTTPStatusError for a
// non-200 answer (kubo's error message included), *UploadMismatchError when the node's
// CID is not the CIDv0 computed locally from the same bytes, a wrapped error from r, the
// transport (ctx's error when cancelled), or a malformed answer. Add returns only after a
// Read of r in progress returns: a reader that can block (a pipe) must be unblocked by
// its owner when ctx is done. Add makes one attempt.
func (u *Uploader) Add(ctx context.Context, name string, r io.Reader) (string, int64, error) {
	endpoint, err := u.addURL()
	if err != nil {
		return "", 0, err
	}
	client := u.Client
	if client == nil {
		client = http.DefaultClient
	}
	shownAPI := redactURL(strings.TrimSpace(u.APIURL))
	local, sent, remote, err := streamAdd(ctx, name, r, writeAddBody,
		func(body io.Reader, contentType string) (string, error) {
			ev, err := u.post(ctx, client, endpoint, body, contentType)
			return ev.Hash, err
		}, shownAPI)
	if err != nil {
		return "", sent, err
	}
	if remote != local {
		return "", sent, &UploadMismatchError{API: shownAPI, Local: local, Remote: shortUntrusted(remote)}
	}
	return local, sent, nil
}

// streamAdd sends r's bytes as the file of a multipart body written by writeBody, through
// a pipe to post (which sends the request and returns the CID the service answered),
// while computing their CIDv0. It returns the local CID, the bytes read from r and the
// remote CID; both goroutines are waited for before it returns.
func streamAdd(ctx context.Context, name string, r io.Reader,
	writeBody func(mw *multipart.Writer, name string, content io.Reader) error,
	post func(body io.Reader, contentType string) (string, error), shownAPI string,
) (local string, sent int64, remote string, err error) {
	// Two pipes: the multipart body to the transport, and a copy of the content to the
	// CID computation.
	bodyR, bodyW := io.Pipe()
	hashR, hashW := io.Pipe()
	mw := multipart.NewWriter(bodyW)

	type hashResult struct {
		cid string
		err error
	}
	hashDone := make(chan hashResult, 1)
	go func() {
		c, _, err := computeCIDString(hashR)
		// Unblock the writer's tee if the computation stopped early.
		hashR.CloseWithError(errHashStopped)
		hashDone <- hashResult{cid: c, err: err}
	}()

	content := &countingReader{r: sourceReader{ctx: ctx, r: r}}
	writeDone := make(chan error, 1)
	go func() {
		err := writeBody(mw, name, io.TeeReader(content, hashW))
		hashW.CloseWithError(err) // nil: EOF for the computation
		bodyW.CloseWithError(err)
		writeDone <- err
	}()

	remote, reqErr := post(bodyR, mw.FormDataContentType())
	// Whatever happened, stop the writer (it may be blocked on a transport that stopped
	// reading) and collect both goroutines.
	bodyR.CloseWithError(errRequestFinished)
	writeErr := <-writeDone
	hash := <-hashDone
	sent = content.n

	var srcErr *sourceError
	switch {
	case errors.As(writeErr, &srcErr):
		return "", sent, "", fmt.Errorf("ipfs: upload %s: reading content: %w", quoteCID(name), srcErr.err)
	case reqErr != nil:
		return "", sent, "", reqErr
	case writeErr != nil:
		return "", sent, "", fmt.Errorf("ipfs: upload %s: %s answered before the whole content was sent (%d bytes sent): %w",
			quoteCID(name), shownAPI, sent, writeErr)
	}
	if hash.err != nil {
		return "", sent, "", fmt.Errorf("ipfs: upload %s: %w", quoteCID(name), hash.err)
	}
	return hash.cid, sent, remote, nil
}

// sourceError marks a failure to read the caller's content, apart from the pipes' errors.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// sourceReader tags the non-EOF errors of the caller's reader as sourceError, and stops
// before the next read once ctx is done.
type sourceReader struct {
	ctx context.Context
	r   io.Reader
}

func (s sourceReader) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, &sourceError{err: err}
	}
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = &sourceError{err: err}
	}
	return n, err
}

// Errors that close Add's pipes under their goroutines once the outcome is known.
var (
	errRequestFinished = errors.New("add request finished")
	errHashStopped     = errors.New("CID computation stopped")
)

// writeAddBody writes one multipart file part named like kubo's client does
// (form-data; name="file"; filename="<query-escaped name>") and closes the writer.
func writeAddBody(mw *multipart.Writer, name string, content io.Reader) error {
	return writeFilePart(mw, name, content)
}

// writeFilePart writes the file part "file" and closes the writer.
func writeFilePart(mw *multipart.Writer, name string, content io.Reader) error {
	h := make(textproto.MIMEHeader)
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="file"; filename="%s"`, url.QueryEscape(name)))
	h.Set("Content-Type", "application/octet-stream")
	part, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	if _, err := io.Copy(part, content); err != nil {
		return err
	}
	return mw.Close()
}

// post sends the add request and parses the answer.
func (u *Uploader) post(ctx context.Context, client *http.Client, endpoint string, body io.Reader, contentType string) (addEvent, error) {
	shown := redactURL(endpoint)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, body)
	if err != nil {
		return addEvent{}, fmt.Errorf("ipfs: upload: %w", err)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := client.Do(req)
	if err != nil {
		return addEvent{}, &transportError{err: fmt.Errorf("ipfs: upload to %s: %w", shown, unwrapURLError(err))}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return addEvent{}, &HTTPStatusError{URL: shown, StatusCode: resp.StatusCode, Message: bodySnippet(resp.Body)}
	}
	ev, err := parseAddResponse(io.LimitReader(resp.Body, maxAddAnswerBytes))
	if err != nil {
		return addEvent{}, fmt.Errorf("ipfs: upload to %s: %w", shown, err)
	}
	// kubo reports an error after a 200 in the X-Stream-Error trailer, set once the body
	// has been read to its end.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAddAnswerBytes))
	if msg := resp.Trailer.Get("X-Stream-Error"); msg != "" {
		return addEvent{}, fmt.Errorf("ipfs: upload to %s: stream error: %s", shown, shortUntrusted(msg))
	}
	return ev, nil
}

// parseAddResponse reads kubo's add answer, one JSON object per line, and returns the last
// event that carries a Hash (progress events, which carry only Bytes, are skipped). It
// fails on a line that is not a JSON object, on an error object, and when no line carries
// a Hash.
func parseAddResponse(r io.Reader) (addEvent, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	var last addEvent
	found := false
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var ev struct {
			Name    string
			Hash    string
			Size    string
			Bytes   int64
			Message string
			Type    string
		}
		if err := json.Unmarshal(b, &ev); err != nil {
			return addEvent{}, fmt.Errorf("answer line %d is not a JSON add event: %w", line, err)
		}
		if ev.Type == "error" {
			return addEvent{}, fmt.Errorf("answer line %d is an error: %s", line, shortUntrusted(ev.Message))
		}
		if ev.Hash == "" {
			continue
		}
		last, found = addEvent{Name: ev.Name, Hash: ev.Hash, Size: ev.Size}, true
	}
	if err := sc.Err(); err != nil {
		return addEvent{}, fmt.Errorf("reading answer: %w", err)
	}
	if !found {
		return addEvent{}, errors.New("answer has no CID (no line with a Hash)")
	}
	return last, nil
}

// parseKuboError extracts the Message of kubo's JSON error body.
func parseKuboError(b []byte) (string, bool) {
	var ke kuboError
	if json.Unmarshal(bytes.TrimSpace(b), &ke) != nil || ke.Type != "error" || ke.Message == "" {
		return "", false
	}
	return ke.Message, true
}

// shortUntrusted cuts an untrusted string from a server for an error message.
func shortUntrusted(s string) string {
	const maxShown = 100
	s = strings.ToValidUTF8(s, "?")
	if len(s) > maxShown {
		return strings.ToValidUTF8(s[:maxShown], "") + "…"
	}
	return s
}

// AddBytes is Add of b, retried as Retry says when the failure is transient.
func (u *Uploader) AddBytes(ctx context.Context, name string, b []byte) (string, int64, error) {
	return addBytes(ctx, u.Retry, u.Log, name, b, u.Add)
}

// AddFile computes the CIDv0 of the file at path, then uploads it under its base name
// (streamed from the file: two passes, bounded memory), and returns the CID and the
// file's length in bytes. Transient failures are retried as Retry says: the CID is known
// beforehand, so a retry is idempotent. Besides Add's errors, it fails with
// ErrChangedDuringUpload when the bytes uploaded are not the bytes first hashed.
func (u *Uploader) AddFile(ctx context.Context, path string) (string, int64, error) {
	return addFile(ctx, u.Retry, u.Log, path, u.Add)
}

// addFunc is an Adder's single-attempt Add.
type addFunc func(ctx context.Context, name string, r io.Reader) (string, int64, error)

// addBytes retries add of b.
func addBytes(ctx context.Context, rp Retry, log *zerolog.Logger, name string, b []byte, add addFunc) (string, int64, error) {
	var (
		c string
		n int64
	)
	err := rp.do(ctx, log, name, func() error {
		var err error
		c, n, err = add(ctx, name, bytes.NewReader(b))
		return err
	})
	if err != nil {
		return "", n, err
	}
	return c, n, nil
}

// addFile hashes the file at path, then retries add of it, checking each answer against
// the first hash.
func addFile(ctx context.Context, rp Retry, log *zerolog.Logger, path string, add addFunc) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("ipfs: upload: %w", err)
	}
	defer f.Close()
	local, n, err := computeCIDString(f)
	if err != nil {
		return "", n, fmt.Errorf("ipfs: upload %s: %w", path, err)
	}
	var sent int64
	err = rp.do(ctx, log, path, func() error {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("ipfs: upload %s: %w", path, err)
		}
		var got string
		var err error
		got, sent, err = add(ctx, filepath.Base(path), f)
		if err != nil {
			return err
		}
		if got != local || sent != n {
			return fmt.Errorf("ipfs: upload %s: first hashed %d bytes as %s, then sent %d bytes as %s: %w",
				path, n, local, sent, got, ErrChangedDuringUpload)
		}
		return nil
	})
	if err != nil {
		return "", sent, err
	}
	return local, n, nil
}
