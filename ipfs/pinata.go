package ipfs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"unicode"

	"github.com/rs/zerolog"
)

// DefaultPinataURL is the Pinata API's base URL.
const DefaultPinataURL = "https://api.pinata.cloud"

// Pinata API paths (relative to the base URL).
const (
	pinFilePath = "/pinning/pinFileToIPFS"
	pinJSONPath = "/pinning/pinJSONToIPFS"
)

// maxPinataAnswerBytes bounds how much of a Pinata answer is read.
const maxPinataAnswerBytes = 64 << 10

// Secret is a credential (a Pinata JWT). It prints as "[redacted]" with every fmt verb,
// in JSON and as text, so that it cannot reach a log or an error by accident; Reveal
// returns the value, for the Authorization header only.
type Secret string

const redacted = "[redacted]"

func (Secret) String() string               { return redacted }
func (Secret) GoString() string             { return `"` + redacted + `"` }
func (Secret) Format(f fmt.State, _ rune)   { io.WriteString(f, redacted) }
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
func (s Secret) Reveal() string             { return string(s) }
func (s Secret) bearer() string             { return "Bearer " + string(s) }
func (s Secret) check() error               { return checkSecret(string(s)) }

// redact replaces every occurrence of the secret in msg (an untrusted server message).
func (s Secret) redact(msg string) string {
	if s == "" {
		return msg
	}
	return strings.ReplaceAll(msg, string(s), redacted)
}

// checkSecret refuses a JWT that cannot be sent in a header.
func checkSecret(s string) error {
	if s == "" {
		return errors.New("ipfs: pinata: no JWT")
	}
	for _, r := range s {
		if r > unicode.MaxASCII || unicode.IsControl(r) || unicode.IsSpace(r) {
			return errors.New("ipfs: pinata: the JWT holds a space, control or non-ASCII character")
		}
	}
	return nil
}

// ErrPinataAuth classifies Pinata's 401 and 403 answers: the JWT is missing, wrong,
// expired or lacks the pinning scopes. errors.Is(err, ErrPinataAuth) holds for them.
var ErrPinataAuth = errors.New("pinata refused the JWT")

// Pinata pins content on Pinata (https://docs.pinata.cloud): pinFileToIPFS (multipart,
// streamed through a pipe, never held whole) and pinJSONToIPFS, with cidVersion 0, the
// JWT as "Authorization: Bearer <JWT>". Pinata builds CIDv0s with kubo's add defaults, so
// the CIDv0 computed locally from the same bytes must equal its IpfsHash, else the upload
// fails with *UploadMismatchError. The JWT never appears in errors or logs.
type Pinata struct {
	// APIURL is the API's base URL; "" means DefaultPinataURL.
	APIURL string
	// JWT is the API key's JWT (config PINATA_JWT).
	JWT Secret
	// Client makes the requests; nil means http.DefaultClient. Bound the time with ctx.
	Client *http.Client
	// Retry is how AddBytes, AddFile and AddJSON retry transient failures; the zero value
	// means DefaultRetry.
	Retry Retry
	// Log, when set, gets one warn event per retried attempt.
	Log *zerolog.Logger
}

// endpoint is the URL of the API path p.
func (p *Pinata) endpoint(path string) (string, error) {
	base := strings.TrimRight(strings.TrimSpace(p.APIURL), "/")
	if base == "" {
		base = DefaultPinataURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("ipfs: pinata: API URL %s must be an http(s) base URL without credentials or query", quoteCID(redactURL(p.APIURL)))
	}
	if err := p.JWT.check(); err != nil {
		return "", err
	}
	return base + path, nil
}

// pinataOptions is the "pinataOptions" every pin sends: CIDv0, no wrapping directory.
const pinataOptions = `{"cidVersion":0,"wrapWithDirectory":false}`

// Add pins the bytes of r as a file named name with pinFileToIPFS, streaming, and returns
// their CIDv0 and length in bytes. Errors: *HTTPStatusError for a non-200 answer
// (errors.Is(err, ErrPinataAuth) for 401/403), *UploadMismatchError when Pinata's
// IpfsHash is not the CIDv0 computed locally from the same bytes, a wrapped error from r,
// the transport, or a malformed answer. One attempt (see AddFile for retries).
func (p *Pinata) Add(ctx context.Context, name string, r io.Reader) (string, int64, error) {
	endpoint, err := p.endpoint(pinFilePath)
	if err != nil {
		return "", 0, err
	}
	shown := redactURL(endpoint)
	local, sent, remote, err := streamAdd(ctx, name, r,
		func(mw *multipart.Writer, name string, content io.Reader) error {
			meta, _ := json.Marshal(struct {
				Name string `json:"name"`
			}{name})
			if err := mw.WriteField("pinataOptions", pinataOptions); err != nil {
				return err
			}
			if err := mw.WriteField("pinataMetadata", string(meta)); err != nil {
				return err
			}
			return writeFilePart(mw, name, content)
		},
		func(body io.Reader, contentType string) (string, error) {
			return p.post(ctx, endpoint, body, contentType)
		}, shown)
	if err != nil {
		return "", sent, err
	}
	if remote != local {
		return "", sent, &UploadMismatchError{API: shown, Local: local, Remote: shortUntrusted(remote)}
	}
	return local, sent, nil
}

