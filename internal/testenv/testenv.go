// Package testenv starts the real servers vkimg's tests talk to —
// PostgreSQL, MariaDB, nginx, an OCI registry — each on loopback, in the
// test's own temporary directory, stopped when the test ends. Nothing here
// is a fake: the servers are Debian's own binaries.
//
// On a developer machine without the packages the tests skip and say which
// package is missing; in CI (env CI set) a missing package fails the test,
// because .ci/run installs them all.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Need skips t (or fails it in CI) when the program is not installed.
func Need(t testing.TB, program, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err == nil {
		return p
	}
	if _, statErr := os.Stat(program); statErr == nil {
		return program
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found: CI must install Debian package %s (scripts/setup.sh)", program, debianPackage)
	}
	t.Skipf("needs %s (Debian package %s); run scripts/setup.sh", program, debianPackage)
	return ""
}

// NeedRoot skips t when not root (it fails in CI, which runs as root).
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("CI must run tests as root")
	}
	t.Skip("needs root (containers, servers running as their own users)")
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// OwnedTempDir makes a temporary directory owned by a system user, for
// servers that refuse to run as root.
func OwnedTempDir(t testing.TB, user string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vkimg-"+user+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	run(t, "chown", "-R", user+":", dir)
	return dir
}

// WaitTCP waits until addr accepts connections or the deadline passes.
func WaitTCP(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections after %s: %w", addr, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Background starts cmd and stops it (SIGTERM, then SIGKILL) at cleanup.
// Its output goes to a log file whose tail is shown if the test fails.
func Background(t testing.TB, name string, cmd *exec.Cmd) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, so that the interrupt reaches the server
	// itself and not only a wrapper (runuser does not forward SIGINT: the
	// server would be killed after the timeout instead of stopping).
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("%s log (tail):\n%s", name, tail(b, 4000))
			}
		}
	})
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func run(t testing.TB, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %v\n%s", argv, err, out.String())
	}
	return out.String()
}

func itoa(i int) string { return strconv.Itoa(i) }
