package pvesim

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vkimg/vkimg/internal/hypervisor"
)

// handlers are the API methods the simulator implements: exactly what
// vkimg's Proxmox client calls.
var handlers = map[string]handlerFunc{
	"GET /version":                                           (*Server).version,
	"GET /cluster/nextid":                                    (*Server).nextID,
	"GET /cluster/resources":                                 (*Server).resources,
	"GET /nodes/{node}/status":                               (*Server).nodeStatus,
	"GET /nodes/{node}/storage":                              (*Server).storageIndex,
	"GET /nodes/{node}/network":                              (*Server).networkIndex,
	"GET /nodes/{node}/storage/{storage}/content":            (*Server).storageContent,
	"POST /nodes/{node}/storage/{storage}/upload":            (*Server).upload,
	"POST /nodes/{node}/storage/{storage}/oci-registry-pull": (*Server).ociPull,
	"POST /nodes/{node}/lxc":                                 (*Server).create,
	"GET /nodes/{node}/lxc/{vmid}/config":                    (*Server).config,
	"PUT /nodes/{node}/lxc/{vmid}/config":                    (*Server).setConfig,
	"GET /nodes/{node}/lxc/{vmid}/status/current":            (*Server).status,
	"POST /nodes/{node}/lxc/{vmid}/status/start":             (*Server).start,
	"POST /nodes/{node}/lxc/{vmid}/status/stop":              (*Server).stop,
	"POST /nodes/{node}/lxc/{vmid}/status/shutdown":          (*Server).shutdown,
	"DELETE /nodes/{node}/lxc/{vmid}":                        (*Server).destroy,
	"GET /nodes/{node}/lxc/{vmid}/interfaces":                (*Server).interfaces,
	"GET /nodes/{node}/tasks/{upid}/status":                  (*Server).taskStatus,
	"GET /nodes/{node}/tasks/{upid}/log":                     (*Server).taskLog,
}

const mb = 1 << 20

// atLeast reports whether the simulated version is at least major.minor.
func (s *Server) atLeast(major, minor int) bool {
	parts := strings.SplitN(s.cfg.Version, ".", 3)
	ma, _ := strconv.Atoi(parts[0])
	mi := 0
	if len(parts) > 1 {
		mi, _ = strconv.Atoi(parts[1])
	}
	return ma > major || ma == major && mi >= minor
}

func (s *Server) version(r *request) (any, error) {
	parts := strings.SplitN(s.cfg.Version, ".", 3)
	release := strings.Join(parts[:min(2, len(parts))], ".")
	sum := sha1.Sum([]byte(s.cfg.Version))
	return map[string]any{"version": s.cfg.Version, "release": release, "repoid": hex.EncodeToString(sum[:])[:16]}, nil
}

// vmids lists every CT ID in use: the backend's containers and those
// being created.
func (s *Server) vmids(ctx context.Context) (map[int]bool, hypervisor.Cluster, error) {
	cl, err := s.cfg.Backend.Cluster(ctx)
	if err != nil {
		return nil, cl, err
	}
	used := map[int]bool{}
	for _, c := range cl.Containers {
		used[c.ID] = true
	}
	s.mu.Lock()
	for id := range s.locks {
		used[id] = true
	}
	s.mu.Unlock()
	return used, cl, nil
}

func (s *Server) nextID(r *request) (any, error) {
	used, _, err := s.vmids(r.ctx)
	if err != nil {
		return nil, err
	}
	if v, ok := r.params["vmid"]; ok {
		id := atoi(v)
		if used[id] {
			return nil, paramError(map[string]string{"vmid": fmt.Sprintf("VM %d already exists\n", id)})
		}
		return id, nil
	}
	for id := 100; ; id++ {
		if !used[id] {
			return id, nil
		}
	}
}

func (s *Server) node(ctx context.Context) (hypervisor.Node, hypervisor.Cluster, error) {
	cl, err := s.cfg.Backend.Cluster(ctx)
	if err != nil {
		return hypervisor.Node{}, cl, err
	}
	if len(cl.Nodes) == 0 {
		return hypervisor.Node{}, cl, errors.New("backend reports no node")
	}
	return cl.Nodes[0], cl, nil
}

