package deployconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

type testCert struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// issue makes a certificate for names, signed by parent (nil: self-signed).
func issue(t *testing.T, cn string, names []string, isCA bool, from, until time.Time, parent *testCert) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		DNSNames: names, NotBefore: from, NotAfter: until,
		IsCA: isCA, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCert{cert: c, key: key}
}

func writePEM(t *testing.T, dir, name string, certs ...*testCert) string {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw})...)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeKey(t *testing.T, dir, name string, c *testCert) string {
	t.Helper()
	der, _ := x509.MarshalECPrivateKey(c.key)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckTLS(t *testing.T) {
	dir := t.TempDir()
	year := 365 * 24 * time.Hour
	root := issue(t, "Test Root", nil, true, testNow.Add(-year), testNow.Add(5*year), nil)
	inter := issue(t, "Test Intermediate", nil, true, testNow.Add(-year), testNow.Add(3*year), root)
	leaf := issue(t, "tasks.example.org", []string{"tasks.example.org", "*.apps.example.org", "xn--bcher-kva.example"}, false, testNow.Add(-24*time.Hour), testNow.Add(90*24*time.Hour), inter)
	other := issue(t, "other", []string{"tasks.example.org"}, false, testNow.Add(-time.Hour), testNow.Add(year), nil)
	expired := issue(t, "old", []string{"tasks.example.org"}, false, testNow.Add(-2*year), testNow.Add(-year), nil)
	future := issue(t, "new", []string{"tasks.example.org"}, false, testNow.Add(time.Hour), testNow.Add(year), nil)
	soon := issue(t, "soon", []string{"tasks.example.org"}, false, testNow.Add(-year), testNow.Add(48*time.Hour), nil)
	cnOnly := issue(t, "tasks.example.org", nil, false, testNow.Add(-time.Hour), testNow.Add(year), nil)

	chain := writePEM(t, dir, "chain.pem", leaf, inter)
	leafKey := writeKey(t, dir, "leaf.key", leaf)
	for _, domain := range []string{"tasks.example.org", "x.apps.example.org", "xn--bcher-kva.example", ""} {
		if err := CheckTLS(chain, leafKey, domain, testNow); err != nil {
			t.Errorf("good chain for %q refused: %v", domain, err)
		}
	}
	notPEM := filepath.Join(dir, "garbage")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	keyInCert := filepath.Join(dir, "mixed.pem")
	mixed, _ := os.ReadFile(chain)
	keyPEM, _ := os.ReadFile(leafKey)
	os.WriteFile(keyInCert, append(mixed, keyPEM...), 0o600)
	encrypted := filepath.Join(dir, "enc.key")
	os.WriteFile(encrypted, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), 0o600)

	for _, c := range []struct {
		name, cert, key, domain string
		now                     time.Time
		key2, why               string
	}{
		{"key of another certificate", chain, writeKey(t, dir, "other.key", other), "tasks.example.org", testNow, "tls.key", "not the key of the certificate"},
		{"wrong domain", chain, leafKey, "vikunja.example.com", testNow, "tls.certificate", "does not cover vikunja.example.com"},
		{"wildcard is one label only", chain, leafKey, "a.b.apps.example.org", testNow, "tls.certificate", "does not cover"},
		{"common name only", writePEM(t, dir, "cn.pem", cnOnly), writeKey(t, dir, "cn.key", cnOnly), "tasks.example.org", testNow, "tls.certificate", "browsers ignore"},
		{"expired", writePEM(t, dir, "expired.pem", expired), writeKey(t, dir, "expired.key", expired), "tasks.example.org", testNow, "tls.certificate", "expired on"},
		{"not yet valid", writePEM(t, dir, "future.pem", future), writeKey(t, dir, "future.key", future), "tasks.example.org", testNow, "tls.certificate", "not valid before"},
		{"leaf expired by the injected clock", chain, leafKey, "tasks.example.org", testNow.Add(100 * 24 * time.Hour), "tls.certificate", "expired on"},
		{"chain in the wrong order", writePEM(t, dir, "reversed.pem", inter, leaf), leafKey, "", testNow, "tls.certificate", "not signed by the next one"},
		{"unrelated second certificate", writePEM(t, dir, "unrelated.pem", leaf, other), leafKey, "", testNow, "tls.certificate", "not signed by the next one"},
		{"not PEM", notPEM, leafKey, "", testNow, "tls.certificate", "no PEM certificate"},
		{"key in the certificate file", keyInCert, leafKey, "", testNow, "tls.certificate", "only certificates belong there"},
		{"certificate as key", chain, chain, "", testNow, "tls.key", "not a private key"},
		{"encrypted key", chain, encrypted, "", testNow, "tls.key", "encrypted"},
		{"unreadable certificate", filepath.Join(dir, "missing.pem"), leafKey, "", testNow, "tls.certificate", "cannot read"},
		{"unreadable key", chain, filepath.Join(dir, "missing.key"), "", testNow, "tls.key", "cannot read"},
		{"no certificate", "", leafKey, "", testNow, "tls.certificate", "required"},
	} {
		err := CheckTLS(c.cert, c.key, c.domain, c.now)
		ie, ok := err.(*InvalidError)
		if !ok || !ie.Has(c.key2) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%s: err = %v, want %s: ...%s", c.name, err, c.key2, c.why)
		}
	}

	// Near expiry is a warning, not a refusal.
	a := &Answers{TLS: TLS{Certificate: writePEM(t, dir, "soon.pem", soon), Key: writeKey(t, dir, "soon.key", soon)}}
	var ps Problems
	checkTLS(&ps, a, "tasks.example.org", testNow)
	if ps.Err() != nil || len(ps.Warnings()) != 1 || !strings.Contains(ps.Warnings()[0].Reason, "renew") {
		t.Errorf("near expiry: err %v, warnings %v", ps.Err(), ps.Warnings())
	}
}

func TestSelfSignedPassesTheChecks(t *testing.T) {
	dir := t.TempDir()
	for _, domain := range []string{"xn--bcher-kva.example", "192.0.2.7"} {
		cert, key, err := SelfSigned(domain, testNow)
		if err != nil {
			t.Fatal(err)
		}
		cp, kp := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
		os.WriteFile(cp, cert, 0o600)
		os.WriteFile(kp, key, 0o600)
		if err := CheckTLS(cp, kp, domain, testNow); err != nil {
			t.Errorf("self-signed for %s refused: %v", domain, err)
		}
		if err := CheckTLS(cp, kp, "other.example", testNow); err == nil {
			t.Errorf("self-signed for %s covers other.example", domain)
		}
	}
}
