package edge

import (
	"net/netip"
	"strings"
	"testing"
)

// The upstream file sends "/" to the separate frontend when there is one
// and to the backend otherwise, and writes IPv6 container addresses in
// brackets.
func TestRenderUpstream(t *testing.T) {
	cases := []struct {
		up   Upstream
		want []string
	}{
		{Upstream{Slot: "blue", Address: netip.MustParseAddr("10.77.0.10"), AppPort: 8080},
			[]string{"server 10.77.0.10:8080;", "server 10.77.0.10:3456;", "server 10.77.0.10:3457;", "default blue;"}},
		{Upstream{Slot: "green", Address: netip.MustParseAddr("fd00::5")},
			[]string{"_app {\n    server [fd00::5]:3456;", "_api {\n    server [fd00::5]:3456;", "server [fd00::5]:3457;", "default green;"}},
	}
	for _, c := range cases {
		b, err := renderUpstream("my-tasks", c.up.withDefaults())
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range c.want {
			if !strings.Contains(string(b), w) {
				t.Errorf("upstream for %+v lacks %q:\n%s", c.up, w, b)
			}
		}
		var back Upstream
		if err := parseHeader(b, upstreamHeader, &back); err != nil || back != c.up.withDefaults() {
			t.Errorf("header reads back as %+v, %v; want %+v", back, err, c.up.withDefaults())
		}
	}
}

// Without a listen address the site listens on every IPv4 and IPv6
// address; the redirect names the HTTPS port only when it is not 443.
func TestRenderSiteListen(t *testing.T) {
	s, err := Site{Instance: "tasks", Domains: []string{"tasks.example"}, CertFile: "/c.pem", KeyFile: "/k.pem",
		Upstream: Upstream{Slot: "blue", Address: netip.MustParseAddr("10.0.0.2")}}.normalize()
	if err != nil {
		t.Fatal(err)
	}
	b, err := renderSite(s, "/etc/nginx/vkimg/vkimg-tasks.upstream.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"listen 0.0.0.0:80;", "listen [::]:80;", "listen 0.0.0.0:443 ssl http2;", "listen [::]:443 ssl http2;",
		"return 301 https://$host$request_uri;", "client_max_body_size 500m;"} {
		if !strings.Contains(string(b), w) {
			t.Errorf("site lacks %q:\n%s", w, b)
		}
	}
}
