package loadtest

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// maxAnswer bounds how much of an answer is read: the load's answers are a
// task or a small JSON object.
const maxAnswer = 4 << 20

func proto(h2 bool) string {
	if h2 {
		return "HTTP/2"
	}
	return "HTTP/1.1"
}

func taskPath(id int64) string { return fmt.Sprintf("/api/v1/tasks/%d", id) }

// read alternates between one of the tasks written so far and
// /api/v1/info (the only reads while no task exists yet).
func (l *Load) read(h2 bool, first func()) {
	for i := 0; l.next(i); i++ {
		id, ok := l.pick()
		if !ok || i%2 == 1 {
			var info struct {
				Version string `json:"version"`
			}
			if l.exchange(h2, "info", http.MethodGet, "/api/v1/info", nil, &info) == nil && info.Version == "" {
				l.fail(h2, "info", errors.New("the answer names no version"))
			}
		} else {
			var t struct {
				ID int64 `json:"id"`
			}
			if l.exchange(h2, "read task", http.MethodGet, taskPath(id), nil, &t) == nil && t.ID != id {
				l.fail(h2, "read task", fmt.Errorf("asked for task %d, got task %d", id, t.ID))
			}
		}
		first()
	}
}

// write alternates between creating a task and updating one of its own
// tasks the way Vikunja's clients must: read the whole task, change it, send
// it back whole. A worker updates only its own tasks, so two workers never
// race on one task and every acknowledged description is the one to find
// afterwards.
func (l *Load) write(h2 bool, project int64, first func()) {
	var mine []int64
	for i := 0; l.next(i); i++ {
		if len(mine) == 0 || i%2 == 0 {
			if id, ok := l.create(h2, project, fmt.Sprintf("load %s %d", proto(h2), i)); ok {
				mine = append(mine, id)
			}
		} else {
			l.update(h2, mine[rand.IntN(len(mine))], fmt.Sprintf("revision %d over %s", i, proto(h2)))
		}
		first()
	}
}

func (l *Load) create(h2 bool, project int64, title string) (int64, bool) {
	var t struct {
		ID    int64  `json:"id"`
		Title string `json:"title"`
	}
	path := fmt.Sprintf("/api/v1/projects/%d/tasks", project)
	if l.exchange(h2, "create task", http.MethodPut, path, map[string]string{"title": title}, &t) != nil {
		return 0, false
	}
	if t.ID <= 0 || t.Title != title {
		l.fail(h2, "create task", fmt.Errorf("answered task %d %q, want a new task %q", t.ID, t.Title, title))
		return 0, false
	}
	l.mu.Lock()
	l.written = append(l.written, t.ID)
	l.want[t.ID] = ""
	l.mu.Unlock()
	return t.ID, true
}

func (l *Load) update(h2 bool, id int64, description string) {
	var t map[string]any
	if l.exchange(h2, "read task", http.MethodGet, taskPath(id), nil, &t) != nil {
		return
	}
	t["description"] = description
	// Until the answer comes, the task may hold either description.
	l.mu.Lock()
	delete(l.want, id)
	l.mu.Unlock()
	var got struct {
		ID          int64  `json:"id"`
		Description string `json:"description"`
	}
	if l.exchange(h2, "update task", http.MethodPost, taskPath(id), t, &got) != nil {
		return
	}
	if got.ID != id || got.Description != description {
		l.fail(h2, "update task", fmt.Errorf("answered task %d %q, want task %d %q", got.ID, got.Description, id, description))
		return
	}
	l.mu.Lock()
	l.want[id] = description
	l.mu.Unlock()
}

// pick is a random task written so far.
func (l *Load) pick() (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.written) == 0 {
		return 0, false
	}
	return l.written[rand.IntN(len(l.written))], true
}

// next says whether a worker goes on with request i, after the pause.
func (l *Load) next(i int) bool {
	if i > 0 && l.o.Pause > 0 {
		t := time.NewTimer(l.o.Pause)
		defer t.Stop()
		select {
		case <-l.stop:
			return false
		case <-t.C:
		}
	}
	select {
	case <-l.stop:
		return false
	default:
		return true
	}
}

// exchange is one counted request of the load.
func (l *Load) exchange(h2 bool, op, method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), l.o.RequestTimeout)
	defer cancel()
	var attempts atomic.Int32
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { attempts.Add(1) },
	})
	slot, err := l.do(ctx, h2, method, path, body, out)
	if method == http.MethodGet {
		l.reads.Add(1)
	} else {
		l.writes.Add(1)
	}
	if attempts.Load() > 1 {
		l.retried.Add(1)
	}
	if err != nil {
		l.fail(h2, op, err)
	}
	if slot != "" || err == nil {
		l.mu.Lock()
		l.bySlot[slot]++
		l.mu.Unlock()
	}
	// Counted last, so that a caller who saw Sent grow sees the rest too.
	l.sent.Add(1)
	return err
}

// fail counts a failure and keeps its description if it is one of the first
// distinct ones.
func (l *Load) fail(h2 bool, op string, err error) {
	l.failed.Add(1)
	msg := fmt.Sprintf("%s %s: %v", proto(h2), op, err)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.errSeen[msg] || len(l.errs) >= maxErrors {
		return
	}
	l.errSeen[msg] = true
	l.errs = append(l.errs, time.Now().Format("15:04:05.000")+" "+msg)
}

// do sends one request with the load's token and decodes a 2xx JSON answer
// into out. It returns the slot that answered, when an answer came.
func (l *Load) do(ctx context.Context, h2 bool, method, path string, body, out any) (string, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return "", fmt.Errorf("%s %s: encode: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, l.o.BaseURL+path, rd)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
		// When a reused keep-alive connection closes before any byte of
		// the answer (nginx's old workers close idle connections at a
		// reload, and a request may be on its way), browsers send the
		// request again on a new connection whatever its method (Chromium's
		// ShouldResendRequest); Go does so only for requests it may
		// consider idempotent, which this header makes it do. Such resends
		// are counted in Report.Retried.
		req.Header.Set("Idempotency-Key", crand.Text())
	}
	if l.token != "" {
		req.Header.Set("Authorization", "Bearer "+l.token)
	}
	resp, err := l.clients[h2].Do(req)
	if err != nil {
		return "", transportError(err)
	}
	defer resp.Body.Close()
	return resp.Header.Get(SlotHeader), answer(resp, h2, out)
}

// transportError drops the URL net/http wraps errors in: it holds IDs that
// would make every failure look distinct.
func transportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// answer reads a whole answer, so that a connection cut in the middle of
// one counts as the failure it is, and checks protocol, status and JSON.
func answer(resp *http.Response, h2 bool, out any) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("%s, reading the answer: %w", resp.Status, transportError(err))
	}
	if want := map[bool]int{true: 2, false: 1}[h2]; resp.ProtoMajor != want {
		return fmt.Errorf("answered over %s, want %s: check the client factory", resp.Proto, proto(h2))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s: %s", resp.Status, excerpt(b))
	}
	if out == nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	// Numbers sent back in a whole task keep their exact value.
	dec.UseNumber()
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("%s with an answer that is not the expected JSON (%v): %s", resp.Status, err, excerpt(b))
	}
	return nil
}

// excerpt is the start of an error answer on one line.
func excerpt(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}
