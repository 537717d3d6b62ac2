package localnet

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
)

// WebSocket limits.
const (
	wsSendQueue    = 1024 // notifications buffered per connection before it is dropped
	wsWriteTimeout = 10 * time.Second
	wsMaxMessage   = 1 << 20
)

type subKind int

const (
	subAccount subKind = iota
	subProgram
	subSignature
	subSlot
)

var subscribeMethods = map[string]subKind{
	"accountSubscribe": subAccount, "programSubscribe": subProgram,
	"signatureSubscribe": subSignature, "slotSubscribe": subSlot,
}

var unsubscribeMethods = map[string]subKind{
	"accountUnsubscribe": subAccount, "programUnsubscribe": subProgram,
	"signatureUnsubscribe": subSignature, "slotUnsubscribe": subSlot,
}

var notificationMethods = map[subKind]string{
	subAccount: "accountNotification", subProgram: "programNotification",
	subSignature: "signatureNotification", subSlot: "slotNotification",
}

// subscription is one active subscription of a connection.
type subscription struct {
	id       uint64
	kind     subKind
	conn     *wsConn
	key      solana.PublicKey // account or program
	encoding string
	slice    *dataSlice
	filters  []accountFilter
	sig      solana.Signature
	depth    uint64  // signature: slots after landing before it notifies
	landed   *uint64 // signature: slot it landed in, once known
	err      json.RawMessage
	ready    bool     // the subscribe reply is queued
	backlog  [][]byte // notifications produced before ready
}

// hub holds the websocket connections and their subscriptions, and turns
// bank events into notifications.
type hub struct {
	log  zerolog.Logger
	bank *bank

	mu     sync.Mutex
	nextID uint64
	subs   map[uint64]*subscription
	conns  map[*wsConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func newHub(b *bank, log zerolog.Logger) *hub {
	return &hub{log: log, bank: b, nextID: 1, subs: map[uint64]*subscription{}, conns: map[*wsConn]struct{}{}}
}

// wsConn is one websocket client; a writer goroutine drains send.
type wsConn struct {
	c    *websocket.Conn
	send chan []byte
	done chan struct{}
	once sync.Once
	// pending are subscriptions created by the message being handled; the
	// read loop activates them after queueing the reply (read loop only).
	pending []*subscription
}

func (c *wsConn) close() {
	c.once.Do(func() {
		close(c.done)
		c.c.Close()
	})
}

// enqueue queues a message without blocking; a connection that cannot keep
// up is dropped.
func (c *wsConn) enqueue(msg []byte) {
	select {
	case c.send <- msg:
	case <-c.done:
	default:
		c.close()
	}
}

func isWebsocketUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:    4096,
	WriteBufferSize:   4096,
	EnableCompression: true,
	CheckOrigin:       func(*http.Request) bool { return true },
}

func (h *hub) serveWS(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	h.wg.Add(1)
	h.mu.Unlock()
	defer h.wg.Done()

	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c.SetReadLimit(wsMaxMessage)
	conn := &wsConn{c: c, send: make(chan []byte, wsSendQueue), done: make(chan struct{})}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		c.Close()
		return
	}
	h.conns[conn] = struct{}{}
	h.mu.Unlock()

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		h.writeLoop(conn)
	}()
	h.readLoop(conn)
	conn.close()
	<-writerDone
	h.dropConn(conn)
}

func (h *hub) writeLoop(conn *wsConn) {
	for {
		select {
		case <-conn.done:
			return
		case msg := <-conn.send:
			conn.c.SetWriteDeadline(time.Now().Add(wsWriteTimeout))
			if err := conn.c.WriteMessage(websocket.TextMessage, msg); err != nil {
				conn.close()
				return
			}
		}
	}
}

func (h *hub) readLoop(conn *wsConn) {
	for {
		_, msg, err := conn.c.ReadMessage()
		if err != nil {
			return
		}
		conn.enqueue(h.handleMessage(conn, msg))
		for _, sub := range conn.pending {
			h.activate(sub)
		}
		conn.pending = nil
	}
}

