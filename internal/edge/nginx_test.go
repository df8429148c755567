package edge_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vkimg/vkimg/internal/edge"
	"github.com/vkimg/vkimg/internal/testenv"
)

// env is a real nginx on loopback driven by edge.Nginx, with a certificate
// for the test domains.
type env struct {
	srv            *testenv.NginxServer
	edge           *edge.Nginx
	pool           *x509.CertPool
	certFile, keyF string
}

const (
	domain    = "vikunja.test"
	idnDomain = "bücher.test"
	idnASCII  = "xn--bcher-kva.test"
	domain2   = "other.test"
)

func newEnv(t testing.TB) *env {
	t.Helper()
	srv := testenv.Nginx(t)
	cert, key, pool := testenv.SelfSignedCert(t, t.TempDir(), domain, idnASCII, domain2)
	return &env{
		srv:  srv,
		pool: pool, certFile: cert, keyF: key,
		edge: &edge.Nginx{
			Binary:      srv.Binary,
			ConfigFile:  srv.ConfigFile,
			PIDFile:     srv.PIDFile,
			ConfDir:     srv.ConfDir,
			UpstreamDir: filepath.Join(srv.Dir, "vkimg"),
			MainDir:     srv.MainDir,
		},
	}
}

func (e *env) site(instance string, up edge.Upstream, domains ...string) edge.Site {
	return edge.Site{
		Instance: instance, Domains: domains,
		HTTPPort: e.srv.HTTPPort, HTTPSPort: e.srv.HTTPSPort,
		Address:  netip.MustParseAddr("127.0.0.1"),
		CertFile: e.certFile, KeyFile: e.keyF,
		Upstream: up,
	}
}

func (e *env) client(h2 bool) *http.Client {
	return testenv.LoopbackClient(fmt.Sprintf("127.0.0.1:%d", e.srv.HTTPSPort), e.pool, h2)
}

func (e *env) url(host, path string) string {
	return fmt.Sprintf("https://%s:%d%s", host, e.srv.HTTPSPort, path)
}

// slot is a stand-in for one slot's container: API/backend, optional
// separate frontend and MCP server, each on its own loopback port, each
// answering "<slot> <service> <path>".
type slot struct {
	name          string
	up            edge.Upstream
	uploadStarted chan struct{} // gets a value once an upload's first bytes arrived
}

func startSlot(t testing.TB, name string, separateFrontend bool) *slot {
	t.Helper()
	s := &slot{name: name, uploadStarted: make(chan struct{}, 1)}
	serve := func(service string) int {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.URL.Path == "/api/v1/upload":
				n, err := io.Copy(io.Discard, &notifyReader{r: r.Body, first: s.uploadStarted})
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				fmt.Fprintf(w, "%s %s received %d", name, service, n)
				return
			case strings.HasSuffix(r.URL.Path, "/index.html"):
				w.Header().Set("Cache-Control", "no-cache")
			}
			fmt.Fprintf(w, "%s %s %s", name, service, r.URL.Path)
		}))
		t.Cleanup(srv.Close)
		port, _ := strconv.Atoi(srv.URL[strings.LastIndex(srv.URL, ":")+1:])
		return port
	}
	s.up = edge.Upstream{Slot: name, Address: netip.MustParseAddr("127.0.0.1"),
		APIPort: serve("api"), MCPPort: serve("mcp")}
	if separateFrontend {
		s.up.AppPort = serve("app")
	}
	return s
}

type notifyReader struct {
	r     io.Reader
	first chan struct{}
	seen  bool
}

func (n *notifyReader) Read(p []byte) (int, error) {
	k, err := n.r.Read(p)
	if k > 0 && !n.seen {
		n.seen = true
		select {
		case n.first <- struct{}{}:
		default:
		}
	}
	return k, err
}

func get(t testing.TB, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp, string(b)
}

