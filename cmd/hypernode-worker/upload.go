package main

import (
	"net/url"
	"time"

	"github.com/hypernode-sol/worker/ipfs"
)

// Upload services (IPFS_UPLOAD).
const (
	uploadKubo   = "kubo"
	uploadPinata = "pinata"
)

// parseUpload resolves the upload settings: IPFS_UPLOAD names the service, or, unset, it
// is pinata when only PINATA_JWT is set and kubo otherwise (both IPFS_UPLOAD_URL and
// PINATA_JWT set without IPFS_UPLOAD is ambiguous). kubo needs IPFS_UPLOAD_URL (the local
// market's by default); pinata needs PINATA_JWT and an http(s) PINATA_API_URL. The JWT
// never appears in an error.
func (c *Config) parseUpload(raw map[string]string) error {
	c.Upload, c.PinataJWT, c.PinataURL = raw["IPFS_UPLOAD"], ipfs.Secret(raw["PINATA_JWT"]), raw["PINATA_API_URL"]
	if c.Upload == "" {
		switch {
		case c.PinataJWT != "" && c.UploadURL != "":
			return settingErr("IPFS_UPLOAD_URL", "both IPFS_UPLOAD_URL and PINATA_JWT are set: set IPFS_UPLOAD to kubo or pinata")
		case c.PinataJWT != "":
			c.Upload = uploadPinata
		default:
			c.Upload = uploadKubo
		}
	}
	httpURL := func(s string) bool {
		u, err := url.Parse(s)
		return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
	}
	switch c.Upload {
	case uploadKubo:
		if c.UploadURL == "" && c.Local() {
			c.UploadURL = c.PrimaryRPC()
		} else if c.UploadURL == "" {
			return settingErr("IPFS_UPLOAD_URL", "IPFS_UPLOAD_URL is required on %s (a kubo RPC API base URL), or set PINATA_JWT to upload to Pinata", c.Network)
		} else if !httpURL(c.UploadURL) {
			return settingErr("IPFS_UPLOAD_URL", "IPFS_UPLOAD_URL %q is not an http(s) URL", redactURL(c.UploadURL))
		}
	case uploadPinata:
		if c.PinataJWT == "" {
			return settingErr("PINATA_JWT", "IPFS_UPLOAD=pinata needs PINATA_JWT (a Pinata API key's JWT, in the environment or the env file)")
		}
		if !httpURL(c.PinataURL) {
			return settingErr("PINATA_API_URL", "PINATA_API_URL %q is not an http(s) URL", c.PinataURL)
		}
	default:
		return settingErr("IPFS_UPLOAD", "IPFS_UPLOAD %q is not kubo or pinata", c.Upload)
	}
	return nil
}

// uploader is the configured upload service.
func (c *Config) uploader() ipfs.Adder {
	if c.Upload == uploadPinata {
		return &ipfs.Pinata{APIURL: c.PinataURL, JWT: c.PinataJWT}
	}
	return &ipfs.Uploader{APIURL: c.UploadURL}
}

// fetcher is the configured gateway fetcher for definitions of at most maxBytes.
func (c *Config) fetcher(maxBytes int64) *ipfs.Fetcher {
	return &ipfs.Fetcher{Gateways: c.Gateways, MaxBytes: maxBytes, PerGatewayTimeout: 30 * time.Second}
}
