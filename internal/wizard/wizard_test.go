package wizard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"go.yaml.in/yaml/v3"

	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/testenv"
)

// The test binary doubles as the program under test: with
// VKIMG_WIZARD_RESULT set it runs the wizard on its own stdin/stdout (a
// pseudo-terminal the test drives) and writes the outcome there.
const (
	envResult  = "VKIMG_WIZARD_RESULT"
	envAnswers = "VKIMG_WIZARD_ANSWERS"
)

var testMin = hypervisor.Minimums{Cores: 1, MemoryMB: 512, RootfsGB: 4}

type result struct {
	Answers  deployconfig.Answers
	Err      string
	Warnings int
}

func TestMain(m *testing.M) {
	if out := os.Getenv(envResult); out != "" {
		os.Exit(helper(out))
	}
	os.Exit(m.Run())
}

func helper(out string) int {
	a := &deployconfig.Answers{}
	if b := os.Getenv(envAnswers); b != "" {
		if err := yaml.Unmarshal([]byte(b), a); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	warnings, err := Run(context.Background(), a, Options{In: os.Stdin, Out: os.Stdout,
		Accessible: os.Getenv("VKIMG_WIZARD_ACCESSIBLE") != "",
		Checks:     deployconfig.Checks{Min: testMin, DBTimeout: 10 * time.Second}})
	r := result{Answers: *a, Warnings: len(warnings)}
	if err != nil {
		r.Err = err.Error()
	}
	b, _ := json.Marshal(r)
	if err := os.WriteFile(out, b, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	return 0
}

// session is the wizard running on a pseudo-terminal.
type session struct {
	t      *testing.T
	pty    *os.File
	cmd    *exec.Cmd
	result string

	mu     sync.Mutex
	raw    bytes.Buffer
	mark   int // screen text before mark has been matched already
	closed chan struct{}
	exited chan error // the process's exit, once
}

var ansi = regexp.MustCompile(`\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[=>78DEHMc])`)

func startWizard(t *testing.T, answers string, env ...string) *session {
	t.Helper()
	s := &session{t: t, result: filepath.Join(t.TempDir(), "result.json"), closed: make(chan struct{}), exited: make(chan error, 1)}
	s.cmd = exec.Command(os.Args[0], "-test.run=^$")
	s.cmd.Env = append(os.Environ(), envResult+"="+s.result, envAnswers+"="+answers, "TERM=xterm-256color")
	s.cmd.Env = append(s.cmd.Env, env...)
	var err error
	s.pty, err = pty.StartWithSize(s.cmd, &pty.Winsize{Rows: 60, Cols: 160})
	if err != nil {
		t.Fatal(err)
	}
	go func() { s.exited <- s.cmd.Wait() }()
	t.Cleanup(func() {
		s.cmd.Process.Kill() // a no-op once it has exited
		s.pty.Close()
	})
	go s.read()
	return s
}

// read collects the screen output and answers the terminal queries a
// real terminal would (background colour, cursor position), since the
// program waits for them.
func (s *session) read() {
	defer close(s.closed)
	buf := make([]byte, 4096)
	for {
		n, err := s.pty.Read(buf)
		chunk := buf[:n]
		if bytes.Contains(chunk, []byte("\x1b]11;?")) {
			s.pty.WriteString("\x1b]11;rgb:0000/0000/0000\x1b\\")
		}
		if bytes.Contains(chunk, []byte("\x1b[6n")) {
			s.pty.WriteString("\x1b[1;1R")
		}
		s.mu.Lock()
		s.raw.Write(chunk)
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (s *session) screen() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ansi.ReplaceAllString(s.raw.String(), "")
}

// expect waits until text appears after what was matched before. The
// bound only stops a broken wizard from hanging the test.
func (s *session) expect(text string) {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		scr := s.screen()
		if i := strings.Index(scr[min(s.mark, len(scr)):], text); i >= 0 {
			s.mark += i + len(text)
			return
		}
		select {
		case <-s.closed:
			s.t.Fatalf("wizard exited before showing %q; screen:\n%s", text, tail(scr))
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("wizard did not show %q; screen:\n%s", text, tail(scr))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tail(s string) string {
	if len(s) > 6000 {
		return s[len(s)-6000:]
	}
	return s
}

const (
	enter  = "\r"
	down   = "\x1b[B"
	ctrlU  = "\x15" // delete the input line before the cursor
	ctrlC  = "\x03"
	paceMs = 15
)

// at waits until the field titled title has the focus (huh marks it
// with a bar). Keys sent earlier could reach the field before it: moving
// the focus is a command bubbletea runs apart from the key events.
func (s *session) at(title string) {
	s.t.Helper()
	s.expect("┃ " + title)
}

// keys sends keystrokes one at a time; text is typed rune by rune.
func (s *session) keys(keys ...string) {
	s.t.Helper()
	for _, k := range keys {
		strokes := []string{k}
		if !strings.HasPrefix(k, "\x1b") && len(k) > 1 {
			strokes = strings.Split(k, "")
		}
		for _, st := range strokes {
			if _, err := s.pty.WriteString(st); err != nil {
				s.t.Fatal(err)
			}
			time.Sleep(paceMs * time.Millisecond)
		}
	}
}

func (s *session) wait() result {
	s.t.Helper()
	select {
	case err := <-s.exited:
		if err != nil {
			s.t.Fatalf("wizard: %v; screen:\n%s", err, tail(s.screen()))
		}
	case <-time.After(30 * time.Second):
		s.t.Fatalf("wizard did not finish; screen:\n%s", tail(s.screen()))
	}
	b, err := os.ReadFile(s.result)
	if err != nil {
		s.t.Fatal(err)
	}
	var r result
	if err := json.Unmarshal(b, &r); err != nil {
		s.t.Fatal(err)
	}
	return r
}

func TestWizardOnATerminalKeystrokeByKeystroke(t *testing.T) {
	s := startWizard(t, "")
	s.at("Public URL or domain")
	s.keys("bad_domain.example", enter)
	s.expect("not a valid domain")
	s.keys(ctrlU, "https://tasks.example.org", enter)

	// Name derived from the domain, built-in template, channel main.
	s.at("Instance name")
	s.keys(enter)
	s.at("Template source")
	s.keys(enter)
	s.at("Template version")
	s.keys(enter)

	s.at("Database")
	s.expect("SQLite, on the instance")
	s.keys(enter)

	s.at("Admin email")
	s.keys("Admin <admin@example.org>", enter)
	s.expect("bare address")
	s.keys(ctrlU, "admin@example.org", enter)
	s.at("Admin user name")
	s.keys(enter)
	s.at("Admin password")
	s.keys(enter) // generated

	s.at("CPU cores")
	s.keys(ctrlU, "0", enter)
	s.expect("must be at least 1")
	s.keys(ctrlU, "2", enter)
	s.at("Memory (MB)")
	s.keys(enter)
	s.at("Disk (GB)")
	s.keys(enter)

	s.at("Bridge")
	s.keys(enter)
	s.at("Addresses")
	s.keys(down, enter) // static

	s.at("Slot A address")
	s.keys("192.0.2.10/24", enter)
	s.at("Gateway")
	s.keys("198.51.100.1", enter)
	s.expect("not in the address's subnet 192.0.2.0/24")
	s.keys(ctrlU, "192.0.2.1", enter)
	s.at("Slot B address")
	s.keys(enter)

	s.at("Certificate")
	s.expect("Generate a self-signed certificate")
	s.keys(enter)

	s.expect("slot B 192.0.2.11/24")
	s.at("Nothing has changed yet")
	s.keys(enter)

	r := s.wait()
	if r.Err != "" {
		t.Fatalf("wizard failed: %s", r.Err)
	}
	a := r.Answers
	if a.URL != "https://tasks.example.org" || a.Name != "tasks" || a.Database.Type != "sqlite" || a.Admin.Email != "admin@example.org" ||
		!a.Admin.PasswordGenerated || len(a.Admin.Password) != 24 || a.Resources.Cores != 2 || a.Resources.MemoryMB != 1024 ||
		a.Network.Address != "192.0.2.10/24" || a.Network.Gateway != "192.0.2.1" || a.Network.AddressB != "" || !a.TLS.SelfSigned {
		t.Errorf("answers: %+v", a)
	}
	if scr := s.screen(); strings.Contains(scr, "Database connection") || strings.Contains(scr, a.Admin.Password) {
		t.Errorf("asked for database details with SQLite, or showed the password in the summary:\n%s", tail(scr))
	}
}

func TestWizardCancelChangesNothing(t *testing.T) {
	s := startWizard(t, "url: tasks.example.org\n")
	s.at("Public URL or domain")
	s.keys(ctrlC)
	if r := s.wait(); r.Err != ErrAborted.Error() {
		t.Errorf("err = %q, want %q", r.Err, ErrAborted)
	}
}

func TestWithoutTerminalItNeverWaits(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close() // an open writer: a read would block forever
	run := func(a *deployconfig.Answers, yes bool) error {
		done := make(chan error, 1)
		go func() {
			_, err := Run(t.Context(), a, Options{In: r, Out: &bytes.Buffer{}, Yes: yes, Checks: deployconfig.Checks{Min: testMin}})
			done <- err
		}()
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("Run waited for input without a terminal")
			return nil
		}
	}

	err = run(&deployconfig.Answers{Database: deployconfig.Database{Type: "postgres"}}, false)
	var me *MissingError
	if !errors.As(err, &me) || !me.NoTerminal {
		t.Fatalf("err = %v, want a MissingError", err)
	}
	for _, want := range []string{"no terminal", "url (--url)", "admin.email (--admin-email)", "database.host (--db-host)", "tls.certificate (--tls-cert)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}

	complete := func() *deployconfig.Answers {
		return &deployconfig.Answers{URL: "tasks.example.org", Admin: deployconfig.Admin{Email: "admin@example.org"},
			TLS: deployconfig.TLS{SelfSigned: true}}
	}
	if err := run(complete(), false); err == nil || !strings.Contains(err.Error(), "--yes") {
		t.Errorf("complete answers without --yes: %v", err)
	}
	a := complete()
	if err := run(a, true); err != nil {
		t.Errorf("complete answers with --yes: %v", err)
	}
	if !a.Admin.PasswordGenerated || a.Name != "tasks" {
		t.Errorf("answers not completed: %+v", a)
	}
	bad := complete()
	bad.Admin.Email = "not-an-email"
	var ie *deployconfig.InvalidError
	if err := run(bad, true); !errors.As(err, &ie) || !ie.Has("admin.email") {
		t.Errorf("invalid answers with --yes: %v", err)
	}
}

func TestSummaryNeverShowsPasswords(t *testing.T) {
	a := &deployconfig.Answers{URL: "tasks.example.org", Admin: deployconfig.Admin{Email: "a@example.org", Password: "hunter2hunter2"},
		Database: deployconfig.Database{Type: "mysql", Host: "db", Port: 3306, Name: "v", User: "u", Password: "dbpass-secret"}}
	a.Defaults(testMin)
	s := Summary(a)
	if strings.Contains(s, "hunter2") || strings.Contains(s, "dbpass") || !strings.Contains(s, "mysql u@db:3306/v") {
		t.Errorf("summary:\n%s", s)
	}
}

func TestWizardAsksForAndChecksAnExternalDatabase(t *testing.T) {
	db := testenv.PostgreSQL(t)
	s := startWizard(t, "url: tasks.example.org\nadmin:\n  email: admin@example.org\ntls:\n  self_signed: true\n")
	s.at("Public URL or domain")
	s.keys(enter)
	s.at("Instance name")
	s.keys(enter)
	s.at("Template source")
	s.keys(enter)
	s.at("Template version")
	s.keys(enter)
	s.at("Database")
	s.keys(down, enter)

	s.expect("Database connection")
	s.at("Host")
	s.keys(db.Host, enter)
	s.at("Port")
	s.keys(ctrlU, strconv.Itoa(db.Port), enter)
	s.at("Database name")
	s.keys(enter)
	s.at("User")
	s.keys(enter)
	s.at("Password")
	s.keys("wrong-password", enter)
	s.expect(`authentication failed for user "vikunja"`)
	s.keys(ctrlU, db.Password, enter)

	s.at("Admin email")
	s.keys(enter)
	s.at("Admin user name")
	s.keys(enter)
	s.at("Admin password")
	s.keys(enter)
	s.at("CPU cores")
	s.keys(enter)
	s.at("Memory (MB)")
	s.keys(enter)
	s.at("Disk (GB)")
	s.keys(enter)
	s.at("Bridge")
	s.keys(enter)
	s.at("Addresses")
	s.keys(enter)
	s.at("Certificate")
	s.keys(enter)
	s.expect(fmt.Sprintf("postgres vikunja@%s/vikunja", db.Addr()))
	s.expect("loopback") // the warning is part of the summary
	s.at("Nothing has changed yet")
	s.keys(enter)

	r := s.wait()
	d := r.Answers.Database
	if r.Err != "" || d.Type != "postgres" || d.Host != db.Host || d.Port != db.Port || d.Password != db.Password || r.Warnings != 1 {
		t.Errorf("result: err %q, database %+v, %d warnings", r.Err, d, r.Warnings)
	}
}

func TestWizardPlainPromptsWhenTermIsDumb(t *testing.T) {
	s := startWizard(t, "", "TERM=dumb")
	s.expect("Public URL or domain")
	s.keys("bad_domain.example" + enter)
	s.expect("not a valid domain")
	s.keys("tasks.example.org" + enter)
	s.expect("Instance name")
	s.keys(enter)
	s.expect("Template source")
	s.keys(enter)
	s.expect("Template version")
	s.keys(enter)
	s.expect("Enter a number between 1 and 3") // database
	s.keys(enter)
	s.expect("Admin email")
	s.keys("admin@example.org" + enter)
	s.expect("Admin user name")
	s.keys(enter)
	s.expect("Enter a number between 1 and 2") // generated password
	s.keys(enter)
	for _, q := range []string{"CPU cores", "Memory (MB)", "Disk (GB)", "Bridge"} {
		s.expect(q)
		s.keys(enter)
	}
	s.expect("Enter a number between 1 and 2") // DHCP
	s.keys(enter)
	s.expect("Enter a number between 1 and 2") // self-signed
	s.keys(enter)
	s.expect("Deploy this instance?")
	s.expect("Enter a number between 1 and 3")
	s.keys(enter)
	r := s.wait()
	a := r.Answers
	if r.Err != "" || a.Name != "tasks" || a.Admin.Email != "admin@example.org" || a.Network.Address != "dhcp" || !a.TLS.SelfSigned {
		t.Errorf("result: err %q, answers %+v", r.Err, a)
	}
}

func TestWizardPlainPromptsStopAtEndOfInput(t *testing.T) {
	s := startWizard(t, "", "VKIMG_WIZARD_ACCESSIBLE=1")
	s.expect("Public URL or domain")
	s.keys("tasks.example.org" + enter)
	s.expect("Instance name")
	s.keys("\x04") // Ctrl+D: end of input
	if r := s.wait(); !strings.Contains(r.Err, "input ended") {
		t.Errorf("err = %q, want the end of input reported", r.Err)
	}
}
