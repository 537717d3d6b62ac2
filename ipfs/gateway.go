package ipfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/rs/zerolog"
)

// DefaultMaxUploadBytes is the default limit on the body of one add request (256 MiB).
const DefaultMaxUploadBytes = 256 << 20

// Paths served by the gateway handler.
const (
	gatewayPrefix = "/ipfs/"
	addPath       = "/api/v0/add"
)

// GatewayOption configures NewGatewayHandler.
type GatewayOption func(*gatewayConfig)

type gatewayConfig struct {
	maxUpload int64
	log       zerolog.Logger
}

// WithMaxUploadBytes limits the whole body of one add request to n bytes (multipart
// framing included); a larger request gets 413. n <= 0 removes the limit.
// Default: DefaultMaxUploadBytes.
func WithMaxUploadBytes(n int64) GatewayOption {
	return func(c *gatewayConfig) { c.maxUpload = n }
}

// WithLogger sets the logger for server-side failures (default: none).
func WithLogger(l zerolog.Logger) GatewayOption {
	return func(c *gatewayConfig) { c.log = l }
}

// NewGatewayHandler serves the Store over HTTP, as the localnet's IPFS node:
//
//   - GET/HEAD /ipfs/<cid>: a read-only path gateway for whole files. The plain bytes, with
//     Content-Length, ETag "<cid>", X-Ipfs-Path /ipfs/<cid>, Range and If-None-Match
//     support; or, with ?format=car or Accept: application/vnd.ipld.car, the trustless
//     CAR form (a CARv1 of the file's UnixFS DAG rebuilt as it is sent, root <cid>,
//     blocks leaves first: "order=unk; dups=n"). 404 for a CID not in the store, 400 for
//     a malformed CID, a path inside a CID or another ?format, 405 for other methods.
//   - POST /api/v0/add: kubo's RPC add. A multipart/form-data body of one or more file
//     parts, streamed into the store (never held whole) and committed only once the body
//     has been read to its closing boundary; answers one JSON line per file,
//     {"Name":"…","Hash":"Qm…","Size":"<cumulative DAG size in bytes>"}, as kubo does.
//     Query arguments that would change the CID away from CIDv0 defaults (cid-version=1,
//     raw-leaves, trickle, another chunker or hash, inline, wrap-with-directory) are
//     refused with 400; pin is accepted and meaningless (the store keeps everything);
//     only-hash=true computes without storing. Errors use kubo's JSON error shape
//     {"Message":…,"Code":…,"Type":"error"}; 413 when the body exceeds the limit.
func NewGatewayHandler(s *Store, opts ...GatewayOption) http.Handler {
	cfg := gatewayConfig{maxUpload: DefaultMaxUploadBytes, log: zerolog.Nop()}
	for _, o := range opts {
		o(&cfg)
	}
	return &gateway{store: s, cfg: cfg}
}

type gateway struct {
	store *Store
	cfg   gatewayConfig
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == addPath:
		g.serveAdd(w, r)
	case strings.HasPrefix(p, gatewayPrefix):
		g.serveCID(w, r)
	default:
		http.Error(w, "404 page not found", http.StatusNotFound)
	}
}

// parseGatewayPath extracts the CID from a gateway path "/ipfs/<cid>". Paths inside a CID
// ("/ipfs/<cid>/x") are refused: the store holds files, not directories.
func parseGatewayPath(p string) (string, error) {
	rest, ok := strings.CutPrefix(p, gatewayPrefix)
	if !ok {
		return "", fmt.Errorf("path %s does not start with %s", quoteCID(p), gatewayPrefix)
	}
	if c, sub, found := strings.Cut(rest, "/"); found {
		return "", fmt.Errorf("path %s names %s inside a CID: only whole files are served", quoteCID(p), quoteCID(sub))
	} else if err := checkCID(c); err != nil {
		return "", err
	}
	return rest, nil
}

func (g *gateway) serveCID(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: the gateway is read-only", http.StatusMethodNotAllowed)
		return
	}
	c, err := parseGatewayPath(r.URL.Path)
	if err != nil {
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	car, err := wantsCAR(r)
	if err != nil {
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	f, _, err := g.store.open(c)
	if errors.Is(err, ErrNotFound) {
		http.Error(w, "not found: "+c, http.StatusNotFound)
		return
	}
	if err != nil {
		g.cfg.log.Error().Err(err).Str("cid", c).Msg("gateway: open")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	h := w.Header()
	h.Set("X-Ipfs-Path", gatewayPrefix+c)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "public, max-age=29030400, immutable")
	h.Add("Vary", "Accept")
	if car {
		g.serveCAR(w, r, c, f)
		return
	}
	h.Set("Etag", `"`+c+`"`)
	h.Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, f)
}

