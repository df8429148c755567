// Package lxc implements hypervisor.Hypervisor with plain LXC tools
// (lxc-start, lxc-stop, lxc-info, lxc-attach, lxc-usernsexec) on any Linux
// host. Containers are made the way Proxmox's pct makes them: unprivileged
// (uids shifted by 100000), the template extracted inside the user
// namespace, hostname, hosts and network configuration written into the
// rootfs, and data volumes bind-mounted from the host.
package lxc

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vkimg/vkimg/internal/atomicfile"
	"github.com/vkimg/vkimg/internal/hypervisor"
)

// Options configure a Backend.
type Options struct {
	// Root is the lxc.lxcpath holding one directory per container
	// (config, sidecar, log) and the storages under Root/storage/<name>
	// ($VKIMG_ROOT/lxc on a host).
	Root string
	// Node is the node name reported in Cluster (default: the host name).
	Node string
	// Storages are the names of directory storages (default "local"). Each
	// holds templates in template/cache/ and root disks in images/<id>/.
	Storages []string
}

// Backend drives LXC containers under one lxcpath.
type Backend struct {
	root     string
	node     string
	storages []string
	cgroup2  bool // pure cgroup v2 host (Proxmox VE 7+): lxc.cgroup2.* keys
	memsw    bool // cgroup v1 swap accounting is available
}

var _ hypervisor.Hypervisor = (*Backend)(nil)

// New makes the lxcpath and storage directories and detects the host's
// cgroup layout.
func New(o Options) (*Backend, error) {
	if o.Root == "" {
		return nil, errors.New("lxc backend: Root is required")
	}
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return nil, fmt.Errorf("lxc backend: %w", err)
	}
	b := &Backend{root: root, node: o.Node, storages: o.Storages}
	if b.node == "" {
		if b.node, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("lxc backend: %w", err)
		}
	}
	if len(b.storages) == 0 {
		b.storages = []string{"local"}
	}
	for _, s := range b.storages {
		if !nameRe.MatchString(s) {
			return nil, fmt.Errorf("lxc backend: storage name %q is not valid", s)
		}
		for _, d := range []string{b.templateDir(s), filepath.Join(b.storageDir(s), "images")} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, fmt.Errorf("lxc backend: %w", err)
			}
		}
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs("/sys/fs/cgroup", &st); err == nil && st.Type == cgroup2Magic {
		b.cgroup2 = true
	}
	_, err = os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
	b.memsw = err == nil
	return b, nil
}

const cgroup2Magic = 0x63677270

// Root is the backend's lxcpath.
func (b *Backend) Root() string { return b.root }

var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func (b *Backend) storageDir(s string) string { return filepath.Join(b.root, "storage", s) }
func (b *Backend) templateDir(s string) string {
	return filepath.Join(b.storageDir(s), "template", "cache")
}
func (b *Backend) ctDir(id int) string    { return filepath.Join(b.root, strconv.Itoa(id)) }
func (b *Backend) metaPath(id int) string { return filepath.Join(b.ctDir(id), "vkimg.json") }
func (b *Backend) imageDir(storage string, id int) string {
	return filepath.Join(b.storageDir(storage), "images", strconv.Itoa(id))
}

// meta is the sidecar that keeps what LXC's config has no place for
// (onboot, tags, description) and the spec the container was made from, so
// Cluster can report it without parsing LXC config.
type meta struct {
	Spec   hypervisor.ContainerSpec
	HWAddr string
	Rootfs string
}

func (b *Backend) readMeta(id int) (meta, error) {
	var m meta
	raw, err := os.ReadFile(b.metaPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return m, fmt.Errorf("container %d: %w", id, hypervisor.ErrNotFound)
	}
	if err != nil {
		return m, fmt.Errorf("container %d: %w", id, err)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return m, fmt.Errorf("container %d: %s: %w", id, b.metaPath(id), err)
	}
	return m, nil
}

