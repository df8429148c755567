// Package loadtest drives continuous traffic through an instance's edge for
// the zero-downtime tests and benchmarks of upgrade and rollback (issue 6):
// HTTP/2 and HTTP/1.1 keep-alive clients reading and writing tasks through
// Vikunja's API, and one large attachment upload kept in flight, with every
// failed request counted. It speaks only Vikunja's public API, so it runs
// against real Vikunja and the stand-in alike, and it knows nothing of the
// edge's code: the slot header is a constant here.
package loadtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// SlotHeader is the header in which the edge names the slot that answered
// (internal/edge.SlotHeader; this package's tests keep the two equal).
const SlotHeader = "X-Vkimg-Slot"

// maxErrors bounds Report.Errors: the first distinct failures say what went
// wrong, thousands of repeats of a 502 do not.
const maxErrors = 20

// Options say where the load goes and how much of it there is.
type Options struct {
	BaseURL string // https://domain:port, without a trailing path
	// Client returns the client the workers of one protocol share: HTTP/2
	// when http2 is set, HTTP/1.1 keep-alive otherwise. It is called once
	// per protocol. A response over another protocol counts as failed.
	Client func(http2 bool) *http.Client
	// Token is an API token (or a login token) with the task and project
	// permissions; when empty, Username and Password log in.
	Token              string
	Username, Password string
	// Readers and Writers run per protocol; 0 means 1.
	Readers, Writers int
	// Upload is the size in bytes of one attachment upload started by
	// Start and sent at UploadRate bytes/s (0: as fast as possible), so
	// that it spans a flip, e.g. UploadRate = Upload/10 for ten seconds.
	// 0 means no upload. It must fit Vikunja's files.maxsize (20 MB by
	// default) and the edge's body limit.
	Upload, UploadRate int64
	// UploadTimeout bounds how long Stop waits for the upload to finish;
	// default 5 minutes, the longest upload an upgrade has to carry.
	UploadTimeout time.Duration
	// Pause is the time between two requests of one worker (default 0),
	// to keep the load's CPU use down on a small machine.
	Pause time.Duration
	// RequestTimeout bounds each request, whatever the client's own
	// timeout (default 30 s), so Stop never waits on a hung request.
	RequestTimeout time.Duration
}

// Report is what the load saw, from Start to Stop.
type Report struct {
	// Sent counts the load's requests that ended (answered or failed),
	// the upload and the setup requests of Start excluded; Failed are those
	// that got a transport error, a status other than 2xx, an answer over
	// the wrong protocol or an answer that contradicts the request.
	Sent, Failed int64
	// Retried counts requests the client sent again on a new connection
	// because the one they went out on closed before any answer (an idle
	// HTTP/1.1 keep-alive connection closed by nginx's old workers, a
	// stream refused after HTTP/2's GOAWAY), as browsers do: not failures,
	// but a sign of connections a reload cut.
	Retried  int64
	Reads    int64            // GET requests
	Writes   int64            // PUT and POST requests
	BySlot   map[string]int64 // answers per slot named in SlotHeader ("" when absent)
	Duration time.Duration    // from the first request to Stop
	// Errors are the first distinct failures, each with its time, protocol
	// and operation.
	Errors []string
	// UploadBytes is how much of the upload's file was sent; UploadOK says
	// the API stored all of it; UploadSlot is the slot that answered it.
	UploadBytes int64
	UploadOK    bool
	UploadSlot  string
	UploadErr   string
	// Written are the IDs of the tasks the load created (see
	// Load.CheckWritten).
	Written []int64
}

// String sums the report up on one line.
func (r Report) String() string {
	var b strings.Builder
	rate := 0.0
	if r.Duration > 0 {
		rate = float64(r.Sent) / r.Duration.Seconds()
	}
	fmt.Fprintf(&b, "sent %d (reads %d, writes %d) in %s (%.0f/s), failed %d, retried %d, by slot",
		r.Sent, r.Reads, r.Writes, r.Duration.Round(time.Millisecond), rate, r.Failed, r.Retried)
	for _, slot := range slices.Sorted(maps.Keys(r.BySlot)) {
		name := slot
		if name == "" {
			name = "(none)"
		}
		fmt.Fprintf(&b, " %s=%d", name, r.BySlot[slot])
	}
	switch {
	case r.UploadOK:
		fmt.Fprintf(&b, "; upload of %d bytes stored by %s", r.UploadBytes, r.UploadSlot)
	case r.UploadErr != "":
		fmt.Fprintf(&b, "; upload failed after %d bytes: %s", r.UploadBytes, r.UploadErr)
	}
	return b.String()
}

