package runtime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Egress policies (Config.Egress, ContainerSpec.Egress).
const (
	// EgressNone: the container has its own network namespace with only loopback.
	// No packet leaves it. The default.
	EgressNone = "none"
	// EgressAllow: the container's own network namespace gets a user-mode NAT
	// (slirp4netns) to the public internet, and nothing else:
	//   - the host's loopback (where the worker, containerd and other local services
	//     listen) is not reachable (--disable-host-loopback);
	//   - private, link-local and shared address ranges (the LAN, cloud metadata at
	//     169.254.169.254, carrier NAT) are unreachable routes in the namespace,
	//     set by the worker before the process starts; the process has no
	//     CAP_NET_ADMIN to remove them;
	//   - the host's network namespace is never shared with the container.
	// Needs the slirp4netns, nsenter and ip commands (CheckEgress).
	EgressAllow = "allow"

	// LabelEgress records the container's egress policy, read by RunOp.
	LabelEgress = "hypernode.egress"

	// EgressCIDR is the container side of the user-mode network: the container is
	// .100, the gateway .2 (the host, its loopback refused), DNS .3.
	EgressCIDR = "10.0.2.0/24"
	// egressDNS is the NAT's DNS forwarder, written to the container's resolv.conf.
	egressDNS = "10.0.2.3"
)

// blockedRanges are unreachable from a container with EgressAllow: every range that
// is not the public internet (RFC 1918, RFC 6598, link-local, this-network,
// benchmarking, multicast and reserved). Its own EgressCIDR, more specific, stays
// reachable.
var blockedRanges = []string{
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12",
	"192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
	"203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
}

// ErrEgressUnavailable: the egress policy allow cannot be set up on this machine.
var ErrEgressUnavailable = errors.New("egress unavailable")

// CheckEgress says whether policy can be applied here: EgressNone always; EgressAllow
// when slirp4netns, nsenter and ip are installed (error wrapping
// ErrEgressUnavailable naming the missing one). Another policy is ErrInvalid.
func CheckEgress(policy string) error {
	switch policy {
	case EgressNone, "":
		return nil
	case EgressAllow:
		for _, bin := range []string{"slirp4netns", "nsenter", "ip"} {
			if _, err := exec.LookPath(bin); err != nil {
				return fmt.Errorf("egress policy allow needs %s: %w", bin, ErrEgressUnavailable)
			}
		}
		return nil
	}
	return fmt.Errorf("egress policy %q is not none or allow: %w", policy, ErrInvalid)
}

// attachEgress connects the network namespace of the created (not yet started)
// process pid to the internet per EgressAllow and returns the function that
// disconnects it. The helper also stops when this process dies (its exit pipe
// closes); an operation re-attached after a worker restart runs without network.
func attachEgress(ctx context.Context, pid uint32) (stop func(), err error) {
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer readyR.Close()
	exitR, exitW, err := os.Pipe()
	if err != nil {
		readyW.Close()
		return nil, err
	}
	cmd := exec.Command("slirp4netns", "--configure", "--mtu=65520", "--cidr="+EgressCIDR,
		"--disable-host-loopback", "--enable-sandbox", "--enable-seccomp",
		"--ready-fd=3", "--exit-fd=4", strconv.FormatUint(uint64(pid), 10), "tap0")
	cmd.ExtraFiles = []*os.File{readyW, exitR}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		readyW.Close()
		exitR.Close()
		exitW.Close()
		return nil, fmt.Errorf("start slirp4netns: %w: %w", ErrEgressUnavailable, err)
	}
	readyW.Close()
	exitR.Close()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	stop = func() {
		exitW.Close()
		select {
		case <-waited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
	}
	ready := make(chan error, 1)
	go func() {
		b, err := bufio.NewReader(readyR).ReadByte()
		if err == nil && b != '1' {
			err = fmt.Errorf("ready fd said %q", b)
		}
		ready <- err
	}()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	select {
	case err = <-ready:
	case <-rctx.Done():
		err = rctx.Err()
	}
	if err != nil {
		stop()
		return nil, fmt.Errorf("slirp4netns for pid %d not ready: %w: %w (%s)", pid, ErrEgressUnavailable, err, strings.TrimSpace(stderr.String()))
	}
	for _, r := range blockedRanges {
		out, err := exec.CommandContext(ctx, "nsenter", "-t", strconv.FormatUint(uint64(pid), 10), "-n",
			"ip", "route", "add", "unreachable", r).CombinedOutput()
		if err != nil {
			stop()
			return nil, fmt.Errorf("block %s in the container's network: %w: %v: %s", r, ErrEgressUnavailable, err, strings.TrimSpace(string(out)))
		}
	}
	return stop, nil
}
