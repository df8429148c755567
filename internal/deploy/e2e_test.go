package deploy

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/edge"
	"github.com/vkimg/vkimg/internal/testenv"
)

// gateway is the host's address on the test's bridge: what a container on
// it can reach on the host.
func (e *env) gateway(t *testing.T) netip.Addr {
	t.Helper()
	iface, err := net.InterfaceByName(e.bridge)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := iface.Addrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
			return p.Addr()
		}
	}
	t.Fatalf("bridge %s has no IPv4 address", e.bridge)
	return netip.Addr{}
}

// instanceConfig reads what deploy wrote for an instance.
func (e *env) instanceConfig(t testing.TB, name string) *deployconfig.InstanceConfig {
	t.Helper()
	cfg, err := deployconfig.ReadInstance(filepath.Join(e.root.Instance(name), InstanceFile))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// get fetches path from an instance through nginx over HTTPS.
func (e *env) get(t testing.TB, name, path string) (*http.Response, string) {
	t.Helper()
	cfg := e.instanceConfig(t, name)
	client, err := EdgeClient(edge.Site{Domains: []string{cfg.Domain}, HTTPSPort: e.nginx.HTTPSPort, CertFile: cfg.TLS.Certificate})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Get(fmt.Sprintf("https://%s:%d%s", cfg.Domain, e.nginx.HTTPSPort, path))
	if err != nil {
		t.Fatalf("GET %s on %s through nginx: %v", path, name, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp, b.String()
}

// TestDeployExternalDatabases deploys against real PostgreSQL and MariaDB
// servers, reachable from the container on the bridge's host address.
func TestDeployExternalDatabases(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		typ, driver string
		start       func(testing.TB) testenv.Database
	}{
		{"postgres", "pgx", testenv.PostgreSQL},
		{"mysql", "mysql", testenv.MariaDB},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			db := tc.start(t)
			host, port, err := net.SplitHostPort(testenv.Forward(t, net.JoinHostPort(e.gateway(t).String(), "0"), db.Addr()))
			if err != nil {
				t.Fatal(err)
			}
			name := "db" + tc.typ
			a := e.answers(t, name, "")
			a.Database = deployconfig.Database{Type: tc.typ, Host: host, Name: db.Name, User: db.User, Password: db.Password}
			fmt.Sscan(port, &a.Database.Port)
			var progress bytes.Buffer
			res, err := Run(context.Background(), a, e.options(&progress))
			if err != nil {
				t.Fatalf("deploy with %s: %v\n%s", tc.typ, err, progress.String())
			}
			useInstance(t, e, res)

			conn, err := sql.Open(tc.driver, db.DSN())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			var n int
			if err := conn.QueryRow("SELECT COUNT(*) FROM migration").Scan(&n); err != nil || n == 0 {
				t.Fatalf("migration table in %s: %d rows, %v", tc.typ, n, err)
			}
			var tasks int
			if err := conn.QueryRow("SELECT COUNT(*) FROM tasks").Scan(&tasks); err != nil || tasks != 1 {
				t.Fatalf("tasks in %s after creating one through nginx: %d, %v", tc.typ, tasks, err)
			}
			t.Logf("%s: %d migrations applied, the task is in the server's database", tc.typ, n)
		})
	}
}

// TestDeployFiveInstances deploys five instances side by side (SC-007).
func TestDeployFiveInstances(t *testing.T) {
	e := newEnv(t)
	names := []string{"one", "two", "three", "four", "five"}
	var results []*Result
	for _, name := range names {
		var progress bytes.Buffer
		start := time.Now()
		res, err := Run(context.Background(), e.answers(t, name, ""), e.options(&progress))
		if err != nil {
			t.Fatalf("deploy %s: %v\n%s", name, err, progress.String())
		}
		t.Logf("%s: container %d at %s in %v", name, res.ContainerID, res.Address, time.Since(start).Round(time.Millisecond))
		results = append(results, res)
	}
	ids, addrs, domains := map[int]bool{}, map[netip.Addr]bool{}, map[string]bool{}
	for i, res := range results {
		cfg := e.instanceConfig(t, res.Name)
		ids[res.ContainerID], addrs[res.Address], domains[cfg.Domain] = true, true, true
		resp, info := e.get(t, res.Name, "/api/v1/info")
		if resp.StatusCode != http.StatusOK || resp.Header.Get(edge.SlotHeader) == "" || !strings.Contains(info, res.Version) {
			t.Fatalf("%s through nginx: %s, %s %q", res.Name, resp.Status, edge.SlotHeader, resp.Header.Get(edge.SlotHeader))
		}
		t.Logf("%s: %s answers through nginx, %s %s", res.Name, cfg.Domain, edge.SlotHeader, resp.Header.Get(edge.SlotHeader))
		useInstance(t, e, res)
		// Each instance has its own users: the next one's password is
		// refused here.
		other := results[(i+1)%len(results)]
		if code := e.login(t, res.Name, other.AdminUser, other.AdminPassword); code/100 == 2 {
			t.Errorf("%s accepted %s's admin password: %d", res.Name, other.Name, code)
		}
	}
	if len(ids) != 5 || len(addrs) != 5 || len(domains) != 5 {
		t.Fatalf("IDs %v, addresses %v, domains %v: want five distinct of each", ids, addrs, domains)
	}
	list, err := List(context.Background(), e.root, e.be)
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, in := range list {
		if in.State != "running" {
			t.Errorf("%s is %s", in.Name, in.State)
		}
		listed = append(listed, in.Name)
	}
	slices.Sort(listed)
	want := slices.Clone(names)
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Fatalf("list = %v, want %v", listed, want)
	}
}

// login posts credentials through nginx and returns the status code.
func (e *env) login(t *testing.T, name, user, password string) int {
	t.Helper()
	cfg := e.instanceConfig(t, name)
	client, err := EdgeClient(edge.Site{Domains: []string{cfg.Domain}, HTTPSPort: e.nginx.HTTPSPort, CertFile: cfg.TLS.Certificate})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"username": user, "password": password})
	resp, err := client.Post(fmt.Sprintf("https://%s:%d/api/v1/login", cfg.Domain, e.nginx.HTTPSPort), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("login on %s: %v", name, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestDeployBrowserRendersLoginPage loads the deployed frontend in headless
// Chromium through nginx, then uses the API as the page would.
func TestDeployBrowserRendersLoginPage(t *testing.T) {
	chromium := testenv.Need(t, "/usr/bin/chromium", "chromium")
	e := newEnv(t)
	var progress bytes.Buffer
	res, err := Run(context.Background(), e.answers(t, "browser", ""), e.options(&progress))
	if err != nil {
		t.Fatalf("deploy: %v\n%s", err, progress.String())
	}
	cfg := e.instanceConfig(t, "browser")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir="+t.TempDir(),
		"--host-resolver-rules=MAP "+cfg.Domain+" 127.0.0.1", "--ignore-certificate-errors",
		"--virtual-time-budget=5000", "--dump-dom", fmt.Sprintf("https://%s:%d/", cfg.Domain, e.nginx.HTTPSPort))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	start := time.Now()
	dom, err := cmd.Output()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	t.Logf("chromium loaded and rendered the page through nginx in %v", took.Round(time.Millisecond))
	// The version span is filled by the page's script from /api/v1/info:
	// the script ran and reached the API through nginx.
	for _, want := range []string{`id="login-form"`, "Log in", `<span id="version">` + res.Version + `</span>`} {
		if !strings.Contains(string(dom), want) {
			t.Fatalf("rendered DOM lacks %q:\n%s\n%s", want, dom, stderr.String())
		}
	}
	useInstance(t, e, res)
}