// Load is traffic running through the edge until Stop.
type Load struct {
	o       Options
	clients map[bool]*http.Client
	token   string
	project int64

	stop     chan struct{}
	workers  sync.WaitGroup
	stopOnce sync.Once
	stopped  atomic.Bool
	report   Report
	began    time.Time

	sent, failed, retried, reads, writes atomic.Int64

	mu      sync.Mutex
	bySlot  map[string]int64
	errs    []string
	errSeen map[string]bool
	written []int64
	// want is the description each written task must have: the one its
	// last acknowledged write left. A task whose last write has an unknown
	// outcome (it failed) is absent until a later write is acknowledged.
	want map[int64]string

	upload *upload
}

// newProject creates a project for the load's tasks.
func (l *Load) newProject(ctx context.Context, title string) (int64, error) {
	var p struct {
		ID int64 `json:"id"`
	}
	if _, err := l.do(ctx, true, http.MethodPut, "/api/v1/projects", map[string]string{"title": title}, &p); err != nil {
		return 0, fmt.Errorf("create a project for the load: %w", err)
	}
	if p.ID <= 0 {
		return 0, fmt.Errorf("create a project for the load: the answer has no project id")
	}
	return p.ID, nil
}

// Start logs in (unless Options.Token is set), creates a project for the
// load's tasks, starts the upload and the workers, and returns once every
// worker has had an answer and the upload is in flight. If any of that
// fails, nothing keeps running and the error says what failed. ctx bounds
// Start only; the load runs until Stop.
func Start(ctx context.Context, o Options) (*Load, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	if o.Readers == 0 {
		o.Readers = 1
	}
	if o.Writers == 0 {
		o.Writers = 1
	}
	o.UploadTimeout = orDefault(o.UploadTimeout, 5*time.Minute)
	o.RequestTimeout = orDefault(o.RequestTimeout, 30*time.Second)
	o.BaseURL = strings.TrimSuffix(o.BaseURL, "/")
	l := &Load{
		o:       o,
		clients: map[bool]*http.Client{true: o.Client(true), false: o.Client(false)},
		token:   o.Token,
		stop:    make(chan struct{}),
		bySlot:  map[string]int64{},
		errSeen: map[string]bool{},
		want:    map[int64]string{},
	}
	if l.token == "" {
		var login struct {
			Token string `json:"token"`
		}
		body := map[string]string{"username": o.Username, "password": o.Password}
		if _, err := l.do(ctx, true, http.MethodPost, "/api/v1/login", body, &login); err != nil {
			return nil, fmt.Errorf("log in as %s at %s: %w", o.Username, o.BaseURL, err)
		}
		if login.Token == "" {
			return nil, fmt.Errorf("log in as %s at %s: the answer has no token", o.Username, o.BaseURL)
		}
		l.token = login.Token
	}
	title := "vkimg load " + time.Now().UTC().Format(time.RFC3339)
	var err error
	if l.project, err = l.newProject(ctx, title); err != nil {
		return nil, err
	}
	// Each writer creates tasks in a project of its own: Vikunja numbers
	// a project's tasks without a lock, and two concurrent creates in one
	// project can get the same number (a 500 from Vikunja, not the edge).
	projects := map[bool][]int64{}
	for _, h2 := range []bool{true, false} {
		for i := range o.Writers {
			p, err := l.newProject(ctx, fmt.Sprintf("%s writer %s %d", title, proto(h2), i))
			if err != nil {
				return nil, err
			}
			projects[h2] = append(projects[h2], p)
		}
	}
	if o.Upload > 0 {
		u, err := l.startUpload(ctx)
		if err != nil {
			return nil, err
		}
		l.upload = u
	}

	l.began = time.Now()
	ready := make(chan struct{}, 2*(o.Readers+o.Writers))
	for _, h2 := range []bool{true, false} {
		for range o.Readers {
			l.run(ready, func(first func()) { l.read(h2, first) })
		}
		for _, p := range projects[h2] {
			l.run(ready, func(first func()) { l.write(h2, p, first) })
		}
	}
	for range cap(ready) {
		select {
		case <-ready:
		case <-ctx.Done():
			r := l.abort()
			return nil, fmt.Errorf("start load on %s: not every worker was answered: %w (%s)", o.BaseURL, ctx.Err(), r)
		}
	}
	if l.failed.Load() > 0 {
		r := l.abort()
		return nil, fmt.Errorf("start load on %s: traffic does not flow: %s", o.BaseURL, strings.Join(r.Errors, "; "))
	}
	if l.upload != nil {
		select {
		case <-l.upload.started:
		case <-l.upload.done:
			r := l.abort()
			return nil, fmt.Errorf("start load on %s: the upload ended at once: %s", o.BaseURL, r.UploadErr)
		case <-ctx.Done():
			l.abort()
			return nil, fmt.Errorf("start load on %s: the upload did not start: %w", o.BaseURL, ctx.Err())
		}
	}
	return l, nil
}

