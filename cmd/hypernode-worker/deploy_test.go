package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const deployDir = "../../deploy"

// validPubkey stands in for the manifests' MARKET_PUBKEY placeholder.
const validPubkey = "7LDBVAHWC7h3SScHAutwLc3vWMsV6hZtmZN8uiLukAJR"

// checkDeployEnv validates a manifest's worker settings: every name is a
// setting the worker reads, and together with the defaults they form a
// valid configuration (the market placeholder replaced).
func checkDeployEnv(t *testing.T, where string, env map[string]string) {
	t.Helper()
	known := map[string]bool{}
	raw := map[string]string{}
	for _, s := range settings {
		known[s.env] = true
		raw[s.env] = s.def
	}
	for k, v := range env {
		if !known[k] {
			t.Errorf("%s: %s is not a worker setting", where, k)
			continue
		}
		if strings.HasPrefix(v, "REPLACE") {
			v = validPubkey
		}
		raw[k] = v
	}
	if _, errs := checkConfig(raw); len(errs) > 0 {
		t.Errorf("%s: the settings are invalid: %q", where, errs[0].Msg)
	}
}

// k8sObject is the part of a manifest the test reads.
type k8sObject struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Data       map[string]string `yaml:"data"`
	Spec       struct {
		Template struct {
			Spec struct {
				InitContainers []k8sContainer `yaml:"initContainers"`
				Containers     []k8sContainer `yaml:"containers"`
				Volumes        []struct {
					Name     string `yaml:"name"`
					HostPath struct {
						Path string `yaml:"path"`
					} `yaml:"hostPath"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Command []string `yaml:"command"`
	Env     []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

// TestKubernetesDaemonSet parses every document of the DaemonSet manifest
// and checks what the worker needs of it: valid settings, JSON logs, and the
// data directory and the binary at the same path in the pod and on the host
// (containerd on the host opens both).
func TestKubernetesDaemonSet(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "kubernetes", "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	byKind := map[string]*k8sObject{}
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("daemonset.yaml: %v", err)
		}
		if o.APIVersion == "" || o.Kind == "" {
			t.Fatalf("a document without apiVersion/kind: %+v", o)
		}
		byKind[o.Kind] = &o
	}
	cm, ds := byKind["ConfigMap"], byKind["DaemonSet"]
	if cm == nil || ds == nil || byKind["Namespace"] == nil || len(byKind) != 3 {
		t.Fatalf("kinds %v; want Namespace, ConfigMap, DaemonSet", byKind)
	}
	checkDeployEnv(t, "ConfigMap", cm.Data)
	dataDir := cm.Data["HYPERNODE_DATA_DIR"]
	if dataDir == "" || cm.Data["LOG_FORMAT"] != "json" {
		t.Errorf("ConfigMap: HYPERNODE_DATA_DIR %q, LOG_FORMAT %q; want a data directory and json", dataDir, cm.Data["LOG_FORMAT"])
	}
	pod := ds.Spec.Template.Spec
	hostPaths := map[string]string{}
	for _, v := range pod.Volumes {
		hostPaths[v.Name] = v.HostPath.Path
	}
	if len(pod.Containers) != 1 || len(pod.InitContainers) != 1 {
		t.Fatalf("containers %d, init containers %d; want 1 and 1", len(pod.Containers), len(pod.InitContainers))
	}
	for _, c := range append(pod.InitContainers, pod.Containers...) {
		sameData := false
		for _, m := range c.VolumeMounts {
			if hp := hostPaths[m.Name]; hp != "" && m.MountPath != hp {
				t.Errorf("%s: volume %s is mounted at %s but is %s on the host", c.Name, m.Name, m.MountPath, hp)
			}
			sameData = sameData || (m.MountPath == dataDir && hostPaths[m.Name] == dataDir)
		}
		if !sameData {
			t.Errorf("%s: the data directory %s is not mounted from the same host path", c.Name, dataDir)
		}
		for _, e := range c.Env {
			if e.Name != "NVIDIA_VISIBLE_DEVICES" {
				checkDeployEnv(t, c.Name+" env", map[string]string{e.Name: e.Value})
			}
		}
	}
	worker := pod.Containers[0]
	if len(worker.Command) < 2 || !strings.HasPrefix(worker.Command[0], dataDir+"/") || worker.Command[1] != "start" {
		t.Errorf("worker command %q: want the binary under the data directory (a host path the shim can run) and start", worker.Command)
	}
}

// TestNomadSystemJob checks the Nomad job's type, driver and env block (no
// HCL parser is in the module graph: the env block is read line by line).
func TestNomadSystemJob(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "nomad", "hypernode-worker.nomad"))
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	for _, want := range []string{`type        = "system"`, `driver = "raw_exec"`, `kill_signal  = "SIGTERM"`, `"start"`} {
		if !strings.Contains(src, want) {
			t.Errorf("the Nomad job lacks %s", want)
		}
	}
	block := regexp.MustCompile(`(?s)\n\s*env \{\n(.*?)\n\s*\}`).FindStringSubmatch(src)
	if block == nil {
		t.Fatal("no env block")
	}
	env := map[string]string{}
	lines := 0
	for _, line := range strings.Split(block[1], "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		lines++
		m := regexp.MustCompile(`^\s*([A-Z_]+)\s*=\s*"([^"]*)"\s*$`).FindStringSubmatch(line)
		if m == nil {
			t.Errorf("env line %q is not NAME = \"value\"", line)
			continue
		}
		env[m[1]] = m[2]
	}
	if len(env) != lines || len(env) < 5 {
		t.Fatalf("env block: %d settings of %d lines", len(env), lines)
	}
	checkDeployEnv(t, "nomad env", env)
	if env["LOG_FORMAT"] != "json" || env["HYPERNODE_DATA_DIR"] == "" {
		t.Errorf("nomad env %v: want LOG_FORMAT json and a data directory", env)
	}
}

// TestSystemdUnitVerifies runs systemd-analyze verify on the unit, with
// ExecStart pointing at the test's worker binary (verify wants it to
// exist); any complaint fails the test.
func TestSystemdUnitVerifies(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join(deployDir, "systemd", "hypernode-worker.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Restart=on-failure", "After=network-online.target containerd.service", "Wants=network-online.target containerd.service",
		"Environment=HYPERNODE_DATA_DIR=/var/lib/hypernode", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/hypernode -/run/containerd"} {
		if !bytes.Contains(unit, []byte("\n"+want+"\n")) {
			t.Errorf("the unit lacks %q", want)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	if testing.Short() {
		t.Skip("builds the worker binary (skipped with -short)")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "hypernode-worker.service")
	if err := os.WriteFile(path, bytes.ReplaceAll(unit, []byte("/usr/local/bin/hypernode-worker"), []byte(workerBinary(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
