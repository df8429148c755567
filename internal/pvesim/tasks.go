package pvesim

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// task is one long operation, reported the way Proxmox's worker tasks are:
// a UPID, a status, an exit status and a numbered log.
type task struct {
	upid      string
	node      string
	typ       string
	id        string
	user      string
	pid       int
	pstart    int
	starttime time.Time

	mu    sync.Mutex
	lines []string
	done  bool
	exit  string
}

func (t *task) logf(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, strings.Split(strings.TrimRight(fmt.Sprintf(format, args...), "\n"), "\n")...)
}

func (t *task) finish(err error) {
	if err != nil {
		msg := strings.TrimSpace(err.Error())
		t.logf("TASK ERROR: %s", msg)
		t.mu.Lock()
		t.exit = msg
	} else {
		t.logf("TASK OK")
		t.mu.Lock()
		t.exit = "OK"
	}
	t.done = true
	t.mu.Unlock()
}

func (t *task) status() map[string]any {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := map[string]any{
		"upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
		"starttime": t.starttime.Unix(), "type": t.typ, "id": t.id, "user": t.user,
		"status": "running",
	}
	if t.done {
		st["status"] = "stopped"
		st["exitstatus"] = t.exit
	}
	return st
}

// log returns lines [start, start+limit) as Proxmox numbers them (from 1).
func (t *task) log(start, limit int) []map[string]any {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := []map[string]any{}
	for i := start; i < len(t.lines) && i < start+limit; i++ {
		out = append(out, map[string]any{"n": i + 1, "t": t.lines[i]})
	}
	return out
}

// taskList holds every task the simulator ran since it started.
type taskList struct {
	mu    sync.Mutex
	next  int
	tasks map[string]*task
	wg    sync.WaitGroup
}

// start runs fn as a worker task and returns its UPID at once, as Proxmox's
// fork_worker does. The UPID has Proxmox's layout:
// UPID:node:pid:pstart:starttime:type:id:user: with hex numbers.
func (l *taskList) start(ctx context.Context, node, typ, id, user string, fn func(ctx context.Context, t *task) error) string {
	l.mu.Lock()
	l.next++
	t := &task{node: node, typ: typ, id: id, user: user, pid: 100000 + l.next, pstart: 1000 + l.next, starttime: time.Now()}
	t.upid = fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%s:%s:%s:", node, t.pid, t.pstart, t.starttime.Unix(), typ, id, user)
	if l.tasks == nil {
		l.tasks = map[string]*task{}
	}
	l.tasks[t.upid] = t
	l.mu.Unlock()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		t.finish(fn(ctx, t))
	}()
	return t.upid
}

func (l *taskList) get(upid string) (*task, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.tasks[upid]
	return t, ok
}