func (o Options) check() error {
	u, err := url.Parse(o.BaseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("load options: base URL %q: want http(s)://host[:port]", o.BaseURL)
	}
	switch {
	case o.Client == nil:
		return errors.New("load options: no client factory")
	case o.Token == "" && (o.Username == "" || o.Password == ""):
		return errors.New("load options: want an API token or a username and password")
	case o.Readers < 0 || o.Writers < 0 || o.Upload < 0 || o.UploadRate < 0 || o.Pause < 0 ||
		o.UploadTimeout < 0 || o.RequestTimeout < 0:
		return errors.New("load options: counts, sizes and durations cannot be negative")
	}
	return nil
}

// orDefault returns v, or def when v is zero.
func orDefault(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

// run starts a worker; it reports to ready once its first request ended.
func (l *Load) run(ready chan<- struct{}, work func(first func())) {
	l.workers.Add(1)
	go func() {
		defer l.workers.Done()
		var once sync.Once
		first := func() { once.Do(func() { ready <- struct{}{} }) }
		// A worker stopped before its first answer must not leave Start
		// waiting.
		defer first()
		work(first)
	}()
}

// Stop ends the load: each worker finishes the request it is on (a request
// cut by Stop would be a failure of the load, not of the system), then the
// upload is awaited up to Options.UploadTimeout. Later calls return the same
// report.
func (l *Load) Stop() Report {
	l.stopOnce.Do(func() {
		close(l.stop)
		l.workers.Wait()
		took := time.Since(l.began)
		if l.upload != nil {
			l.upload.wait(l.o.UploadTimeout)
		}
		l.report = l.snapshot()
		l.report.Duration = took
		l.stopped.Store(true)
	})
	return l.report
}

// abort stops a load Start gives up on, without waiting for the upload.
func (l *Load) abort() Report {
	if l.upload != nil {
		l.upload.cancel()
	}
	return l.Stop()
}

func (l *Load) snapshot() Report {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := Report{
		Sent: l.sent.Load(), Failed: l.failed.Load(), Retried: l.retried.Load(),
		Reads: l.reads.Load(), Writes: l.writes.Load(),
		BySlot:  maps.Clone(l.bySlot),
		Errors:  slices.Clone(l.errs),
		Written: slices.Clone(l.written),
	}
	if u := l.upload; u != nil {
		r.UploadBytes, r.UploadOK, r.UploadSlot, r.UploadErr = u.body.sent.Load(), u.err == nil, u.slot, errString(u.err)
	}
	return r
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Sent is the number of the load's requests that ended so far.
func (l *Load) Sent() int64 { return l.sent.Load() }

// Uploading says whether the upload is still in flight, so a test can make
// sure a flip happened while it was.
func (l *Load) Uploading() bool {
	if l.upload == nil {
		return false
	}
	select {
	case <-l.upload.done:
		return false
	default:
		return true
	}
}

// WaitRequests waits until n more requests have ended (answered or failed)
// than when it was called: "n requests after the flip".
func (l *Load) WaitRequests(ctx context.Context, n int64) error {
	target := l.sent.Load() + n
	// Polling costs far less than a notification per request would at
	// hundreds of requests per second.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for l.sent.Load() < target {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d requests: %d ended: %w", n, n-(target-l.sent.Load()), ctx.Err())
		case <-l.stop:
			return fmt.Errorf("wait for %d requests: the load was stopped", n)
		case <-tick.C:
		}
	}
	return nil
}

// HTTP11 returns a copy of c that speaks only HTTP/1.1 with keep-alive, for
// Options.Client when the clients at hand negotiate HTTP/2 (such as
// deploy.EdgeClient's). c's transport must be an *http.Transport.
func HTTP11(c *http.Client) (*http.Client, error) {
	tr, ok := c.Transport.(*http.Transport)
	if !ok {
		return nil, fmt.Errorf("HTTP/1.1 client: transport %T is not an *http.Transport", c.Transport)
	}
	tr = tr.Clone()
	tr.ForceAttemptHTTP2 = false
	// A non-nil empty map turns HTTP/2 off, even on a transport that has
	// already been used (and so lists "h2").
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	if tr.TLSClientConfig != nil {
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	h1 := *c
	h1.Transport = tr
	return &h1, nil
}
