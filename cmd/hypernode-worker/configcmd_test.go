package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// clearSettingsEnv unsets every setting's environment variable for the test.
func clearSettingsEnv(t *testing.T) {
	t.Helper()
	for _, s := range settings {
		if v, ok := os.LookupEnv(s.env); ok {
			t.Setenv(s.env, v) // restored after the test
			os.Unsetenv(s.env)
		}
	}
}

func runIn(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// TestConfigSourcesAndRedaction: each value's source is flag, env, .env or
// default (flag over env over .env over default); credentials in URLs never
// appear; every invalid setting is named and the exit status is 2.
func TestConfigSourcesAndRedaction(t *testing.T) {
	clearSettingsEnv(t)
	dir := t.TempDir()
	envFile := filepath.Join(dir, "worker.env")
	if err := os.WriteFile(envFile, []byte("NETWORK=devnet\nPOLLING_INTERVAL=2000\nPARALLEL_JOBS=3\nIPFS_GATEWAY=https://gw.example,https://u:pw@gw2.example/\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PARALLEL_JOBS", "4")
	t.Setenv("SOLANA_RPC_URL", "https://rpc.example/?api-key=TOPSECRETKEY")
	t.Setenv("HYPERNODE_DATA_DIR", dir)
	out, _, code := runIn(t, "config", "--json", "--env-file", envFile, "--parallel-jobs", "5", "--disk-floor-mb", "lots")
	if code != 2 {
		t.Fatalf("exit %d; want 2 (invalid settings)\n%s", code, out)
	}
	if strings.Contains(out, "TOPSECRETKEY") || strings.Contains(out, "pw@") {
		t.Fatalf("a credential reached the output:\n%s", out)
	}
	var rep configReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	rows := map[string]configRow{}
	for _, r := range rep.Settings {
		rows[r.Setting] = r
	}
	for _, tt := range []struct{ setting, value, source string }{
		{"NETWORK", "devnet", sourceEnvFile},
		{"POLLING_INTERVAL", "2000", sourceEnvFile},
		{"PARALLEL_JOBS", "5", sourceFlag},
		{"SOLANA_RPC_URL", "https://rpc.example/?api-key=redacted", sourceEnv},
		{"IPFS_GATEWAY", "https://gw.example,https://redacted@gw2.example/", sourceEnvFile},
		{"HEALTH_CHECK_INTERVAL", "60000", sourceDefault},
		{"HYPERNODE_DATA_DIR", dir, sourceEnv},
		{"DISK_FLOOR_MB", "lots", sourceFlag},
	} {
		if r := rows[tt.setting]; r.Value != tt.value || r.Source != tt.source {
			t.Errorf("%s = %q from %s; want %q from %s", tt.setting, r.Value, r.Source, tt.value, tt.source)
		}
	}
	bad := map[string]bool{}
	for _, r := range rep.Settings {
		if r.Error != "" {
			bad[r.Setting] = true
		}
	}
	// IPFS_GATEWAY: the gateway parser refuses credentials in a URL.
	for _, s := range []string{"MARKET_PUBKEY", "IPFS_GATEWAY", "IPFS_UPLOAD_URL", "KEYPAIR_PATH", "DISK_FLOOR_MB"} {
		if !bad[s] {
			t.Errorf("%s not named invalid: %+v", s, rep.Errors)
		}
	}
	if len(bad) != 5 || len(rep.Errors) != 5 {
		t.Errorf("invalid %v, errors %q; want exactly 5", bad, rep.Errors)
	}

	// Text form, valid localnet defaults: exit 0, a table with sources.
	os.Unsetenv("SOLANA_RPC_URL")
	os.Unsetenv("PARALLEL_JOBS")
	out, _, code = runIn(t, "config", "--env-file", "")
	if code != 0 || !strings.Contains(out, "SETTING") || !strings.Contains(out, "(embedded localnet on 127.0.0.1:8899)") ||
		!regexp.MustCompile(`DISK_FLOOR_MB\s+2048\s+default`).MatchString(out) {
		t.Errorf("config exited %d:\n%s", code, out)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://api.devnet.solana.com":          "https://api.devnet.solana.com",
		"https://rpc.example/v1?api-key=abc&x=1": "https://rpc.example/v1?api-key=redacted&x=redacted",
		"https://user:pass@rpc.example:8899/":    "https://redacted@rpc.example:8899/",
		"ftp//nonsense?key=1":                    "(redacted)",
		"http://127.0.0.1:8899":                  "http://127.0.0.1:8899",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q; want %q", in, got, want)
		}
	}
}

// TestCompletion: shell completion scripts are generated for each shell.
func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		out, errOut, code := runIn(t, "completion", sh)
		if code != 0 || !strings.Contains(out, "hypernode-worker") {
			t.Errorf("completion %s exited %d: %s", sh, code, errOut)
		}
	}
}

