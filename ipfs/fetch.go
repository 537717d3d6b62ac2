package ipfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
)

// DefaultFetchMaxBytes is the limit Fetcher uses when MaxBytes is not set (16 MiB).
const DefaultFetchMaxBytes = 16 << 20

// ErrNoGateways is returned (wrapped) by Fetch when the Fetcher has no gateway.
var ErrNoGateways = errors.New("no IPFS gateways configured")

// Fetcher fetches content by CIDv0 from HTTP gateways and verifies it: the bytes served
// must hash to the CID asked for, or they are rejected and the next gateway is tried.
type Fetcher struct {
	// Gateways are base URLs ("https://ipfs.io"), tried in order; a request goes to
	// <gateway>/ipfs/<cid>. See ParseGatewayList.
	Gateways []string
	// Client makes the requests; nil means http.DefaultClient.
	Client *http.Client
	// MaxBytes is the largest content accepted, in bytes; <= 0 means DefaultFetchMaxBytes.
	MaxBytes int64
	// PerGatewayTimeout bounds one gateway's request, body included; 0 means only ctx.
	PerGatewayTimeout time.Duration
}

// Fetch returns the content of cid (a CIDv0) from the first gateway that serves bytes
// whose CID is cid. A gateway's failure (transport error, non-200 answer as
// *HTTPStatusError, content over MaxBytes as *TooLargeError, wrong bytes as
// *MismatchError, its deadline) moves on to the next gateway. When all fail, the error
// joins each gateway's failure (errors.As finds the typed errors; errors.Is(err,
// ErrNotFound) holds when a gateway answered 404). A malformed cid wraps ErrInvalidCID and
// no gateway is asked. Cancelling ctx stops at once.
func (f *Fetcher) Fetch(ctx context.Context, cid string) ([]byte, error) {
	if err := checkCID(cid); err != nil {
		return nil, fmt.Errorf("ipfs: fetch: %w", err)
	}
	if len(f.Gateways) == 0 {
		return nil, fmt.Errorf("ipfs: fetch %s: %w", cid, ErrNoGateways)
	}
	limit := f.MaxBytes
	if limit <= 0 {
		limit = DefaultFetchMaxBytes
	}
	client := f.Client
	if client == nil {
		client = http.DefaultClient
	}
	var errs []error
	for _, gw := range f.Gateways {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		b, err := f.fetchOne(ctx, client, gw, cid, limit)
		if err == nil {
			return b, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("ipfs: fetch %s: no gateway served it: %w", cid, errors.Join(errs...))
}

// fetchOne fetches and verifies cid from one gateway.
func (f *Fetcher) fetchOne(ctx context.Context, client *http.Client, gw, cid string, limit int64) ([]byte, error) {
	shown := redactURL(gw)
	if f.PerGatewayTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.PerGatewayTimeout)
		defer cancel()
	}
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
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
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
		return nil, &MismatchError{Gateway: shown, Want: cid, Got: got}
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
