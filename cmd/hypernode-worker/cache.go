package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/runtime/modelcache"
)

// newCacheCmd is `cache ls|prune`: the shared model cache (MODEL_CACHE_DIR,
// MODEL_CACHE_LIMIT_MB). It works while the worker runs: the cache's index
// is locked per change.
func newCacheCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "The shared model cache: list or prune cached models",
	}
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List cached models: state, size, digest, last use, jobs holding them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := openModelCache(cmd)
			if err != nil {
				return err
			}
			es, err := c.List()
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MODEL\tSTATE\tBYTES\tDIGEST\tLAST USED\tIN USE BY")
			var total int64
			for _, e := range es {
				total += e.Bytes
				who := e.Populator
				if e.State == modelcache.StateSealed {
					who = fmt.Sprint(len(e.Users), " job(s)")
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", e.Model, e.State, e.Bytes, orDefault(e.Digest, "-"),
					e.LastUsed.Format(time.RFC3339), who)
			}
			fmt.Fprintf(tw, "total\t\t%d\tof %d\t\t\n", total, c.Limit())
			return tw.Flush()
		},
	}
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Evict least recently used models no job holds until the cache fits its budget (--all: every such model)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := openModelCache(cmd)
			if err != nil {
				return err
			}
			all, _ := cmd.Flags().GetBool("all")
			ev, err := c.Prune(all)
			for _, e := range ev {
				fmt.Fprintf(cmd.OutOrStdout(), "evicted %s (%d bytes, %s)\n", e.Model, e.Bytes, e.Digest)
			}
			if err == nil && len(ev) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "nothing to evict")
			}
			return err
		},
	}
	prune.Flags().Bool("all", false, "evict every model no running job holds")
	for _, c := range []*cobra.Command{ls, prune} {
		addConfigFlags(c.Flags())
		cmd.AddCommand(c)
	}
	return cmd
}

func openModelCache(cmd *cobra.Command) (*modelcache.Cache, error) {
	cfg, err := loadConfig(cmd.Flags())
	if err != nil {
		return nil, err
	}
	if cfg.Sandbox.ModelCacheLimitBytes == 0 {
		return nil, usageErr("the model cache is off: set MODEL_CACHE_LIMIT_MB")
	}
	return modelcache.Open(cfg.Sandbox.ModelCacheDir, cfg.Sandbox.ModelCacheLimitBytes)
}

// modelCache implements fsm.ModelCache over runtime/modelcache.
type modelCache struct{ c *modelcache.Cache }

func (m modelCache) Acquire(model, job string) (string, bool, error) {
	mt, err := m.c.Acquire(model, job)
	return mt.Source, mt.ReadOnly, err
}

func (m modelCache) Finish(job string, ok bool) error { return m.c.Finish(job, ok) }

var _ fsm.ModelCache = modelCache{}
