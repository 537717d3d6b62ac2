package ipfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	cidpkg "github.com/ipfs/go-cid"
	"github.com/rs/zerolog"
)

// DefaultFetchMaxBytes is the limit Fetcher uses when MaxBytes is not set (16 MiB).
const DefaultFetchMaxBytes = 16 << 20

// ErrNoGateways is returned (wrapped) by Fetch when the Fetcher has no gateway.
var ErrNoGateways = errors.New("no IPFS gateways configured")

// FetchForm is how content is asked of a gateway.
type FetchForm string

const (
	// FormAuto asks for the CAR form and accepts the plain form when the gateway does
	// not serve CAR (it answers 400, 406, 415 or 501 to the CAR request, which is then
	// repeated plain, or it answers the plain bytes with another Content-Type).
	FormAuto FetchForm = ""
	// FormCAR is the trustless gateway form (GET /ipfs/<cid>?format=car, Accept:
	// application/vnd.ipld.car): every block is checked against its CID and the UnixFS
	// DAG is walked from the root.
	FormCAR FetchForm = "car"
	// FormPlain is the path gateway form (GET /ipfs/<cid>): the whole file, whose CIDv0
	// is recomputed with kubo's add defaults. Content added with other settings (CIDv1,
	// another chunker) cannot be verified this way.
	FormPlain FetchForm = "plain"
)

// Fetcher fetches content by CIDv0 from HTTP gateways and verifies it: the bytes served
// must be the content of the CID asked for, or they are rejected and the next gateway is
// tried.
type Fetcher struct {
	// Gateways are base URLs ("https://ipfs.io"), tried in order; a request goes to
	// <gateway>/ipfs/<cid>. See ParseGatewayList.
	Gateways []string
	// Client makes the requests; nil means http.DefaultClient.
	Client *http.Client
	// MaxBytes is the largest content accepted, in bytes; <= 0 means DefaultFetchMaxBytes.
	// A CAR answer may be a little larger (its framing): see carLimit.
	MaxBytes int64
	// PerGatewayTimeout bounds one gateway's requests, bodies included (a CAR request and
	// its plain fallback together); 0 means only ctx.
	PerGatewayTimeout time.Duration
	// Form is how each gateway is asked: FormAuto (the zero value), FormCAR or FormPlain.
	Form FetchForm
	// Log, when set, gets one event per gateway skipped (warn; error for wrong bytes).
	Log *zerolog.Logger
}

// GatewayError is why one gateway did not serve the content.
type GatewayError struct {
	Gateway string    // the gateway's base URL (credentials and query removed)
	Form    FetchForm // the form of the last request made to it
	Err     error     // the cause: *MismatchError, *TooLargeError, *HTTPStatusError, ErrBadCAR, transport, deadline
}

func (e *GatewayError) Error() string {
	return fmt.Sprintf("gateway %s (%s): %v", e.Gateway, e.Form, e.Err)
}

func (e *GatewayError) Unwrap() error { return e.Err }

// FetchError is Fetch's error when no gateway served the content: one entry per gateway
// asked, in order. errors.As finds the typed causes through it, and errors.Is(err,
// ErrNotFound) holds when a gateway answered 404.
type FetchError struct {
	CID      string          // the CID requested
	Gateways []*GatewayError // each gateway's failure, in the order asked
}

func (e *FetchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ipfs: fetch %s: no gateway served it", e.CID)
	for i, g := range e.Gateways {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(g.Error())
	}
	return b.String()
}

// Unwrap returns each gateway's *GatewayError.
func (e *FetchError) Unwrap() []error {
	out := make([]error, len(e.Gateways))
	for i, g := range e.Gateways {
		out[i] = g
	}
	return out
}

// Lying returns the gateways that served wrong bytes (a *MismatchError).
func (e *FetchError) Lying() []string {
	var out []string
	for _, g := range e.Gateways {
		var mm *MismatchError
		if errors.As(g.Err, &mm) {
			out = append(out, g.Gateway)
		}
	}
	return out
}