// wantsCAR says whether a gateway request asks for the CAR form: ?format=car, or an
// Accept header naming application/vnd.ipld.car (without ?format). Other formats are
// refused (the store serves whole files only).
func wantsCAR(r *http.Request) (bool, error) {
	switch f := r.URL.Query().Get("format"); f {
	case "car":
		return true, nil
	case "":
	default:
		return false, fmt.Errorf("format %s is not served: only the plain file or format=car", quoteCID(f))
	}
	for _, a := range r.Header.Values("Accept") {
		for _, part := range strings.Split(a, ",") {
			if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == carMediaType {
				return true, nil
			}
		}
	}
	return false, nil
}

// serveCAR answers the CAR form of the file f whose CID is c: a CARv1 with root c and the
// file's UnixFS blocks, rebuilt from the file as they are sent (leaves first).
func (g *gateway) serveCAR(w http.ResponseWriter, r *http.Request, c string, f io.Reader) {
	root, err := cid.Decode(c)
	if err != nil { // parseGatewayPath validated it
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	h := w.Header()
	h.Set("Content-Type", carContentType)
	h.Set("Etag", `"`+c+`.car"`)
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	built, err := writeCAR(r.Context(), w, root, f)
	switch {
	case err != nil:
		g.cfg.log.Warn().Err(err).Str("cid", c).Msg("gateway: CAR stream stopped")
	case !built.Equals(root):
		g.cfg.log.Error().Str("cid", c).Str("built", built.String()).Msg("gateway: stored file does not hash to its CID; CAR sent without root block")
	}
}

// addEvent is one line of kubo's /api/v0/add answer.
type addEvent struct {
	Name string
	Hash string `json:",omitempty"`
	Size string `json:",omitempty"`
}

// kuboError is kubo's RPC error body; Code 0 is a server error, 1 a client error.
type kuboError struct {
	Message string
	Code    int
	Type    string
}

// addArgs are the add query arguments the handler honours.
type addArgs struct {
	onlyHash bool
}

// parseAddArgs checks kubo add query arguments: those that would change the CID away
// from the CIDv0 defaults are refused.
func parseAddArgs(q url.Values) (addArgs, error) {
	var a addArgs
	boolArg := func(name string) (bool, error) {
		v := q.Get(name)
		if v == "" {
			return false, nil
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("argument %s=%q is not a boolean", name, v)
		}
		return b, nil
	}
	if v := q.Get("cid-version"); v != "" && v != "0" {
		return a, fmt.Errorf("argument cid-version=%q: this node only makes CIDv0", v)
	}
	if v := q.Get("chunker"); v != "" && v != "size-262144" && v != "default" {
		return a, fmt.Errorf("argument chunker=%q: this node only chunks size-262144", v)
	}
	if v := q.Get("hash"); v != "" && v != "sha2-256" {
		return a, fmt.Errorf("argument hash=%q: this node only hashes sha2-256", v)
	}
	for _, name := range []string{"raw-leaves", "trickle", "inline", "wrap-with-directory", "nocopy",
		"preserve-mode", "preserve-mtime"} {
		b, err := boolArg(name)
		if err != nil {
			return a, err
		}
		if b {
			return a, fmt.Errorf("argument %s=true is not supported: it changes the CID", name)
		}
	}
	for _, name := range []string{"mode", "mtime", "max-file-links"} {
		if q.Has(name) {
			return a, fmt.Errorf("argument %s is not supported: it changes the CID", name)
		}
	}
	if _, err := boolArg("pin"); err != nil {
		return a, err
	}
	var err error
	if a.onlyHash, err = boolArg("only-hash"); err != nil {
		return a, err
	}
	return a, nil
}

// clientReadError marks a failure to read the request body (the client's fault) apart from
// a failure of the store (the server's).
type clientReadError struct{ err error }

func (e *clientReadError) Error() string { return "reading request body: " + e.err.Error() }
func (e *clientReadError) Unwrap() error { return e.err }

// bodyReader tags every non-EOF read error as a clientReadError.
type bodyReader struct{ r io.Reader }

func (b bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = &clientReadError{err: err}
	}
	return n, err
}

