package chain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gagliardetto/solana-go"
	computebudget "github.com/gagliardetto/solana-go/programs/compute-budget"
	"github.com/gagliardetto/solana-go/rpc"
	"github.com/gagliardetto/solana-go/rpc/jsonrpc"
)

// ErrBadReply is wrapped when an RPC reply cannot be decoded (malformed
// JSON, wrong shapes, a decoder panic).
var ErrBadReply = errors.New("malformed RPC reply")

// RPCError is a JSON-RPC error reply: the RPC refused the request itself
// (invalid params, preflight failure before it is decoded into a *TxError,
// method not found…). It is not retried. Code is the JSON-RPC code
// (e.g. -32602, -32002); Data is the error's data re-encoded as JSON.
type RPCError struct {
	Method  string
	Code    int
	Message string
	Data    json.RawMessage
}

func (e *RPCError) Error() string {
	return fmt.Sprintf("%s: RPC error %d: %s", e.Method, e.Code, e.Message)
}

// HTTPError is a reply with an HTTP status that is neither success nor
// retryable (401, 403, 404, 413, 500…): a misconfigured URL or a refused
// request.
type HTTPError struct {
	Method string
	Status int
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("%s: HTTP %d %s", e.Method, e.Status, http.StatusText(e.Status))
}

// classify turns solana-go's errors into this package's types: *RPCError,
// *HTTPError, ErrUnavailable (from the Transport, kept), ErrAccountNotFound
// for rpc.ErrNotFound, context errors as they are, and ErrBadReply for the
// rest (the reply could not be decoded).
func classify(method string, err error) error {
	var je *jsonrpc.RPCError
	var he *jsonrpc.HTTPError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &je):
		data, _ := json.Marshal(je.Data)
		return &RPCError{Method: method, Code: je.Code, Message: je.Message, Data: data}
	case errors.As(err, &he):
		return &HTTPError{Method: method, Status: he.Code}
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", method, err)
	case errors.Is(err, rpc.ErrNotFound):
		return fmt.Errorf("%s: %w", method, ErrAccountNotFound)
	}
	return fmt.Errorf("%s: %w: %v", method, ErrBadReply, err)
}

// do runs one RPC call under the client's call deadline, classifies its
// error and turns a decoder panic on a hostile reply into ErrBadReply.
func do[T any](ctx context.Context, c *Client, method string, f func(ctx context.Context) (T, error)) (out T, err error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			var zero T
			out, err = zero, fmt.Errorf("%s: %w: decoder panic: %v", method, ErrBadReply, r)
		}
	}()
	out, err = f(ctx)
	return out, classify(method, err)
}

// Option configures a Client made by NewClient.
type Option func(*Client)

// WithRateLimit paces the client to perSecond RPC requests per second
// (retries included); <= 0 means no limit.
func WithRateLimit(perSecond float64) Option {
	return func(c *Client) { c.rateLimit = perSecond }
}

// WithPriorityFee adds a compute-budget priority fee to every transaction:
// microLamports per compute unit, with ComputeUnits units requested, so
// that the fee is ceil(units·price/1e6) lamports — never more than
// capLamports (the price is lowered to fit; capLamports 0 means no cap).
func WithPriorityFee(microLamports, capLamports uint64) Option {
	return func(c *Client) { c.PriorityFee, c.PriorityFeeCap = microLamports, capLamports }
}

// WithWebSocket sets the WebSocket endpoint used for signatureSubscribe and
// accountSubscribe; "" disables push (polling only). By default it is the
// first RPC URL with ws(s) in place of http(s).
func WithWebSocket(wsURL string) Option {
	return func(c *Client) { c.WSURL, c.wsSet = wsURL, true }
}

// WithTransport adjusts the Transport NewClient made (timeouts, backoff).
func WithTransport(f func(*Transport)) Option {
	return func(c *Client) { c.tune = append(c.tune, f) }
}

// DefaultComputeUnits is the compute-unit limit requested when a priority
// fee is set: ample for one Markets instruction.
const DefaultComputeUnits = 200_000

// computeBudget returns the compute-budget instructions that set the
// priority fee: SetComputeUnitLimit then SetComputeUnitPrice, the price
// lowered so that the fee stays within PriorityFeeCap. None when no fee is
// configured.
func (c *Client) computeBudget() []solana.Instruction {
	if c.PriorityFee == 0 {
		return nil
	}
	units := c.ComputeUnits
	if units == 0 {
		units = DefaultComputeUnits
	}
	price := PriorityPrice(c.PriorityFee, c.PriorityFeeCap, units)
	if price == 0 {
		return nil
	}
	return []solana.Instruction{
		computebudget.NewSetComputeUnitLimitInstruction(units).Build(),
		computebudget.NewSetComputeUnitPriceInstruction(price).Build(),
	}
}

// PriorityPrice is the compute-unit price (micro-lamports) to set for a
// wanted price under a fee cap in lamports (0: no cap) with units
// requested: the highest price ≤ want whose fee ceil(units·price/1e6) is
// within the cap.
func PriorityPrice(want, capLamports uint64, units uint32) uint64 {
	if capLamports == 0 || units == 0 {
		return want
	}
	// fee(p) ≤ cap ⇔ units·p ≤ cap·1e6 (ceil rounds up only past a multiple).
	maxPrice := capLamports * 1_000_000 / uint64(units)
	return min(want, maxPrice)
}

// PriorityFeeLamports is the prioritization fee Solana charges for units at
// price micro-lamports: ceil(units·price/1e6).
func PriorityFeeLamports(units uint32, price uint64) uint64 {
	p := uint64(units) * price
	return (p + 999_999) / 1_000_000
}

// NewClient returns a client for node key in market. rpcURL is one RPC
// URL or several, comma-separated: calls go through a Transport that
// retries, rate-limits and fails over to the next URL. Push (WebSocket) is
// on unless WithWebSocket("") says otherwise.
func NewClient(rpcURL string, key solana.PrivateKey, program, staking, market solana.PublicKey, opts ...Option) *Client {
	c := &Client{Key: key, Program: program, Staking: staking, Market: market}
	for _, o := range opts {
		o(c)
	}
	urls, err := ParseRPCURLs(rpcURL)
	if err != nil {
		// Configuration validates the list first; keep solana-go's own
		// error for a URL it cannot use.
		c.RPC = rpc.New(rpcURL)
		return c
	}
	t := NewTransport(urls, c.rateLimit)
	for _, f := range c.tune {
		f(t)
	}
	c.Transport = t
	// solana-go quotes its endpoint in errors: give it the host only (the
	// Transport sends to the full URLs).
	c.RPC = rpc.NewWithCustomRPCClient(jsonrpc.NewClientWithOpts(hostOnly(urls[0]), &jsonrpc.RPCClientOpts{
		HTTPClient: &http.Client{Transport: t},
	}))
	if !c.wsSet {
		c.WSURL = wsURLOf(urls[0])
	}
	return c
}

// wsURLOf is an RPC URL's WebSocket endpoint: same host, port and path,
// ws(s) in place of http(s).
func wsURLOf(u *url.URL) string {
	w := *u
	w.Scheme = "ws"
	if strings.EqualFold(u.Scheme, "https") {
		w.Scheme = "wss"
	}
	return w.String()
}

// Close releases the client's WebSocket connection and idle HTTP
// connections.
func (c *Client) Close() {
	c.wsMu.Lock()
	if c.wsConn != nil {
		c.wsConn.Close()
		c.wsConn = nil
	}
	c.wsMu.Unlock()
}

// callTimeout is the default deadline of one RPC call, retries included.
const callTimeout = 30 * time.Second
