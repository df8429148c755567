package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Registry is a running Debian docker-registry (distribution 2.8) on loopback.
type Registry struct {
	Host    string // 127.0.0.1:PORT
	Storage string // the registry's filesystem storage root
	// Set for RegistryAuthTLS only:
	CAFile     string // PEM of the CA that signed the server certificate
	Username   string
	Password   string
	AuthConfig string // a docker config.json with the credentials for Host
}

// BlobPath is where the registry stores the blob (or manifest) with the given
// "sha256:<hex>" digest, for tests that tamper with stored bytes.
func (r Registry) BlobPath(digest string) string {
	hex := digest[len("sha256:"):]
	return filepath.Join(r.Storage, "docker/registry/v2/blobs/sha256", hex[:2], hex, "data")
}

// RegistryPlain starts a registry speaking plain HTTP without auth.
func RegistryPlain(t testing.TB) Registry {
	t.Helper()
	return startRegistry(t, false)
}

// RegistryAuthTLS starts a registry with HTTPS (a certificate for 127.0.0.1
// and localhost from a fresh CA) and htpasswd basic auth.
func RegistryAuthTLS(t testing.TB) Registry {
	t.Helper()
	return startRegistry(t, true)
}

func startRegistry(t testing.TB, secure bool) Registry {
	t.Helper()
	bin := Need(t, "docker-registry", "docker-registry")
	dir := t.TempDir()
	r := Registry{
		Host:    fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		Storage: filepath.Join(dir, "storage"),
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, r.Storage, r.Host)
	if secure {
		cert, key := writeTLS(t, dir, &r)
		cfg += fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", cert, key)
		r.Username, r.Password = "vkimg-ci", "registry-pw-"+registryRandomHex(t)
		hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		writeRegistryFile(t, htpasswd, []byte(r.Username+":"+string(hash)+"\n"))
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: vkimg-test\n    path: %s\n", htpasswd)
		auth := map[string]any{"auths": map[string]any{r.Host: map[string]string{
			"auth": base64.StdEncoding.EncodeToString([]byte(r.Username + ":" + r.Password)),
		}}}
		b, _ := json.Marshal(auth)
		r.AuthConfig = filepath.Join(dir, "config.json")
		writeRegistryFile(t, r.AuthConfig, b)
	}
	cfgPath := filepath.Join(dir, "config.yml")
	writeRegistryFile(t, cfgPath, []byte(cfg))
	Background(t, "docker-registry", exec.Command(bin, "serve", cfgPath))
	if err := waitRegistry(r, secure); err != nil {
		t.Fatal(err)
	}
	return r
}

// waitRegistry waits until /v2/ answers (200, or 401 with auth).
func waitRegistry(r Registry, secure bool) error {
	if err := WaitTCP(r.Host, 20*time.Second); err != nil {
		return err
	}
	client := &http.Client{Timeout: 2 * time.Second}
	url := "http://" + r.Host + "/v2/"
	if secure {
		pool := x509.NewCertPool()
		b, err := os.ReadFile(r.CAFile)
		if err != nil {
			return err
		}
		pool.AppendCertsFromPEM(b)
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		url = "https://" + r.Host + "/v2/"
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("registry on %s not ready: %w", r.Host, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// writeTLS makes a CA and a server certificate for 127.0.0.1/localhost.
func writeTLS(t testing.TB, dir string, r *Registry) (certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "vkimg test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	r.CAFile = filepath.Join(dir, "ca.pem")
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	writeRegistryFile(t, r.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	writeRegistryFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}))
	writeRegistryFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	return certFile, keyFile
}

func writeRegistryFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func registryRandomHex(t testing.TB) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

// NeedGoTool finds a program installed with `go install` (cosign, crane):
// on PATH or in ~/go/bin. Missing, it skips t, or fails it in CI.
func NeedGoTool(t testing.TB, program, module string) string {
	t.Helper()
	if p, err := exec.LookPath(program); err == nil {
		return p
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, "go", "bin", program)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found: CI must `go install %s` (scripts/setup.sh)", program, module)
	}
	t.Skipf("needs %s: go install %s", program, module)
	return ""
}
