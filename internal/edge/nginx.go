package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vkimg/vkimg/internal/atomicfile"
	"github.com/vkimg/vkimg/internal/state"
)

// Nginx is the edge as Debian's nginx on the node. On a Proxmox node the
// defaults fit Debian's /etc/nginx layout: sites go to conf.d (included as
// conf.d/*.conf in the http context), upstream files to a directory of their
// own that nginx does not glob (each site includes its upstream file, which
// would otherwise be included twice), and the one main-context setting vkimg
// needs to modules-enabled, the only main-context include Debian's
// nginx.conf has. Proxmox's own pveproxy listens on 8006, leaving 80/443 free.
//
// The zero value uses those defaults; tests point every path at their own
// nginx.
type Nginx struct {
	Binary      string // default "nginx" from PATH
	ConfigFile  string // nginx's main config, passed as -c; default /etc/nginx/nginx.conf
	PIDFile     string // the master's pid file; default /run/nginx.pid
	ConfDir     string // site files vkimg-<instance>.conf; default /etc/nginx/conf.d
	UpstreamDir string // upstream files vkimg-<instance>.upstream.conf; default /etc/nginx/vkimg
	MainDir     string // main-context snippet vkimg.conf; default /etc/nginx/modules-enabled
	// ShutdownTimeout is nginx's worker_shutdown_timeout: how long old
	// workers may finish in-flight requests after a flip. Default 6m, above
	// the 5 minutes a large upload may take.
	ShutdownTimeout time.Duration
	// ProofTimeout bounds how long Apply and Flip wait for nginx to take
	// the new configuration, and then for the new slot to answer through
	// it. Default 15s.
	ProofTimeout time.Duration
}

var _ Proxy = (*Nginx)(nil)

const (
	defaultShutdownTimeout = 6 * time.Minute
	defaultProofTimeout    = 15 * time.Second
	// SlotHeader names the slot that answered a request through the edge.
	SlotHeader = "X-Vkimg-Slot"
	// ProofPath is what the edge's proof asks for: the backend's health,
	// which both Vikunja and the stand-in answer with 200.
	ProofPath = "/health"
)

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func (n *Nginx) binary() string      { return or(n.Binary, "nginx") }
func (n *Nginx) configFile() string  { return or(n.ConfigFile, "/etc/nginx/nginx.conf") }
func (n *Nginx) pidFile() string     { return or(n.PIDFile, "/run/nginx.pid") }
func (n *Nginx) confDir() string     { return or(n.ConfDir, "/etc/nginx/conf.d") }
func (n *Nginx) upstreamDir() string { return or(n.UpstreamDir, "/etc/nginx/vkimg") }
func (n *Nginx) mainDir() string     { return or(n.MainDir, "/etc/nginx/modules-enabled") }

func (n *Nginx) siteFile(instance string) string {
	return filepath.Join(n.confDir(), "vkimg-"+instance+".conf")
}

func (n *Nginx) upstreamFile(instance string) string {
	return filepath.Join(n.upstreamDir(), "vkimg-"+instance+".upstream.conf")
}

func (n *Nginx) mainFile() string { return filepath.Join(n.mainDir(), "vkimg.conf") }

// Apply implements Proxy.
func (n *Nginx) Apply(ctx context.Context, s Site) error {
	s, err := s.normalize()
	if err != nil {
		return err
	}
	up, err := renderUpstream(s.Instance, s.Upstream)
	if err != nil {
		return err
	}
	site, err := renderSite(s, n.upstreamFile(s.Instance))
	if err != nil {
		return err
	}
	mainConf, err := renderMain(or(n.ShutdownTimeout, defaultShutdownTimeout))
	if err != nil {
		return err
	}
	err = n.commit(ctx, func() ([]change, error) {
		// Two sites with one name would split its traffic between
		// instances (nginx only warns): refuse.
		others, err := n.Sites(ctx)
		if err != nil {
			return nil, err
		}
		for _, o := range others {
			for _, d := range o.Domains {
				if o.Instance != s.Instance && slices.Contains(s.Domains, d) {
					return nil, fmt.Errorf("%w: domain %s is already served by instance %s", ErrInvalid, d, o.Instance)
				}
			}
		}
		return []change{
			{n.mainFile(), mainConf},
			{n.upstreamFile(s.Instance), up},
			{n.siteFile(s.Instance), site},
		}, nil
	})
	if err != nil {
		return fmt.Errorf("apply edge site for %s: %w", s.Instance, err)
	}
	if err := n.prove(ctx, s, s.Upstream.Slot); err != nil {
		return fmt.Errorf("apply edge site for %s: %w", s.Instance, err)
	}
	return nil
}

