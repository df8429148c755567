package lxc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/vkimg/vkimg/internal/atomicfile"
	"github.com/vkimg/vkimg/internal/hypervisor"
)

// Create validates spec against the whole cluster, then makes the container
// as pct create does. The ID, hostname and address are claimed under a lock
// so concurrent creates (other processes too) never pick the same ones. On
// any failure everything made so far is removed.
func (b *Backend) Create(ctx context.Context, spec hypervisor.ContainerSpec) (err error) {
	if spec.Node == "" {
		spec.Node = b.node
	}
	if err := ensureSubIDs(); err != nil {
		return fmt.Errorf("create container %d: %w", spec.ID, err)
	}
	tmpl, err := b.claim(ctx, &spec)
	if err != nil {
		return fmt.Errorf("create container %d: %w", spec.ID, err)
	}
	defer func() {
		if err != nil {
			if rerr := b.remove(spec.ID, spec.Storage); rerr != nil {
				err = fmt.Errorf("%w (cleanup: %v)", err, rerr)
			}
		}
	}()
	if err := b.build(ctx, spec, tmpl); err != nil {
		return fmt.Errorf("create container %d: %w", spec.ID, err)
	}
	return nil
}

// claim validates spec and, holding the lxcpath lock, makes the container's
// directory and sidecar, which reserve its ID, name and addresses for
// everyone else's validation. It returns the template path.
func (b *Backend) claim(ctx context.Context, spec *hypervisor.ContainerSpec) (string, error) {
	unlock, err := b.lock()
	if err != nil {
		return "", err
	}
	defer unlock()
	c, err := b.Cluster(ctx)
	if err != nil {
		return "", err
	}
	if err := hypervisor.ValidateSpec(*spec, c); err != nil {
		return "", err
	}
	tmpl, err := b.templatePath(spec.Template.Storage, spec.Template.Name)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(tmpl); err != nil {
		return "", &hypervisor.SpecError{Field: "template", Reason: fmt.Sprintf("%s:vztmpl/%s is not stored", spec.Template.Storage, spec.Template.Name)}
	}
	for i, m := range spec.Mounts {
		field := fmt.Sprintf("mounts[%d]", i)
		if within(m.HostPath, b.root) || within(b.root, m.HostPath) {
			return "", &hypervisor.SpecError{Field: field, Reason: fmt.Sprintf("host path %s overlaps the LXC root %s", m.HostPath, b.root)}
		}
		if st, err := os.Stat(m.HostPath); err != nil || !st.IsDir() {
			return "", &hypervisor.SpecError{Field: field, Reason: fmt.Sprintf("host path %s is not a directory", m.HostPath)}
		}
	}
	mac := spec.Net.HWAddr
	for salt := 0; mac == ""; salt++ {
		mac = hwaddr(b.node, spec.ID, salt)
		if macUsed(c, mac) {
			mac = ""
		}
	}
	if err := os.Mkdir(b.ctDir(spec.ID), 0o750); err != nil {
		// Only a container made outside vkimg's view can be here.
		return "", fmt.Errorf("claim ID: %w", err)
	}
	m := meta{Spec: *spec, HWAddr: mac, Rootfs: filepath.Join(b.imageDir(spec.Storage, spec.ID), "rootfs")}
	if err := writeJSON(b.metaPath(spec.ID), m); err != nil {
		os.Remove(b.ctDir(spec.ID))
		return "", err
	}
	return tmpl, nil
}

func macUsed(c hypervisor.Cluster, mac string) bool {
	for _, ct := range c.Containers {
		if slices.ContainsFunc(ct.HWAddrs, func(h string) bool { return strings.EqualFold(h, mac) }) {
			return true
		}
	}
	return false
}