func (s *Server) resources(r *request) (any, error) {
	n, cl, err := s.node(r.ctx)
	if err != nil {
		return nil, err
	}
	typ := r.params["type"]
	out := []map[string]any{}
	if typ == "" || typ == "node" {
		out = append(out, map[string]any{
			"id": "node/" + s.cfg.Node, "type": "node", "node": s.cfg.Node, "status": "online",
			"maxcpu": n.Cores, "cpu": n.CPUUsage, "maxmem": n.MemTotalMB * mb, "mem": (n.MemTotalMB - n.MemFreeMB) * mb,
		})
	}
	if typ == "" || typ == "storage" {
		for _, st := range n.Storages {
			out = append(out, map[string]any{
				"id": "storage/" + s.cfg.Node + "/" + st.Name, "type": "storage", "storage": st.Name, "node": s.cfg.Node,
				"content": strings.Join(st.Content, ","), "shared": boolInt(st.Shared), "plugintype": st.Type,
				"maxdisk": st.TotalMB * mb, "disk": (st.TotalMB - st.FreeMB) * mb, "status": "available",
			})
		}
	}
	if typ == "" || typ == "vm" {
		for _, c := range cl.Containers {
			e := map[string]any{
				"id": fmt.Sprintf("lxc/%d", c.ID), "type": "lxc", "vmid": c.ID, "name": c.Name,
				"node": s.cfg.Node, "status": string(c.State), "template": 0,
			}
			if len(c.Tags) > 0 {
				e["tags"] = strings.Join(c.Tags, ";")
			}
			out = append(out, e)
		}
	}
	return out, nil
}

func (s *Server) nodeStatus(r *request) (any, error) {
	n, _, err := s.node(r.ctx)
	if err != nil {
		return nil, err
	}
	var uts syscall.Utsname
	_ = syscall.Uname(&uts)
	load, _ := os.ReadFile("/proc/loadavg")
	loadavg := strings.Fields(string(load))
	if len(loadavg) < 3 {
		loadavg = []string{"0", "0", "0"}
	}
	var fs syscall.Statfs_t
	_ = syscall.Statfs("/", &fs)
	bs := int64(fs.Bsize)
	return map[string]any{
		"cpu":            n.CPUUsage,
		"cpuinfo":        map[string]any{"cpus": n.Cores, "cores": n.Cores, "sockets": 1, "model": cpuModel()},
		"memory":         map[string]any{"total": n.MemTotalMB * mb, "free": n.MemFreeMB * mb, "used": (n.MemTotalMB - n.MemFreeMB) * mb, "available": n.MemFreeMB * mb},
		"boot-info":      map[string]any{"mode": "legacy-bios"},
		"current-kernel": map[string]any{"sysname": utsString(uts.Sysname[:]), "release": utsString(uts.Release[:]), "version": utsString(uts.Version[:]), "machine": utsString(uts.Machine[:])},
		"loadavg":        loadavg[:3],
		"pveversion":     "pve-manager/" + s.cfg.Version + "/simulated",
		"rootfs": map[string]any{"total": int64(fs.Blocks) * bs, "free": int64(fs.Bfree) * bs, "avail": int64(fs.Bavail) * bs,
			"used": int64(fs.Blocks-fs.Bfree) * bs},
	}, nil
}

// cpuModel is the host CPU's name, as Proxmox reads it from /proc/cpuinfo.
func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func utsString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (s *Server) storageIndex(r *request) (any, error) {
	n, _, err := s.node(r.ctx)
	if err != nil {
		return nil, err
	}
	out := []map[string]any{}
	for _, st := range n.Storages {
		if c := r.params["content"]; c != "" && !contains(st.Content, c) {
			continue
		}
		if v := r.params["storage"]; v != "" && v != st.Name {
			continue
		}
		e := map[string]any{
			"storage": st.Name, "type": st.Type, "content": strings.Join(st.Content, ","),
			"active": boolInt(st.Active), "enabled": 1, "shared": boolInt(st.Shared),
			"total": st.TotalMB * mb, "avail": st.FreeMB * mb, "used": (st.TotalMB - st.FreeMB) * mb,
		}
		if st.TotalMB > 0 {
			e["used_fraction"] = float64(st.TotalMB-st.FreeMB) / float64(st.TotalMB)
		}
		out = append(out, e)
	}
	return out, nil
}

func (s *Server) networkIndex(r *request) (any, error) {
	n, _, err := s.node(r.ctx)
	if err != nil {
		return nil, err
	}
	if t := r.params["type"]; t != "" && t != "bridge" && t != "any_bridge" && t != "any_local_bridge" {
		return []any{}, nil
	}
	out := []map[string]any{}
	for _, b := range n.Bridges {
		e := map[string]any{"iface": b.Name, "type": "bridge", "active": 1, "autostart": 1, "families": []string{"inet"}, "method": "manual"}
		if b.Prefix.IsValid() {
			e["method"] = "static"
			e["cidr"] = b.Prefix.String()
			e["address"] = b.Prefix.Addr().String()
			e["netmask"] = netmask(b.Prefix.Bits())
		}
		out = append(out, e)
	}
	return out, nil
}

