package registry

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vkimg/vkimg/internal/signing"
	"github.com/vkimg/vkimg/internal/testenv"
)

func TestParseRef(t *testing.T) {
	good := map[string]string{
		"registry.example:5000/vikunja:2.5.0":      "registry.example:5000/vikunja:2.5.0",
		"registry.example:5000/vikunja":            "registry.example:5000/vikunja",
		"127.0.0.1:5000/a/b@sha256:" + hex64:       "127.0.0.1:5000/a/b@sha256:" + hex64,
		"oci-layout:/var/lib/vkimg/templates:main": "oci-layout:/var/lib/vkimg/templates:main",
		"oci-layout:/x@sha256:" + hex64:            "oci-layout:/x@sha256:" + hex64,
		"oci-layout:/x":                            "oci-layout:/x",
	}
	for in, want := range good {
		r, err := ParseRef(in)
		if err != nil {
			t.Errorf("ParseRef(%q): %v", in, err)
			continue
		}
		if r.String() != want {
			t.Errorf("ParseRef(%q) = %q, want %q", in, r.String(), want)
		}
	}
	for _, in := range []string{"", "https://registry.example/vikunja:1", "Registry.example/UPPER:1",
		"registry.example/v:bad tag", "oci-layout:", "oci-layout:/x:", "oci-layout:/x@sha256:zz", "r.example/v@sha256:12"} {
		if _, err := ParseRef(in); err == nil {
			t.Errorf("ParseRef(%q) accepted", in)
		}
	}
}

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// pullFails pulls ref into a fresh cache, expects an error containing says,
// and checks nothing is left behind.
func pullFails(t *testing.T, ref string, o Options, says string) error {
	t.Helper()
	cache := t.TempDir()
	key := testKey(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := Pull(ctx, mustRef(t, ref), PullOptions{Options: o, Cache: cache, Trusted: &key.PublicKey})
	if err == nil || !strings.Contains(err.Error(), says) {
		t.Errorf("pull %s: got %v, want an error saying %q", ref, err, says)
	}
	assertCacheClean(t, cache, 0)
	return err
}

func TestPullRegistryDown(t *testing.T) {
	port := testenv.FreePort(t)
	err := pullFails(t, fmt.Sprintf("127.0.0.1:%d/vikunja:1.0.0", port), Options{}, "connection refused")
	if signing.IsRefused(err) {
		t.Errorf("a network failure is reported as a refused verification: %v", err)
	}
}

func TestPullRegistrySilent(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() { // accept and never answer
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	pullFails(t, l.Addr().String()+"/vikunja:1.0.0", Options{Timeout: 300 * time.Millisecond}, "too slow")
}

func TestPullBlobStalls(t *testing.T) {
	ctx := context.Background()
	reg := testenv.RegistryPlain(t)
	px := newProxy(t, reg.Host)
	src, _ := templateLayout(t, "1.0.0", 4096)
	key := testKey(t)
	if _, err := Publish(ctx, src, mustRef(t, px.Host+"/vikunja"), PublishOptions{Key: key}); err != nil {
		t.Fatal(err)
	}
	px.mu.Lock()
	px.stall = true
	px.mu.Unlock()
	pullFails(t, px.Host+"/vikunja:1.0.0", Options{Timeout: 300 * time.Millisecond}, "no data received within the timeout")
}

func TestPullGarbage(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<html>garbage</html>")
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	pullFails(t, host+"/vikunja:1.0.0", Options{}, "not a manifest")
	err := pullFails(t, host+"/vikunja@sha256:"+hex64, Options{}, "signature manifest")
	if !signing.IsRefused(err) {
		t.Errorf("garbage signature manifest is not a refused verification: %v", err)
	}
}