// lxc runs an lxc-* tool on this lxcpath and returns its output.
func (b *Backend) lxc(ctx context.Context, tool string, id int, args ...string) ([]byte, error) {
	argv := append([]string{"-P", b.root, "-n", strconv.Itoa(id)}, args...)
	cmd := exec.CommandContext(ctx, tool, argv...)
	var stderr tailBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", tool, err, stderr.String())
	}
	return out, nil
}

// info is what lxc-info reports about a container.
type info struct {
	state  hypervisor.State
	pid    int
	memory int64 // bytes in use
	ips    []netip.Addr
}

func (b *Backend) info(ctx context.Context, id int) (info, error) {
	if _, err := os.Stat(filepath.Join(b.ctDir(id), "config")); err != nil {
		// Still being created: it exists (the sidecar claims its ID and
		// address) but LXC does not know it yet.
		return info{state: hypervisor.StateStopped}, nil
	}
	out, err := b.lxc(ctx, "lxc-info", id, "-H")
	if err != nil {
		return info{}, fmt.Errorf("container %d: %w", id, err)
	}
	in := info{state: hypervisor.StateStopped}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "State":
			// Only STOPPED is stopped: a container STARTING (its
			// lxc-start still at work after the caller was killed, say)
			// must be stopped before it can be destroyed, like a
			// RUNNING one.
			if v != "STOPPED" {
				in.state = hypervisor.StateRunning
			}
		case "PID":
			in.pid, _ = strconv.Atoi(v)
		case "Memory use":
			in.memory, _ = strconv.ParseInt(v, 10, 64)
		case "IP":
			if a, err := netip.ParseAddr(v); err == nil && usable(a) {
				in.ips = append(in.ips, a)
			}
		}
	}
	return in, nil
}

// usable filters out addresses nobody can reach the container on.
func usable(a netip.Addr) bool {
	return !a.IsLoopback() && !a.IsLinkLocalUnicast() && !a.IsUnspecified()
}

// NextID returns the lowest free ID from 100 up. Every directory under the
// lxcpath counts, including those of containers still being created.
func (b *Backend) NextID(ctx context.Context) (int, error) {
	used, err := b.ids()
	if err != nil {
		return 0, err
	}
	taken := map[int]bool{}
	for _, id := range used {
		taken[id] = true
	}
	for id := hypervisor.MinID; id <= hypervisor.MaxID; id++ {
		if !taken[id] {
			return id, nil
		}
	}
	return 0, errors.New("next id: every container ID is used")
}

func (b *Backend) ids() ([]int, error) {
	ents, err := os.ReadDir(b.root)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var out []int
	for _, e := range ents {
		if id, err := strconv.Atoi(e.Name()); err == nil && e.IsDir() && strconv.Itoa(id) == e.Name() {
			out = append(out, id)
		}
	}
	return out, nil
}

// Start starts a stopped container in the background.
func (b *Backend) Start(ctx context.Context, id int) error {
	if _, err := b.readMeta(id); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	if _, err := b.lxc(ctx, "lxc-start", id); err != nil {
		log, _ := os.ReadFile(filepath.Join(b.ctDir(id), "lxc.log"))
		var t tailBuffer
		t.Write(log)
		return fmt.Errorf("start container %d: %w\n%s", id, err, t.String())
	}
	return nil
}

// Shutdown asks systemd to power off (lxc.signal.halt) and lets lxc-stop
// kill the container when it has not stopped after timeout.
func (b *Backend) Shutdown(ctx context.Context, id int, timeout time.Duration) error {
	secs := int((timeout + time.Second - 1) / time.Second)
	return b.stop(ctx, id, "-t", strconv.Itoa(max(secs, 1)))
}

// Stop kills the container at once.
func (b *Backend) Stop(ctx context.Context, id int) error {
	return b.stop(ctx, id, "-k")
}

func (b *Backend) stop(ctx context.Context, id int, args ...string) error {
	in, err := b.status(ctx, id)
	if err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	if in.state != hypervisor.StateRunning {
		return nil
	}
	if _, err := b.lxc(ctx, "lxc-stop", id, args...); err != nil {
		return fmt.Errorf("stop container %d: %w", id, err)
	}
	return nil
}