func TestApplyServesSiteOverHTTPSAndHTTP2(t *testing.T) {
	e := newEnv(t)
	blue := startSlot(t, "blue", true)
	if err := e.edge.Apply(context.Background(), e.site("tasks", blue.up, domain, idnDomain)); err != nil {
		t.Fatal(err)
	}
	routes := map[string]string{
		"/":                            "blue app /",
		"/tasks/12":                    "blue app /tasks/12",
		"/api/v1/info":                 "blue api /api/v1/info",
		"/health":                      "blue api /health",
		"/dav/projects":                "blue api /dav/projects",
		"/.well-known/caldav":          "blue api /.well-known/caldav",
		"/mcp":                         "blue mcp /mcp",
		"/apiary":                      "blue app /apiary",
		"/index.html?cache-check=true": "blue app /index.html",
	}
	for _, h2 := range []bool{true, false} {
		c := e.client(h2)
		for path, want := range routes {
			resp, body := get(t, c, e.url(domain, path))
			if body != want || resp.StatusCode != http.StatusOK {
				t.Errorf("h2=%v GET %s = %s %q; want 200 %q", h2, path, resp.Status, body, want)
			}
			if wantMajor := map[bool]int{true: 2, false: 1}[h2]; resp.ProtoMajor != wantMajor {
				t.Errorf("GET %s over %s; want HTTP/%d", path, resp.Proto, wantMajor)
			}
			if got := resp.Header.Get(edge.SlotHeader); got != "blue" {
				t.Errorf("GET %s: %s = %q; want blue", path, edge.SlotHeader, got)
			}
			if resp.TLS.Version < tls.VersionTLS12 {
				t.Errorf("TLS version %x", resp.TLS.Version)
			}
		}
	}
	// The container's cache policy (index.html, sw.js) reaches the browser.
	if resp, _ := get(t, e.client(true), e.url(domain, "/index.html")); resp.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("Cache-Control of index.html = %q; want the container's no-cache", resp.Header.Get("Cache-Control"))
	}
	if resp, _ := get(t, e.client(true), e.url(domain, "/")); resp.Header.Get("Strict-Transport-Security") != "" {
		t.Error("HSTS sent although the site did not opt in")
	}
	// The internationalised name is served under its punycode form.
	if _, body := get(t, e.client(true), e.url(idnASCII, "/api/x")); body != "blue api /api/x" {
		t.Errorf("IDN domain: %q", body)
	}
	// TLS 1.1 and older are refused (Mozilla intermediate).
	old := &tls.Config{ServerName: domain, RootCAs: e.pool, MaxVersion: tls.VersionTLS11}
	if c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", e.srv.HTTPSPort), old); err == nil {
		c.Close()
		t.Error("a TLS 1.1 handshake succeeded")
	}
	// Plain HTTP redirects to HTTPS on the edge's HTTPS port.
	plain := &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", e.srv.HTTPPort))
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, _ := get(t, plain, fmt.Sprintf("http://%s/login?next=%%2F", domain))
	if want := e.url(domain, "/login?next=%2F"); resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
		t.Errorf("http redirect = %s to %q; want 301 to %q", resp.Status, resp.Header.Get("Location"), want)
	}

	sites, err := e.edge.Sites(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(sites) != 1 || sites[0].Instance != "tasks" || strings.Join(sites[0].Domains, ",") != domain+","+idnASCII ||
		sites[0].Upstream != blue.up {
		t.Fatalf("Sites = %+v; want tasks on %s with upstream %+v", sites, domain, blue.up)
	}
}

