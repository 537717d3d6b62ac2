package localnet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// JSON-RPC error codes (JSON-RPC 2.0 and Solana's server errors).
const (
	codeParseError          = -32700
	codeInvalidRequest      = -32600
	codeMethodNotFound      = -32601
	codeInvalidParams       = -32602
	codeInternal            = -32603
	codePreflightFailure    = -32002
	codeSignatureFailure    = -32003
	codeInvalidSubscription = -32602
)

const (
	maxRequestBytes = 1 << 20
	maxBatch        = 100
)

// rpcError is a JSON-RPC error object.
type rpcError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

func (e *rpcError) Error() string { return fmt.Sprintf("%d: %s", e.Code, e.Message) }

func invalidParams(format string, args ...any) *rpcError {
	return &rpcError{Code: codeInvalidParams, Message: "Invalid params: " + fmt.Sprintf(format, args...)}
}

func internalError(err error) *rpcError {
	return &rpcError{Code: codeInternal, Message: "Internal error: " + err.Error()}
}

// rpcRequest is a JSON-RPC request. The id is kept raw and echoed byte for
// byte (solana-go's websocket ids are 64-bit).
type rpcRequest struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
}

// rpcResponse carries exactly the four fields solana-go's strict decoder
// accepts.
type rpcResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
	ID      json.RawMessage `json:"id"`
}

var nullID = json.RawMessage("null")

// validID: a JSON-RPC id is a string, a number or null.
func validID(id json.RawMessage) bool {
	if len(id) == 0 {
		return true
	}
	switch id[0] {
	case '"':
		var s string
		return json.Unmarshal(id, &s) == nil
	case 'n':
		return string(id) == "null"
	default:
		var n json.Number
		return json.Unmarshal(id, &n) == nil
	}
}

// methodFunc answers one method: a result value to marshal, or an error.
type methodFunc func(params json.RawMessage) (any, *rpcError)

// handleRPCBody parses a JSON-RPC body (one request or a batch) and
// returns the reply body. It never panics on arbitrary bytes.
func handleRPCBody(body []byte, call func(method string, params json.RawMessage) (any, *rpcError)) []byte {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var batch []json.RawMessage
		if err := json.Unmarshal(trimmed, &batch); err != nil {
			return mustMarshal(errorResponse(nullID, &rpcError{Code: codeParseError, Message: "Parse error"}))
		}
		if len(batch) == 0 || len(batch) > maxBatch {
			return mustMarshal(errorResponse(nullID, &rpcError{Code: codeInvalidRequest, Message: "Invalid request"}))
		}
		out := make([]*rpcResponse, 0, len(batch))
		for _, item := range batch {
			out = append(out, handleOne(item, call))
		}
		return mustMarshal(out)
	}
	return mustMarshal(handleOne(trimmed, call))
}

func handleOne(raw []byte, call func(method string, params json.RawMessage) (any, *rpcError)) *rpcResponse {
	var req rpcRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		var probe any
		if json.Unmarshal(raw, &probe) != nil {
			return errorResponse(nullID, &rpcError{Code: codeParseError, Message: "Parse error"})
		}
		return errorResponse(nullID, &rpcError{Code: codeInvalidRequest, Message: "Invalid request"})
	}
	if !validID(req.ID) {
		return errorResponse(nullID, &rpcError{Code: codeInvalidRequest, Message: "Invalid request"})
	}
	id := req.ID
	if len(id) == 0 {
		id = nullID
	}
	if req.JSONRPC != "2.0" || req.Method == "" {
		return errorResponse(id, &rpcError{Code: codeInvalidRequest, Message: "Invalid request"})
	}
	result, rerr := call(req.Method, req.Params)
	if rerr != nil {
		return errorResponse(id, rerr)
	}
	b, err := json.Marshal(result)
	if err != nil {
		return errorResponse(id, internalError(err))
	}
	return &rpcResponse{JSONRPC: "2.0", Result: b, ID: id}
}

func errorResponse(id json.RawMessage, e *rpcError) *rpcResponse {
	return &rpcResponse{JSONRPC: "2.0", Error: e, ID: id}
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only rpcResponse values built above reach here; they always marshal.
		return []byte(`{"jsonrpc":"2.0","error":{"code":-32603,"message":"Internal error"},"id":null}`)
	}
	return b
}

// serveRPC is the HTTP side: POST / carries JSON-RPC; GET upgrades to the
// websocket; anything else is refused as Solana's RPC does.
func (s *Server) serveRPC(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if r.Method == http.MethodGet && isWebsocketUpgrade(r) {
		s.hub.serveWS(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST, OPTIONS")
		http.Error(w, "Used HTTP Method is not allowed. POST or OPTIONS is required", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err != nil {
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return
	}
	reply := handleRPCBody(body, s.call)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Write(reply)
}

// call dispatches one HTTP JSON-RPC method.
func (s *Server) call(method string, params json.RawMessage) (any, *rpcError) {
	f, ok := s.methods[method]
	if !ok {
		return nil, &rpcError{Code: codeMethodNotFound, Message: "Method not found"}
	}
	return f(params)
}