// lock takes the lxcpath-wide lock that serialises claims and sidecar
// updates.
func (b *Backend) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(b.root, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// build extracts the rootfs and writes the container's files and config.
func (b *Backend) build(ctx context.Context, spec hypervisor.ContainerSpec, tmpl string) error {
	m, err := b.readMeta(spec.ID)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(m.Rootfs), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(m.Rootfs, 0o755); err != nil {
		return err
	}
	if err := os.Chown(m.Rootfs, hypervisor.IDMapBase, hypervisor.IDMapBase); err != nil {
		return err
	}
	f, err := os.Open(tmpl)
	if err != nil {
		return err
	}
	defer f.Close()
	layers, err := templateLayers(f)
	if err != nil {
		return err
	}
	if err := extract(ctx, layers, m.Rootfs); err != nil {
		return err
	}
	if err := writeGuestFiles(m.Rootfs, spec); err != nil {
		return fmt.Errorf("configure rootfs: %w", err)
	}
	return atomicfile.Write(filepath.Join(b.ctDir(spec.ID), "config"), []byte(b.config(spec, m)), 0o640)
}

// config renders the LXC config: Proxmox's choices for an unprivileged
// Debian container, in plain LXC keys.
func (b *Backend) config(spec hypervisor.ContainerSpec, m meta) string {
	var c strings.Builder
	set := func(k, v string) { fmt.Fprintf(&c, "%s = %s\n", k, v) }
	fmt.Fprintf(&c, "# vkimg container %d (%s); vkimg.json holds onboot, tags and description\n", spec.ID, spec.Hostname)
	set("lxc.include", "/usr/share/lxc/config/debian.common.conf")
	set("lxc.include", "/usr/share/lxc/config/debian.userns.conf")
	set("lxc.arch", "amd64")
	set("lxc.uts.name", spec.Hostname)
	set("lxc.rootfs.path", "dir:"+m.Rootfs)
	base, n := strconv.Itoa(hypervisor.IDMapBase), strconv.Itoa(hypervisor.IDMapRange)
	set("lxc.idmap", "u 0 "+base+" "+n)
	set("lxc.idmap", "g 0 "+base+" "+n)
	// systemd powers off on SIGRTMIN+3; LXC's default SIGPWR only makes it
	// start sigpwr.target.
	set("lxc.signal.halt", "SIGRTMIN+3")
	set("lxc.start.auto", boolInt(spec.OnBoot))
	set("lxc.net.0.type", "veth")
	set("lxc.net.0.link", spec.Net.Bridge)
	set("lxc.net.0.flags", "up")
	set("lxc.net.0.name", "eth0")
	set("lxc.net.0.hwaddr", m.HWAddr)
	mem := int64(spec.MemoryMB) << 20
	swap := int64(spec.SwapMB) << 20
	quota := strconv.Itoa(spec.Cores * 100000)
	if b.cgroup2 {
		set("lxc.cgroup2.memory.max", strconv.FormatInt(mem, 10))
		set("lxc.cgroup2.memory.swap.max", strconv.FormatInt(swap, 10))
		set("lxc.cgroup2.cpu.max", quota+" 100000")
	} else {
		set("lxc.cgroup.memory.limit_in_bytes", strconv.FormatInt(mem, 10))
		if b.memsw {
			set("lxc.cgroup.memory.memsw.limit_in_bytes", strconv.FormatInt(mem+swap, 10))
		}
		set("lxc.cgroup.cpu.cfs_period_us", "100000")
		set("lxc.cgroup.cpu.cfs_quota_us", quota)
	}
	for _, mt := range spec.Mounts {
		opts := "bind,create=dir"
		if mt.ReadOnly {
			opts += ",ro"
		}
		set("lxc.mount.entry", fmt.Sprintf("%s %s none %s 0 0",
			fstabEscape(mt.HostPath), fstabEscape(strings.TrimPrefix(mt.Path, "/")), opts))
	}
	set("lxc.log.file", filepath.Join(b.ctDir(spec.ID), "lxc.log"))
	set("lxc.log.level", "WARN")
	return c.String()
}

func boolInt(v bool) string {
	if v {
		return "1"
	}
	return "0"
}

// fstabEscape encodes the characters that separate fstab fields.
func fstabEscape(s string) string {
	return strings.NewReplacer(" ", `\040`, "\t", `\011`, "\n", `\012`, `\`, `\134`).Replace(s)
}

// writeGuestFiles writes hostname, hosts and network configuration into the
// rootfs as Proxmox does at create time. os.Root keeps every write inside
// the rootfs even if the template has symlinks pointing out of it.
func writeGuestFiles(rootfs string, spec hypervisor.ContainerSpec) error {
	r, err := os.OpenRoot(rootfs)
	if err != nil {
		return err
	}
	defer r.Close()
	short, _, _ := strings.Cut(spec.Hostname, ".")
	hostLine := "127.0.1.1"
	if !spec.Net.DHCP() {
		hostLine = spec.Net.Address.Addr().String()
	}
	names := spec.Hostname
	if short != spec.Hostname {
		names += " " + short
	}
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n" +
		"# --- BEGIN PVE ---\n" + hostLine + "\t" + names + "\n# --- END PVE ---\n"
	iface := "auto lo\niface lo inet loopback\n\nauto eth0\n"
	if spec.Net.DHCP() {
		iface += "iface eth0 inet dhcp\n"
	} else {
		iface += "iface eth0 inet static\n\taddress " + spec.Net.Address.String() + "\n"
		if spec.Net.Gateway.IsValid() {
			iface += "\tgateway " + spec.Net.Gateway.String() + "\n"
		}
	}
	files := []struct{ name, body string }{
		{"etc/hostname", spec.Hostname + "\n"},
		{"etc/hosts", hosts},
		{"etc/network/interfaces", iface},
	}
	for _, d := range []string{"dev", "etc", "etc/network"} {
		if err := r.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := r.Lchown(d, hypervisor.IDMapBase, hypervisor.IDMapBase); err != nil {
			return err
		}
	}
	for _, f := range files {
		if err := r.WriteFile(f.name, []byte(f.body), 0o644); err != nil {
			return err
		}
		if err := r.Lchown(f.name, hypervisor.IDMapBase, hypervisor.IDMapBase); err != nil {
			return err
		}
	}
	return nil
}

// ensureSubIDs records root's subordinate id range as Proxmox does, so the
// uidmap tools agree with the containers' idmap.
func ensureSubIDs() error {
	line := fmt.Sprintf("root:%d:%d", hypervisor.IDMapBase, hypervisor.IDMapRange)
	for _, p := range []string{"/etc/subuid", "/etc/subgid"} {
		raw, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if slices.Contains(strings.Split(string(raw), "\n"), line) {
			continue
		}
		f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		prefix := ""
		if len(raw) > 0 && !strings.HasSuffix(string(raw), "\n") {
			prefix = "\n"
		}
		_, err = f.WriteString(prefix + line + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

func (b *Backend) storageKnown(s string) bool { return slices.Contains(b.storages, s) }

func (b *Backend) templatePath(storage, name string) (string, error) {
	if !b.storageKnown(storage) {
		return "", &hypervisor.SpecError{Field: "template", Reason: fmt.Sprintf("storage %q is not known", storage)}
	}
	if !nameRe.MatchString(name) || !templateSuffix(name) {
		return "", &hypervisor.SpecError{Field: "template", Reason: fmt.Sprintf("%q is not a template file name (.tar, .tar.gz, .tar.zst)", name)}
	}
	return filepath.Join(b.templateDir(storage), name), nil
}

func templateSuffix(name string) bool {
	for _, s := range []string{".tar", ".tar.gz", ".tgz", ".tar.zst"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// TemplateStored reports whether name is on storage's template directory.
func (b *Backend) TemplateStored(ctx context.Context, storage, name string) (bool, error) {
	p, err := b.templatePath(storage, name)
	if err != nil {
		return false, err
	}
	_, err = os.Stat(p)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}

// UploadTemplate stores r as storage's template name: written to a temporary
// file, synced, then renamed, so a reader never sees half a template. size,
// when not negative, must match what r delivers.
func (b *Backend) UploadTemplate(ctx context.Context, storage, name string, r io.Reader, size int64) error {
	p, err := b.templatePath(storage, name)
	if err != nil {
		return fmt.Errorf("upload template: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("upload template %s: %w", name, err)
	}
	err = func() error {
		n, err := io.Copy(tmp, ctxReader{ctx, r})
		if err != nil {
			return err
		}
		if size >= 0 && n != size {
			return fmt.Errorf("got %d bytes, expected %d", n, size)
		}
		if err := tmp.Chmod(0o644); err != nil {
			return err
		}
		if err := tmp.Sync(); err != nil {
			return err
		}
		if err := tmp.Close(); err != nil {
			return err
		}
		return os.Rename(tmp.Name(), p)
	}()
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("upload template %s: %w", name, err)
	}
	return nil
}

// ctxReader stops a long copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Cluster describes this host as a one-node cluster.
func (b *Backend) Cluster(ctx context.Context) (hypervisor.Cluster, error) {
	n := hypervisor.Node{Name: b.node, Online: true, Cores: runtime.NumCPU()}
	var err error
	if n.MemTotalMB, n.MemFreeMB, err = meminfo(); err != nil {
		return hypervisor.Cluster{}, fmt.Errorf("cluster: %w", err)
	}
	n.CPUUsage = cpuUsage(n.Cores)
	for _, s := range b.storages {
		st := hypervisor.Storage{Name: s, Content: []string{"rootdir", "vztmpl"}, Type: "dir"}
		var fsst syscall.Statfs_t
		if err := syscall.Statfs(b.storageDir(s), &fsst); err == nil {
			st.Active = true
			st.TotalMB = int64(fsst.Blocks) * fsst.Bsize >> 20
			st.FreeMB = int64(fsst.Bavail) * fsst.Bsize >> 20
		}
		n.Storages = append(n.Storages, st)
	}
	if n.Bridges, err = hostBridges(); err != nil {
		return hypervisor.Cluster{}, fmt.Errorf("cluster: %w", err)
	}
	ids, err := b.ids()
	if err != nil {
		return hypervisor.Cluster{}, fmt.Errorf("cluster: %w", err)
	}
	c := hypervisor.Cluster{Nodes: []hypervisor.Node{n}}
	for _, id := range ids {
		ct := hypervisor.Container{ID: id, Node: b.node, State: hypervisor.StateStopped}
		m, err := b.readMeta(id)
		if errors.Is(err, hypervisor.ErrNotFound) {
			// A directory without a sidecar: not vkimg's, or a claim in
			// progress. Its ID is taken all the same.
			c.Containers = append(c.Containers, ct)
			continue
		}
		if err != nil {
			return hypervisor.Cluster{}, fmt.Errorf("cluster: %w", err)
		}
		ct.Name, ct.Tags, ct.HWAddrs = m.Spec.Hostname, m.Spec.Tags, []string{m.HWAddr}
		if !m.Spec.Net.DHCP() {
			ct.Addresses = []netip.Addr{m.Spec.Net.Address.Addr()}
		}
		in, err := b.info(ctx, id)
		if err != nil {
			return hypervisor.Cluster{}, fmt.Errorf("cluster: %w", err)
		}
		ct.State = in.state
		for _, a := range in.ips {
			if !slices.Contains(ct.Addresses, a) {
				ct.Addresses = append(ct.Addresses, a)
			}
		}
		c.Containers = append(c.Containers, ct)
	}
	return c, nil
}

// meminfo returns total and available memory in MB.
func meminfo() (total, free int, err error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.Atoi(fields[1])
		switch fields[0] {
		case "MemTotal:":
			total = kb >> 10
		case "MemAvailable:":
			free = kb >> 10
		}
	}
	return total, free, sc.Err()
}

// cpuUsage approximates the node's CPU use from the 1-minute load average.
func cpuUsage(cores int) float64 {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil || cores == 0 {
		return 0
	}
	load, err := strconv.ParseFloat(strings.Fields(string(raw))[0], 64)
	if err != nil {
		return 0
	}
	return min(load/float64(cores), 1)
}

func writeJSON(p string, v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(p, append(raw, '\n'), 0o640)
}
