package testenv

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net/http"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// The test nginx must refuse names nobody configured on both ports, accept
// a configuration test with its own files, and be gone after cleanup.
func TestNginxDefaultServerAndCleanup(t *testing.T) {
	var pid int
	t.Run("running", func(t *testing.T) {
		s := Nginx(t)
		pid = s.MasterPID(t)
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("master %d not running: %v", pid, err)
		}
		out, err := exec.Command(s.Binary, "-t", "-c", s.ConfigFile, "-e", s.ErrorLog).CombinedOutput()
		if err != nil {
			t.Fatalf("nginx -t on the test config: %v\n%s", err, out)
		}

		_, err = tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.HTTPSPort), &tls.Config{ServerName: "unknown.example", InsecureSkipVerify: true})
		if err == nil {
			t.Fatal("TLS handshake for an unconfigured name succeeded; want it rejected")
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", s.HTTPPort))
		if err == nil {
			resp.Body.Close()
			t.Fatalf("plain HTTP for an unconfigured name answered %s; want the connection closed (444)", resp.Status)
		}
	})
	if pid == 0 {
		t.Fatal("nginx was not started")
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("nginx master %d still running after cleanup", pid)
	}
}

// A client made by LoopbackClient must reach a server for a name that has
// no DNS entry, trusting only the self-signed certificate.
func TestSelfSignedCertAndLoopbackClient(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := SelfSignedCert(t, dir, "vikunja.test.invalid", "alt.test.invalid")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("certificate and key do not match: %v", err)
	}
	port := FreePort(t)
	srv := &http.Server{
		Addr:      fmt.Sprintf("127.0.0.1:%d", port),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		ErrorLog:  log.New(io.Discard, "", 0), // the untrusted client's failed handshake is expected
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", r.Host, r.Proto)
		}),
	}
	go srv.ListenAndServeTLS("", "")
	t.Cleanup(func() { srv.Close() })
	if err := WaitTCP(srv.Addr, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, h2 := range []bool{true, false} {
		c := LoopbackClient(srv.Addr, pool, h2)
		resp, err := c.Get("https://alt.test.invalid/")
		if err != nil {
			t.Fatalf("http2=%v: %v", h2, err)
		}
		resp.Body.Close()
		if want := map[bool]int{true: 2, false: 1}[h2]; resp.ProtoMajor != want {
			t.Fatalf("http2=%v: protocol %s, want major %d", h2, resp.Proto, want)
		}
	}
	// Another certificate for the same name must not be trusted.
	_, _, otherPool := SelfSignedCert(t, t.TempDir(), "vikunja.test.invalid")
	if _, err := LoopbackClient(srv.Addr, otherPool, true).Get("https://vikunja.test.invalid/"); err == nil {
		t.Fatal("a client trusting another certificate connected")
	}
}
