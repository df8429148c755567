package state

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Step statuses recorded in the journal.
const (
	StatusBegin  = "begin"  // the operation or step started
	StatusDone   = "done"   // it finished
	StatusFailed = "failed" // it failed (the operation then undoes what it did)
	StatusUndone = "undone" // a step was reverted
)

// Entry is one line of an instance's journal.
type Entry struct {
	Time   time.Time         `json:"time"`
	OpID   string            `json:"op"`
	Op     string            `json:"operation"`      // deploy, upgrade, rollback, restore, ...
	Step   string            `json:"step,omitempty"` // empty for the operation itself
	Status string            `json:"status"`
	Data   map[string]string `json:"data,omitempty"` // what a later command needs to finish or undo
	Error  string            `json:"error,omitempty"`
}

// Journal is an append-only, fsynced record of operations on one
// instance. A process killed at any point leaves a journal whose last
// operation has no end entry: the next command reads it with Pending and
// finishes or undoes it before doing anything else.
type Journal struct {
	path string
}

// Journal returns the instance's journal.
func (r Root) Journal(name string) *Journal {
	return &Journal{path: filepath.Join(r.Instance(name), "journal.jsonl")}
}

// Operation is one running operation in a journal.
type Operation struct {
	j  *Journal
	ID string
	Op string
}

// Begin records the start of an operation.
func (j *Journal) Begin(op string, data map[string]string) (*Operation, error) {
	id := make([]byte, 6)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	o := &Operation{j: j, ID: hex.EncodeToString(id), Op: op}
	return o, j.append(Entry{OpID: o.ID, Op: op, Status: StatusBegin, Data: data})
}

// Step records that step reached status, with data for recovery.
func (o *Operation) Step(step, status string, data map[string]string) error {
	return o.j.append(Entry{OpID: o.ID, Op: o.Op, Step: step, Status: status, Data: data})
}

// End records the end of the operation: StatusDone, or StatusFailed with
// the error after everything was undone.
func (o *Operation) End(status string, cause error) error {
	e := Entry{OpID: o.ID, Op: o.Op, Status: status}
	if cause != nil {
		e.Error = cause.Error()
	}
	return o.j.append(e)
}

// Resume continues recording an operation found by Pending.
func (j *Journal) Resume(p *Pending) *Operation {
	return &Operation{j: j, ID: p.ID, Op: p.Op}
}

func (j *Journal) append(e Entry) error {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(j.path), 0o755); err != nil { // see Acquire
		return fmt.Errorf("journal: %w", err)
	}
	f, err := os.OpenFile(j.path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	// After a torn write the file does not end in a newline; start a fresh
	// line so this entry stays readable.
	if torn, checkErr := endsTorn(f); checkErr != nil {
		err = checkErr
	} else if torn {
		b = append([]byte{'\n'}, b...)
	}
	if err == nil {
		_, err = f.Write(append(b, '\n'))
	}
	if err == nil {
		err = f.Sync()
	}
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("journal %s: %w", j.path, err)
	}
	return nil
}

func endsTorn(f *os.File) (bool, error) {
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return false, err
	}
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, fi.Size()-1); err != nil {
		return false, err
	}
	return last[0] != '\n', nil
}

// Pending is an operation that began and never ended.
type Pending struct {
	ID    string
	Op    string
	Begin Entry
	Steps []Entry // in order
}

// LastStep returns the newest step entry, or nil.
func (p *Pending) LastStep() *Entry {
	if len(p.Steps) == 0 {
		return nil
	}
	return &p.Steps[len(p.Steps)-1]
}

// Completed reports whether step was recorded done (and not undone since).
func (p *Pending) Completed(step string) bool {
	done := false
	for _, e := range p.Steps {
		if e.Step == step {
			done = e.Status == StatusDone
		}
	}
	return done
}

// Pending returns the last operation if it has no end entry, or nil. A
// torn last line (the process died mid-write) is ignored: the write it
// belonged to never completed.
func (j *Journal) Pending() (*Pending, error) {
	entries, err := j.Entries()
	if err != nil {
		return nil, err
	}
	var p *Pending
	for _, e := range entries {
		switch {
		case e.Step == "" && e.Status == StatusBegin:
			p = &Pending{ID: e.OpID, Op: e.Op, Begin: e}
		case p != nil && e.OpID == p.ID && e.Step == "":
			p = nil // ended
		case p != nil && e.OpID == p.ID:
			p.Steps = append(p.Steps, e)
		}
	}
	return p, nil
}

// Entries reads the whole journal; a missing journal is empty.
func (j *Journal) Entries() ([]Entry, error) {
	f, err := os.Open(j.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	defer f.Close()
	var out []Entry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			continue // a torn final write
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("journal %s: %w", j.path, err)
	}
	return out, nil
}