func (b *Backend) status(ctx context.Context, id int) (info, error) {
	if _, err := b.readMeta(id); err != nil {
		return info{}, err
	}
	return b.info(ctx, id)
}

// Status reports the container's state and resource use.
func (b *Backend) Status(ctx context.Context, id int) (hypervisor.ContainerStatus, error) {
	m, err := b.readMeta(id)
	if err != nil {
		return hypervisor.ContainerStatus{}, fmt.Errorf("status: %w", err)
	}
	in, err := b.info(ctx, id)
	if err != nil {
		return hypervisor.ContainerStatus{}, fmt.Errorf("status: %w", err)
	}
	st := hypervisor.ContainerStatus{
		ID: id, Name: m.Spec.Hostname, Node: b.node, State: in.state,
		MemoryMB: int(in.memory >> 20), MaxMemMB: m.Spec.MemoryMB, Cores: m.Spec.Cores, Tags: m.Spec.Tags,
		OnBoot: m.Spec.OnBoot,
	}
	if in.state == hypervisor.StateRunning && in.pid > 0 {
		st.Uptime = processAge(in.pid)
	}
	return st, nil
}

// SetOnBoot sets lxc.start.auto, which lxc-autostart reads when the host
// boots, and the sidecar's onboot, which Status reports. The config is
// written first: should the process die between the two writes, Status
// still shows the old value and calling again puts both right. The lxcpath
// lock keeps two callers from crossing their writes.
func (b *Backend) SetOnBoot(ctx context.Context, id int, on bool) error {
	unlock, err := b.lock()
	if err != nil {
		return fmt.Errorf("set onboot of container %d: %w", id, err)
	}
	defer unlock()
	m, err := b.readMeta(id)
	if err != nil {
		return fmt.Errorf("set onboot: %w", err)
	}
	conf := filepath.Join(b.ctDir(id), "config")
	raw, err := os.ReadFile(conf)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("set onboot of container %d: it is still being created", id)
	}
	if err != nil {
		return fmt.Errorf("set onboot of container %d: %w", id, err)
	}
	if err := atomicfile.Write(conf, setConfigKey(raw, "lxc.start.auto", boolInt(on)), 0o640); err != nil {
		return fmt.Errorf("set onboot of container %d: %w", id, err)
	}
	m.Spec.OnBoot = on
	if err := writeJSON(b.metaPath(id), m); err != nil {
		return fmt.Errorf("set onboot of container %d: %w", id, err)
	}
	return nil
}

// setConfigKey gives key the value in an LXC config, adding it if absent;
// every other line stays as it was. LXC takes the last of repeated
// single-value keys, so later repeats are dropped rather than left to
// override the new value.
func setConfigKey(raw []byte, key, value string) []byte {
	var out strings.Builder
	set := false
	for _, line := range strings.SplitAfter(string(raw), "\n") {
		if k, _, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == key {
			if !set {
				fmt.Fprintf(&out, "%s = %s\n", key, value)
				set = true
			}
			continue
		}
		out.WriteString(line)
	}
	if !set {
		if out.Len() > 0 && !strings.HasSuffix(out.String(), "\n") {
			out.WriteByte('\n')
		}
		fmt.Fprintf(&out, "%s = %s\n", key, value)
	}
	return []byte(out.String())
}

// processAge is how long pid has run, from /proc (0 if unknown).
func processAge(pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which may contain spaces.
	i := strings.LastIndexByte(string(stat), ')')
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 20 {
		return 0
	}
	start, err := strconv.ParseFloat(fields[19], 64)
	if err != nil {
		return 0
	}
	up, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(up))
	boot, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0
	}
	const userHZ = 100 // the kernel's fixed USER_HZ for /proc
	return time.Duration((boot - start/userHZ) * float64(time.Second)).Round(time.Second)
}

