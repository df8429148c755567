package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gofrs/flock"
)

// Holder says who holds a lock, for the message another command shows.
type Holder struct {
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Command string    `json:"command"` // e.g. "upgrade tasks"
	Since   time.Time `json:"since"`
}

func (h Holder) String() string {
	return fmt.Sprintf("%q (pid %d on %s) since %s", h.Command, h.PID, h.Host, h.Since.Format(time.RFC3339))
}

// LockedError is returned when another live process holds the lock.
type LockedError struct {
	Name   string // what is locked, e.g. the instance
	Holder Holder // zero if the holder wrote nothing yet
}

func (e *LockedError) Error() string {
	if e.Holder.PID == 0 {
		return fmt.Sprintf("%s is locked by another vkimg operation that is starting", e.Name)
	}
	return fmt.Sprintf("%s is locked by %s; wait for it to finish", e.Name, e.Holder)
}

// Lock is a held lock. The kernel releases it when the process dies
// (flock), so a lock left by a killed process never blocks: only the holder
// record beside it stays behind, and the next holder overwrites it.
type Lock struct {
	fl         *flock.Flock
	holderPath string
}

// Acquire takes the lock at path without waiting. command describes the
// operation for the message other commands show while it runs.
func Acquire(path, name, command string) (*Lock, error) {
	// 0755: unprivileged containers (host uids 100000+) must traverse the
	// state directory to their rootfs and data volume; files stay 0600.
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	fl := flock.New(path, flock.SetFlag(os.O_CREATE|os.O_RDWR), flock.SetPermissions(0o600))
	ok, err := fl.TryLock()
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	if !ok {
		return nil, &LockedError{Name: name, Holder: waitHolder(path)}
	}
	host, _ := os.Hostname()
	h := Holder{PID: os.Getpid(), Host: host, Command: command, Since: time.Now().UTC().Truncate(time.Second)}
	if err := writeHolder(path+".holder", h); err != nil {
		fl.Unlock()
		return nil, fmt.Errorf("lock %s: record holder: %w", name, err)
	}
	return &Lock{fl: fl, holderPath: path + ".holder"}, nil
}

// Release gives the lock up. The holder record is cleared first so that no
// one reads a stale one as live.
func (l *Lock) Release() error {
	if l == nil || l.fl == nil {
		return nil
	}
	os.Remove(l.holderPath)
	err := l.fl.Unlock()
	l.fl = nil
	return err
}

func writeHolder(path string, h Holder) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// waitHolder reads the holder record, giving a holder that has just taken
// the lock a moment to write it (until then the file is missing, or still
// names the killed process before it).
func waitHolder(lockPath string) Holder {
	deadline := time.Now().Add(time.Second)
	for {
		h := readHolder(lockPath)
		if (h.PID != 0 && alive(h.PID)) || time.Now().After(deadline) {
			return h
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func readHolder(lockPath string) Holder {
	var h Holder
	b, err := os.ReadFile(lockPath + ".holder")
	if err == nil {
		json.Unmarshal([]byte(strings.TrimSpace(string(b))), &h)
	}
	return h
}

// InstanceLock takes the per-instance lock that deploy, upgrade, rollback,
// restore, reconfigure and uninstall all share.
func (r Root) InstanceLock(name, command string) (*Lock, error) {
	return Acquire(filepath.Join(r.Instance(name), "lock"), "instance "+name, command)
}

// NodeLock takes the node-wide lock held while choosing container IDs,
// addresses and ports, so two deploys never pick the same ones.
func (r Root) NodeLock(command string) (*Lock, error) {
	return Acquire(filepath.Join(r.Dir, "node.lock"), "this node's allocation", command)
}

// IsLocked reports whether err is a LockedError.
func IsLocked(err error) bool {
	var le *LockedError
	return errors.As(err, &le)
}
