package ipfs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/rs/zerolog"
)

// Retry is how an upload whose CID is known beforehand (AddBytes, AddFile) is retried:
// a retry sends the same bytes, so it is idempotent. Only transient failures are retried:
// the transport (connection refused or reset, a request cut short) and HTTP 408, 425,
// 429, 500, 502, 503 and 504. A CID mismatch, any other HTTP status, a malformed answer,
// an unreadable file or ctx ending are not.
type Retry struct {
	// Attempts is the number of tries in all; 0 means DefaultRetry's, 1 means no retry.
	Attempts int
	// Initial is the wait before the first retry; it doubles each time up to Max. 0
	// means DefaultRetry's.
	Initial time.Duration
	// Max caps one wait; 0 means DefaultRetry's.
	Max time.Duration
}

// DefaultRetry: 4 tries, waiting 250 ms, 500 ms, then 1 s between them.
var DefaultRetry = Retry{Attempts: 4, Initial: 250 * time.Millisecond, Max: 10 * time.Second}

// NoRetry makes a single attempt.
var NoRetry = Retry{Attempts: 1}

// do runs attempt until it succeeds, fails for good, or the tries are spent; it returns
// the last error, saying how many tries were made when there was more than one.
func (r Retry) do(ctx context.Context, log *zerolog.Logger, what string, attempt func() error) error {
	if r.Attempts <= 0 {
		r.Attempts = DefaultRetry.Attempts
	}
	if r.Initial <= 0 {
		r.Initial = DefaultRetry.Initial
	}
	if r.Max <= 0 {
		r.Max = DefaultRetry.Max
	}
	wait := r.Initial
	for try := 1; ; try++ {
		err := attempt()
		if err == nil {
			return nil
		}
		if try >= r.Attempts || !transient(ctx, err) {
			if try > 1 {
				return fmt.Errorf("after %d tries: %w", try, err)
			}
			return err
		}
		if log != nil {
			log.Warn().Err(err).Str("upload", what).Int("try", try).Dur("retry_in", wait).Msg("ipfs upload failed; retrying")
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("after %d tries: %w (then %w)", try, err, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, r.Max)
	}
}

// transportError marks a failure to reach a service or to get its whole answer.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// transient reports whether err is worth retrying (see Retry).
func transient(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var se *HTTPStatusError
	if errors.As(err, &se) {
		switch se.StatusCode {
		case http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests,
			http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	var te *transportError
	return errors.As(err, &te)
}