func (g *gateway) serveAdd(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeKuboError(w, http.StatusMethodNotAllowed, 1, "method "+r.Method+" not allowed: use POST")
		return
	}
	args, err := parseAddArgs(r.URL.Query())
	if err != nil {
		writeKuboError(w, http.StatusBadRequest, 1, err.Error())
		return
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		writeKuboError(w, http.StatusBadRequest, 1, "request body must be multipart/form-data with a boundary")
		return
	}
	var body io.Reader = r.Body
	if g.cfg.maxUpload > 0 {
		body = http.MaxBytesReader(w, r.Body, g.cfg.maxUpload)
	}
	events, err := g.addParts(multipart.NewReader(bodyReader{r: body}, params["boundary"]), args)
	if err != nil {
		var tooBig *http.MaxBytesError
		var cre *clientReadError
		switch {
		case errors.As(err, &tooBig):
			writeKuboError(w, http.StatusRequestEntityTooLarge, 1,
				fmt.Sprintf("request body exceeds the limit of %d bytes", tooBig.Limit))
		case errors.As(err, &cre), errors.Is(err, errBadPart):
			writeKuboError(w, http.StatusBadRequest, 1, err.Error())
		default:
			g.cfg.log.Error().Err(err).Msg("add: store")
			writeKuboError(w, http.StatusInternalServerError, 0, "internal error storing content")
		}
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Chunked-Output", "1")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	for _, ev := range events {
		if err := enc.Encode(ev); err != nil {
			return // client gone
		}
	}
}

// errBadPart classifies a multipart request that is well-formed but not a file upload.
var errBadPart = errors.New("bad multipart part")

// addParts stores (or, with only-hash, hashes) every file part of mr in order. Parts are
// staged and only committed to the store once the whole multipart body has been read to
// its closing boundary, so a truncated request leaves nothing behind.
func (g *gateway) addParts(mr *multipart.Reader, args addArgs) ([]addEvent, error) {
	var (
		events []addEvent
		staged []*staged
	)
	defer func() {
		for _, st := range staged {
			st.abort() // no-op for committed ones
		}
	}()
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			var cre *clientReadError
			switch {
			case errors.As(err, &cre):
			case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
				err = &clientReadError{err: fmt.Errorf("multipart body ends before its closing boundary: %w", err)}
			default:
				err = &clientReadError{err: err} // malformed framing
			}
			return nil, err
		}
		ev, st, err := g.addPart(part, args)
		_ = part.Close()
		if st != nil {
			staged = append(staged, st)
		}
		if err != nil {
			return nil, err
		}
		events = append(events, ev)
	}
	if len(events) == 0 {
		return nil, fmt.Errorf("%w: no file part in the request", errBadPart)
	}
	for _, st := range staged {
		if err := st.commit(); err != nil {
			return nil, err
		}
	}
	return events, nil
}

// addPart stages (or only hashes) one file part; name comes from its Content-Disposition
// filename, unescaped and cleaned as kubo does, and is only echoed back, never used as a
// path.
func (g *gateway) addPart(part *multipart.Part, args addArgs) (addEvent, *staged, error) {
	if ct := part.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil {
			return addEvent{}, nil, fmt.Errorf("%w: part Content-Type %q: %v", errBadPart, ct, err)
		}
		switch {
		case mt == "application/x-directory" || strings.HasPrefix(mt, "multipart/"):
			return addEvent{}, nil, fmt.Errorf("%w: directories are not supported, add files one by one", errBadPart)
		case mt == "application/symlink":
			return addEvent{}, nil, fmt.Errorf("%w: symlinks are not supported", errBadPart)
		}
	}
	name := partFileName(part)
	content := bodyReader{r: part} // a broken part is the client's fault
	var (
		c    string
		size uint64
		st   *staged
	)
	if args.onlyHash {
		nd, _, err := computeNode(content)
		if err != nil {
			return addEvent{}, nil, err
		}
		c, size = nd.Cid().String(), dagSize(nd)
	} else {
		var err error
		if st, err = g.store.stage(content); err != nil {
			return addEvent{}, nil, err
		}
		c, size = st.cid, st.dagSize
	}
	if name == "" {
		name = c
	}
	return addEvent{Name: name, Hash: c, Size: strconv.FormatUint(size, 10)}, st, nil
}

// partFileName is the part's filename as kubo reads it: query-unescaped (kept raw when
// that fails), cleaned, without the leading slash.
func partFileName(part *multipart.Part) string {
	_, params, err := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
	if err != nil {
		return ""
	}
	f := params["filename"]
	if un, err := url.QueryUnescape(f); err == nil {
		f = un
	}
	if f == "" {
		return ""
	}
	return strings.TrimPrefix(path.Clean("/"+f), "/")
}

// writeKuboError answers with kubo's JSON error body.
func writeKuboError(w http.ResponseWriter, status, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(kuboError{Message: msg, Code: code, Type: "error"})
}