// Flip implements Proxy.
func (n *Nginx) Flip(ctx context.Context, instance string, to Upstream) error {
	to = to.withDefaults()
	if err := to.check(); err != nil {
		return fmt.Errorf("flip %s: %w", instance, err)
	}
	up, err := renderUpstream(instance, to)
	if err != nil {
		return err
	}
	var site Site
	err = n.commit(ctx, func() ([]change, error) {
		s, err := n.readSite(instance) // the site must exist, and says where to prove
		site = s
		return []change{{n.upstreamFile(instance), up}}, err
	})
	if err != nil {
		return fmt.Errorf("flip %s to slot %s: %w", instance, to.Slot, err)
	}
	if err := n.prove(ctx, site, to.Slot); err != nil {
		return fmt.Errorf("flip %s to slot %s: %w", instance, to.Slot, err)
	}
	return nil
}

// Remove implements Proxy. Removing a site that does not exist succeeds, so
// an interrupted deploy's cleanup can be run again.
func (n *Nginx) Remove(ctx context.Context, instance string) error {
	if err := validInstance(instance); err != nil {
		return err
	}
	err := n.commit(ctx, func() ([]change, error) {
		changes := []change{{n.siteFile(instance), nil}, {n.upstreamFile(instance), nil}}
		sites, err := n.Sites(ctx)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(sites, func(s Site) bool { return s.Instance != instance }) {
			// The last site goes: so does vkimg's main-context setting.
			changes = append(changes, change{n.mainFile(), nil})
		}
		return changes, nil
	})
	// With nginx stopped nothing serves the site: the files are gone, done.
	if err != nil && !errors.Is(err, ErrNotRunning) {
		return fmt.Errorf("remove edge site for %s: %w", instance, err)
	}
	return nil
}

// Sites implements Proxy.
func (n *Nginx) Sites(ctx context.Context) ([]Site, error) {
	files, err := filepath.Glob(filepath.Join(n.confDir(), "vkimg-*.conf"))
	if err != nil {
		return nil, err
	}
	var sites []Site
	for _, f := range files {
		if strings.HasSuffix(f, ".upstream.conf") { // ConfDir and UpstreamDir may be one directory
			continue
		}
		instance := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "vkimg-"), ".conf")
		s, err := n.readSite(instance)
		if err != nil {
			return nil, err
		}
		sites = append(sites, s)
	}
	return sites, nil
}

// readSite reads an instance's site back from the headers of its files.
func (n *Nginx) readSite(instance string) (Site, error) {
	if err := validInstance(instance); err != nil {
		return Site{}, err
	}
	var s Site
	b, err := os.ReadFile(n.siteFile(instance))
	if errors.Is(err, fs.ErrNotExist) {
		return s, fmt.Errorf("%w: %s", ErrNotFound, instance)
	}
	if err != nil {
		return s, err
	}
	if err := parseHeader(b, siteHeader, &s); err != nil {
		return s, fmt.Errorf("read %s: %w", n.siteFile(instance), err)
	}
	b, err = os.ReadFile(n.upstreamFile(instance))
	if err != nil {
		return s, fmt.Errorf("read upstream of %s: %w", instance, err)
	}
	if err := parseHeader(b, upstreamHeader, &s.Upstream); err != nil {
		return s, fmt.Errorf("read %s: %w", n.upstreamFile(instance), err)
	}
	return s, nil
}