func netmask(bits int) string {
	m := uint32(0xffffffff) << (32 - bits)
	if bits == 0 {
		m = 0
	}
	return netip.AddrFrom4([4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)}).String()
}

func (s *Server) storageContent(r *request) (any, error) {
	storage := r.params["storage"]
	if err := s.requireStorage(r.ctx, storage, ""); err != nil {
		return nil, err
	}
	if c := r.params["content"]; c != "" && c != "vztmpl" {
		return []any{}, nil
	}
	s.mu.Lock()
	names := make([]string, 0, len(s.templates[storage]))
	for name := range s.templates[storage] {
		names = append(names, name)
	}
	s.mu.Unlock()
	sort.Strings(names)
	out := []map[string]any{}
	for _, name := range names {
		// The backend is the truth: a template removed behind the
		// simulator's back is not listed.
		ok, err := s.cfg.Backend.TemplateStored(r.ctx, storage, name)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		s.mu.Lock()
		size := s.templates[storage][name]
		s.mu.Unlock()
		format := "tzst"
		if strings.HasSuffix(name, ".tar") {
			format = "tar"
		}
		out = append(out, map[string]any{"volid": storage + ":vztmpl/" + name, "format": format, "size": size, "content": "vztmpl"})
	}
	return out, nil
}

// requireStorage checks that storage exists and, when content is given,
// holds that content type, with Proxmox's messages.
func (s *Server) requireStorage(ctx context.Context, storage, content string) error {
	n, _, err := s.node(ctx)
	if err != nil {
		return err
	}
	for _, st := range n.Storages {
		if st.Name != storage {
			continue
		}
		if content != "" && !contains(st.Content, content) {
			what := map[string]string{"rootdir": "container directories", "vztmpl": "container templates"}[content]
			return errorf(http.StatusInternalServerError, "storage '%s' does not support %s", storage, what)
		}
		return nil
	}
	return errorf(http.StatusInternalServerError, "storage '%s' does not exist", storage)
}

// Proxmox's normalize_content_filename and the vztmpl extension rule
// (PVE::Storage::VZTMPL_EXT_RE_1).
var (
	unsafeFilename = regexp.MustCompile(`[^a-zA-Z0-9_.-]`)
	vztmplExt      = regexp.MustCompile(`\.tar\.(gz|xz|zst|bz2)$`)
	tmpUpload      = regexp.MustCompile(`^/var/tmp/pveupload-[0-9a-f]+$`)
)

func (s *Server) upload(r *request) (any, error) {
	storage := r.params["storage"]
	if err := s.requireStorage(r.ctx, storage, "vztmpl"); err != nil {
		return nil, err
	}
	if r.params["content"] != "vztmpl" {
		return nil, errorf(http.StatusNotImplemented, "the simulator only stores content type vztmpl")
	}
	if _, ok := r.params["checksum"]; ok {
		return nil, errorf(http.StatusNotImplemented, "the simulator does not verify upload checksums")
	}
	name := unsafeFilename.ReplaceAllString(r.params["filename"], "_")
	if !vztmplExt.MatchString(name) {
		return nil, paramError(map[string]string{"filename": "wrong file extension\n"})
	}
	file := r.upload
	if tmp, ok := r.params["tmpfilename"]; ok {
		// Only the node's own tools (root) name a file already on the
		// node; over HTTPS the server alone sets it.
		if r.user != RootUser || file != "" || !tmpUpload.MatchString(tmp) {
			return nil, paramError(map[string]string{"tmpfilename": "only root may pass a temporary upload file\n"})
		}
		file = tmp
	}
	if file == "" {
		return nil, paramError(map[string]string{"filename": "no file uploaded\n"})
	}
	r.upload = "" // the task owns the file now
	upid := s.tasks.start(s.ctx, s.cfg.Node, "imgcopy", "", r.user, func(ctx context.Context, t *task) error {
		defer os.Remove(file)
		return s.storeTemplate(ctx, t, storage, name, file)
	})
	return upid, nil
}

