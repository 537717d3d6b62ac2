package runtime_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hypernode-sol/worker/runtime"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestParseDockerConfig(t *testing.T) {
	doc := `{
	  "auths": {
	    "https://index.docker.io/v1/": {"auth": "` + b64("hubuser:hub-pass:with-colon") + `"},
	    "ghcr.io": {"username": "gh", "password": "ghp_token"},
	    "HTTP://127.0.0.1:5000/v2/": {"auth": "` + b64("local:pw") + `"},
	    "registry.example.com": {"identitytoken": "refresh-tok"},
	    "helper.example.com": {}
	  },
	  "credHelpers": {"helper.example.com": "secretservice"},
	  "psFormat": "table"
	}`
	a, err := runtime.ParseDockerConfig([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := runtime.RegistryAuth{
		"registry-1.docker.io": {Username: "hubuser", Secret: "hub-pass:with-colon"},
		"ghcr.io":              {Username: "gh", Secret: "ghp_token"},
		"127.0.0.1:5000":       {Username: "local", Secret: "pw"},
		"registry.example.com": {Secret: "refresh-tok"},
	}
	if len(a) != len(want) {
		t.Errorf("hosts %v; want %d", a.Hosts(), len(want))
	}
	for h, c := range want {
		if a[h] != c {
			t.Errorf("%s: got user %q secret-match %v", h, a[h].Username, a[h].Secret == c.Secret)
		}
	}
	for _, s := range []string{fmt.Sprint(a), fmt.Sprintf("%+v %#v %v %s %q", a, a, a["ghcr.io"], a["ghcr.io"], a["ghcr.io"])} {
		if strings.Contains(s, "ghp_token") || strings.Contains(s, "hub-pass") || strings.Contains(s, "refresh-tok") {
			t.Errorf("printing reveals a secret: %s", s)
		}
	}
}

func TestParseDockerConfigErrors(t *testing.T) {
	const secret = "Zm9vOmJhcg-not-base64!"
	for _, tt := range []struct{ name, doc, want string }{
		{"syntax", `{"auths": {"h": {"auth": "` + secret, "not valid JSON"},
		{"type", `{"auths": {"h": {"auth": 5}}}`, "wrong JSON type"},
		{"bad base64", `{"auths": {"h": {"auth": "` + secret + `"}}}`, `auths["h"].auth is not base64`},
		{"no colon", `{"auths": {"h": {"auth": "` + b64("nocolon") + `"}}}`, "not base64 of user:password"},
		{"helpers only", `{"credsStore": "desktop"}`, "credential helpers"},
		{"empty host", `{"auths": {"": {"auth": "` + b64("a:b") + `"}}}`, "without a registry host"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runtime.ParseDockerConfig([]byte(tt.doc))
			if !errors.Is(err, runtime.ErrRegistryAuth) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v; want ErrRegistryAuth saying %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("error quotes the secret: %v", err)
			}
		})
	}
}

func TestLoadDockerConfigMode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(`{"auths":{}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runtime.LoadDockerConfig(p); !errors.Is(err, runtime.ErrRegistryAuth) || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable file: %v", err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if a, err := runtime.LoadDockerConfig(p); err != nil || len(a) != 0 {
		t.Errorf("LoadDockerConfig = %v, %v", a, err)
	}
}

func TestRegistryHost(t *testing.T) {
	for in, want := range map[string]string{
		"https://index.docker.io/v1/": "registry-1.docker.io", "docker.io": "registry-1.docker.io",
		"Ghcr.IO": "ghcr.io", "http://127.0.0.1:5000/v2/": "127.0.0.1:5000", "localhost:5000": "localhost:5000",
	} {
		if got := runtime.RegistryHost(in); got != want {
			t.Errorf("RegistryHost(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParseDockerConfig: never panics; an error is classified and never quotes an
// auth value; what parses prints no secret.
func FuzzParseDockerConfig(f *testing.F) {
	f.Add([]byte(`{"auths":{"h":{"auth":"` + b64("u:p") + `"}}}`))
	f.Add([]byte(`{"auths":{"https://index.docker.io/v1/":{"username":"u","password":"p","identitytoken":"t"}},"credsStore":"x"}`))
	f.Add([]byte(`{"auths":{"h":{"auth":"!!"}}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := runtime.ParseDockerConfig(b)
		if err != nil {
			if !errors.Is(err, runtime.ErrRegistryAuth) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		for h, c := range a {
			if h == "" {
				t.Fatal("empty host")
			}
			if len(c.Secret) >= 4 && strings.Contains(fmt.Sprintf("%v %+v %#v %s", a, a, c, c), c.Secret) && !strings.Contains(c.Username, c.Secret) && !strings.Contains(h, c.Secret) && !strings.Contains("[redacted]", c.Secret) {
				t.Fatalf("secret printed for %s", h)
			}
		}
	})
}
