package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/hypernode-sol/worker/chain"
)

// configRow is one setting as `config` shows it.
type configRow struct {
	Setting string `json:"setting"` // environment name
	Flag    string `json:"flag"`
	Value   string `json:"value"`  // effective value; URLs with credentials or query values redacted
	Source  string `json:"source"` // flag, env, .env or default
	Error   string `json:"error,omitempty"`
}

// configReport is `config --json`.
type configReport struct {
	Settings []configRow `json:"settings"`
	Node     string      `json:"node,omitempty"` // the keypair's public key, when readable
	Errors   []string    `json:"errors,omitempty"`

	first error // the first invalid setting's error (wraps errUsage)
}

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show the effective configuration, where each value came from, and what is invalid",
		Long: `Show every setting's effective value and its source: a flag, the environment, the .env file
(--env-file) or the default. Credentials in URLs are redacted. Invalid values are named in
the table; the first is also printed to stderr and the exit status is then 2.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := resolveSettings(cmd.Flags())
			if err != nil {
				return err
			}
			rep := buildConfigReport(r)
			out := cmd.OutOrStdout()
			if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				printConfig(out, rep)
			}
			// The first invalid setting also goes to stderr as the one-line
			// usage error every command gives; the exit status is 2.
			return rep.first
		},
	}
	addConfigFlags(cmd.Flags())
	cmd.Flags().Bool("json", false, "print JSON")
	return cmd
}

func buildConfigReport(r *resolved) *configReport {
	c, errs := checkConfig(r.raw)
	bad := map[string]string{}
	rep := &configReport{}
	for _, e := range errs {
		if rep.first == nil {
			rep.first = e
		}
		if _, dup := bad[e.Setting]; !dup {
			bad[e.Setting] = e.Msg
		}
		rep.Errors = append(rep.Errors, e.Msg)
	}
	for _, s := range settings {
		row := configRow{Setting: s.env, Flag: "--" + s.flag, Source: r.source[s.env], Error: bad[s.env]}
		if row.Error != "" {
			row.Value = redactSetting(s.env, r.raw[s.env])
		} else {
			row.Value = effectiveValue(c, s.env, r.raw[s.env])
		}
		rep.Settings = append(rep.Settings, row)
	}
	if key, err := chain.LoadKeypair(c.KeypairPath); err == nil {
		rep.Node = key.PublicKey().String()
	}
	return rep
}

// secretSettings are never printed, only whether they are set.
var secretSettings = map[string]bool{"PINATA_JWT": true, "REGISTRY_PASSWORD": true}

// redactSetting hides secrets and the credentials in URL-valued settings.
func redactSetting(env, v string) string {
	if secretSettings[env] {
		if v == "" {
			return ""
		}
		return "[redacted]"
	}
	switch env {
	case "PINATA_API_URL":
		return redactURL(v)
	case "IPFS_UPLOAD_URL", "SOLANA_WS_URL":
		return redactURL(v)
	case "SOLANA_RPC_URL", "IPFS_GATEWAY":
		parts := strings.Split(v, ",")
		for i, p := range parts {
			parts[i] = redactURL(strings.TrimSpace(p))
		}
		return strings.Join(parts, ",")
	}
	return v
}

// effectiveValue is what the worker will use for setting env of a valid c.
func effectiveValue(c *Config, env, raw string) string {
	local := "(the embedded localnet's)"
	if secretSettings[env] {
		return redactSetting(env, raw)
	}
	switch env {
	case "SOLANA_RPC_URL":
		if c.Embedded() {
			return "(embedded localnet on " + c.LocalnetAddr + ")"
		}
		return redactSetting(env, c.RPCURL)
	case "KEYPAIR_PATH":
		if c.KeypairDefault {
			return c.KeypairPath + " (created at first start when missing)"
		}
		return c.KeypairPath
	case "MARKET_PUBKEY":
		if !c.MarketSet {
			if c.Embedded() {
				return "(the embedded localnet's market)"
			}
			return "(the localnet's market, looked up at start)"
		}
		return c.Market.String()
	case "IPFS_GATEWAY":
		if len(c.Gateways) == 0 {
			return local
		}
		return redactSetting(env, strings.Join(c.Gateways, ","))
	case "IPFS_UPLOAD_URL":
		if c.UploadURL == "" {
			return local
		}
		return redactURL(c.UploadURL)
	case "HYPERNODE_DATA_DIR":
		return c.DataDir
	case "REGISTRY_AUTH":
		if hosts := c.RegistryAuth.Hosts(); len(hosts) > 0 {
			return strings.TrimSpace(raw + " (credentials for " + strings.Join(hosts, ",") + ")")
		}
	case "REGISTRY_HOST":
		if raw != "" {
			return raw + " (as " + strings.Join(c.RegistryAuth.Hosts(), ",") + ")"
		}
	case "PREPULL_IMAGES":
		return strings.Join(c.PrepullImages, ",")
	}
	return raw
}

func printConfig(out io.Writer, rep *configReport) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SETTING\tVALUE\tSOURCE")
	for _, r := range rep.Settings {
		v := r.Value
		if v == "" {
			v = "-"
		}
		if r.Error != "" {
			v += "  ✗ invalid"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Setting, v, r.Source)
	}
	tw.Flush()
	if rep.Node != "" {
		fmt.Fprintf(out, "\nnode: %s\n", rep.Node)
	}
	if len(rep.Errors) > 0 {
		fmt.Fprintf(out, "\n%d invalid setting(s):\n", len(rep.Errors))
		for _, e := range rep.Errors {
			fmt.Fprintf(out, "  ✗ %s\n", e)
		}
	}
}
