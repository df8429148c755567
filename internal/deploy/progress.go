package deploy

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// progress shows the step list to the administrator and appends every line,
// timestamped and with secrets redacted, to the instance's log file (FR-013).
type progress struct {
	mu       sync.Mutex
	out      io.Writer
	terminal bool
	log      *os.File
	total    int
	done     int
	secrets  []string
}

func openProgress(out io.Writer, terminal bool, logFile string, total int) (*progress, error) {
	if err := os.MkdirAll(filepath.Dir(logFile), 0o750); err != nil {
		return nil, fmt.Errorf("open deploy log: %w", err)
	}
	f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open deploy log: %w", err)
	}
	if out == nil {
		out = io.Discard
	}
	return &progress{out: out, terminal: terminal, log: f, total: total}, nil
}

// redact adds a value that must never reach the log or the screen.
func (p *progress) redact(secret string) {
	if secret != "" {
		p.mu.Lock()
		p.secrets = append(p.secrets, secret)
		p.mu.Unlock()
	}
}

func (p *progress) clean(s string) string {
	for _, sec := range p.secrets {
		s = strings.ReplaceAll(s, sec, "[redacted]")
	}
	return s
}

// step announces the next step of the list.
func (p *progress) step(name string) {
	p.mu.Lock()
	p.done++
	n := p.done
	p.mu.Unlock()
	plain := fmt.Sprintf("step %d/%d: %s", n, p.total, name)
	p.write(fmt.Sprintf("[%2d/%d %3d%%] %s", n, p.total, 100*(n-1)/p.total, name), plain)
}

// finish marks the list complete.
func (p *progress) finish(msg string) {
	p.write(fmt.Sprintf("[%2d/%d 100%%] %s", p.total, p.total, msg), msg)
}

// logf writes a detail line; on a terminal it is indented under its step.
func (p *progress) logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	p.write("           "+line, line)
}

// write shows screen on a terminal, plain otherwise, and logs plain: the
// log reads the same however deploy was started.
func (p *progress) write(screen, plain string) {
	if p == nil { // an undo replayed outside any operation (tests)
		return
	}
	screen, plain = p.clean(screen), p.clean(plain)
	now := time.Now().UTC()
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.log, "%s %s\n", now.Format(time.RFC3339Nano), plain)
	if p.terminal {
		fmt.Fprintln(p.out, screen)
		return
	}
	fmt.Fprintf(p.out, "%s %s\n", now.Format(time.RFC3339), plain)
}

func (p *progress) close() error { return p.log.Close() }