// Fetch returns the content of cid (a CIDv0) from the first gateway that serves it
// verified (see FetchForm). A gateway's failure (transport error, non-200 answer as
// *HTTPStatusError, content over MaxBytes as *TooLargeError, wrong bytes as
// *MismatchError, a malformed or incomplete CAR as ErrBadCAR, its deadline) is logged and
// moves on to the next gateway. When all fail, the error is a *FetchError listing each
// gateway's failure. A malformed cid wraps ErrInvalidCID and no gateway is asked.
// Cancelling ctx stops at once. The content is held in memory: MaxBytes bounds it.
func (f *Fetcher) Fetch(ctx context.Context, cid string) ([]byte, error) {
	if err := checkCID(cid); err != nil {
		return nil, fmt.Errorf("ipfs: fetch: %w", err)
	}
	if len(f.Gateways) == 0 {
		return nil, fmt.Errorf("ipfs: fetch %s: %w", cid, ErrNoGateways)
	}
	switch f.Form {
	case FormAuto, FormCAR, FormPlain:
	default:
		return nil, fmt.Errorf("ipfs: fetch %s: unknown form %q", cid, f.Form)
	}
	limit := f.MaxBytes
	if limit <= 0 {
		limit = DefaultFetchMaxBytes
	}
	client := f.Client
	if client == nil {
		client = http.DefaultClient
	}
	fe := &FetchError{CID: cid}
	for _, gw := range f.Gateways {
		if err := ctx.Err(); err != nil {
			fe.Gateways = append(fe.Gateways, &GatewayError{Gateway: redactURL(gw), Form: f.Form, Err: err})
			break
		}
		b, gerr := f.fetchOne(ctx, client, gw, cid, limit)
		if gerr == nil {
			return b, nil
		}
		f.logSkip(cid, gerr)
		fe.Gateways = append(fe.Gateways, gerr)
	}
	return nil, fe
}

// logSkip reports a gateway skipped: wrong bytes at error level, anything else at warn.
func (f *Fetcher) logSkip(cid string, g *GatewayError) {
	if f.Log == nil {
		return
	}
	var mm *MismatchError
	ev := f.Log.Warn()
	msg := "ipfs gateway skipped"
	if errors.As(g.Err, &mm) {
		ev, msg = f.Log.Error(), "ipfs gateway served wrong bytes; skipped"
	}
	ev.Str("gateway", g.Gateway).Str("form", string(g.Form)).Str("cid", cid).Err(g.Err).Msg(msg)
}

// fetchOne fetches and verifies cid from one gateway, in the Fetcher's form.
func (f *Fetcher) fetchOne(ctx context.Context, client *http.Client, gw, cid string, limit int64) ([]byte, *GatewayError) {
	shown := redactURL(gw)
	if f.PerGatewayTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.PerGatewayTimeout)
		defer cancel()
	}
	form := f.Form
	if form == FormAuto || form == FormCAR {
		b, err := f.fetchCAR(ctx, client, gw, cid, limit)
		var unsupported *carUnsupportedError
		switch {
		case err == nil:
			return b, nil
		case form == FormAuto && errors.As(err, &unsupported):
			if unsupported.body != nil {
				b, err := verifyPlain(unsupported.body, shown, cid, limit)
				unsupported.body.Close()
				if err != nil {
					return nil, &GatewayError{Gateway: shown, Form: FormPlain, Err: err}
				}
				return b, nil
			}
			// The gateway refused the CAR request: ask again, plain.
		default:
			if errors.As(err, &unsupported) && unsupported.body != nil {
				unsupported.body.Close()
			}
			return nil, &GatewayError{Gateway: shown, Form: FormCAR, Err: err}
		}
	}
	b, err := f.fetchPlain(ctx, client, gw, cid, limit)
	if err != nil {
		return nil, &GatewayError{Gateway: shown, Form: FormPlain, Err: err}
	}
	return b, nil
}

// carUnsupportedError says a gateway does not serve the CAR form: it refused the request
// (body nil), or answered 200 with something else than a CAR (body is that answer's body,
// to be read as the plain form and closed by the caller).
type carUnsupportedError struct {
	status int
	ctype  string
	body   io.ReadCloser
}

func (e *carUnsupportedError) Error() string {
	if e.body != nil {
		return fmt.Sprintf("answered a CAR request with Content-Type %q", e.ctype)
	}
	return fmt.Sprintf("refused the CAR request with HTTP %d", e.status)
}

