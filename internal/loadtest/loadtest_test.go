package loadtest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vkimg/vkimg/internal/edge"
	"github.com/vkimg/vkimg/internal/loadtest"
	"github.com/vkimg/vkimg/internal/testenv"
)

const (
	domain   = "vikunja.test"
	user     = "alice"
	password = "alice-load-password"
)

var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// standinBinary builds the stand-in app at version 1.0.0 once per run, as
// the template builder would.
var standinBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "loadtest-standin-")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "vikunja")
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version=1.0.0", "-o", bin, "github.com/vkimg/vkimg/internal/fixtures/standin")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the stand-in: %v\n%s", err, out)
	}
	return bin, nil
})

// stack is a real nginx edge on loopback serving one instance whose slots
// are stand-in processes sharing one data directory (SQLite database and
// attachments), as blue and green share the data volume.
type stack struct {
	srv    *testenv.NginxServer
	edge   *edge.Nginx
	site   edge.Site
	bin    string
	data   string
	env    []string
	client func(http2 bool) *http.Client
}

func newStack(t *testing.T) *stack {
	t.Helper()
	srv := testenv.Nginx(t)
	bin, err := standinBinary()
	if err != nil {
		t.Fatal(err)
	}
	cert, key, pool := testenv.SelfSignedCert(t, t.TempDir(), domain)
	data := t.TempDir()
	if err := os.Mkdir(filepath.Join(data, "files"), 0o700); err != nil {
		t.Fatal(err)
	}
	s := &stack{
		srv: srv, bin: bin, data: data,
		edge: &edge.Nginx{
			Binary: srv.Binary, ConfigFile: srv.ConfigFile, PIDFile: srv.PIDFile,
			ConfDir: srv.ConfDir, UpstreamDir: filepath.Join(srv.Dir, "vkimg"), MainDir: srv.MainDir,
		},
		site: edge.Site{
			Instance: "load", Domains: []string{domain},
			HTTPPort: srv.HTTPPort, HTTPSPort: srv.HTTPSPort,
			Address:  netip.MustParseAddr("127.0.0.1"),
			CertFile: cert, KeyFile: key,
		},
		env: append(os.Environ(),
			"HOME="+data,
			fmt.Sprintf("VIKUNJA_SERVICE_PUBLICURL=https://%s:%d/", domain, srv.HTTPSPort),
			"VIKUNJA_SERVICE_SECRET=load-test-secret",
			"VIKUNJA_SERVICE_ENABLEREGISTRATION=true",
			"VIKUNJA_DATABASE_TYPE=sqlite",
			"VIKUNJA_DATABASE_PATH="+filepath.Join(data, "vikunja.db"),
			"VIKUNJA_FILES_BASEPATH="+filepath.Join(data, "files"),
		),
		client: func(h2 bool) *http.Client {
			return testenv.LoopbackClient(fmt.Sprintf("127.0.0.1:%d", srv.HTTPSPort), pool, h2)
		},
	}
	// Migrated once up front: two processes starting on a new database
	// would both migrate it, which Vikunja does not guard against.
	cmd := exec.Command(bin, "migrate")
	cmd.Env, cmd.Dir = s.env, data
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	return s
}

func (s *stack) url() string { return fmt.Sprintf("https://%s:%d", domain, s.srv.HTTPSPort) }

// backend is one slot's stand-in process.
type backend struct {
	up     edge.Upstream
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // how the process ended, once exited is closed
	log    string
}