// Requests keep succeeding, over HTTP/2 and HTTP/1.1 keep-alive, while the
// edge flips blue → green → blue; after a flip and the edge's drain, only
// the new slot answers.
func TestFlipUnderLoad(t *testing.T) {
	e := newEnv(t)
	blue, green := startSlot(t, "blue", true), startSlot(t, "green", false)
	ctx := context.Background()
	if err := e.edge.Apply(ctx, e.site("tasks", blue.up, domain)); err != nil {
		t.Fatal(err)
	}
	var sent, failed atomic.Int64
	// seen counts answers per slot, for requests sent in the current epoch;
	// a new epoch starts after each flip's drain.
	var mu sync.Mutex
	var epoch atomic.Int64
	seen := map[string]int{}
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, h2 := range []bool{true, false} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := e.client(h2)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				sentIn := epoch.Load()
				resp, err := c.Get(e.url(domain, fmt.Sprintf("/api/v1/tasks/%d", i)))
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = errors.New(resp.Status)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("h2=%v: %v", h2, err))
					continue
				}
				mu.Lock()
				if sentIn == epoch.Load() {
					seen[resp.Header.Get(edge.SlotHeader)]++
				}
				mu.Unlock()
			}
		}()
	}
	waitRequests := func(n int64) {
		for start := sent.Load(); sent.Load() < start+n; {
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitRequests(50)
	for _, to := range []*slot{green, blue, green} {
		if err := e.edge.Flip(ctx, "tasks", to.up); err != nil {
			t.Fatal(err)
		}
		drainCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := e.edge.Drain(drainCtx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		// Every request from here on is the new slot's.
		mu.Lock()
		epoch.Add(1)
		clear(seen)
		mu.Unlock()
		waitRequests(50)
		mu.Lock()
		if len(seen) != 1 || seen[to.name] == 0 {
			t.Errorf("after flipping to %s and draining, answers came from %v", to.name, seen)
		}
		mu.Unlock()
	}
	close(stop)
	wg.Wait()
	t.Logf("requests sent %d, failed %d", sent.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed across flips; first: %v", failed.Load(), sent.Load(), firstErr.Load())
	}
	sites, err := e.edge.Sites(ctx)
	if err != nil || len(sites) != 1 || sites[0].Upstream != green.up {
		t.Fatalf("Sites after flips = %+v, %v; want the green upstream", sites, err)
	}
}

// A flip to a slot that does not answer is not reported as done: the edge
// proves the flip by an answer from the new slot, not by the reload alone.
func TestFlipToDeadSlotIsNotProven(t *testing.T) {
	e := newEnv(t)
	e.edge.ProofTimeout = 3 * time.Second
	blue := startSlot(t, "blue", false)
	ctx := context.Background()
	if err := e.edge.Apply(ctx, e.site("tasks", blue.up, domain)); err != nil {
		t.Fatal(err)
	}
	dead := edge.Upstream{Slot: "green", Address: netip.MustParseAddr("127.0.0.1"),
		APIPort: closedPort(t), MCPPort: closedPort(t)}
	err := e.edge.Flip(ctx, "tasks", dead)
	if err == nil || !strings.Contains(err.Error(), "does not answer from slot green") || !strings.Contains(err.Error(), "502") {
		t.Fatalf("Flip to a dead slot = %v; want not proven, with nginx's 502", err)
	}
	// The flip stays in place (the caller decides to flip back) and
	// flipping back is proven.
	if sites, err := e.edge.Sites(ctx); err != nil || sites[0].Upstream.Slot != "green" {
		t.Fatalf("Sites = %+v, %v; want the unproven green upstream still in place", sites, err)
	}
	if err := e.edge.Flip(ctx, "tasks", blue.up); err != nil {
		t.Fatal(err)
	}
}

// closedPort reserves a loopback port without listening on it, so that
// connections to it are refused for the whole test, whatever else runs.
func closedPort(t testing.TB) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return sa.(*syscall.SockaddrInet4).Port
}

// An upload streaming slowly to blue when the edge flips to green reaches
// blue whole, and the edge's drain waits for it.
func TestSlowUploadAcrossFlip(t *testing.T) {
	e := newEnv(t)
	blue, green := startSlot(t, "blue", false), startSlot(t, "green", false)
	ctx := context.Background()
	if err := e.edge.Apply(ctx, e.site("tasks", blue.up, domain)); err != nil {
		t.Fatal(err)
	}
	const chunk, chunks = 64 << 10, 40
	pr, pw := io.Pipe()
	// On failure, end the upload so the slots' servers can close.
	t.Cleanup(func() { pw.CloseWithError(errors.New("test ended")) })
	type result struct {
		resp *http.Response
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, e.url(domain, "/api/v1/upload"), pr)
		req.ContentLength = chunk * chunks
		resp, err := e.client(true).Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{resp, string(b), err}
	}()
	data := bytes.Repeat([]byte("v"), chunk)
	write := func(n int) {
		for range n {
			if _, err := pw.Write(data); err != nil {
				t.Fatalf("upload write: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	write(chunks / 2)
	select {
	case <-blue.uploadStarted:
	case r := <-done:
		t.Fatalf("upload ended before it was complete: %+v", r)
	case <-time.After(30 * time.Second):
		t.Fatal("blue saw none of the upload's bytes: the edge holds uploads back instead of streaming them")
	}
	if err := e.edge.Flip(ctx, "tasks", green.up); err != nil {
		t.Fatal(err)
	}
	drained := make(chan error, 1)
	go func() {
		dctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		drained <- e.edge.Drain(dctx)
	}()
	write(chunks/2 - 1)
	select {
	case err := <-drained:
		t.Fatalf("the edge drained (%v) while an upload was still in flight", err)
	default:
	}
	write(1)
	pw.Close()
	r := <-done
	if r.err != nil {
		t.Fatalf("upload across the flip failed: %v", r.err)
	}
	if want := fmt.Sprintf("blue api received %d", chunk*chunks); r.resp.StatusCode != http.StatusOK || r.body != want {
		t.Fatalf("upload answered %s %q; want 200 %q", r.resp.Status, r.body, want)
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	if _, body := get(t, e.client(true), e.url(domain, "/api/v1/info")); body != "green api /api/v1/info" {
		t.Fatalf("after the drain: %q; want green", body)
	}
}

// A configuration nginx refuses (here: a certificate file that does not
// exist) changes nothing: files restored, the old site still served.
func TestBrokenConfigRestored(t *testing.T) {
	e := newEnv(t)
	blue := startSlot(t, "blue", false)
	ctx := context.Background()
	good := e.site("tasks", blue.up, domain)
	if err := e.edge.Apply(ctx, good); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, e)
	broken := good
	broken.CertFile = filepath.Join(t.TempDir(), "missing.crt")
	err := e.edge.Apply(ctx, broken)
	if err == nil || !strings.Contains(err.Error(), "missing.crt") || !strings.Contains(err.Error(), "restored") {
		t.Fatalf("Apply with a missing certificate = %v; want nginx's refusal naming the file", err)
	}
	if after := snapshot(t, e); after != before {
		t.Fatalf("files changed by a refused Apply:\nbefore %s\nafter %s", before, after)
	}
	// A refused new site leaves no file behind either.
	other := e.site("other", blue.up, domain2)
	other.KeyFile = filepath.Join(t.TempDir(), "missing.key")
	if err := e.edge.Apply(ctx, other); err == nil {
		t.Fatal("Apply with a missing key succeeded")
	}
	if after := snapshot(t, e); after != before {
		t.Fatalf("files left by a refused new site:\nbefore %s\nafter %s", before, after)
	}
	// A port held by another program passes `nginx -t` (which binds
	// nothing) but fails the reload: nginx keeps the old configuration and
	// so must the files.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	e.edge.ProofTimeout = 2 * time.Second
	other = e.site("other", blue.up, domain2)
	other.HTTPSPort = held.Addr().(*net.TCPAddr).Port
	if err := e.edge.Apply(ctx, other); err == nil || !strings.Contains(err.Error(), "old configuration") {
		t.Fatalf("Apply on a port held by another program = %v; want the failed reload reported", err)
	}
	if after := snapshot(t, e); after != before {
		t.Fatalf("files left by a site nginx could not load:\nbefore %s\nafter %s", before, after)
	}
	if _, body := get(t, e.client(true), e.url(domain, "/api/v1/info")); body != "blue api /api/v1/info" {
		t.Fatalf("after refused changes the site answers %q", body)
	}
}

// snapshot is every file the edge manages, with its content.
func snapshot(t testing.TB, e *env) string {
	t.Helper()
	var b strings.Builder
	for _, dir := range []string{e.edge.ConfDir, e.edge.UpstreamDir, e.edge.MainDir} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range entries {
			if en.Name() == ".lock" {
				continue
			}
			data, err := os.ReadFile(filepath.Join(dir, en.Name()))
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "== %s\n%s", filepath.Join(dir, en.Name()), data)
		}
	}
	return b.String()
}

// Instances sit side by side on the edge's ports, each with its own
// domains; removing one leaves the others alone.
func TestSeveralSitesAndRemove(t *testing.T) {
	e := newEnv(t)
	blue := startSlot(t, "blue", false)
	ctx := context.Background()
	for inst, d := range map[string]string{"tasks": domain, "other": domain2} {
		if err := e.edge.Apply(ctx, e.site(inst, blue.up, d)); err != nil {
			t.Fatal(err)
		}
	}
	before := snapshot(t, e)
	if err := e.edge.Apply(ctx, e.site("third", blue.up, idnDomain, domain2)); !errors.Is(err, edge.ErrInvalid) || !strings.Contains(err.Error(), "instance other") {
		t.Fatalf("a site taking another instance's domain = %v; want refused naming the instance", err)
	}
	if after := snapshot(t, e); after != before {
		t.Fatal("a refused site changed files")
	}
	if err := e.edge.Remove(ctx, "tasks"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(e.edge.ConfDir, "vkimg-tasks.conf"), filepath.Join(e.edge.UpstreamDir, "vkimg-tasks.upstream.conf")} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after Remove (%v)", f, err)
		}
	}
	sites, err := e.edge.Sites(ctx)
	if err != nil || len(sites) != 1 || sites[0].Instance != "other" {
		t.Fatalf("Sites after Remove = %+v, %v; want only other", sites, err)
	}
	// The removed domain falls to the default server, which refuses it,
	// once nginx has reloaded; the other site keeps being served.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := e.client(true)
		_, err := c.Get(e.url(domain, "/"))
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the removed domain is still served")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, body := get(t, e.client(true), e.url(domain2, "/x")); body != "blue api /x" {
		t.Fatalf("the remaining site answers %q", body)
	}
	if err := e.edge.Remove(ctx, "tasks"); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if err := e.edge.Remove(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	if left := snapshot(t, e); left != "" {
		t.Fatalf("files left after removing every site:\n%s", left)
	}
}

