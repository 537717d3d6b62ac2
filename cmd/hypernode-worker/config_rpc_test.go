package main

import (
	"errors"
	"testing"
)

// rawDefaultsWith is every setting at its default, plus overrides.
func rawDefaultsWith(t *testing.T, over map[string]string) map[string]string {
	raw := map[string]string{"HYPERNODE_DATA_DIR": t.TempDir()}
	for _, s := range settings {
		if _, ok := raw[s.env]; !ok {
			raw[s.env] = s.def
		}
	}
	for k, v := range over {
		raw[k] = v
	}
	return raw
}

func TestConfigRPCSettings(t *testing.T) {
	c, err := parseConfig(rawDefaultsWith(t, map[string]string{"NETWORK": "devnet", "MARKET_PUBKEY": "11111111111111111111111111111111",
		"KEYPAIR_PATH": "/dev/null", "IPFS_GATEWAY": "https://ipfs.io", "IPFS_UPLOAD_URL": "http://127.0.0.1:5001",
		"SOLANA_RPC_URL": " https://a.example/k?api-key=x , https://b.example ", "PRIORITY_FEE_MICROLAMPORTS": "5000"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.RPCURL != "https://a.example/k?api-key=x,https://b.example" || c.PrimaryRPC() != "https://a.example/k?api-key=x" {
		t.Errorf("RPC URLs %q (primary %q)", c.RPCURL, c.PrimaryRPC())
	}
	if c.RateLimit != 10 || c.PriorityFee != 5000 || c.PriorityFeeCap != 100000 || len(c.ChainOptions()) != 2 {
		t.Errorf("rate %v fee %d cap %d", c.RateLimit, c.PriorityFee, c.PriorityFeeCap)
	}
	local, err := parseConfig(rawDefaultsWith(t, map[string]string{"SOLANA_RPC_URL": "http://127.0.0.1:8899", "SOLANA_WS_URL": "none", "RPC_RATE_LIMIT": "auto"}))
	if err != nil {
		t.Fatal(err)
	}
	if local.RateLimit != 0 || len(local.ChainOptions()) != 3 || local.Gateways[0] != "http://127.0.0.1:8899" {
		t.Errorf("localnet: rate %v, %d options, gateways %v", local.RateLimit, len(local.ChainOptions()), local.Gateways)
	}
	for name, over := range map[string]map[string]string{
		"list with a bad URL": {"SOLANA_RPC_URL": "http://127.0.0.1:8899,ftp://x"},
		"ws not ws":           {"SOLANA_WS_URL": "http://127.0.0.1:8899"},
		"rate negative":       {"RPC_RATE_LIMIT": "-1"},
		"rate word":           {"RPC_RATE_LIMIT": "fast"},
		"fee negative":        {"PRIORITY_FEE_MICROLAMPORTS": "-5"},
		"cap huge":            {"PRIORITY_FEE_CAP_LAMPORTS": "99999999999999999"},
	} {
		if _, err := parseConfig(rawDefaultsWith(t, over)); !errors.Is(err, errUsage) {
			t.Errorf("%s: %v, want a usage error", name, err)
		}
	}
}

// TestGroupParsersNameTheirSetting: the settings parsed by the upload,
// sandbox and image parsers are named in `config`'s error list by their own
// name, each one, all at once.
func TestGroupParsersNameTheirSetting(t *testing.T) {
	_, errs := checkConfig(rawDefaultsWith(t, map[string]string{
		"PREPULL_IMAGES": "Not A Ref", "LOG_LIMIT_MB": "0", "IPFS_UPLOAD": "ftp",
	}))
	got := map[string]bool{}
	for _, e := range errs {
		got[e.Setting] = true
	}
	for _, want := range []string{"PREPULL_IMAGES", "LOG_LIMIT_MB", "IPFS_UPLOAD"} {
		if !got[want] {
			t.Errorf("%s not named; errors %v", want, errs)
		}
	}
}