// TestLogFormat: LOG_FORMAT=auto writes JSON when not on a terminal (a pipe,
// a file, a buffer), console on request.
func TestLogFormat(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	l := newLogger(w, "auto")
	l.Info().Str("job", "J").Msg("hello")
	w.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(r); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil || m["message"] != "hello" || m["job"] != "J" {
		t.Errorf("auto on a pipe wrote %q (%v); want a JSON line", b.String(), err)
	}
	var c bytes.Buffer
	cl := newLogger(&c, "console")
	cl.Info().Msg("hello")
	if json.Valid(c.Bytes()) || !strings.Contains(c.String(), "hello") {
		t.Errorf("console wrote %q", c.String())
	}
}

// TestConfigInvalidPrintedOnce: an invalid setting is listed once, in the
// text output's list; stderr only counts the invalid settings, and the exit
// status stays 2.
func TestConfigInvalidPrintedOnce(t *testing.T) {
	clearSettingsEnv(t)
	t.Setenv("HYPERNODE_DATA_DIR", t.TempDir())
	t.Setenv("MAX_PARALLEL_JOBS", "bogus")
	out, errOut, code := runIn(t, "config", "--env-file", "")
	if code != 2 {
		t.Fatalf("exit %d; want 2\n%s%s", code, out, errOut)
	}
	const msg = `MAX_PARALLEL_JOBS "bogus" is not a number`
	if n := strings.Count(out+errOut, msg); n != 1 {
		t.Errorf("the problem is printed %d times; want once\nstdout:\n%s\nstderr:\n%s", n, out, errOut)
	}
	if want := "hypernode-worker: 1 invalid setting (listed above)\n"; errOut != want {
		t.Errorf("stderr %q; want %q", errOut, want)
	}
	t.Setenv("DISK_FLOOR_MB", "lots")
	out, errOut, code = runIn(t, "config", "--json", "--env-file", "")
	var rep configReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 2 || len(rep.Errors) != 2 {
		t.Fatalf("exit %d, errors %q (%v); want 2 and two errors", code, rep.Errors, err)
	}
	if want := "hypernode-worker: 2 invalid settings (listed in the JSON's errors)\n"; errOut != want {
		t.Errorf("stderr %q; want %q", errOut, want)
	}
}

// TestConfigShowsDocumentedDefaults: with nothing set, a setting whose
// README default is a value shows that value (or what it resolves to), not
// "-".
func TestConfigShowsDocumentedDefaults(t *testing.T) {
	clearSettingsEnv(t)
	dir := t.TempDir()
	t.Setenv("HYPERNODE_DATA_DIR", dir)
	rows := func(args ...string) map[string]configRow {
		t.Helper()
		out, errOut, code := runIn(t, append([]string{"config", "--json", "--env-file", ""}, args...)...)
		var rep configReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 {
			t.Fatalf("config %v exited %d (%v): %s%s", args, code, err, out, errOut)
		}
		if !strings.Contains(out, `"errors": []`) && !strings.Contains(out, `"errors":[]`) {
			t.Fatalf("config %v --json: no empty errors list: %s", args, out)
		}
		m := map[string]configRow{}
		for _, r := range rep.Settings {
			m[r.Setting] = r
		}
		return m
	}
	local := rows()
	for setting, want := range map[string]string{
		"MAX_PARALLEL_JOBS": "1",
		"IPFS_UPLOAD":       "kubo",
		"MODEL_CACHE_DIR":   filepath.Join(dir, "models"),
		"SOLANA_WS_URL":     "(the embedded localnet's)",
	} {
		if r := local[setting]; r.Value != want || r.Source != sourceDefault {
			t.Errorf("%s = %q from %s; want %q from default", setting, r.Value, r.Source, want)
		}
	}
	t.Setenv("SOLANA_RPC_URL", "https://rpc.example/x?api-key=TOPSECRET,http://b.example")
	t.Setenv("PARALLEL_JOBS", "3")
	t.Setenv("PINATA_JWT", "jwt")
	remote := rows()
	for setting, want := range map[string]string{
		"SOLANA_WS_URL":     "wss://rpc.example/x?api-key=redacted (from SOLANA_RPC_URL)",
		"MAX_PARALLEL_JOBS": "3 (from PARALLEL_JOBS)",
		"IPFS_UPLOAD":       "pinata",
	} {
		if r := remote[setting]; r.Value != want {
			t.Errorf("%s = %q; want %q", setting, r.Value, want)
		}
	}
}