func TestPortUsers(t *testing.T) {
	e := newEnv(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	mine := l.Addr().(*net.TCPAddr).Port
	free := closedPort(t) // bound, but nothing listens: PortUsers sees it free
	uses, err := edge.PortUsers(e.srv.HTTPPort, e.srv.HTTPSPort, free, mine)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.ReadFile("/proc/self/comm")
	want := []string{"nginx", "nginx", "", strings.TrimSpace(string(self))}
	for i, u := range uses {
		if u.Program != want[i] {
			t.Errorf("port %d held by %q (pid %d); want %q", u.Port, u.Program, u.PID, want[i])
		}
	}
	if err := edge.CheckPorts(e.srv.HTTPPort, e.srv.HTTPSPort, free); err != nil {
		t.Errorf("ports free or held by nginx refused: %v", err)
	}
	if err := edge.CheckPorts(free, mine); err == nil || !strings.Contains(err.Error(), strconv.Itoa(mine)) {
		t.Errorf("a port held by another program = %v; want refused naming it", err)
	}
}

// BenchmarkFlip measures a flip as upgrade and rollback see it: write the
// new upstream, nginx -t, reload, and the edge proving the new slot answers.
func BenchmarkFlip(b *testing.B) {
	e := newEnv(b)
	slots := []*slot{startSlot(b, "blue", true), startSlot(b, "green", false)}
	ctx := context.Background()
	if err := e.edge.Apply(ctx, e.site("tasks", slots[0].up, domain)); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		i++
		if err := e.edge.Flip(ctx, "tasks", slots[i%2].up); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/flip")
}

// With nginx stopped, a change cannot be loaded and Apply says so; Remove
// still cleans up, so an interrupted deploy can be undone.
func TestNginxNotRunning(t *testing.T) {
	e := newEnv(t)
	e.edge.PIDFile = filepath.Join(t.TempDir(), "nginx.pid") // no master there
	blue := startSlot(t, "blue", false)
	ctx := context.Background()
	if err := e.edge.Apply(ctx, e.site("tasks", blue.up, domain)); !errors.Is(err, edge.ErrNotRunning) {
		t.Fatalf("Apply with nginx stopped = %v; want ErrNotRunning", err)
	}
	if err := e.edge.Remove(ctx, "tasks"); err != nil {
		t.Fatalf("Remove with nginx stopped: %v", err)
	}
	if left := snapshot(t, e); left != "" {
		t.Fatalf("files left:\n%s", left)
	}
}
