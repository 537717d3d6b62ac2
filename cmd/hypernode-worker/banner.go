package main

import (
	"context"
	"fmt"
	"io"

	"github.com/hypernode-sol/worker/hardware"
	"github.com/hypernode-sol/worker/runtime"
)

const banner = `╔══════════════════════════════════════╗
║     HYPERNODE GPU WORKER CLIENT      ║
╚══════════════════════════════════════╝

`

// printSpecs writes the specs part of the startup output (the seed README's
// "Detecting system specifications" block): sizes in whole GiB, rounded to
// the nearest (a "24 GB" card reports 24564 MiB), GPUs numbered from 1, then
// the container runtime and every warning.
func printSpecs(w io.Writer, s *hardware.Specs) {
	fmt.Fprintf(w, "  CPU: %s (%d cores, %d threads)\n", s.CPU.Model, s.CPU.Cores, s.CPU.Threads)
	fmt.Fprintf(w, "  RAM: %d GB\n", (s.RAMBytes+hardware.GiB/2)/hardware.GiB)
	fmt.Fprintf(w, "  OS: %s\n", s.OS)
	fmt.Fprintf(w, "  GPUs: %d\n", len(s.GPUs))
	for i, g := range s.GPUs {
		fmt.Fprintf(w, "    %d. %s (%d GB VRAM)\n", i+1, g.Name, g.VRAMGiB())
	}
	if s.ContainerRuntime != "" {
		fmt.Fprintf(w, "  Container Runtime: %s\n", s.ContainerRuntime)
	}
	for _, warn := range s.Warnings {
		fmt.Fprintf(w, "  ⚠ %s\n", warn)
	}
}

// containerdVersion returns a hardware.Options.ContainerRuntime probe: it
// asks the containerd at address for its version through the client.
func containerdVersion(address string) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		rt, err := runtime.New(ctx, runtime.Config{Address: address})
		if err != nil {
			return "", err
		}
		defer rt.Close()
		return "containerd " + rt.DaemonVersion(), nil
	}
}