func (s *Server) storeTemplate(ctx context.Context, t *task, storage, name, file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	t.logf("target file: %s:vztmpl/%s", storage, name)
	t.logf("file size is: %d", fi.Size())
	if err := s.cfg.Backend.UploadTemplate(ctx, storage, name, f, fi.Size()); err != nil {
		return fmt.Errorf("import template %s: %w", name, err)
	}
	s.mu.Lock()
	if s.templates[storage] == nil {
		s.templates[storage] = map[string]int64{}
	}
	s.templates[storage][name] = fi.Size()
	s.mu.Unlock()
	t.logf("finished file import successfully")
	return nil
}

// ociPull pulls an image into an oci-archive on template storage, as
// Proxmox VE 9.1 does with skopeo.
func (s *Server) ociPull(r *request) (any, error) {
	if !s.atLeast(9, 1) {
		return nil, errorf(http.StatusNotImplemented, "Method 'POST /nodes/%s/storage/%s/oci-registry-pull' not implemented", s.cfg.Node, r.params["storage"])
	}
	storage := r.params["storage"]
	if err := s.requireStorage(r.ctx, storage, "vztmpl"); err != nil {
		return nil, err
	}
	ref := r.params["reference"]
	name := r.params["filename"]
	if name == "" {
		name = ref
	}
	name = unsafeFilename.ReplaceAllString(name, "_")
	if !strings.HasSuffix(name, ".tar") {
		name += ".tar"
	}
	host, _, _ := strings.Cut(ref, "/")
	upid := s.tasks.start(s.ctx, s.cfg.Node, "download", "", r.user, func(ctx context.Context, t *task) error {
		dir, err := os.MkdirTemp(s.cfg.UploadDir, "pveoci-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		archive := filepath.Join(dir, name)
		args := []string{"copy", "--quiet"}
		if contains(s.cfg.InsecureRegistries, host) {
			args = append(args, "--src-tls-verify=false")
		}
		args = append(args, "docker://"+ref, "oci-archive:"+archive)
		t.logf("pulling %s", ref)
		out, err := exec.CommandContext(ctx, "skopeo", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("failed to pull OCI image '%s': %w: %s", ref, err, strings.TrimSpace(string(out)))
		}
		return s.storeTemplate(ctx, t, storage, name, archive)
	})
	return upid, nil
}

func (s *Server) vmid(r *request) int {
	return atoi(r.params["vmid"])
}

// noConfig is Proxmox's answer for a container that does not exist.
func (s *Server) noConfig(id int) *apiError {
	return errorf(http.StatusInternalServerError, "Configuration file 'nodes/%s/lxc/%d.conf' does not exist", s.cfg.Node, id)
}

// exists checks that a container exists, with Proxmox's message if not.
func (s *Server) exists(ctx context.Context, id int) error {
	used, _, err := s.vmids(ctx)
	if err != nil {
		return err
	}
	if !used[id] {
		return s.noConfig(id)
	}
	return nil
}

// lock takes the container's config lock for a whole operation, as
// Proxmox's lock_config does; an operation on a locked container fails.
func (s *Server) lock(id int, what string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.locks[id]; ok {
		return errorf(http.StatusInternalServerError, "CT %d is locked (%s)", id, l)
	}
	s.locks[id] = what
	return nil
}

func (s *Server) unlock(id int) {
	s.mu.Lock()
	delete(s.locks, id)
	s.mu.Unlock()
}

// powerTask runs a start/stop/shutdown/destroy style operation as a task
// under the container's lock.
func (s *Server) powerTask(r *request, typ string, fn func(ctx context.Context, t *task, id int) error) (any, error) {
	id := s.vmid(r)
	if err := s.exists(r.ctx, id); err != nil {
		return nil, err
	}
	if err := s.lock(id, typ); err != nil {
		return nil, err
	}
	return s.tasks.start(s.ctx, s.cfg.Node, typ, strconv.Itoa(id), r.user, func(ctx context.Context, t *task) error {
		defer s.unlock(id)
		return fn(ctx, t, id)
	}), nil
}

func (s *Server) start(r *request) (any, error) {
	return s.powerTask(r, "vzstart", func(ctx context.Context, t *task, id int) error {
		if err := s.cfg.Backend.Start(ctx, id); err != nil {
			// Proxmox logs lxc-start's output and ends the task with
			// its own one-line reason.
			t.logf("%v", err)
			return fmt.Errorf("startup for container '%d' failed", id)
		}
		return nil
	})
}

func (s *Server) stop(r *request) (any, error) {
	return s.powerTask(r, "vzstop", func(ctx context.Context, _ *task, id int) error {
		return s.cfg.Backend.Stop(ctx, id)
	})
}

func (s *Server) shutdown(r *request) (any, error) {
	// The backend always stops hard after the timeout: that is Proxmox's
	// forceStop=1, so only that is accepted.
	if !isTrue(r.params["forceStop"]) {
		return nil, errorf(http.StatusNotImplemented, "the simulator implements shutdown only with forceStop=1")
	}
	timeout := 60 * time.Second
	if v, ok := r.params["timeout"]; ok {
		timeout = time.Duration(atoi(v)) * time.Second
	}
	return s.powerTask(r, "vzshutdown", func(ctx context.Context, _ *task, id int) error {
		return s.cfg.Backend.Shutdown(ctx, id, timeout)
	})
}

func (s *Server) destroy(r *request) (any, error) {
	id := s.vmid(r)
	if err := s.exists(r.ctx, id); err != nil {
		return nil, err
	}
	if _, ok := r.params["destroy-unreferenced-disks"]; ok {
		return nil, errorf(http.StatusNotImplemented, "the simulator does not implement destroy-unreferenced-disks")
	}
	st, err := s.cfg.Backend.Status(r.ctx, id)
	if err != nil {
		return nil, err
	}
	if st.State == hypervisor.StateRunning && !isTrue(r.params["force"]) {
		return nil, errorf(http.StatusInternalServerError, "unable to destroy CT %d - container is running", id)
	}
	return s.powerTask(r, "vzdestroy", func(ctx context.Context, _ *task, id int) error {
		if st.State == hypervisor.StateRunning {
			if err := s.cfg.Backend.Stop(ctx, id); err != nil {
				return err
			}
		}
		if err := s.cfg.Backend.Destroy(ctx, id); err != nil {
			return err
		}
		s.mu.Lock()
		delete(s.configs, id)
		s.mu.Unlock()
		return nil
	})
}

func isTrue(v string) bool {
	switch strings.ToLower(v) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

func (s *Server) status(r *request) (any, error) {
	id := s.vmid(r)
	st, err := s.cfg.Backend.Status(r.ctx, id)
	if errors.Is(err, hypervisor.ErrNotFound) {
		return nil, s.noConfig(id)
	}
	if err != nil {
		return nil, err
	}
	out := map[string]any{
		"vmid": id, "name": st.Name, "status": string(st.State), "uptime": int64(st.Uptime.Seconds()),
		"mem": st.MemoryMB * mb, "maxmem": st.MaxMemMB * mb, "cpus": st.Cores, "ha": map[string]any{"managed": 0},
	}
	if len(st.Tags) > 0 {
		out["tags"] = strings.Join(st.Tags, ";")
	}
	return out, nil
}

// storedConfig is container id's config as Proxmox keeps it; while the
// container is being created that is only its lock, as in Proxmox. The
// map is never changed once stored (setConfig stores a new one), so it can
// be read without the lock.
func (s *Server) storedConfig(id int) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if conf, ok := s.configs[id]; ok {
		return conf, nil
	}
	if s.locks[id] == "create" {
		return map[string]any{"lock": "create"}, nil
	}
	return nil, errorf(http.StatusNotImplemented, "CT %d was not created through the simulator: its config is unknown", id)
}

func (s *Server) config(r *request) (any, error) {
	id := s.vmid(r)
	if err := s.exists(r.ctx, id); err != nil {
		return nil, err
	}
	conf, err := s.storedConfig(id)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	keys := make([]string, 0, len(conf))
	for k, v := range conf {
		out[k] = v
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha1.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s: %v\n", k, conf[k])
	}
	out["digest"] = hex.EncodeToString(h.Sum(nil))
	return out, nil
}

// setConfig is PUT /nodes/{node}/lxc/{vmid}/config for what the backend
// can change on an existing container: onboot. Other options are refused
// rather than ignored.
func (s *Server) setConfig(r *request) (any, error) {
	id := s.vmid(r)
	var unsupported []string
	for name := range r.params {
		if name != "node" && name != "vmid" && name != "onboot" {
			unsupported = append(unsupported, name)
		}
	}
	if len(unsupported) > 0 {
		sort.Strings(unsupported)
		return nil, errorf(http.StatusNotImplemented, "the simulator does not implement config option(s) %s", strings.Join(unsupported, ", "))
	}
	v, ok := r.params["onboot"]
	if !ok {
		return nil, errorf(http.StatusInternalServerError, "no options specified")
	}
	if err := s.exists(r.ctx, id); err != nil {
		return nil, err
	}
	conf, err := s.storedConfig(id)
	if err != nil {
		return nil, err
	}
	// Proxmox refuses a config change while the config carries a lock
	// (here only create's); a start or stop task sets none, so the
	// change goes ahead as it does on a node.
	if l, ok := conf["lock"]; ok {
		return nil, errorf(http.StatusInternalServerError, "CT %d is locked (%v)", id, l)
	}
	on := isTrue(v)
	s.setMu.Lock()
	defer s.setMu.Unlock()
	err = s.cfg.Backend.SetOnBoot(r.ctx, id, on)
	if errors.Is(err, hypervisor.ErrNotFound) {
		return nil, s.noConfig(id)
	}
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if cur, ok := s.configs[id]; ok {
		next := maps.Clone(cur)
		next["onboot"] = boolInt(on)
		s.configs[id] = next
	}
	s.mu.Unlock()
	return nil, nil
}

func (s *Server) interfaces(r *request) (any, error) {
	id := s.vmid(r)
	st, err := s.cfg.Backend.Status(r.ctx, id)
	if errors.Is(err, hypervisor.ErrNotFound) {
		return nil, s.noConfig(id)
	}
	if err != nil {
		return nil, err
	}
	if st.State != hypervisor.StateRunning {
		return nil, errorf(http.StatusInternalServerError, "CT %d not running", id)
	}
	addrs, err := s.cfg.Backend.Addresses(r.ctx, id)
	if err != nil {
		return nil, err
	}
	n, _, err := s.node(r.ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	net0 := fmt.Sprint(s.configs[id]["net0"])
	s.mu.Unlock()
	kv := map[string]string{}
	for _, part := range strings.Split(net0, ",") {
		if k, v, ok := strings.Cut(part, "="); ok {
			kv[k] = v
		}
	}
	eth0 := map[string]any{"name": "eth0", "hwaddr": strings.ToLower(kv["hwaddr"]), "hardware-address": strings.ToLower(kv["hwaddr"])}
	var ips []map[string]any
	for _, a := range addrs {
		p := prefixFor(a, kv["ip"], n.Bridges)
		typ, key := "inet", "inet"
		if a.Is6() {
			typ, key = "inet6", "inet6"
		}
		if _, set := eth0[key]; !set {
			eth0[key] = p.String()
		}
		ips = append(ips, map[string]any{"ip-address": a.String(), "ip-address-type": typ, "prefix": p.Bits()})
	}
	eth0["ip-addresses"] = ips
	lo := map[string]any{
		"name": "lo", "hwaddr": "00:00:00:00:00:00", "hardware-address": "00:00:00:00:00:00", "inet": "127.0.0.1/8", "inet6": "::1/128",
		"ip-addresses": []map[string]any{{"ip-address": "127.0.0.1", "ip-address-type": "inet", "prefix": 8}, {"ip-address": "::1", "ip-address-type": "inet6", "prefix": 128}},
	}
	return []map[string]any{lo, eth0}, nil
}

// prefixFor gives an address its prefix length: the configured one, else
// the bridge subnet holding it, else a host route.
func prefixFor(a netip.Addr, configured string, bridges []hypervisor.Bridge) netip.Prefix {
	if p, err := netip.ParsePrefix(configured); err == nil && p.Addr() == a {
		return p
	}
	for _, b := range bridges {
		if b.Prefix.IsValid() && b.Prefix.Contains(a) {
			return netip.PrefixFrom(a, b.Prefix.Bits())
		}
	}
	return netip.PrefixFrom(a, a.BitLen())
}

func (s *Server) taskStatus(r *request) (any, error) {
	t, ok := s.tasks.get(r.params["upid"])
	if !ok {
		return nil, errorf(http.StatusInternalServerError, "no such task")
	}
	return t.status(), nil
}

func (s *Server) taskLog(r *request) (any, error) {
	t, ok := s.tasks.get(r.params["upid"])
	if !ok {
		return nil, errorf(http.StatusInternalServerError, "no such task")
	}
	start, limit := 0, 50
	if v, ok := r.params["start"]; ok {
		start = atoi(v)
	}
	if v, ok := r.params["limit"]; ok {
		limit = atoi(v)
	}
	return t.log(start, limit), nil
}

// randomHWAddr makes a MAC address in Proxmox's own OUI, as Proxmox does
// for a net device without hwaddr.
func randomHWAddr() string {
	return fmt.Sprintf("BC:24:11:%02X:%02X:%02X", rand.IntN(256), rand.IntN(256), rand.IntN(256))
}
