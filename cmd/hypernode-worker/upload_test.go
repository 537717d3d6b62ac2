package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hypernode-sol/worker/ipfs"
)

// rawDefaults is every setting at its default, as loadConfig resolves them.
func rawDefaults() map[string]string {
	raw := map[string]string{}
	for _, s := range settings {
		raw[s.env] = s.def
	}
	return raw
}

func TestParseUpload(t *testing.T) {
	const jwt = "eyJhbGciOiJIUzI1NiJ9.secret-part.sig"
	devnet := map[string]string{"NETWORK": "devnet", "MARKET_PUBKEY": "11111111111111111111111111111111",
		"KEYPAIR_PATH": "/k.json", "IPFS_GATEWAY": "https://ipfs.io"}
	tests := []struct {
		name    string
		set     map[string]string
		devnet  bool
		want    string // the service, or the start of the usage error
		wantErr bool
	}{
		{"localnet defaults to its kubo API", nil, false, "kubo", false},
		{"JWT alone means pinata", map[string]string{"PINATA_JWT": jwt}, true, "pinata", false},
		{"upload URL alone means kubo", map[string]string{"IPFS_UPLOAD_URL": "http://127.0.0.1:5001"}, true, "kubo", false},
		{"both without a choice", map[string]string{"IPFS_UPLOAD_URL": "http://127.0.0.1:5001", "PINATA_JWT": jwt}, true, "both IPFS_UPLOAD_URL and PINATA_JWT", true},
		{"both, pinata chosen", map[string]string{"IPFS_UPLOAD": "pinata", "IPFS_UPLOAD_URL": "http://127.0.0.1:5001", "PINATA_JWT": jwt}, true, "pinata", false},
		{"pinata without JWT", map[string]string{"IPFS_UPLOAD": "pinata"}, true, "IPFS_UPLOAD=pinata needs PINATA_JWT", true},
		{"neither on devnet", nil, true, "IPFS_UPLOAD_URL is required on devnet", true},
		{"bad service", map[string]string{"IPFS_UPLOAD": "s3"}, false, `IPFS_UPLOAD "s3" is not kubo or pinata`, true},
		{"bad Pinata URL", map[string]string{"PINATA_JWT": jwt, "PINATA_API_URL": "ftp://x"}, true, `PINATA_API_URL "ftp://x"`, true},
		{"bad kubo URL", map[string]string{"IPFS_UPLOAD_URL": "ftp://x"}, true, `IPFS_UPLOAD_URL "ftp://x"`, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := rawDefaults()
			if tc.devnet {
				for k, v := range devnet {
					raw[k] = v
				}
			}
			for k, v := range tc.set {
				raw[k] = v
			}
			c, err := parseConfig(raw)
			if tc.wantErr {
				if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want a usage error containing %q", err, tc.want)
				}
				if strings.Contains(err.Error(), jwt) {
					t.Errorf("error reveals the JWT: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Upload != tc.want {
				t.Fatalf("Upload = %q, want %q", c.Upload, tc.want)
			}
			switch up := c.uploader().(type) {
			case *ipfs.Pinata:
				if tc.want != "pinata" || up.JWT.Reveal() != jwt || up.APIURL != ipfs.DefaultPinataURL {
					t.Errorf("uploader = Pinata{%s}, want the %s service", up.APIURL, tc.want)
				}
			case *ipfs.Uploader:
				if tc.want != "kubo" || up.APIURL != c.UploadURL {
					t.Errorf("uploader = kubo %s, want the %s service", up.APIURL, tc.want)
				}
			}
			if s := fmt.Sprintf("%v %+v", c, c); strings.Contains(s, jwt) {
				t.Errorf("printing the config reveals the JWT: %s", s)
			}
		})
	}
}