// Addresses returns the running container's addresses as it reports them,
// or, while it is stopped, its configured static address.
func (b *Backend) Addresses(ctx context.Context, id int) ([]netip.Addr, error) {
	m, err := b.readMeta(id)
	if err != nil {
		return nil, fmt.Errorf("addresses: %w", err)
	}
	in, err := b.info(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("addresses: %w", err)
	}
	if in.state == hypervisor.StateRunning {
		return in.ips, nil
	}
	if m.Spec.Net.DHCP() {
		return nil, nil
	}
	return []netip.Addr{m.Spec.Net.Address.Addr()}, nil
}

// Exec runs argv in the running container with a clean environment, as
// pct exec does.
func (b *Backend) Exec(ctx context.Context, id int, argv []string, stdin io.Reader) (hypervisor.ExecResult, error) {
	if len(argv) == 0 {
		return hypervisor.ExecResult{}, errors.New("exec: empty command")
	}
	in, err := b.status(ctx, id)
	if err != nil {
		return hypervisor.ExecResult{}, fmt.Errorf("exec: %w", err)
	}
	if in.state != hypervisor.StateRunning {
		return hypervisor.ExecResult{}, fmt.Errorf("exec in container %d: it is %s", id, in.state)
	}
	args := append([]string{"-P", b.root, "-n", strconv.Itoa(id), "--clear-env",
		"--set-var", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "--"}, argv...)
	cmd := exec.CommandContext(ctx, "lxc-attach", args...)
	var stdout, stderr strings.Builder
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	err = cmd.Run()
	res := hypervisor.ExecResult{Stdout: []byte(stdout.String()), Stderr: []byte(stderr.String())}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee) && ctx.Err() == nil:
		res.ExitCode = ee.ExitCode()
	case err != nil:
		return res, fmt.Errorf("exec in container %d: %w", id, err)
	}
	return res, nil
}

// Destroy removes a stopped container: its rootfs, config and sidecar.
// It refuses while anything is mounted below them, so a bind-mounted data
// volume can never be deleted with the rootfs.
func (b *Backend) Destroy(ctx context.Context, id int) error {
	m, err := b.readMeta(id)
	if err != nil {
		return fmt.Errorf("destroy: %w", err)
	}
	in, err := b.info(ctx, id)
	if err != nil {
		return fmt.Errorf("destroy: %w", err)
	}
	if in.state != hypervisor.StateStopped {
		return fmt.Errorf("destroy container %d: it is %s: stop it first", id, in.state)
	}
	if err := b.remove(id, m.Spec.Storage); err != nil {
		return fmt.Errorf("destroy container %d: %w", id, err)
	}
	return nil
}

// remove deletes a container's directories; also the cleanup of a failed
// create.
func (b *Backend) remove(id int, storage string) error {
	var dirs []string
	if storage != "" {
		dirs = append(dirs, b.imageDir(storage, id))
	}
	dirs = append(dirs, b.ctDir(id)) // last: it holds the sidecar that claims the ID
	for _, d := range dirs {
		if err := removeTree(d); err != nil {
			return err
		}
	}
	return nil
}

// removeTree deletes dir unless a filesystem is mounted at or below it.
func removeTree(dir string) error {
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("check mounts: %w", err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			return fmt.Errorf("refusing to remove %s: %s is mounted", dir, mp)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// unescapeMount decodes the octal escapes (\040 for space) of mountinfo.
func unescapeMount(s string) string {
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				out.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		out.WriteByte(s[i])
	}
	return out.String()
}

// hwaddr derives a MAC in the 00:16:3e range that LXC and Proxmox use from
// the node and ID, so a re-created container keeps its MAC (and its DHCP
// lease). salt resolves the rare clash with another container.
func hwaddr(node string, id, salt int) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s/%d/%d", node, id, salt)))
	return fmt.Sprintf("00:16:3e:%02x:%02x:%02x", h[0]&0x7f, h[1], h[2])
}
