package backup

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// A workDir holds one operation's temporary files beside its result, on
// the same file system, so the result is linked or renamed into place. It
// stays flock'ed while in use: one left by a killed process is unlocked,
// and the next operation with the same prefix removes it.
type workDir struct {
	path string
	lock *os.File
	keep bool // set by preserve
}

// initSuffix marks a work directory still being set up (not yet locked),
// which removeStale must leave alone.
const initSuffix = ".init"

func newWorkDir(parent, prefix string) (*workDir, error) {
	removeStale(parent, prefix)
	tmp, err := os.MkdirTemp(parent, prefix+"*"+initSuffix)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(tmp)
	if err == nil {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	final := strings.TrimSuffix(tmp, initSuffix)
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		os.RemoveAll(tmp)
		return nil, err
	}
	return &workDir{path: final, lock: f}, nil
}

// preserve keeps the directory, when it holds the only copy of something,
// under a visible name that removeStale does not match, and returns its
// path.
func (w *workDir) preserve() string {
	if !w.keep {
		kept := filepath.Join(filepath.Dir(w.path), strings.TrimPrefix(filepath.Base(w.path), ".")+".kept")
		if os.Rename(w.path, kept) == nil {
			w.path = kept
		}
		w.keep = true
	}
	return w.path
}

// remove deletes the directory, unless preserved, and releases its lock.
func (w *workDir) remove() {
	if !w.keep {
		os.RemoveAll(w.path)
	}
	w.lock.Close()
}

// removeStale deletes the work directories under parent that nobody holds
// locked: those of killed processes. Errors are ignored; they only leave
// hidden leftovers behind.
func removeStale(parent, prefix string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, prefix) || strings.HasSuffix(name, initSuffix) {
			continue
		}
		p := filepath.Join(parent, name)
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			os.RemoveAll(p)
		}
		f.Close()
	}
}
