package deployconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// bad is one refused input and a word the reason must contain.
type bad struct{ in, why string }

func refuses(t *testing.T, name string, check func(string) error, cases []bad) {
	t.Helper()
	for _, c := range cases {
		err := check(c.in)
		if err == nil {
			t.Errorf("%s(%q) accepted", name, c.in)
		} else if !strings.Contains(err.Error(), c.why) {
			t.Errorf("%s(%q) = %q, want it to say %q", name, c.in, err, c.why)
		}
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"tasks", "a", "vikunja-2", strings.Repeat("a", 63)} {
		if err := CheckName(ok); err != nil {
			t.Errorf("CheckName(%q) = %v", ok, err)
		}
	}
	refuses(t, "CheckName", CheckName, []bad{
		{"", "required"}, {"Tasks", "lowercase"}, {"-a", "DNS label"}, {"a-", "DNS label"},
		{"a.b", "DNS label"}, {"a_b", "DNS label"}, {"../x", "DNS label"}, {strings.Repeat("a", 64), "63"},
	})
}

func TestCheckDomainIDNAndInjection(t *testing.T) {
	for in, want := range map[string]string{
		"tasks.example.org":     "tasks.example.org",
		"Tasks.Example.ORG.":    "tasks.example.org",
		"bücher.example":        "xn--bcher-kva.example",
		"例え.テスト":                "xn--r8jz45g.xn--zckzah",
		"xn--bcher-kva.example": "xn--bcher-kva.example",
		"localhost":             "localhost",
		"192.0.2.7":             "192.0.2.7",
	} {
		got, err := CheckDomain(in)
		if err != nil || got != want {
			t.Errorf("CheckDomain(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	domain := func(s string) error { _, err := CheckDomain(s); return err }
	refuses(t, "CheckDomain", domain, []bad{
		{"", "required"},
		{"tasks.example.org; return 301 http://evil", "cannot be part of a domain"},
		{"tasks.example.org\nserver_name evil", "cannot be part of a domain"},
		{"tasks.example.org{", "cannot be part of a domain"},
		{"tasks.example.org$host", "cannot be part of a domain"},
		{`tasks"x.org`, "cannot be part of a domain"},
		{"*.example.org", "cannot be part of a domain"},
		{"user@example.org", "cannot be part of a domain"},
		{"under_score.example.org", "not a valid domain"},
		{"-lead.example.org", "not a valid domain"},
		{"a..b", "not a valid domain"},
		{strings.Repeat("a", 64) + ".org", "not a valid domain"},
		{"xn--zz.example", "not a valid domain"},
		{"1.2.3", "all digits"},
		{"ex\u200bample.org", "not a valid domain"},
	})
}

func TestParseURL(t *testing.T) {
	for in, want := range map[string][2]string{
		"tasks.example.org":            {"tasks.example.org", "https://tasks.example.org/"},
		"https://tasks.example.org":    {"tasks.example.org", "https://tasks.example.org/"},
		"https://Bücher.example:8443/": {"xn--bcher-kva.example", "https://xn--bcher-kva.example:8443/"},
		"http://localhost":             {"localhost", "http://localhost/"},
		"https://[2001:db8::1]":        {"2001:db8::1", "https://[2001:db8::1]/"},
	} {
		d, u, err := ParseURL(in)
		if err != nil || d != want[0] || u != want[1] {
			t.Errorf("ParseURL(%q) = %q, %q, %v; want %q", in, d, u, err, want)
		}
	}
	parse := func(s string) error { _, _, err := ParseURL(s); return err }
	refuses(t, "ParseURL", parse, []bad{
		{"", "required"},
		{"ftp://tasks.example.org", "scheme"},
		{"https://u:p@tasks.example.org", "user name"},
		{"https://tasks.example.org/?x=1", "query"},
		{"https://tasks.example.org/#top", "fragment"},
		{"https://tasks.example.org/vikunja", "root of its domain"},
		{"https://tasks.example.org:99999", "port"},
		{"https://bad_domain.org", "domain"},
	})
}

func TestCheckEmail(t *testing.T) {
	for _, ok := range []string{"admin@example.org", "first.last+tag@bücher.example", "a@localhost"} {
		if err := CheckEmail(ok); err != nil {
			t.Errorf("CheckEmail(%q) = %v", ok, err)
		}
	}
	refuses(t, "CheckEmail", CheckEmail, []bad{
		{"", "required"},
		{"admin", "not an email"},
		{"Admin <admin@example.org>", "bare address"},
		{"<admin@example.org>", "bare address"},
		{`"a b"@example.org`, "quotes"},
		{"admin@bad_domain.org", "domain part"},
		{"admin@example.org\nADMIN_USERNAME=x", "not an email"},
	})
}

func TestSmallChecks(t *testing.T) {
	refuses(t, "CheckUsername", CheckUsername, []bad{{"", "letters"}, {"a b", "letters"}, {"a=b", "letters"}, {"-a", "starting"}})
	refuses(t, "CheckPassword", CheckPassword, []bad{{"short", "at least 8"}, {strings.Repeat("x", 73), "72"}, {"line1234\nline2", "single line"}})
	port := func(s string) error {
		n := map[string]int{"0": 0, "-1": -1, "65536": 65536}[s]
		return CheckPort(n)
	}
	refuses(t, "CheckPort", port, []bad{{"0", "not a port"}, {"-1", "not a port"}, {"65536", "not a port"}})
	refuses(t, "CheckHost", CheckHost, []bad{{"db.example.org:5432", "port separately"}, {"db host", "cannot be part"}, {"", "required"}})
	refuses(t, "CheckIdentifier", CheckIdentifier, []bad{{"", "letters"}, {"a b", "letters"}, {"x;drop", "letters"}})
	refuses(t, "CheckBridge", CheckBridge, []bad{{"", "interface"}, {"vmbr0/x", "interface"}, {"averyveryverylongbridge", "interface"}})
	refuses(t, "CheckNode", CheckNode, []bad{{"", "node name"}, {"pve_1", "node name"}, {"pve.example.org", "node name"}})
	refuses(t, "CheckStorage", CheckStorage, []bad{{"", "storage"}, {"0local", "storage"}, {"local lvm", "storage"}})
	refuses(t, "CheckVersion", CheckVersion, []bad{{"", "constraint"}, {"latest", "constraint"}, {"2.x.y.z", "constraint"}})
	for _, ok := range []string{"main", "2.5.0", "^2.5", ">= 2.4, < 3"} {
		if err := CheckVersion(ok); err != nil {
			t.Errorf("CheckVersion(%q) = %v", ok, err)
		}
	}
}

func TestCheckTemplateSource(t *testing.T) {
	layout := t.TempDir()
	os.WriteFile(filepath.Join(layout, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	for _, ok := range []string{"", layout, "registry.example.org/vkimg/vikunja", "localhost:5000/vikunja"} {
		if err := CheckTemplateSource(ok); err != nil {
			t.Errorf("CheckTemplateSource(%q) = %v", ok, err)
		}
	}
	refuses(t, "CheckTemplateSource", CheckTemplateSource, []bad{
		{t.TempDir(), "not an OCI image layout"},
		{"./no/such/dir", "not an OCI image layout"},
		{"registry.example.org/vikunja:2.5.0", "without tag"},
		{"registry.example.org/vikunja@sha256:abc", "without tag"},
		{"Registry.example.org/UPPER", "neither"},
	})
}

func TestParseAddress(t *testing.T) {
	for _, ok := range []string{"192.0.2.10/24", "10.0.0.2/30", "2001:db8::10/64"} {
		if _, err := ParseAddress(ok); err != nil {
			t.Errorf("ParseAddress(%q) = %v", ok, err)
		}
	}
	parse := func(s string) error { _, err := ParseAddress(s); return err }
	refuses(t, "ParseAddress", parse, []bad{
		{"192.0.2.10", "no prefix length"},
		{"192.0.2.300/24", "not an address"},
		{"192.0.2.0/24", "network address"},
		{"192.0.2.255/24", "broadcast"},
		{"192.0.2.10/32", "no room"},
		{"127.0.0.5/8", "cannot be"},
	})
}

func TestSlotAddresses(t *testing.T) {
	a, b, gw, err := Network{Address: "192.0.2.10/24", Gateway: "192.0.2.1"}.SlotAddresses()
	if err != nil || a.String() != "192.0.2.10/24" || b.String() != "192.0.2.11/24" || gw.String() != "192.0.2.1" {
		t.Fatalf("= %v %v %v %v", a, b, gw, err)
	}
	// Slot B skips the gateway.
	if _, b, _, _ := (Network{Address: "192.0.2.10/24", Gateway: "192.0.2.11"}).SlotAddresses(); b.String() != "192.0.2.12/24" {
		t.Errorf("slot B = %v, want the gateway skipped", b)
	}
	for _, c := range []struct {
		n        Network
		key, why string
	}{
		{Network{Address: "192.0.2.10/24"}, "network.gateway", "required"},
		{Network{Address: "192.0.2.10/24", Gateway: "198.51.100.1"}, "network.gateway", "not in the address's subnet 192.0.2.0/24"},
		{Network{Address: "192.0.2.10/24", Gateway: "192.0.2.10"}, "network.gateway", "own address"},
		{Network{Address: "192.0.2.10/24", Gateway: "2001:db8::1"}, "network.gateway", "IP version"},
		{Network{Address: "192.0.2.10/24", Gateway: "gw"}, "network.gateway", "not an IP"},
		{Network{Address: "192.0.2.254/24", Gateway: "192.0.2.1"}, "network.address_b", "no address follows"},
		{Network{Address: "192.0.2.10/24", AddressB: "192.0.3.11/24", Gateway: "192.0.2.1"}, "network.address_b", "not in slot A's subnet"},
		{Network{Address: "192.0.2.10/24", AddressB: "192.0.2.10/24", Gateway: "192.0.2.1"}, "network.address_b", "each slot needs its own"},
		{Network{Address: "192.0.2.10/24", AddressB: "192.0.2.1/24", Gateway: "192.0.2.1"}, "network.address_b", "gateway"},
		{Network{Address: "dhcp"}, "network.address", "dhcp"},
	} {
		_, _, _, err := c.n.SlotAddresses()
		ne, ok := err.(*netError)
		if !ok || ne.key != c.key || !strings.Contains(ne.msg, c.why) {
			t.Errorf("%+v: err = %v, want %s: ...%s", c.n, err, c.key, c.why)
		}
	}
}
