// Package pvesimtest starts the Proxmox API simulator for tests: a
// simulator with an API token and a root socket, and the simulator's pvesh
// and pct commands built once per test binary.
package pvesimtest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/pvesim"
)

// Node is the simulated node's name.
const Node = "pve"

// TokenID is the API token the simulator accepts.
const TokenID = "vkimg@pve!test"

// Env is a running simulator and what clients need to reach it.
type Env struct {
	Sim *pvesim.Server
	// Secret is TokenID's secret, random per simulator.
	Secret string
	// Pvesh and Pct are the simulator's commands; they reach this
	// simulator because Start sets PVESIM_SOCKET for the test.
	Pvesh string
	Pct   string
}

// Start runs a simulator reporting version on backend until the test ends.
// insecureRegistries are registries oci-registry-pull may reach over HTTP.
func Start(t testing.TB, backend hypervisor.Hypervisor, version string, insecureRegistries ...string) *Env {
	t.Helper()
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	e := &Env{Secret: hex.EncodeToString(secret)}
	e.Pvesh, e.Pct = commands(t)
	sock := filepath.Join(t.TempDir(), "pvesim.sock")
	sim, err := pvesim.Start(pvesim.Config{
		Backend: backend, Node: Node, Version: version, Tokens: map[string]string{TokenID: e.Secret},
		Socket: sock, InsecureRegistries: insecureRegistries,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sim.Close(); err != nil {
			t.Errorf("close simulator: %v", err)
		}
	})
	t.Setenv("PVESIM_SOCKET", sock)
	e.Sim = sim
	return e
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// commands builds cmd/pvesh once per test binary, as pvesh and as pct (the
// same multi-call binary), into a directory removed by Cleanup.
func commands(t testing.TB) (pvesh, pct string) {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "vkimg-pvesh-"); buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "pvesh"), "github.com/vkimg/vkimg/internal/pvesim/cmd/pvesh").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build pvesh: %w\n%s", err, out)
			return
		}
		buildErr = os.Symlink("pvesh", filepath.Join(binDir, "pct"))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "pvesh"), filepath.Join(binDir, "pct")
}

// Cleanup removes the built commands; call it from TestMain after m.Run.
func Cleanup() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}
