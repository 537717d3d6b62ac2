package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
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
	Errors   []string    `json:"errors"`         // empty, not absent, when every setting is valid
}

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show the effective configuration, where each value came from, and what is invalid",
		Long: `Show every setting's effective value and its source: a flag, the environment, the .env file
(--env-file) or the default. Credentials in URLs are redacted. Invalid values are named in
the table and listed once after it (in --json, in "errors"); stderr then only counts them
and the exit status is 2.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := resolveSettings(cmd.Flags())
			if err != nil {
				return err
			}
			rep := buildConfigReport(r)
			out := cmd.OutOrStdout()
			asJSON, _ := cmd.Flags().GetBool("json")
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				printConfig(out, rep)
			}
			// The settings are listed in the output; the one-line usage
			// error only counts them (exit status 2), so that none is
			// printed twice.
			return invalidCount(len(rep.Errors), asJSON)
		},
	}
	addConfigFlags(cmd.Flags())
	cmd.Flags().Bool("json", false, "print JSON")
	return cmd
}

func buildConfigReport(r *resolved) *configReport {
	c, errs := checkConfig(r.raw)
	bad := map[string]string{}
	rep := &configReport{Errors: []string{}}
	for _, e := range errs {
		if _, dup := bad[e.Setting]; !dup {
			bad[e.Setting] = e.Msg
		}
		rep.Errors = append(rep.Errors, e.Msg)
	}
	for _, s := range settings {
		row := configRow{Setting: s.env, Flag: "--" + s.flag, Source: r.source[s.env], Error: bad[s.env]}
		switch {
		case row.Error != "":
			row.Value = redactSetting(s.env, r.raw[s.env])
		case s.env == "MAX_PARALLEL_JOBS" && c.SlotsAlias && bad["PARALLEL_JOBS"] != "":
			// The alias it would come from is invalid (named on its row).
		default:
			row.Value = effectiveValue(c, s.env, r.raw[s.env])
		}
		rep.Settings = append(rep.Settings, row)
	}
	if key, err := chain.LoadKeypair(c.KeypairPath); err == nil {
		rep.Node = key.PublicKey().String()
	}
	return rep
}

// invalidCount is config's usage error for n invalid settings already
// printed (nil when n is 0).
func invalidCount(n int, asJSON bool) error {
	if n == 0 {
		return nil
	}
	where := "listed above"
	if asJSON {
		where = "listed in the JSON's errors"
	}
	if n == 1 {
		return usageErr("1 invalid setting (%s)", where)
	}
	return usageErr("%d invalid settings (%s)", n, where)
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
	// The rest show what the README's default resolves to when unset.
	case "SOLANA_WS_URL":
		if raw != "" {
			break
		}
		if c.Embedded() {
			return local
		}
		if u, err := url.Parse(c.PrimaryRPC()); err == nil && c.PrimaryRPC() != "" {
			w := *u // as chain.New derives it: same URL, ws(s) for http(s)
			w.Scheme = "ws"
			if strings.EqualFold(u.Scheme, "https") {
				w.Scheme = "wss"
			}
			return redactURL(w.String()) + " (from SOLANA_RPC_URL)"
		}
	case "IPFS_UPLOAD":
		return c.Upload
	case "MAX_PARALLEL_JOBS":
		if raw != "" {
			break
		}
		v := strconv.Itoa(c.Slots)
		if c.SlotsAuto {
			v = "auto"
		}
		if c.SlotsAlias {
			v += " (from PARALLEL_JOBS)"
		}
		return v
	case "MODEL_CACHE_DIR":
		return c.Sandbox.ModelCacheDir
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
