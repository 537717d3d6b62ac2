package kubotest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Pinata starts a Pinata-compatible API on 127.0.0.1 in front of the kubo RPC API api,
// for the test's lifetime, and returns its base URL. It serves POST
// /pinning/pinFileToIPFS (multipart: "pinataOptions", "pinataMetadata", then "file",
// streamed to kubo's add) and POST /pinning/pinJSONToIPFS ({"pinataContent": …}, stored
// compacted, as JSON.stringify would), honours pinataOptions.cidVersion (0 or 1),
// answers {"IpfsHash","PinSize","Timestamp"}, and 401 {"error":{…}} unless the request
// carries "Authorization: Bearer <jwt>".
func Pinata(t testing.TB, api, jwt string) string {
	t.Helper()
	p := &pinata{api: strings.TrimRight(api, "/"), jwt: jwt}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv.URL
}

type pinata struct {
	api, jwt string
}

func (p *pinata) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		pinataError(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "use POST")
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+p.jwt {
		pinataError(w, http.StatusUnauthorized, "INVALID_CREDENTIALS", "Invalid/expired credentials")
		return
	}
	switch r.URL.Path {
	case "/pinning/pinFileToIPFS":
		p.pinFile(w, r)
	case "/pinning/pinJSONToIPFS":
		p.pinJSON(w, r)
	default:
		pinataError(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint")
	}
}

type pinOptions struct {
	CidVersion *int `json:"cidVersion"`
}

func (o pinOptions) version() int {
	if o.CidVersion == nil {
		return 0
	}
	return *o.CidVersion
}

func (p *pinata) pinFile(w http.ResponseWriter, r *http.Request) {
	_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || params["boundary"] == "" {
		pinataError(w, http.StatusBadRequest, "INVALID_REQUEST", "multipart/form-data expected")
		return
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	var opts pinOptions
	for {
		part, err := mr.NextPart()
		if err != nil {
			pinataError(w, http.StatusBadRequest, "INVALID_REQUEST", "no file part: "+err.Error())
			return
		}
		switch part.FormName() {
		case "pinataOptions":
			b, _ := io.ReadAll(io.LimitReader(part, 64<<10))
			if err := json.Unmarshal(b, &opts); err != nil {
				pinataError(w, http.StatusBadRequest, "INVALID_REQUEST", "pinataOptions: "+err.Error())
				return
			}
		case "pinataMetadata":
			_, _ = io.Copy(io.Discard, io.LimitReader(part, 64<<10))
		case "file":
			p.add(w, r, part, part.FileName(), opts.version())
			return
		default:
			_, _ = io.Copy(io.Discard, part)
		}
	}
}

func (p *pinata) pinJSON(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Options  pinOptions      `json:"pinataOptions"`
		Metadata json.RawMessage `json:"pinataMetadata"`
		Content  json.RawMessage `json:"pinataContent"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 16<<20)).Decode(&req); err != nil || len(req.Content) == 0 {
		pinataError(w, http.StatusBadRequest, "INVALID_REQUEST", fmt.Sprintf("body must be {\"pinataContent\": …}: %v", err))
		return
	}
	var doc bytes.Buffer
	if err := json.Compact(&doc, req.Content); err != nil {
		pinataError(w, http.StatusBadRequest, "INVALID_REQUEST", err.Error())
		return
	}
	p.add(w, r, &doc, "pinnie.json", req.Options.version())
}

// add streams content to kubo's add and answers Pinata's pin object.
func (p *pinata) add(w http.ResponseWriter, r *http.Request, content io.Reader, name string, version int) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		fw, err := mw.CreateFormFile("file", name)
		if err == nil {
			_, err = io.Copy(fw, content)
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	url := fmt.Sprintf("%s/api/v0/add?cid-version=%d&pin=true", p.api, version)
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, url, pr)
	if err != nil {
		pinataError(w, http.StatusInternalServerError, "INTERNAL", err.Error())
		return
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := http.DefaultClient.Do(req)
	pr.CloseWithError(io.ErrClosedPipe)
	if err != nil {
		pinataError(w, http.StatusBadGateway, "UPSTREAM", err.Error())
		return
	}
	defer resp.Body.Close()
	var last struct{ Hash, Size string }
	dec := json.NewDecoder(resp.Body)
	for {
		var ev struct{ Hash, Size, Message string }
		if err := dec.Decode(&ev); err != nil {
			break
		}
		if ev.Hash != "" {
			last.Hash, last.Size = ev.Hash, ev.Size
		}
	}
	if resp.StatusCode != http.StatusOK || last.Hash == "" {
		pinataError(w, http.StatusBadGateway, "UPSTREAM", fmt.Sprintf("kubo add answered HTTP %d", resp.StatusCode))
		return
	}
	var size int64
	fmt.Sscan(last.Size, &size)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"IpfsHash": last.Hash, "PinSize": size, "Timestamp": time.Now().UTC().Format(time.RFC3339Nano),
	})
}

func pinataError(w http.ResponseWriter, status int, reason, details string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"reason": reason, "details": details}})
}
