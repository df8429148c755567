package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/vkimg/vkimg/builder/buildertest"
	"github.com/vkimg/vkimg/internal/deploy"
	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/edge"
	"github.com/vkimg/vkimg/internal/lxc/lxctest"
	"github.com/vkimg/vkimg/internal/recipe"
	"github.com/vkimg/vkimg/internal/registry"
	"github.com/vkimg/vkimg/internal/signing"
)

// terminal is a program running on a pseudo-terminal, as an administrator
// runs vkimg deploy.
type terminal struct {
	t      *testing.T
	pty    *os.File
	closed chan struct{}
	exited chan error

	mu   sync.Mutex
	raw  bytes.Buffer
	mark int // screen text before mark has been matched already
}

var ansiEscape = regexp.MustCompile(`\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[=>78DEHMc])`)

func startTerminal(t *testing.T, cmd *exec.Cmd) *terminal {
	t.Helper()
	cmd.Env = append(os.Environ(), "TERM=xterm-256color")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 60, Cols: 160})
	if err != nil {
		t.Fatal(err)
	}
	term := &terminal{t: t, pty: f, closed: make(chan struct{}), exited: make(chan error, 1)}
	go func() { term.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill() // a no-op once it has exited
		f.Close()
	})
	go term.read()
	return term
}

// read collects the output and answers the queries a real terminal would
// (background colour, cursor position): the program waits for them.
func (term *terminal) read() {
	defer close(term.closed)
	buf := make([]byte, 4096)
	for {
		n, err := term.pty.Read(buf)
		chunk := buf[:n]
		if bytes.Contains(chunk, []byte("\x1b]11;?")) {
			term.pty.WriteString("\x1b]11;rgb:0000/0000/0000\x1b\\")
		}
		if bytes.Contains(chunk, []byte("\x1b[6n")) {
			term.pty.WriteString("\x1b[1;1R")
		}
		term.mu.Lock()
		term.raw.Write(chunk)
		term.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (term *terminal) screen() string {
	term.mu.Lock()
	defer term.mu.Unlock()
	return ansiEscape.ReplaceAllString(term.raw.String(), "")
}

func lastOf(s string) string { return s[max(0, len(s)-6000):] }

// expect waits until text appears after what was matched before; the
// bound only keeps a broken program from hanging the test.
func (term *terminal) expect(text string, within time.Duration) {
	term.t.Helper()
	deadline := time.Now().Add(within)
	for {
		scr := term.screen()
		if i := strings.Index(scr[min(term.mark, len(scr)):], text); i >= 0 {
			term.mark += i + len(text)
			return
		}
		select {
		case <-term.closed:
			term.t.Fatalf("vkimg exited before showing %q; screen:\n%s", text, lastOf(scr))
		default:
		}
		if time.Now().After(deadline) {
			term.t.Fatalf("vkimg did not show %q; screen:\n%s", text, lastOf(scr))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// at waits until the field titled title has the focus (huh marks it with
// a bar): a key sent earlier could reach the field before it.
func (term *terminal) at(title string) { term.t.Helper(); term.expect("┃ "+title, 30*time.Second) }

// keys sends keystrokes one at a time; text is typed rune by rune.
func (term *terminal) keys(keys ...string) {
	term.t.Helper()
	for _, k := range keys {
		strokes := []string{k}
		if !strings.HasPrefix(k, "\x1b") && len(k) > 1 {
			strokes = strings.Split(k, "")
		}
		for _, s := range strokes {
			if _, err := term.pty.WriteString(s); err != nil {
				term.t.Fatal(err)
			}
			time.Sleep(15 * time.Millisecond)
		}
	}
}

const (
	keyEnter = "\r"
	keyCtrlU = "\x15" // delete the input line before the cursor
)

// TestDeployWizardOnATerminal runs the vkimg binary on a pseudo-terminal,
// answers the wizard key by key (one domain refused and asked again),
// confirms the summary, and uses the instance it deployed through nginx.
func TestDeployWizardOnATerminal(t *testing.T) {
	lxctest.RequireRoot(t)
	built := buildertest.Build(t, "recipes/standin.yaml", recipe.Overrides{}, t.TempDir())
	// Signed, with its key passed as the trusted key: the test does not
	// depend on whether this machine pins a key in the default place.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(t.TempDir(), "signed")
	if _, err := registry.Publish(context.Background(), registry.LayoutRef(built.Layout, built.RefName),
		registry.LayoutRef(layout, ""), registry.PublishOptions{Key: key}); err != nil {
		t.Fatalf("sign the template: %v", err)
	}
	pub, err := signing.MarshalPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	trusted := filepath.Join(t.TempDir(), "trusted.pub")
	if err := os.WriteFile(trusted, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "vkimg")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	_, root, bridge, srv := deployEnv(t)

	// What the wizard does not ask: where nginx and the template are.
	cmd := exec.Command(bin, "deploy", "--hypervisor", "lxc", "--trusted-key", trusted,
		"--template", layout, "--template-version", built.Manifest.Version,
		"--bridge", bridge, "--memory", "512", "--disk", "2", "--cores", "1", "--self-signed",
		"--http-port", fmt.Sprint(srv.HTTPPort), "--https-port", fmt.Sprint(srv.HTTPSPort))
	cmd.Args = append(cmd.Args, nginxFlags(srv)...)
	term := startTerminal(t, cmd)

	term.at("Public URL or domain")
	term.keys("tasks_bad.example.test", keyEnter)
	term.expect("not a valid domain", 30*time.Second)
	url := fmt.Sprintf("https://tasks.example.test:%d", srv.HTTPSPort)
	term.keys(keyCtrlU, url, keyEnter)
	for _, field := range []string{"Instance name", "Template source", "Template version", "Database"} {
		term.at(field)
		term.keys(keyEnter)
	}
	term.at("Admin email")
	term.keys("admin@example.org", keyEnter)
	for _, field := range []string{"Admin user name", "Admin password", "CPU cores", "Memory (MB)", "Disk (GB)",
		"Bridge", "Addresses", "Certificate"} {
		term.at(field)
		term.keys(keyEnter)
	}
	term.at("Nothing has changed yet")
	term.keys(keyEnter)

	select {
	case err := <-term.exited:
		if err != nil {
			t.Fatalf("vkimg deploy: %v; screen:\n%s", err, lastOf(term.screen()))
		}
	case <-time.After(10 * time.Minute):
		t.Fatalf("vkimg deploy did not finish; screen:\n%s", lastOf(term.screen()))
	}
	<-term.closed
	scr := term.screen()
	term.expect("is ready at "+url, time.Second)
	m := regexp.MustCompile(`admin login: +(\S+)\s+password: +(\S+)`).FindStringSubmatch(scr)
	if m == nil {
		t.Fatalf("no generated password shown:\n%s", lastOf(scr))
	}

	cfg, err := deployconfig.ReadInstance(filepath.Join(root, "instances", "tasks", deploy.InstanceFile))
	if err != nil {
		t.Fatal(err)
	}
	client, err := deploy.EdgeClient(edge.Site{Domains: []string{cfg.Domain}, HTTPSPort: srv.HTTPSPort, CertFile: cfg.TLS.Certificate})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"username": m[1], "password": m[2]})
	resp, err := client.Post(url+"/api/v1/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var login struct{ Token string }
	err = json.NewDecoder(resp.Body).Decode(&login)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || login.Token == "" {
		t.Fatalf("login through nginx with the shown password: %s %v", resp.Status, err)
	}
}
