package deployconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vkimg/vkimg/internal/hypervisor"
)

var testMin = hypervisor.Minimums{Cores: 1, MemoryMB: 512, RootfsGB: 4}

// goodAnswers are valid answers with a real self-signed certificate.
func goodAnswers(t *testing.T) *Answers {
	t.Helper()
	dir := t.TempDir()
	cert, key, err := SelfSigned("tasks.example.org", testNow)
	if err != nil {
		t.Fatal(err)
	}
	cp, kp := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cp, cert, 0o600)
	os.WriteFile(kp, key, 0o600)
	a := &Answers{
		URL:     "https://tasks.example.org",
		Admin:   Admin{Email: "admin@example.org", Password: "correct horse"},
		Network: Network{Bridge: "vmbr0", Address: "192.0.2.10/24", Gateway: "192.0.2.1"},
		TLS:     TLS{Certificate: cp, Key: kp},
	}
	a.Defaults(testMin)
	return a
}

func validate(t *testing.T, a *Answers) *Problems {
	t.Helper()
	return a.Validate(t.Context(), Checks{Min: testMin, Now: func() time.Time { return testNow }})
}

func TestValidateAcceptsGoodAnswers(t *testing.T) {
	a := goodAnswers(t)
	ps := validate(t, a)
	if err := ps.Err(); err != nil {
		t.Fatal(err)
	}
	if len(ps.Warnings()) != 0 {
		t.Errorf("warnings: %v", ps.Warnings())
	}
}

func TestValidateCollectsEveryProblem(t *testing.T) {
	a := goodAnswers(t)
	a.Name = "Bad Name"
	a.Node = "node_1"
	a.Template.Version = "newest"
	a.URL = "https://tasks.example.org;evil"
	a.Admin.Email = "Admin <admin@example.org>"
	a.Admin.Username = "a b"
	a.Admin.Password = "short"
	a.Resources = Resources{Cores: 0, MemoryMB: 256, DiskGB: -1}
	a.Network = Network{Bridge: "br/0", Address: "192.0.2.10/24", Gateway: "198.51.100.1"}
	a.Ports = Ports{HTTP: 0, HTTPS: 70000}
	a.Storage = Storage{Rootfs: "", Template: "1x"}
	a.Database = Database{Type: "postgres", Host: "db:5432", Port: 5432, Name: "v;x", User: "vikunja", SSLMode: "maybe"}
	err := validate(t, a).Err()
	ie, ok := err.(*InvalidError)
	if !ok {
		t.Fatalf("err = %v", err)
	}
	for _, key := range []string{"name", "node", "template.version", "url", "admin.email", "admin.username", "admin.password",
		"resources.cores", "resources.memory_mb", "resources.disk_gb", "network.bridge", "network.gateway",
		"ports.http", "ports.https", "storage.rootfs", "storage.template", "database.host", "database.name",
		"database.password", "database.sslmode"} {
		if !ie.Has(key) {
			t.Errorf("%s not refused", key)
		}
	}
	msg := err.Error()
	for _, want := range []string{"resources.memory_mb (--memory): 256 MB is below the template's minimum of 512 MB: use --memory 512 or more",
		"network.gateway (--gateway): 198.51.100.1 is not in the address's subnet 192.0.2.0/24"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
}

func TestValidateURLAndPorts(t *testing.T) {
	for _, c := range []struct {
		url   string
		https int
		err   string
		warn  string
	}{
		{"https://tasks.example.org:8443", 8443, "", ""},
		{"https://tasks.example.org", 8443, "put it in the URL (https://tasks.example.org:8443)", ""},
		{"https://tasks.example.org:9443", 8443, "names port 9443 but nginx is to listen on 8443", ""},
		{"http://tasks.example.org", 443, "", "plain HTTP"},
	} {
		a := goodAnswers(t)
		a.URL, a.Ports.HTTPS = c.url, c.https
		ps := validate(t, a)
		err := ps.Err()
		if (err == nil) != (c.err == "") || err != nil && !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s on %d: err = %v, want %q", c.url, c.https, err, c.err)
		}
		if c.warn != "" && (len(ps.Warnings()) != 1 || !strings.Contains(ps.Warnings()[0].Reason, c.warn)) {
			t.Errorf("%s: warnings %v, want %q", c.url, ps.Warnings(), c.warn)
		}
	}
	a := goodAnswers(t)
	a.Ports.HTTP = 443
	if err := validate(t, a).Err(); err == nil || !strings.Contains(err.Error(), "also the HTTP port") {
		t.Errorf("same HTTP and HTTPS port: %v", err)
	}
}

func TestValidateDHCPAndTLSChoices(t *testing.T) {
	a := goodAnswers(t)
	a.Network = Network{Bridge: "vmbr0", Address: DHCP, AddressB: "192.0.2.11/24", Gateway: "192.0.2.1"}
	a.TLS.SelfSigned = true
	ie, _ := validate(t, a).Err().(*InvalidError)
	if ie == nil || !ie.Has("network.address_b") || !ie.Has("network.gateway") || !ie.Has("tls.self_signed") {
		t.Errorf("err = %v", ie)
	}
	b := goodAnswers(t)
	b.Network = Network{Bridge: "vmbr0", Address: DHCP}
	b.TLS = TLS{SelfSigned: true}
	if err := validate(t, b).Err(); err != nil {
		t.Errorf("dhcp + self-signed refused: %v", err)
	}
	c := goodAnswers(t)
	c.TLS = TLS{}
	ie, _ = validate(t, c).Err().(*InvalidError)
	if ie == nil || !ie.Has("tls.certificate") || !ie.Has("tls.key") {
		t.Errorf("no certificate and not self-signed: %v", ie)
	}
}

func TestValidateDatabaseAnswers(t *testing.T) {
	a := goodAnswers(t)
	a.Database = Database{Type: "oracle"}
	if ie, _ := validate(t, a).Err().(*InvalidError); ie == nil || !ie.Has("database.type") {
		t.Errorf("unknown type: %v", ie)
	}
	a.Database = Database{Type: "mysql", Host: "127.0.0.1", Port: 3306, Name: "v", User: "v", SSLMode: "require", PasswordFile: "/pw"}
	ps := validate(t, a)
	ie, _ := ps.Err().(*InvalidError)
	if ie == nil || !ie.Has("database.sslmode") || !ie.Has("database.password_file") {
		t.Errorf("mysql with sslmode, no password: %v", ie)
	}
	if w := ps.Warnings(); len(w) != 1 || !strings.Contains(w[0].Reason, "loopback") {
		t.Errorf("loopback host: warnings %v", w)
	}
}