// fetchCAR asks gw for the CAR form of cid and verifies it.
func (f *Fetcher) fetchCAR(ctx context.Context, client *http.Client, gw, cid string, limit int64) ([]byte, error) {
	shown := redactURL(gw)
	root, err := cidpkg.Decode(cid)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidCID, err)
	}
	target := strings.TrimRight(gw, "/") + gatewayPrefix + cid + "?format=car"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, fmt.Errorf("gateway %s: bad URL", shown)
	}
	req.Header.Set("Accept", carAccept)
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("gateway %s: %w", shown, unwrapURLError(err))
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusBadRequest, http.StatusNotAcceptable, http.StatusUnsupportedMediaType, http.StatusNotImplemented:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, &carUnsupportedError{status: resp.StatusCode}
	default:
		defer resp.Body.Close()
		return nil, &HTTPStatusError{URL: redactURL(target), StatusCode: resp.StatusCode, Message: bodySnippet(resp.Body)}
	}
	ct := resp.Header.Get("Content-Type")
	if mt, _, _ := mime.ParseMediaType(ct); mt != carMediaType {
		return nil, &carUnsupportedError{status: resp.StatusCode, ctype: shortUntrusted(ct), body: resp.Body}
	}
	defer resp.Body.Close()
	if resp.ContentLength > carLimit(limit) {
		return nil, &TooLargeError{Gateway: shown, CID: cid, Limit: limit}
	}
	return readCAR(ctx, resp.Body, root, limit, shown)
}

// fetchPlain asks gw for the plain form of cid and verifies it.
func (f *Fetcher) fetchPlain(ctx context.Context, client *http.Client, gw, cid string, limit int64) ([]byte, error) {
	shown := redactURL(gw)
	target := strings.TrimRight(gw, "/") + gatewayPrefix + cid
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, fmt.Errorf("gateway %s: bad URL", shown)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("gateway %s: %w", shown, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &HTTPStatusError{URL: redactURL(target), StatusCode: resp.StatusCode, Message: bodySnippet(resp.Body)}
	}
	if resp.ContentLength > limit {
		return nil, &TooLargeError{Gateway: shown, CID: cid, Limit: limit}
	}
	return verifyPlain(resp.Body, shown, cid, limit)
}

// verifyPlain reads at most limit bytes of a plain answer and checks their CIDv0.
func verifyPlain(body io.Reader, shown, cid string, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("gateway %s: reading body after %d bytes: %w", shown, len(b), err)
	}
	if int64(len(b)) > limit {
		return nil, &TooLargeError{Gateway: shown, CID: cid, Limit: limit}
	}
	got, _, err := computeCIDString(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("gateway %s: %w", shown, err)
	}
	if got != cid {
		return nil, &MismatchError{Gateway: shown, Want: cid, Got: got, Form: FormPlain}
	}
	return b, nil
}

// unwrapURLError drops *url.Error's wrapper, whose message repeats the full URL (the
// caller already names the gateway), keeping the cause for errors.Is.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// bodySnippet reads the start of an error body for a message: at most 256 bytes, control
// characters replaced, kubo's JSON error "Message" preferred.
func bodySnippet(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 4096))
	if ke, ok := parseKuboError(b); ok {
		b = []byte(ke)
	}
	s := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(string(b), "?"))
	s = strings.TrimSpace(s)
	if len(s) > 256 {
		s = strings.ToValidUTF8(s[:256], "") + "…"
	}
	return s
}

// ParseGatewayList parses a comma-separated list of gateway base URLs (a config value such
// as "https://ipfs.io, http://127.0.0.1:8080"). Each entry must be an absolute http or
// https URL with a host and no credentials, query or fragment, and must not end in
// "/ipfs" (the Fetcher appends /ipfs/<cid>); trailing slashes are dropped. A blank string
// yields an empty list. The error names the first bad entry by position and says why.
func ParseGatewayList(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	entries := strings.Split(s, ",")
	out := make([]string, 0, len(entries))
	for i, e := range entries {
		e = strings.TrimSpace(e)
		gw, err := parseGatewayURL(e)
		if err != nil {
			return nil, fmt.Errorf("ipfs: gateway list entry %d (%s): %w", i+1, quoteCID(redactURL(e)), err)
		}
		out = append(out, gw)
	}
	return out, nil
}

// parseGatewayURL checks one gateway base URL and returns it without trailing slashes.
func parseGatewayURL(e string) (string, error) {
	if e == "" {
		return "", errors.New("empty entry")
	}
	u, err := url.Parse(e)
	if err != nil {
		return "", errors.New("not a URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("scheme %q, want http or https", u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return "", errors.New("no host")
	case u.User != nil:
		return "", errors.New("credentials in the URL are not allowed")
	case u.RawQuery != "" || u.ForceQuery:
		return "", errors.New("a query is not allowed")
	case u.Fragment != "" || strings.Contains(e, "#"):
		return "", errors.New("a fragment is not allowed")
	}
	p := strings.TrimRight(u.Path, "/")
	if p == "/ipfs" || strings.HasSuffix(p, "/ipfs") {
		return "", errors.New("give the gateway's base URL, without /ipfs")
	}
	u.Path = p
	u.RawPath = ""
	return u.String(), nil
}
