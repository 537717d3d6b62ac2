package chain

import (
	"cmp"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"
	solws "github.com/gagliardetto/solana-go/rpc/ws"
)

// ErrNoPush is returned when push is disabled or the WebSocket is down (a
// reconnection is tried at most every Client.WSRetry).
var ErrNoPush = errors.New("no WebSocket push")

// ws returns the shared WebSocket connection, connecting when there is none
// (at most once per wsRetry after a failure).
func (c *Client) ws(ctx context.Context) (*solws.Client, error) {
	if c.WSURL == "" {
		return nil, ErrNoPush
	}
	c.wsMu.Lock()
	defer c.wsMu.Unlock()
	if c.wsConn != nil {
		return c.wsConn, nil
	}
	if !c.wsFailed.IsZero() && time.Since(c.wsFailed) < cmp.Or(c.WSRetry, 5*time.Second) {
		return nil, ErrNoPush
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := solws.ConnectWithOptions(dctx, c.WSURL, &solws.Options{HandshakeTimeout: 5 * time.Second})
	if err != nil {
		c.wsFailed = time.Now()
		return nil, errors.Join(ErrNoPush, err)
	}
	c.wsConn = conn
	return conn, nil
}

// wsBroken drops conn after a subscription on it failed, so that the next
// use reconnects.
func (c *Client) wsBroken(conn *solws.Client) {
	c.wsMu.Lock()
	defer c.wsMu.Unlock()
	if c.wsConn == conn {
		c.wsConn.Close()
		c.wsConn = nil
		c.wsFailed = time.Now()
	}
}

// watchSignature subscribes to sig's confirmation (signatureSubscribe,
// commitment confirmed). The channel receives true when the notification
// arrives, false when the subscription fails; nothing when push is off
// (nil channel). stop ends the subscription and waits for its goroutine.
func (c *Client) watchSignature(ctx context.Context, sig solana.Signature) (events <-chan bool, stop func()) {
	conn, err := c.ws(ctx)
	if err != nil {
		return nil, func() {}
	}
	sub, err := conn.SignatureSubscribe(sig, rpc.CommitmentConfirmed)
	if err != nil {
		c.wsBroken(conn)
		return nil, func() {}
	}
	ch := make(chan bool, 1)
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := sub.Recv(sctx)
		if err != nil && sctx.Err() == nil {
			c.wsBroken(conn)
		}
		ch <- err == nil
	}()
	return ch, func() {
		cancel()
		wg.Wait()
		sub.Unsubscribe()
	}
}

// MarketWatch pushes a signal each time the market account changes
// (accountSubscribe over the WebSocket), reconnecting with backoff when
// the subscription fails or the connection drops. Live tells whether the
// subscription is up; while it is not, callers poll.
type MarketWatch struct {
	c      chan struct{}
	live   atomic.Bool
	cancel context.CancelFunc
	done   chan struct{}
}

// C receives a value after a change of the market (coalesced: one pending
// value at most), and once when the subscription is lost.
func (w *MarketWatch) C() <-chan struct{} { return w.c }

// Live reports whether the subscription is up.
func (w *MarketWatch) Live() bool { return w.live.Load() }

// Stop ends the watch and waits for its goroutine.
func (w *MarketWatch) Stop() {
	w.cancel()
	<-w.done
}

func (w *MarketWatch) signal() {
	select {
	case w.c <- struct{}{}:
	default:
	}
}

// WatchMarket starts watching the market account until ctx ends or Stop.
// Without push (no WebSocket URL) it is never live.
func (c *Client) WatchMarket(ctx context.Context) *MarketWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &MarketWatch{c: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		if c.WSURL == "" {
			return
		}
		first := min(time.Second, cmp.Or(c.WSRetry, 5*time.Second))
		backoff := first
		for ctx.Err() == nil {
			if c.watchOnce(ctx, w) {
				backoff = first // it was up: reconnect promptly
			}
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			backoff = min(2*backoff, 30*time.Second)
		}
	}()
	return w
}

// watchOnce subscribes and forwards notifications until the subscription
// fails; it reports whether the subscription came up.
func (c *Client) watchOnce(ctx context.Context, w *MarketWatch) bool {
	conn, err := c.ws(ctx)
	if err != nil {
		return false
	}
	sub, err := conn.AccountSubscribeWithOpts(c.Market, rpc.CommitmentConfirmed, solana.EncodingBase64)
	if err != nil {
		c.wsBroken(conn)
		return false
	}
	defer sub.Unsubscribe()
	w.live.Store(true)
	w.signal() // changes may have happened while it was down
	defer func() {
		w.live.Store(false)
		w.signal()
	}()
	for {
		if _, err := sub.Recv(ctx); err != nil {
			if ctx.Err() == nil {
				c.wsBroken(conn)
			}
			return true
		}
		w.signal()
	}
}
