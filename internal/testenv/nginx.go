package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// NginxServer is Debian's nginx running on loopback with a main
// configuration laid out like Debian's /etc/nginx: a main-context include
// directory (MainDir, as modules-enabled) and an http-context one (ConfDir,
// as conf.d). Its only own server is the default one on both ports, which
// refuses names nobody configured (TLS handshake rejected, HTTP 444), as a
// node's edge should.
type NginxServer struct {
	Binary     string
	Dir        string // everything of this server lives here
	ConfigFile string
	PIDFile    string
	ErrorLog   string
	MainDir    string // included in the main context
	ConfDir    string // included in the http context
	HTTPPort   int    // on 127.0.0.1
	HTTPSPort  int    // on 127.0.0.1
}

// Nginx starts nginx in the foreground (`-g 'daemon off;'`, no systemd
// here) with workers running as www-data, and stops it at cleanup.
func Nginx(t testing.TB) *NginxServer {
	t.Helper()
	NeedRoot(t)
	bin := Need(t, "/usr/sbin/nginx", "nginx")
	// Workers run as www-data and must reach their temporary directories.
	dir := OwnedTempDir(t, "www-data")
	s := &NginxServer{
		Binary:     bin,
		Dir:        dir,
		ConfigFile: filepath.Join(dir, "nginx.conf"),
		PIDFile:    filepath.Join(dir, "nginx.pid"),
		ErrorLog:   filepath.Join(dir, "error.log"),
		MainDir:    filepath.Join(dir, "main.d"),
		ConfDir:    filepath.Join(dir, "conf.d"),
		HTTPPort:   FreePort(t),
	}
	// A port freed a moment ago can be handed out again at once.
	for s.HTTPSPort = FreePort(t); s.HTTPSPort == s.HTTPPort; s.HTTPSPort = FreePort(t) {
	}
	for _, d := range []string{s.MainDir, s.ConfDir, filepath.Join(dir, "temp")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf(`user www-data;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log notice;
include %[1]s/main.d/*.conf;

events {
    worker_connections 512;
}

http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/temp/body;
    proxy_temp_path %[1]s/temp/proxy;
    fastcgi_temp_path %[1]s/temp/fastcgi;
    uwsgi_temp_path %[1]s/temp/uwsgi;
    scgi_temp_path %[1]s/temp/scgi;

    server {
        listen 127.0.0.1:%[2]d default_server;
        listen 127.0.0.1:%[3]d ssl http2 default_server;
        ssl_reject_handshake on;
        return 444;
    }

    include %[1]s/conf.d/*.conf;
}
`, dir, s.HTTPPort, s.HTTPSPort)
	if err := os.WriteFile(s.ConfigFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// -e: nginx opens its compiled-in error log before reading the config.
	Background(t, "nginx", exec.Command(bin, "-c", s.ConfigFile, "-e", s.ErrorLog, "-g", "daemon off;"))
	for _, port := range []int{s.HTTPPort, s.HTTPSPort} {
		if err := WaitTCP(fmt.Sprintf("127.0.0.1:%d", port), 20*time.Second); err != nil {
			t.Fatalf("nginx: %v\n%s", err, readTail(s.ErrorLog))
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nginx error log (tail):\n%s", readTail(s.ErrorLog))
		}
	})
	return s
}

// MasterPID is the running master's pid, from its pid file.
func (s *NginxServer) MasterPID(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile(s.PIDFile)
	if err != nil {
		t.Fatalf("nginx pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("nginx pid file: %v", err)
	}
	return pid
}

func readTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(tail(b, 4000))
}

// SelfSignedCert writes a self-signed certificate (ECDSA P-256, valid one
// day) for the given DNS names, and its key, into dir. The returned pool
// trusts exactly that certificate.
func SelfSignedCert(t testing.TB, dir string, names ...string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0]},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:              names,
		BasicConstraintsValid: true,
		IsCA:                  true, // self-signed: it is its own trust anchor
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, names[0]+".crt"), filepath.Join(dir, names[0]+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// LoopbackClient is an HTTP client that sends every request, whatever host
// its URL names, to addr (e.g. the edge's 127.0.0.1:PORT): the URL's host
// becomes SNI and Host, and no DNS is ever asked. It trusts only pool,
// speaks HTTP/2 when http2 is set (HTTP/1.1 keep-alive otherwise) and does
// not follow redirects, so tests see them.
func LoopbackClient(addr string, pool *x509.CertPool, http2 bool) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
		},
		TLSClientConfig:     &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2:   http2,
		MaxIdleConnsPerHost: 8,
	}
	if !http2 {
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