func validInstance(instance string) error {
	if err := state.CheckInstanceName(instance); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// change is one file the edge writes (data) or removes (nil).
type change struct {
	path string
	data []byte
}

// commit makes the changes that plan returns, under the edge's lock (so
// plan's reads agree with the writes), has `nginx -t` check the whole
// configuration, and reloads nginx. If nginx refuses the configuration
// every file is put back as it was and nginx's own message is returned.
func (n *Nginx) commit(ctx context.Context, plan func() ([]change, error)) error {
	if err := os.MkdirAll(n.upstreamDir(), 0o755); err != nil {
		return err
	}
	unlock, err := lockFile(filepath.Join(n.upstreamDir(), ".lock"))
	if err != nil {
		return err
	}
	defer unlock()
	changes, err := plan()
	if err != nil {
		return err
	}
	previous := make([][]byte, len(changes))
	for i, c := range changes {
		b, err := os.ReadFile(c.path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		previous[i] = b // nil when absent
	}
	restore := func() error {
		var errs []error
		for i, c := range changes {
			errs = append(errs, put(c.path, previous[i]))
		}
		return errors.Join(errs...)
	}
	for _, c := range changes {
		if err := put(c.path, c.data); err != nil {
			return errors.Join(err, restore())
		}
	}
	if err := n.test(ctx); err != nil {
		return errors.Join(fmt.Errorf("previous configuration restored: %w", err), restore())
	}
	err = n.reload(ctx)
	if errors.Is(err, errReloadFailed) {
		// nginx runs on the old files (e.g. a port `nginx -t` could not
		// know was taken): put them back, or the next change would fail too.
		return errors.Join(fmt.Errorf("previous configuration restored: %w", err), restore())
	}
	return err
}

// errReloadFailed: nginx accepted the configuration in `nginx -t` but not
// when reloading, and kept running the old one.
var errReloadFailed = errors.New("nginx refused to reload")

// put writes data atomically or removes the file when data is nil.
// atomicfile's temporary names do not end in .conf, so a concurrent
// `nginx -t` never includes them.
func put(path string, data []byte) error {
	if data == nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	return atomicfile.Write(path, data, 0o644)
}

func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("edge lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("edge lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// test runs `nginx -t` on the whole configuration, as a reload would load it.
func (n *Nginx) test(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, n.binary(), "-t", "-q", "-c", n.configFile()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("nginx -t: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// reload sends SIGHUP to nginx's master, which starts workers on the new
// configuration and lets the old ones finish their requests. It returns
// once no old worker accepts connections any more (the master retires them
// only ~100 ms after starting the new ones), so every connection opened
// afterwards gets the new configuration.
func (n *Nginx) reload(ctx context.Context) error {
	master, err := n.master()
	if err != nil {
		return err
	}
	workers, err := children(master.pid, "nginx: worker process")
	if err != nil {
		return err
	}
	if err := syscall.Kill(master.pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("reload nginx (pid %d): %w", master.pid, err)
	}
	ctx, cancel := context.WithTimeout(ctx, or(n.ProofTimeout, defaultProofTimeout))
	defer cancel()
	for {
		accepting := 0
		for _, w := range alive(workers) {
			// A retiring worker closes its listening sockets and retitles
			// itself in the same step.
			if !strings.Contains(w.cmdline, "shutting down") {
				accepting++
			}
		}
		if accepting == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: nginx (pid %d) kept %d workers on the old configuration, see nginx's error log: %w",
				errReloadFailed, master.pid, accepting, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Running reports, as an error wrapping ErrNotRunning, that nginx is not
// running: the check deploy makes before changing anything.
func (n *Nginx) Running() error {
	_, err := n.master()
	return err
}

// master finds nginx's running master process from its pid file.
func (n *Nginx) master() (process, error) {
	b, err := os.ReadFile(n.pidFile())
	if err != nil {
		return process{}, fmt.Errorf("%w (start it, e.g. systemctl start nginx): %w", ErrNotRunning, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		// nginx leaves an empty pid file behind when it stops or fails to start.
		return process{}, fmt.Errorf("%w (start it, e.g. systemctl start nginx): pid file %s holds no pid", ErrNotRunning, n.pidFile())
	}
	p, err := readProcess(pid)
	if err != nil || !strings.HasPrefix(p.cmdline, "nginx: master process") {
		return process{}, fmt.Errorf("%w: pid %d from %s is not an nginx master", ErrNotRunning, pid, n.pidFile())
	}
	return p, nil
}

// Drain implements Proxy: it waits until no worker nginx shows as shutting
// down is left, which worker_shutdown_timeout bounds. Apply and Flip
// return only once every old worker shows so, so this needs no memory of
// them: it works as well from the next vkimg process after a crash.
func (n *Nginx) Drain(ctx context.Context) error {
	master, err := n.master()
	if err != nil {
		return err
	}
	for {
		closing, err := children(master.pid, "nginx: worker process is shutting down")
		if err != nil {
			return err
		}
		if len(closing) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain edge: %d old nginx workers still serving: %w", len(closing), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// prove asks the edge, over HTTPS on the node itself, for the site's health
// until the answer comes from slot, within ProofTimeout. The connection
// carries the site's domain as SNI and Host, and only the site's own
// certificate is accepted: the answer is the site's, not another server's.
func (n *Nginx) prove(ctx context.Context, s Site, slot string) error {
	pinned, err := leafCert(s.CertFile)
	if err != nil {
		return err
	}
	host := s.Address
	if !host.IsValid() || host.IsUnspecified() {
		host = netip.MustParseAddr("127.0.0.1")
	}
	target := netip.AddrPortFrom(host, uint16(s.HTTPSPort)).String()
	domain := s.Domains[0]
	client := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, target)
			},
			TLSClientConfig: &tls.Config{
				ServerName: domain,
				// The chain is the administrator's business (deploy checks
				// it); here the leaf must be exactly the site's certificate.
				InsecureSkipVerify: true,
				VerifyConnection: func(cs tls.ConnectionState) error {
					if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, pinned) {
						return fmt.Errorf("the edge presented another certificate than %s", s.CertFile)
					}
					return nil
				},
			},
			DisableKeepAlives: true,
		},
	}
	url := fmt.Sprintf("https://%s:%d%s", domain, s.HTTPSPort, ProofPath)
	ctx, cancel := context.WithTimeout(ctx, or(n.ProofTimeout, defaultProofTimeout))
	defer cancel()
	last := errors.New("no answer yet")
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			got := resp.Header.Get(SlotHeader)
			if got == slot && resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("GET %s answered %s from slot %q", url, resp.Status, got)
		} else if ctx.Err() == nil {
			// A request cut by the deadline says less than the one before.
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the edge does not answer from slot %s: %w", slot, last)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func leafCert(certFile string) ([]byte, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("certificate %s: no PEM certificate", certFile)
		}
		if block.Type == "CERTIFICATE" {
			return block.Bytes, nil
		}
	}
}

// process identifies a process beyond its pid, which the kernel reuses.
type process struct {
	pid       int
	ppid      int
	startTime string
	cmdline   string
}

func readProcess(pid int) (process, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return process{}, err
	}
	// The command name in parentheses may hold spaces: fields start after
	// the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return process{}, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 20 {
		return process{}, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	ppid, _ := strconv.Atoi(fields[1])
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return process{}, err
	}
	return process{pid: pid, ppid: ppid, startTime: fields[19],
		cmdline: strings.TrimRight(strings.ReplaceAll(string(cmd), "\x00", " "), " ")}, nil
}

// alive returns the processes that still run (same pid, same start time),
// as they are now.
func alive(ps []process) []process {
	var out []process
	for _, p := range ps {
		if now, err := readProcess(p.pid); err == nil && now.startTime == p.startTime {
			out = append(out, now)
		}
	}
	return out
}

// children lists the processes whose parent is ppid and whose command line
// (nginx sets it to its role) starts with prefix.
func children(ppid int, prefix string) ([]process, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p, err := readProcess(pid)
		if err != nil {
			continue // exited meanwhile
		}
		if p.ppid == ppid && strings.HasPrefix(p.cmdline, prefix) {
			out = append(out, p)
		}
	}
	return out, nil
}