// handleMessage answers one websocket JSON-RPC message (never panics on
// arbitrary bytes).
func (h *hub) handleMessage(conn *wsConn, msg []byte) []byte {
	return handleRPCBody(msg, func(method string, params json.RawMessage) (any, *rpcError) {
		if kind, ok := subscribeMethods[method]; ok {
			return h.subscribe(conn, kind, params)
		}
		if kind, ok := unsubscribeMethods[method]; ok {
			return h.unsubscribe(conn, kind, params)
		}
		return nil, &rpcError{Code: codeMethodNotFound, Message: "Method not found"}
	})
}

func (h *hub) dropConn(conn *wsConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.conns, conn)
	for id, s := range h.subs {
		if s.conn == conn {
			delete(h.subs, id)
		}
	}
}

// close drops every connection and waits for their goroutines.
// dropConns closes every open connection (the fault RefuseWebSocket).
func (h *hub) dropConns() {
	h.mu.Lock()
	conns := make([]*wsConn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	conns := make([]*wsConn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	h.wg.Wait()
}

func commitmentDepth(c string) (uint64, *rpcError) {
	switch c {
	case "processed", "recent", "single":
		return 0, nil
	case "confirmed", "singleGossip":
		return 1, nil
	case "", "finalized", "root", "max":
		return finalizedDepth, nil
	}
	return 0, invalidParams("unknown commitment %q", c)
}

func (h *hub) subscribe(conn *wsConn, kind subKind, params json.RawMessage) (any, *rpcError) {
	sub := &subscription{kind: kind, conn: conn}
	switch kind {
	case subAccount, subProgram:
		var ks string
		var cfg struct {
			accountConfig
			Filters []json.RawMessage `json:"filters"`
		}
		if e := positional(params, 1, &ks, &cfg); e != nil {
			return nil, e
		}
		k, e := parsePubkey(ks)
		if e != nil {
			return nil, e
		}
		if _, e := commitmentDepth(cfg.Commitment); e != nil {
			return nil, e
		}
		enc, e := checkEncoding(cfg.Encoding)
		if e != nil {
			return nil, e
		}
		sub.key, sub.encoding, sub.slice = k, enc, cfg.DataSlice
		if kind == subProgram {
			fs, err := parseFilters(cfg.Filters)
			if err != nil {
				return nil, invalidParams("%v", err)
			}
			sub.filters = fs
		} else if len(cfg.Filters) > 0 {
			return nil, invalidParams("accountSubscribe takes no filters")
		}
		return h.register(sub, nil), nil
	case subSignature:
		var ss string
		var cfg struct {
			Commitment                 string `json:"commitment"`
			EnableReceivedNotification bool   `json:"enableReceivedNotification"`
		}
		if e := positional(params, 1, &ss, &cfg); e != nil {
			return nil, e
		}
		sig, e := parseSignature(ss)
		if e != nil {
			return nil, e
		}
		depth, e := commitmentDepth(cfg.Commitment)
		if e != nil {
			return nil, e
		}
		sub.sig, sub.depth = sig, depth
		// Registering under the bank lock orders this against landing
		// events: a status that exists now is seen here, a later one
		// arrives as an event.
		var id uint64
		h.bank.withLock(func(cur uint64, status func(solana.Signature) *statusRecord) {
			if r := status(sig); r != nil {
				slot := r.Slot
				sub.landed, sub.err = &slot, r.Err
			}
			id = h.register(sub, &cur)
		})
		return id, nil
	default: // subSlot
		if e := positional(params, 0); e != nil {
			return nil, e
		}
		return h.register(sub, nil), nil
	}
}

// register adds sub (not yet ready: its notifications wait until the
// subscribe reply is queued); a signature subscription whose condition
// already holds at slot cur notifies at once and does not stay registered.
func (h *hub) register(sub *subscription, cur *uint64) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	sub.id = h.nextID
	h.nextID++
	h.subs[sub.id] = sub
	sub.conn.pending = append(sub.conn.pending, sub)
	if cur != nil {
		h.checkSignatureLocked(sub, *cur)
	}
	return sub.id
}

// activate releases the notifications held back while sub's subscribe
// reply was on its way.
func (h *hub) activate(sub *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sub.ready = true
	for _, m := range sub.backlog {
		sub.conn.enqueue(m)
	}
	sub.backlog = nil
}

func (h *hub) unsubscribe(conn *wsConn, kind subKind, params json.RawMessage) (any, *rpcError) {
	var id uint64
	if e := positional(params, 1, &id); e != nil {
		return nil, e
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.subs[id]
	if !ok || s.conn != conn || s.kind != kind {
		return nil, &rpcError{Code: codeInvalidSubscription, Message: "Invalid subscription id."}
	}
	delete(h.subs, id)
	return true, nil
}

// notification is a subscription message: no id, method and params.
type notification struct {
	JSONRPC string             `json:"jsonrpc"`
	Method  string             `json:"method"`
	Params  notificationParams `json:"params"`
}

type notificationParams struct {
	Result       any    `json:"result"`
	Subscription uint64 `json:"subscription"`
}

func (h *hub) notifyLocked(s *subscription, result any) {
	msg, err := json.Marshal(notification{JSONRPC: "2.0", Method: notificationMethods[s.kind],
		Params: notificationParams{Result: result, Subscription: s.id}})
	if err != nil {
		h.log.Error().Err(err).Msg("encode notification")
		return
	}
	if !s.ready {
		s.backlog = append(s.backlog, msg)
		return
	}
	s.conn.enqueue(msg)
}

// --- bank events (called with the bank lock held) ---------------------------

func (h *hub) accountsChanged(slot uint64, changes map[solana.PublicKey]*Account) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.subs {
		if s.kind != subAccount && s.kind != subProgram {
			continue
		}
		for k, a := range changes {
			if a == nil || a.Lamports == 0 {
				a = &Account{Owner: solana.SystemProgramID}
			}
			switch {
			case s.kind == subAccount && k == s.key:
				aj, e := encodeAccount(a, s.encoding, s.slice)
				if e != nil {
					continue
				}
				h.notifyLocked(s, withContext(slot, aj))
			case s.kind == subProgram && a.Owner == s.key && matchAll(s.filters, a.Data):
				aj, e := encodeAccount(a, s.encoding, s.slice)
				if e != nil {
					continue
				}
				h.notifyLocked(s, withContext(slot, keyedAccountJSON{Pubkey: k, Account: aj}))
			}
		}
	}
}

func (h *hub) signatureLanded(sig solana.Signature, slot uint64, errJSON json.RawMessage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.subs {
		if s.kind == subSignature && s.sig == sig && s.landed == nil {
			landed := slot
			s.landed, s.err = &landed, errJSON
			h.checkSignatureLocked(s, slot)
		}
	}
}

func (h *hub) slotAdvanced(slot uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.subs {
		switch s.kind {
		case subSlot:
			root := uint64(0)
			if slot > finalizedDepth {
				root = slot - finalizedDepth
			}
			parent := uint64(0)
			if slot > 0 {
				parent = slot - 1
			}
			h.notifyLocked(s, map[string]uint64{"parent": parent, "root": root, "slot": slot})
		case subSignature:
			h.checkSignatureLocked(s, slot)
		}
	}
}

// checkSignatureLocked sends the one notification of a signature
// subscription once its transaction is deep enough, then removes it (as
// Solana does).
func (h *hub) checkSignatureLocked(s *subscription, cur uint64) {
	if s.landed == nil || cur < *s.landed+s.depth {
		return
	}
	h.notifyLocked(s, withContext(cur, map[string]json.RawMessage{"err": s.err}))
	delete(h.subs, s.id)
}
