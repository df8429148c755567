package edge_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vkimg/vkimg/internal/edge"
)

func TestDomain(t *testing.T) {
	good := map[string]string{
		"vikunja.example.com": "vikunja.example.com",
		"Tasks.Example.COM":   "tasks.example.com",
		"bücher.example":      "xn--bcher-kva.example",
		"задачи.рф":           "xn--80aalki3g.xn--p1ai",
		"xn--bcher-kva.test":  "xn--bcher-kva.test",
		"a-b.c0":              "a-b.c0",
		"localhost":           "localhost",
	}
	for in, want := range good {
		got, err := edge.Domain(in)
		if err != nil || got != want {
			t.Errorf("Domain(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := []string{
		"", "example.com;", "example.com; include /etc/shadow", "exa mple.com", "example.com\n",
		"example.com{", "ex}ample.com", `"example.com"`, "'example.com'", "$host", "example.com#x",
		"*.example.com", "example.com.", ".example.com", "a..b", "-a.example", "a-.example",
		"example.com:443", "10.0.0.1", "[::1]", "under_score.example", "exa\\mple.com",
		strings.Repeat("a", 64) + ".example", strings.Repeat("abcdefghi.", 26) + "com",
	}
	for _, in := range bad {
		if got, err := edge.Domain(in); !errors.Is(err, edge.ErrInvalid) {
			t.Errorf("Domain(%q) = %q, %v; want ErrInvalid", in, got, err)
		}
	}
}

func validSite() edge.Site {
	return edge.Site{
		Instance: "tasks",
		Domains:  []string{"tasks.example.com"},
		CertFile: "/etc/vkimg/tls/tasks.crt",
		KeyFile:  "/etc/vkimg/tls/tasks.key",
		Upstream: edge.Upstream{Slot: "blue", Address: netip.MustParseAddr("10.77.0.10")},
	}
}

// Every invalid value is refused before a single file is written, so
// nothing that reaches nginx's configuration can carry syntax of its own.
func TestApplyRefusesInvalidBeforeWriting(t *testing.T) {
	cases := map[string]func(*edge.Site){
		"no domain":             func(s *edge.Site) { s.Domains = nil },
		"domain injection":      func(s *edge.Site) { s.Domains = []string{"a.example; } server { listen 1"} },
		"second domain bad":     func(s *edge.Site) { s.Domains = append(s.Domains, "bad domain") },
		"duplicate domain":      func(s *edge.Site) { s.Domains = append(s.Domains, "TASKS.example.com") },
		"instance traversal":    func(s *edge.Site) { s.Instance = "../etc" },
		"instance upper":        func(s *edge.Site) { s.Instance = "Tasks" },
		"cert relative":         func(s *edge.Site) { s.CertFile = "tls/tasks.crt" },
		"cert space":            func(s *edge.Site) { s.CertFile = "/etc/tls/my cert.pem" },
		"cert semicolon":        func(s *edge.Site) { s.CertFile = "/etc/tls/a.pem;" },
		"cert variable":         func(s *edge.Site) { s.CertFile = "/etc/tls/$host.pem" },
		"cert newline":          func(s *edge.Site) { s.CertFile = "/etc/tls/a.pem\ninclude /x" },
		"cert quote":            func(s *edge.Site) { s.CertFile = `/etc/tls/a".pem` },
		"cert dotdot":           func(s *edge.Site) { s.CertFile = "/etc/tls/../shadow" },
		"key braces":            func(s *edge.Site) { s.KeyFile = "/etc/tls/{a}.key" },
		"key directory":         func(s *edge.Site) { s.KeyFile = "/etc/tls/" },
		"same ports":            func(s *edge.Site) { s.HTTPPort, s.HTTPSPort = 8443, 8443 },
		"port range":            func(s *edge.Site) { s.HTTPSPort = 70000 },
		"body size":             func(s *edge.Site) { s.MaxBodyMiB = -1 },
		"slot injection":        func(s *edge.Site) { s.Upstream.Slot = "blue;" },
		"slot upper":            func(s *edge.Site) { s.Upstream.Slot = "Blue" },
		"no upstream address":   func(s *edge.Site) { s.Upstream.Address = netip.Addr{} },
		"unspecified upstream":  func(s *edge.Site) { s.Upstream.Address = netip.MustParseAddr("0.0.0.0") },
		"zoned upstream":        func(s *edge.Site) { s.Upstream.Address = netip.MustParseAddr("fe80::1%eth0") },
		"upstream port range":   func(s *edge.Site) { s.Upstream.APIPort = 65536 },
		"negative app port":     func(s *edge.Site) { s.Upstream.AppPort = -1 },
		"multicast listen addr": func(s *edge.Site) { s.Address = netip.MustParseAddr("224.0.0.1") },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			n := &edge.Nginx{
				Binary:      "/nonexistent/nginx", // never reached
				ConfDir:     filepath.Join(dir, "conf.d"),
				UpstreamDir: filepath.Join(dir, "vkimg"),
				MainDir:     filepath.Join(dir, "main.d"),
				PIDFile:     filepath.Join(dir, "nginx.pid"),
			}
			s := validSite()
			mutate(&s)
			err := n.Apply(context.Background(), s)
			if !errors.Is(err, edge.ErrInvalid) {
				t.Fatalf("Apply = %v; want ErrInvalid", err)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 0 {
				t.Fatalf("Apply wrote %v before refusing", entries)
			}
		})
	}
}

func TestFlipRefusesInvalidUpstream(t *testing.T) {
	dir := t.TempDir()
	n := &edge.Nginx{Binary: "/nonexistent/nginx", ConfDir: dir, UpstreamDir: dir, MainDir: dir}
	for _, up := range []edge.Upstream{
		{Slot: "green}", Address: netip.MustParseAddr("10.0.0.2")},
		{Slot: "green", Address: netip.MustParseAddr("ff02::1")},
	} {
		if err := n.Flip(context.Background(), "tasks", up); !errors.Is(err, edge.ErrInvalid) {
			t.Errorf("Flip(%+v) = %v; want ErrInvalid", up, err)
		}
	}
	if err := n.Flip(context.Background(), "../x", validSite().Upstream); !errors.Is(err, edge.ErrInvalid) {
		t.Errorf("Flip with a bad instance name = %v; want ErrInvalid", err)
	}
	if err := n.Flip(context.Background(), "tasks", validSite().Upstream); !errors.Is(err, edge.ErrNotFound) {
		t.Errorf("Flip of an instance without a site = %v; want ErrNotFound", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 1 { // the lock file only
		t.Fatalf("refused flips wrote %v", entries)
	}
}