// start runs `web` for a slot on a free loopback port and waits until it
// answers its health check.
func (s *stack) start(t *testing.T, slot string) *backend {
	t.Helper()
	port := testenv.FreePort(t)
	b := &backend{
		up:     edge.Upstream{Slot: slot, Address: netip.MustParseAddr("127.0.0.1"), APIPort: port},
		exited: make(chan struct{}),
		log:    filepath.Join(t.TempDir(), slot+".log"),
	}
	logFile, err := os.Create(b.log)
	if err != nil {
		t.Fatal(err)
	}
	b.cmd = exec.Command(s.bin, "web")
	b.cmd.Env = append(slices.Clip(s.env), fmt.Sprintf("VIKUNJA_SERVICE_INTERFACE=127.0.0.1:%d", port))
	b.cmd.Dir, b.cmd.Stdout, b.cmd.Stderr = s.data, logFile, logFile
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		b.err = b.cmd.Wait()
		logFile.Close()
		close(b.exited)
	}()
	t.Cleanup(func() {
		b.cmd.Process.Kill()
		<-b.exited
		if t.Failed() {
			out, _ := os.ReadFile(b.log)
			t.Logf("%s stand-in log:\n%s", slot, out)
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := testenv.WaitTCP(addr, 30*time.Second); err != nil {
		t.Fatalf("%s stand-in: %v", slot, err)
	}
	resp, err := http.Get("http://" + addr + "/health")
	if err != nil {
		t.Fatalf("%s stand-in health: %v", slot, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s stand-in health: %s", slot, resp.Status)
	}
	return b
}

// stop sends sig and waits for the process to end.
func (b *backend) stop(t *testing.T, sig os.Signal) error {
	t.Helper()
	if err := b.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	<-b.exited
	return b.err
}

// register creates the load's user through a slot directly (the password
// goes in a request body, never on a command line) and returns a login
// token.
func register(t *testing.T, b *backend) string {
	t.Helper()
	base := fmt.Sprintf("http://127.0.0.1:%d/api/v1", b.up.APIPort)
	post := func(path string, body any) []byte {
		j, _ := json.Marshal(body)
		resp, err := http.Post(base+path, "application/json", bytes.NewReader(j))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out bytes.Buffer
		out.ReadFrom(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %s %s", path, resp.Status, out.String())
		}
		return out.Bytes()
	}
	post("/register", map[string]string{"username": user, "email": "alice@example.org", "password": password})
	var login struct{ Token string }
	if err := json.Unmarshal(post("/login", map[string]string{"username": user, "password": password}), &login); err != nil || login.Token == "" {
		t.Fatalf("login: %v", err)
	}
	return login.Token
}

// flip points the edge at a slot; the edge proves the slot answers.
func (s *stack) flip(t *testing.T, to *backend) {
	t.Helper()
	if err := s.edge.Flip(t.Context(), s.site.Instance, to.up); err != nil {
		t.Fatal(err)
	}
}

// drain waits for the edge's old workers to finish what they hold, as
// upgrade and rollback do before stopping the old slot.
func (s *stack) drain(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := s.edge.Drain(ctx); err != nil {
		t.Fatal(err)
	}
}

func waitRequests(t *testing.T, l *loadtest.Load, n int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := l.WaitRequests(ctx, n); err != nil {
		t.Fatal(err)
	}
}

func TestSlotHeaderIsTheEdges(t *testing.T) {
	if loadtest.SlotHeader != edge.SlotHeader {
		t.Fatalf("loadtest.SlotHeader %q, edge.SlotHeader %q", loadtest.SlotHeader, edge.SlotHeader)
	}
}

// An upgrade and a rollback as the edge sees them, under load: blue serves,
// green starts beside it on the same data, the edge flips to green while an
// upload streams to blue, blue stops once the edge drained; then blue comes
// back and the edge flips back. Not one request may fail, the upload must
// be stored whole, and every acknowledged write must be there afterwards.
func TestNoFailureAcrossUpgradeAndRollback(t *testing.T) {
	s := newStack(t)
	blue, green := s.start(t, "blue"), s.start(t, "green")
	s.site.Upstream = blue.up
	if err := s.edge.Apply(t.Context(), s.site); err != nil {
		t.Fatal(err)
	}
	token := register(t, blue)

	const upload = 6 << 20
	// The HTTP/1.1 clients are made from HTTP/2 ones, as callers holding
	// deploy.EdgeClient do; the load checks every answer's protocol.
	client := func(h2 bool) *http.Client {
		c := s.client(true)
		if !h2 {
			var err error
			if c, err = loadtest.HTTP11(c); err != nil {
				t.Fatal(err)
			}
		}
		return c
	}
	l, err := loadtest.Start(t.Context(), loadtest.Options{
		BaseURL: s.url(), Client: client,
		Username: user, Password: password,
		Upload: upload, UploadRate: upload / 6,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Stop() })
	waitRequests(t, l, 30)

	s.flip(t, green)
	if !l.Uploading() {
		t.Fatal("the upload ended before the flip, so it did not cross it: raise Upload or lower UploadRate")
	}
	s.drain(t)
	if err := blue.stop(t, os.Interrupt); err != nil {
		t.Fatalf("blue after SIGINT: %v", err)
	}
	waitRequests(t, l, 50)

	blue = s.start(t, "blue")
	s.flip(t, blue)
	s.drain(t)
	if err := green.stop(t, os.Interrupt); err != nil {
		t.Fatalf("green after SIGINT: %v", err)
	}
	waitRequests(t, l, 50)

	r := l.Stop()
	t.Log(r)
	if r.Failed != 0 || len(r.Errors) != 0 {
		t.Errorf("%d of %d requests failed across the flips: %s", r.Failed, r.Sent, strings.Join(r.Errors, "\n"))
	}
	if r.Sent != r.Reads+r.Writes || r.Reads == 0 || r.Writes == 0 || len(r.Written) == 0 {
		t.Errorf("report %+v: want reads and writes that add up to sent, and tasks written", r)
	}
	if r.BySlot["blue"] == 0 || r.BySlot["green"] == 0 || r.BySlot["blue"]+r.BySlot["green"] != r.Sent {
		t.Errorf("answers by slot %v; want both slots, summing to %d", r.BySlot, r.Sent)
	}
	if !r.UploadOK || r.UploadBytes != upload || r.UploadSlot != "blue" {
		t.Errorf("upload: ok %v, %d bytes, answered by %q, %s; want %d bytes stored by blue, where it began",
			r.UploadOK, r.UploadBytes, r.UploadSlot, r.UploadErr, upload)
	}
	if err := l.CheckWritten(t.Context()); err != nil {
		t.Fatal(err)
	}

	// The check can fail: a task deleted and one changed behind the load's
	// back are both named.
	gone, changed := r.Written[0], r.Written[len(r.Written)-1]
	api := func(method, path, body string) {
		req, _ := http.NewRequest(method, s.url()+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := s.client(true).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %s", method, path, resp.Status)
		}
	}
	api(http.MethodDelete, fmt.Sprintf("/api/v1/tasks/%d", gone), "")
	api(http.MethodPost, fmt.Sprintf("/api/v1/tasks/%d", changed), `{"description": "not the load's"}`)
	err = l.CheckWritten(t.Context())
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("task %d: 404", gone)) ||
		!strings.Contains(err.Error(), fmt.Sprintf("task %d: found task %d with description \"not the load's\"", changed, changed)) {
		t.Fatalf("CheckWritten after a delete and a change = %v; want both tasks named", err)
	}
}

// The counter can fail: with its only backend killed, the edge answers 502
// and the load counts it. Start refuses a wrong password and a client
// factory that does not give the protocol asked for.
func TestFailuresAreCounted(t *testing.T) {
	s := newStack(t)
	only := s.start(t, "blue")
	s.site.Upstream = only.up
	if err := s.edge.Apply(t.Context(), s.site); err != nil {
		t.Fatal(err)
	}
	token := register(t, only)

	_, err := loadtest.Start(t.Context(), loadtest.Options{BaseURL: s.url(), Client: s.client, Username: user, Password: "wrong-password"})
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("Start with a wrong password = %v; want the login's 403", err)
	}
	h1Only := func(bool) *http.Client { return s.client(false) }
	_, err = loadtest.Start(t.Context(), loadtest.Options{BaseURL: s.url(), Client: h1Only, Token: token})
	if err == nil || !strings.Contains(err.Error(), "answered over HTTP/1.1, want HTTP/2") {
		t.Errorf("Start with an HTTP/1.1 client for HTTP/2 = %v; want refused", err)
	}

	l, err := loadtest.Start(t.Context(), loadtest.Options{BaseURL: s.url(), Client: s.client, Token: token, Pause: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Stop() })
	waitRequests(t, l, 20)
	if err := only.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("the killed backend exited 0")
	}
	waitRequests(t, l, 20)
	r := l.Stop()
	t.Log(r)
	if r.Failed == 0 || r.Failed > r.Sent {
		t.Fatalf("report %s: want failures counted once the backend is gone", r)
	}
	if !strings.Contains(strings.Join(r.Errors, "\n"), "502 Bad Gateway") {
		t.Errorf("errors %q; want the edge's 502", r.Errors)
	}
	if err := l.WaitRequests(t.Context(), 1); err == nil {
		t.Error("WaitRequests on a stopped load returned nil")
	}
	if err := l.CheckWritten(t.Context()); err == nil {
		t.Error("CheckWritten with the backend gone returned nil")
	}
}
