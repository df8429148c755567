// Command load drives continuous traffic through an instance's nginx over
// HTTPS with internal/loadtest (HTTP/2 and HTTP/1.1 keep-alive readers and
// writers, one large attachment upload) while upgrade.sh upgrades, rolls
// back or restores the instance, and prints the load's report as JSON.
//
//	VKIMG_ADMIN_PASSWORD=… go run ./scripts/real-vikunja/load \
//	    -url https://tasks.example.org:8443 -cert fullchain.pem \
//	    -stop-file STOP [-ready-file READY] [-upload 16777216 -upload-for 90s] [-check]
//
// The password comes from the environment (VKIMG_ADMIN_PASSWORD), never
// from the command line. The load runs until the stop file exists or
// -duration has passed. SIGUSR1 marks a moment (upgrade.sh sends it when
// vkimg announces its nginx switch): the report says whether the upload was
// in flight then. -check reads back every task the load wrote and its
// upload (loadtest.Load.CheckWritten) after it stopped. -serial-writes
// sends the writes one at a time, which keeps real Vikunja's own failures
// of concurrent writes (see serialWrites) out of the figures. Exit status 0
// when the report is printed, whatever it says; 1 when the load could not
// run.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vkimg/vkimg/internal/deploy"
	"github.com/vkimg/vkimg/internal/edge"
	"github.com/vkimg/vkimg/internal/loadtest"
)