// AddBytes is Add of b, retried as Retry says when the failure is transient.
func (p *Pinata) AddBytes(ctx context.Context, name string, b []byte) (string, int64, error) {
	return addBytes(ctx, p.Retry, p.Log, name, b, p.Add)
}

// AddFile computes the CIDv0 of the file at path, then pins it under its base name with
// pinFileToIPFS (streamed from the file), retrying transient failures as Retry says, and
// returns the CID and the file's length in bytes. Besides Add's errors, it fails with
// ErrChangedDuringUpload when the bytes uploaded are not the bytes first hashed.
func (p *Pinata) AddFile(ctx context.Context, path string) (string, int64, error) {
	return addFile(ctx, p.Retry, p.Log, path, p.Add)
}

// AddJSON pins the JSON document doc with pinJSONToIPFS under the name name, and returns
// its CIDv0 and the length in bytes of the form pinned. Pinata stores the document
// re-serialized compactly (JavaScript's JSON.stringify), so doc is sent compacted and the
// CID is computed over the compacted bytes; a document whose compact form JSON.stringify
// would write differently (escapes such as \u003c, numbers such as 1.0 or 1e3) ends in
// *UploadMismatchError. A doc that is not JSON fails before anything is sent. Transient
// failures are retried as Retry says.
func (p *Pinata) AddJSON(ctx context.Context, name string, doc []byte) (string, int64, error) {
	var compact bytes.Buffer
	if err := json.Compact(&compact, doc); err != nil {
		return "", 0, fmt.Errorf("ipfs: pinata: document %s is not JSON: %w", quoteCID(name), err)
	}
	local, n, err := computeCIDString(bytes.NewReader(compact.Bytes()))
	if err != nil {
		return "", 0, err
	}
	endpoint, err := p.endpoint(pinJSONPath)
	if err != nil {
		return "", 0, err
	}
	body, err := json.Marshal(struct {
		Options  json.RawMessage `json:"pinataOptions"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"pinataMetadata"`
		Content json.RawMessage `json:"pinataContent"`
	}{Options: json.RawMessage(pinataOptions), Metadata: struct {
		Name string `json:"name"`
	}{name}, Content: compact.Bytes()})
	if err != nil {
		return "", 0, fmt.Errorf("ipfs: pinata: %w", err)
	}
	shown := redactURL(endpoint)
	err = p.Retry.do(ctx, p.Log, name, func() error {
		remote, err := p.post(ctx, endpoint, bytes.NewReader(body), "application/json")
		if err != nil {
			return err
		}
		if remote != local {
			return &UploadMismatchError{API: shown, Local: local, Remote: shortUntrusted(remote)}
		}
		return nil
	})
	if err != nil {
		return "", 0, err
	}
	return local, n, nil
}

// post sends one Pinata request and returns the IpfsHash answered.
func (p *Pinata) post(ctx context.Context, endpoint string, body io.Reader, contentType string) (string, error) {
	shown := redactURL(endpoint)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, body)
	if err != nil {
		return "", fmt.Errorf("ipfs: pinata: %w", err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", p.JWT.bearer())
	client := p.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		// The transport's errors name the URL, never headers; redact anyway.
		return "", &transportError{err: fmt.Errorf("ipfs: pinata %s: %s", shown, p.JWT.redact(unwrapURLError(err).Error()))}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg := p.JWT.redact(pinataErrorMessage(resp.Body))
		se := &HTTPStatusError{URL: shown, StatusCode: resp.StatusCode, Message: msg}
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			return "", fmt.Errorf("%w: %w", ErrPinataAuth, se)
		}
		return "", se
	}
	remote, err := parsePinataAnswer(io.LimitReader(resp.Body, maxPinataAnswerBytes))
	if err != nil {
		return "", fmt.Errorf("ipfs: pinata %s: %s", shown, p.JWT.redact(err.Error()))
	}
	return p.JWT.redact(remote), nil // it ends up in a mismatch error when it is not a CID
}

// parsePinataAnswer reads Pinata's pin answer, {"IpfsHash":"Qm…","PinSize":…,
// "Timestamp":"…"}, and returns IpfsHash; it fails when the answer is not such an object
// or has no IpfsHash.
func parsePinataAnswer(r io.Reader) (string, error) {
	var a struct {
		IpfsHash string `json:"IpfsHash"`
		PinSize  int64  `json:"PinSize"`
	}
	dec := json.NewDecoder(r)
	if err := dec.Decode(&a); err != nil {
		return "", fmt.Errorf("answer is not a JSON pin object: %w", err)
	}
	if a.IpfsHash == "" {
		return "", errors.New("answer has no IpfsHash")
	}
	return a.IpfsHash, nil
}

// pinataErrorMessage extracts the message of a Pinata error body ({"error":"…"} or
// {"error":{"reason":"…","details":"…"}}), falling back to the start of the body.
func pinataErrorMessage(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 4096))
	var e struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && len(e.Error) > 0 {
		var s string
		var obj struct {
			Reason  string `json:"reason"`
			Details string `json:"details"`
		}
		switch {
		case json.Unmarshal(e.Error, &s) == nil && s != "":
			b = []byte(s)
		case json.Unmarshal(e.Error, &obj) == nil && (obj.Reason != "" || obj.Details != ""):
			b = []byte(strings.TrimSpace(obj.Reason + ": " + obj.Details))
		}
	}
	return bodySnippet(bytes.NewReader(b))
}
