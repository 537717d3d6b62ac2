package ipfs

import (
	"errors"
	"fmt"
	"net/url"
)

// ErrChangedDuringUpload is returned (wrapped) by Uploader.AddFile when the file's bytes
// changed between computing its CID and uploading it.
var ErrChangedDuringUpload = errors.New("content changed during upload")

// MismatchError says a gateway served bytes that are not the content asked for: the
// gateway is lying or broken, and its bytes were discarded. In the plain form, Got is the
// CIDv0 of the bytes served; in the CAR form, either the CAR's root is not Want (Got is
// that root) or the block Block's bytes hash to Got instead.
type MismatchError struct {
	Gateway string    // the gateway's base URL (credentials and query removed)
	Want    string    // the CID requested
	Got     string    // the CID of the bytes served (see above)
	Form    FetchForm // FormPlain or FormCAR; "" reads as FormPlain
	Block   string    // CAR form: the CID of the block whose bytes do not match it; else ""
}

func (e *MismatchError) Error() string {
	if e.Block != "" {
		return fmt.Sprintf("ipfs: gateway %s served a CAR for %s whose block %s hashes to %s", e.Gateway, e.Want, e.Block, e.Got)
	}
	if e.Form == FormCAR {
		return fmt.Sprintf("ipfs: gateway %s served a CAR whose root is %s, want %s", e.Gateway, e.Got, e.Want)
	}
	return fmt.Sprintf("ipfs: gateway %s served bytes whose CID is %s, want %s", e.Gateway, e.Got, e.Want)
}

// TooLargeError says content was larger than the caller's limit; reading stopped at
// Limit+1 bytes.
type TooLargeError struct {
	Gateway string // the gateway's base URL (credentials and query removed)
	CID     string // the CID requested
	Limit   int64  // the limit in bytes
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("ipfs: gateway %s: content of %s exceeds the limit of %d bytes", e.Gateway, e.CID, e.Limit)
}

// HTTPStatusError is a non-success HTTP answer from a gateway or a kubo RPC API.
// errors.Is(err, ErrNotFound) holds for a 404.
type HTTPStatusError struct {
	URL        string // the request URL (credentials and query removed)
	StatusCode int    // the HTTP status code
	Message    string // kubo's error "Message", or the start of the body; may be empty
}

func (e *HTTPStatusError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("ipfs: %s: HTTP %d", e.URL, e.StatusCode)
	}
	return fmt.Sprintf("ipfs: %s: HTTP %d: %s", e.URL, e.StatusCode, e.Message)
}

// Is makes errors.Is(err, ErrNotFound) true for a 404.
func (e *HTTPStatusError) Is(target error) bool {
	return target == ErrNotFound && e.StatusCode == 404
}

// UploadMismatchError says the IPFS node answered an add with a CID other than the one
// computed locally from the same bytes (different import settings, or a broken node).
type UploadMismatchError struct {
	API    string // the RPC API base URL (credentials and query removed)
	Local  string // the CIDv0 computed locally
	Remote string // the CID the node answered
}

func (e *UploadMismatchError) Error() string {
	return fmt.Sprintf("ipfs: %s answered CID %s for content whose CIDv0 is %s (node not using `ipfs add` defaults?)", e.API, e.Remote, e.Local)
}

// redactURL renders a URL for logs and errors without user info, query or fragment (where
// gateway tokens live). An unparsable string is not echoed.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<unparsable URL>"
	}
	u.User = nil
	u.RawQuery = ""
	u.ForceQuery = false
	u.Fragment = ""
	u.RawFragment = ""
	return u.String()
}
