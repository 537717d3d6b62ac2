package runtime

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
)

// Credential is a user name and password (or, with no user name, an identity token)
// for one registry. Printing it in any way shows the user name only.
type Credential struct {
	Username string
	Secret   string
}

// String returns "user:[redacted]".
func (c Credential) String() string { return c.Username + ":[redacted]" }

// GoString returns the same as String.
func (c Credential) GoString() string { return c.String() }

// Format prints String for every verb.
func (c Credential) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

// MarshalJSON hides the secret too.
func (c Credential) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"username": c.Username, "secret": "[redacted]"})
}

// RegistryAuth maps a registry host ("registry.example.com", "127.0.0.1:5000",
// "registry-1.docker.io" for Docker Hub) to its credential.
type RegistryAuth map[string]Credential

// Hosts returns the hosts that have a credential, sorted.
func (a RegistryAuth) Hosts() []string {
	out := make([]string, 0, len(a))
	for h := range a {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}

// lookup is the credential callback of containerd's Docker authorizer.
func (a RegistryAuth) lookup(host string) (string, string, error) {
	if c, ok := a[RegistryHost(host)]; ok {
		return c.Username, c.Secret, nil
	}
	return "", "", nil
}

// dockerHubHost is where containerd sends requests for docker.io images.
const dockerHubHost = "registry-1.docker.io"

// RegistryHost normalises how a registry is named in a Docker config.json or by an
// operator to the host containerd's authorizer asks about: scheme and path dropped,
// lower case, and Docker Hub's names ("https://index.docker.io/v1/", "docker.io")
// mapped to registry-1.docker.io.
func RegistryHost(s string) string {
	s = strings.TrimSpace(strings.ToLower(s))
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	switch s {
	case "docker.io", "index.docker.io", "registry.hub.docker.com":
		return dockerHubHost
	}
	return s
}

// ErrRegistryAuth: a registry credential file or setting is malformed. Its messages
// name the file and the registry, never a user name's password or token.
var ErrRegistryAuth = errors.New("registry credentials")

// LoadDockerConfig reads registry credentials from a Docker config.json
// ({"auths": {"<host>": {"auth": base64("user:password")} | {"username", "password"}
// | {"identitytoken"}}}). The file must not be readable by group or others.
// Credential helpers (credsStore, credHelpers) are not run: a file naming only those
// is an error, since its passwords are elsewhere.
func LoadDockerConfig(path string) (RegistryAuth, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRegistryAuth, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s is readable by group or others (mode %04o); chmod 600 it", ErrRegistryAuth, path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRegistryAuth, err)
	}
	a, err := ParseDockerConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// ParseDockerConfig is LoadDockerConfig on bytes. Errors wrap ErrRegistryAuth and
// quote nothing from the document but registry names.
func ParseDockerConfig(b []byte) (RegistryAuth, error) {
	var doc struct {
		Auths map[string]struct {
			Auth          string `json:"auth"`
			Username      string `json:"username"`
			Password      string `json:"password"`
			IdentityToken string `json:"identitytoken"`
		} `json:"auths"`
		CredsStore  string            `json:"credsStore"`
		CredHelpers map[string]string `json:"credHelpers"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		// json's messages may quote a character of the document: say where only.
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("%w: not valid JSON (error at byte %d)", ErrRegistryAuth, se.Offset)
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("%w: field %s has the wrong JSON type", ErrRegistryAuth, te.Field)
		}
		return nil, fmt.Errorf("%w: not a Docker config.json", ErrRegistryAuth)
	}
	out := RegistryAuth{}
	for key, e := range doc.Auths {
		host := RegistryHost(key)
		if host == "" || strings.ContainsAny(host, " \t") {
			return nil, fmt.Errorf("%w: auths has an entry without a registry host", ErrRegistryAuth)
		}
		var c Credential
		switch {
		case e.Auth != "":
			raw, err := base64.StdEncoding.DecodeString(e.Auth)
			if err != nil {
				return nil, fmt.Errorf("%w: auths[%q].auth is not base64", ErrRegistryAuth, host)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok || user == "" {
				return nil, fmt.Errorf("%w: auths[%q].auth is not base64 of user:password", ErrRegistryAuth, host)
			}
			c = Credential{Username: user, Secret: pass}
		case e.IdentityToken != "":
			// containerd sends a secret with no user name as an OAuth refresh token.
			c = Credential{Secret: e.IdentityToken}
		case e.Username != "":
			c = Credential{Username: e.Username, Secret: e.Password}
		default:
			continue // an entry a credential helper fills
		}
		out[host] = c
	}
	if len(out) == 0 && (doc.CredsStore != "" || len(doc.CredHelpers) > 0) {
		return nil, fmt.Errorf("%w: the file names credential helpers (credsStore/credHelpers), which the worker does not run; put the credentials under auths (docker login with no helper writes them there)", ErrRegistryAuth)
	}
	return out, nil
}

// isLoopbackHost says whether a registry host ("host" or "host:port") is on loopback,
// where plain HTTP is allowed.
func isLoopbackHost(hostport string) (bool, error) {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(host)
	if ip == nil && len(host) > 2 && host[0] == '[' && host[len(host)-1] == ']' {
		ip = net.ParseIP(host[1 : len(host)-1])
	}
	return ip != nil && ip.IsLoopback(), nil
}