// result is what the program prints: the report, plus what the script
// needs besides it.
type result struct {
	Report          loadtest.Report `json:"report"`
	Summary         string          `json:"summary"`
	DurationSeconds float64         `json:"durationSeconds"`
	Written         int             `json:"written"` // tasks the load created (Report.Written is left out)
	// UploadInFlightAtMark says whether the upload was still being sent at
	// the first SIGUSR1; absent when no mark was made.
	UploadInFlightAtMark *bool `json:"uploadInFlightAtMark,omitempty"`
	// CheckWritten is "ok", the check's error, or "" when not asked for.
	CheckWritten string `json:"checkWritten"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

func run() error {
	base := flag.String("url", "", "the instance's `URL` through nginx: https://DOMAIN:PORT")
	cert := flag.String("cert", "", "the site's certificate `FILE` (PEM): nginx must present exactly it")
	address := flag.String("address", "127.0.0.1", "local `ADDRESS` nginx listens on (the domain needs no DNS)")
	user := flag.String("user", "admin", "Vikunja `USER` to log in as; the password is read from $VKIMG_ADMIN_PASSWORD")
	duration := flag.Duration("duration", 0, "stop after this long (0: only at the stop file)")
	stopFile := flag.String("stop-file", "", "stop once this `FILE` exists")
	readyFile := flag.String("ready-file", "", "create this `FILE` once traffic flows and the upload is in flight")
	readers := flag.Int("readers", 1, "readers per protocol")
	writers := flag.Int("writers", 1, "writers per protocol")
	pause := flag.Duration("pause", 20*time.Millisecond, "pause between two requests of one worker")
	upload := flag.Int64("upload", 0, "size in `BYTES` of the attachment uploaded while the load runs (0: none)")
	uploadFor := flag.Duration("upload-for", time.Minute, "how long the upload takes (its rate is size/duration)")
	check := flag.Bool("check", false, "after stopping, read back every task the load wrote and its upload")
	attempts := flag.Int("start-attempts", 5, "how many times to start the load when a request fails while it starts")
	serial := flag.Bool("serial-writes", false, "send the writes one at a time (reads and the upload stay concurrent)")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if *duration == 0 && *stopFile == "" {
		return errors.New("give -duration or -stop-file")
	}
	password := os.Getenv("VKIMG_ADMIN_PASSWORD")
	if password == "" {
		return errors.New("VKIMG_ADMIN_PASSWORD is not set")
	}
	client, err := clients(*base, *cert, *address, *serial)
	if err != nil {
		return err
	}
	rate := int64(0)
	if *upload > 0 {
		rate = max(*upload/int64(max(uploadFor.Seconds(), 1)), 1)
	}

	// Signals from the start: a SIGUSR1 before Start returned is a mark too.
	marks := make(chan os.Signal, 1)
	signal.Notify(marks, syscall.SIGUSR1)
	o := loadtest.Options{
		BaseURL: *base, Client: client, Username: *user, Password: password,
		Readers: *readers, Writers: *writers, Pause: *pause, Upload: *upload, UploadRate: rate,
	}
	l, err := start(o, *attempts)
	if err != nil {
		return err
	}
	if *readyFile != "" {
		if err := os.WriteFile(*readyFile, nil, 0o644); err != nil {
			l.Stop()
			return fmt.Errorf("ready file: %w", err)
		}
	}

	var res result
	wait(*duration, *stopFile, marks, func() {
		if res.UploadInFlightAtMark == nil {
			v := l.Uploading()
			res.UploadInFlightAtMark = &v
		}
	})
	res.Report = l.Stop()
	if *check {
		res.CheckWritten = "ok"
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		if err := l.CheckWritten(cctx); err != nil {
			res.CheckWritten = err.Error()
		}
		cancel()
	}
	res.Summary = res.Report.String()
	res.DurationSeconds = res.Report.Duration.Seconds()
	res.Written = len(res.Report.Written)
	res.Report.Written = nil
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

// start starts the load, again when a request fails while it starts: real
// Vikunja on SQLite answers two concurrent writes with "database is locked"
// now and then, with or without an upgrade, and the load's own first writes
// are concurrent. Each attempt logs in and creates its own project.
func start(o loadtest.Options, attempts int) (*loadtest.Load, error) {
	for i := 1; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		l, err := loadtest.Start(ctx, o)
		cancel()
		if err == nil || i >= attempts {
			return l, err
		}
		fmt.Fprintf(os.Stderr, "load: attempt %d of %d: %v\n", i, attempts, err)
	}
}

// clients are the load's HTTP/2 and HTTP/1.1 clients, which reach nginx at
// address whatever the URL's host resolves to, and accept only the site's
// certificate; with serial, their writes go one at a time.
func clients(base, cert, address string, serial bool) (func(h2 bool) *http.Client, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return nil, fmt.Errorf("-url %q: want https://DOMAIN[:PORT]", base)
	}
	port := 443
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("-url %q: port: %w", base, err)
		}
	}
	addr, err := netip.ParseAddr(address)
	if err != nil {
		return nil, fmt.Errorf("-address: %w", err)
	}
	h2, err := deploy.EdgeClient(edge.Site{Domains: []string{u.Hostname()}, HTTPSPort: port, Address: addr, CertFile: cert})
	if err != nil {
		return nil, err
	}
	h1, err := loadtest.HTTP11(h2)
	if err != nil {
		return nil, err
	}
	if serial {
		var mu sync.Mutex
		h2.Transport = &serialWrites{mu: &mu, next: h2.Transport}
		h1.Transport = &serialWrites{mu: &mu, next: h1.Transport}
	}
	return func(http2 bool) *http.Client {
		if http2 {
			return h2
		}
		return h1
	}, nil
}

// serialWrites sends one write at a time over all the clients sharing mu.
// Real Vikunja (2.4.0, 2.5.0) fails some concurrent writes whatever the
// deployment: on SQLite with "database is locked" (a transaction that read
// first cannot take the write lock, and busy_timeout does not help), and two
// tasks created at once in one project get the same index (PostgreSQL:
// unique constraint UQE_tasks_tasks_project_index). Serial writes keep
// those out of an upgrade's figures; the upload is left concurrent, as it
// must cross the switch.
type serialWrites struct {
	mu   *sync.Mutex
	next http.RoundTripper
}

func (s *serialWrites) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet || strings.HasSuffix(r.URL.Path, "/attachments") {
		return s.next.RoundTrip(r)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// The write is done once its answer's headers are here.
	return s.next.RoundTrip(r)
}

// wait returns after d (when not 0) or once stopFile exists, calling mark
// for every signal on marks meanwhile.
func wait(d time.Duration, stopFile string, marks <-chan os.Signal, mark func()) {
	var deadline <-chan time.Time
	if d > 0 {
		deadline = time.After(d)
	}
	// The stop file is polled: a script creates it with a plain touch.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-deadline:
			return
		case <-marks:
			mark()
		case <-tick.C:
			if stopFile == "" {
				continue
			}
			if _, err := os.Stat(stopFile); err == nil {
				return
			}
		}
	}
}
