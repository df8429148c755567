package state

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gofrs/flock"
)

// A child process takes the lock when the test binary is re-run with this
// variable set; it prints "held" and waits to be killed.
const holdLockEnv = "VKIMG_TEST_HOLD_LOCK"

func TestMain(m *testing.M) {
	if path := os.Getenv(holdLockEnv); path != "" {
		if _, err := Acquire(path, "instance t", "upgrade t"); err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(1)
		}
		os.Stdout.WriteString("held\n")
		select {}
	}
	os.Exit(m.Run())
}

func holdInChild(t *testing.T, path string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holdLockEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "held\n" {
		t.Fatalf("child did not take the lock: %q %v", line, err)
	}
	return cmd
}

func TestLockRefusedWhileHeldAndNamesHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	child := holdInChild(t, path)
	_, err := Acquire(path, "instance t", "deploy t")
	var le *LockedError
	if !errors.As(err, &le) {
		t.Fatalf("err = %v, want LockedError", err)
	}
	if le.Holder.PID != child.Process.Pid || le.Holder.Command != "upgrade t" || le.Holder.Since.IsZero() {
		t.Fatalf("holder = %+v, want the child's pid %d and its command", le.Holder, child.Process.Pid)
	}
	if !strings.Contains(err.Error(), `"upgrade t"`) {
		t.Fatalf("message %q does not say what holds the lock", err)
	}
}

func TestLockOfKilledProcessDoesNotBlock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	child := holdInChild(t, path)
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	l, err := Acquire(path, "instance t", "rollback t")
	if err != nil {
		t.Fatalf("lock of a killed process still blocks: %v", err)
	}
	if h := readHolder(path); h.PID != os.Getpid() || h.Command != "rollback t" {
		t.Fatalf("holder after takeover = %+v", h)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".holder"); !os.IsNotExist(err) {
		t.Fatalf("holder record left after release: %v", err)
	}
}

// A process refused the lock in the moment between the holder's flock and
// its holder record (which may still name the killed holder before it)
// still names the live holder, not a dead one or nobody.
func TestLockRefusalWaitsForTheHolderRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	dead := holdInChild(t, path)
	dead.Process.Signal(syscall.SIGKILL)
	dead.Wait() // its holder record stays behind
	fl := flock.New(path)
	if ok, err := fl.TryLock(); !ok || err != nil {
		t.Fatalf("take the lock without a record: %v %v", ok, err)
	}
	defer fl.Unlock()
	me := Holder{PID: os.Getpid(), Command: "upgrade t", Since: time.Now().UTC()}
	go func() {
		time.Sleep(100 * time.Millisecond)
		writeHolder(path+".holder", me)
	}()
	_, err := Acquire(path, "instance t", "deploy t")
	var le *LockedError
	if !errors.As(err, &le) || le.Holder.PID != me.PID || le.Holder.Command != "upgrade t" {
		t.Fatalf("refusal %v names %+v; want the live holder %+v", err, le, me)
	}
}

func TestLockExcludesWithinOneProcess(t *testing.T) {
	root := Root{Dir: t.TempDir()}
	a, err := root.InstanceLock("tasks", "upgrade tasks")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := root.InstanceLock("tasks", "restore tasks"); !IsLocked(err) {
		t.Fatalf("second lock: %v, want locked", err)
	}
	if other, err := root.InstanceLock("notes", "upgrade notes"); err != nil {
		t.Fatalf("another instance's lock: %v", err)
	} else {
		other.Release()
	}
	a.Release()
	b, err := root.InstanceLock("tasks", "restore tasks")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	b.Release()
}

func TestJournalPendingUntilEnded(t *testing.T) {
	j := Root{Dir: t.TempDir()}.Journal("tasks")
	if p, err := j.Pending(); err != nil || p != nil {
		t.Fatalf("empty journal: %+v %v", p, err)
	}
	done, _ := j.Begin("deploy", nil)
	done.Step("create", StatusDone, map[string]string{"ct": "101"})
	done.End(StatusDone, nil)

	op, err := j.Begin("upgrade", map[string]string{"to": "1.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	op.Step("backup", StatusBegin, nil)
	op.Step("backup", StatusDone, map[string]string{"archive": "a.tar.zst"})
	op.Step("green", StatusBegin, map[string]string{"ct": "102"})

	p, err := j.Pending()
	if err != nil || p == nil {
		t.Fatalf("pending = %v, %v; want the upgrade", p, err)
	}
	if p.Op != "upgrade" || p.Begin.Data["to"] != "1.1.0" || len(p.Steps) != 3 {
		t.Fatalf("pending = %+v", p)
	}
	if !p.Completed("backup") || p.Completed("green") {
		t.Fatalf("completed: backup %v green %v", p.Completed("backup"), p.Completed("green"))
	}
	if last := p.LastStep(); last.Step != "green" || last.Data["ct"] != "102" {
		t.Fatalf("last step = %+v", last)
	}
	// A process killed mid-write leaves a torn line: it must not hide the
	// pending operation.
	f, _ := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"time":"2026-`)
	f.Close()
	if p, _ := j.Pending(); p == nil || p.ID != op.ID {
		t.Fatalf("torn line hid the pending operation: %+v", p)
	}
	j.Resume(p).End(StatusFailed, errors.New("green unhealthy"))
	if p, _ := j.Pending(); p != nil {
		t.Fatalf("ended operation still pending: %+v", p)
	}
}

func TestCheckInstanceName(t *testing.T) {
	for _, ok := range []string{"tasks", "team-2", "ab"} {
		if err := CheckInstanceName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a", "../etc", "Tasks", "x;y", "-a", "a-", "a b", strings.Repeat("a", 33)} {
		if err := CheckInstanceName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
