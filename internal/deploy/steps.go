package deploy

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vkimg/vkimg/internal/backup"
	"github.com/vkimg/vkimg/internal/datavol"
	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/edge"
	"github.com/vkimg/vkimg/internal/health"
	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/manifest"
	"github.com/vkimg/vkimg/internal/ociimage"
	"github.com/vkimg/vkimg/internal/registry"
)

// resolved is a verified template, ready to create containers from.
type resolved struct {
	img    v1.Image
	digest v1.Hash
	m      *manifest.Manifest
	min    hypervisor.Minimums
}

func (r *run) resolveTemplate(ctx context.Context) error {
	var t *resolved
	var err error
	if r.o.restore != nil {
		t, err = r.exactTemplate(ctx, r.a.Template.Source, r.o.restore.template)
	} else {
		t, err = r.template(ctx, r.a.Template.Source, r.a.Template.Version)
	}
	if err != nil {
		return err
	}
	r.img, r.digest, r.m, r.min = t.img, t.digest, t.m, t.min
	return nil
}

// template finds a template version (a tag) in source and, with a trusted
// key, pulls it into the cache verifying its signature. Nothing unverified
// is used unless the administrator asked for an unsigned local layout
// explicitly.
func (r *operation) template(ctx context.Context, source, version string) (*resolved, error) {
	if source == "" {
		source = r.o.Root.Templates()
	}
	var ref registry.Ref
	local := source == r.o.Root.Templates() || deployconfig.IsLocalSource(source)
	if local {
		ref = registry.LayoutRef(source, version)
	} else {
		var err error
		if ref, err = registry.ParseRef(source + ":" + version); err != nil {
			return nil, fmt.Errorf("template %s version %s: %w", source, version, err)
		}
	}
	t := &resolved{}
	switch {
	case r.o.Trusted != nil:
		pulled, err := registry.Pull(ctx, ref, registry.PullOptions{Options: r.o.Registry, Cache: r.o.Root.Cache(), Trusted: r.o.Trusted})
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", ref, err)
		}
		t.img, t.digest = pulled.Image, pulled.Digest
		r.p.logf("template %s: signature verified, digest %s", ref, t.digest)
	case local && r.o.InsecureLocal:
		img, err := ociimage.ImageFromLayout(source, version)
		if err != nil {
			return nil, fmt.Errorf("template %s version %s: %w", source, version, err)
		}
		if t.digest, err = img.Digest(); err != nil {
			return nil, fmt.Errorf("template %s: %w", ref, err)
		}
		t.img = img
		r.p.logf("WARNING: template %s is used WITHOUT signature verification (--insecure-local)", ref)
	default:
		return nil, fmt.Errorf("template %s: no trusted public key to verify its signature with; install one, or pass --insecure-local to use an unsigned local layout", ref)
	}
	m, err := ociimage.ManifestOf(t.img)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", ref, err)
	}
	t.m = m
	t.min = hypervisor.Minimums{Cores: m.Resources.MinCores, MemoryMB: m.Resources.MinMemoryMB, RootfsGB: m.Resources.MinDiskGB}
	r.p.logf("template %s %s (needs at least %d cores, %d MB, %d GB)", m.Name, m.Version, t.min.Cores, t.min.MemoryMB, t.min.RootfsGB)
	return t, nil
}

// preflight checks that the node can take the instance before anything
// changes: resources, storages, bridge and the edge's ports.
func (r *run) preflight(c hypervisor.Cluster) error {
	a := r.a
	var problems []string
	i := slices.IndexFunc(c.Nodes, func(n hypervisor.Node) bool { return n.Name == a.Node || (a.Node == "" && len(c.Nodes) == 1) })
	if i < 0 {
		return fmt.Errorf("node %q not found in the cluster (give node: when there are several)", a.Node)
	}
	n := c.Nodes[i]
	r.node = n
	suggest := fmt.Sprintf("the template needs at least %d cores, %d MB memory, %d GB disk", r.min.Cores, r.min.MemoryMB, r.min.RootfsGB)
	if err := checkPVEVersion(c.Version); err != nil {
		problems = append(problems, err.Error())
	}
	if !n.Online {
		problems = append(problems, fmt.Sprintf("node %s is offline", n.Name))
	}
	if n.Cores > 0 && a.Resources.Cores > n.Cores {
		problems = append(problems, fmt.Sprintf("resources.cores %d: node %s has %d cores (%s)", a.Resources.Cores, n.Name, n.Cores, suggest))
	}
	if a.Resources.MemoryMB > n.MemFreeMB {
		problems = append(problems, fmt.Sprintf("resources.memory_mb %d: node %s has %d MB free (%s)", a.Resources.MemoryMB, n.Name, n.MemFreeMB, suggest))
	}
	storage := func(name, content string) *hypervisor.Storage {
		i := slices.IndexFunc(n.Storages, func(s hypervisor.Storage) bool { return s.Name == name })
		if i < 0 {
			problems = append(problems, fmt.Sprintf("storage %s not found on node %s", name, n.Name))
			return nil
		}
		s := &n.Storages[i]
		if !slices.Contains(s.Content, content) {
			problems = append(problems, fmt.Sprintf("storage %s does not hold %s", name, content))
		}
		return s
	}
	if s := storage(a.Storage.Rootfs, "rootdir"); s != nil && s.FreeMB < int64(a.Resources.DiskGB)*1024 {
		problems = append(problems, fmt.Sprintf("resources.disk_gb %d: storage %s has %d MB free (%s)", a.Resources.DiskGB, s.Name, s.FreeMB, suggest))
	}
	storage(a.Storage.Template, "vztmpl")
	if !slices.ContainsFunc(n.Bridges, func(b hypervisor.Bridge) bool { return b.Name == a.Network.Bridge }) {
		problems = append(problems, fmt.Sprintf("network.bridge %s not found on node %s", a.Network.Bridge, n.Name))
	}
	if err := edge.CheckPorts(a.Ports.HTTPS, a.Ports.HTTP); err != nil {
		problems = append(problems, err.Error())
	}
	if err := r.o.Edge.Running(); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return fmt.Errorf("pre-flight: %s", strings.Join(problems, "; "))
	}
	r.p.logf("node %s: %d cores, %d MB free; ports %d/%d usable", n.Name, n.Cores, n.MemFreeMB, a.Ports.HTTPS, a.Ports.HTTP)
	return nil
}

// minPVEMajor is the oldest Proxmox VE release deploy supports (spec:
// 7.0 or later).
const minPVEMajor = 7

// checkPVEVersion refuses a Proxmox VE older than minPVEMajor; an empty
// version is plain LXC, which has none.
func checkPVEVersion(v string) error {
	if v == "" {
		return nil
	}
	major, err := strconv.Atoi(strings.SplitN(v, ".", 2)[0])
	if err != nil {
		return fmt.Errorf("Proxmox VE version %q: not understood", v)
	}
	if major < minPVEMajor {
		return fmt.Errorf("Proxmox VE %s is not supported: upgrade to %d.0 or later", v, minPVEMajor)
	}
	return nil
}

// allocate reserves both slots' container IDs and addresses in the instance
// configuration. Without a DHCP server on a bridge that has a subnet, both
// addresses are static ones nobody in the cluster uses.
func (r *run) allocate(ctx context.Context, c hypervisor.Cluster) error {
	a := r.a
	if a.Network.Address == deployconfig.DHCP {
		if b := r.bridge(); b.Prefix.IsValid() {
			if err := pickAddresses(a, c, b.Prefix); err != nil {
				return err
			}
		}
	}
	cfg, err := a.Instance()
	if err != nil {
		return err
	}
	idA, err := r.o.Hypervisor.NextID(ctx)
	if err != nil {
		return fmt.Errorf("allocate container ID: %w", err)
	}
	idB := idA + 1
	for slices.ContainsFunc(c.Containers, func(ct hypervisor.Container) bool { return ct.ID == idB }) {
		idB++
	}
	cfg.Slots.A.ID, cfg.Slots.B.ID = idA, idB
	cfg.Slots.A.Version, cfg.Slots.A.Digest = r.m.Version, r.digest.String()
	if a.TLS.Certificate == "" {
		cfg.TLS = deployconfig.TLS{SelfSigned: true,
			Certificate: filepath.Join(r.o.Root.Instance(a.Name), "tls", "cert.pem"),
			Key:         filepath.Join(r.o.Root.Instance(a.Name), "tls", "key.pem")}
	}
	r.tmpl = templateFile(a.Storage.Template, r.m, r.digest)
	spec, err := cfg.SlotSpec("a", r.tmpl, r.min, r.o.Root.DataVolume(a.Name))
	if err != nil {
		return err
	}
	if err := hypervisor.ValidateSpec(spec, c); err != nil {
		return err
	}
	r.cfg, r.spec = cfg, spec
	r.addr = spec.Net.Address.Addr()
	r.p.logf("slot a: container %d at %s; slot b reserved: container %d at %s", idA, cfg.Slots.A.Address, idB, cfg.Slots.B.Address)
	return nil
}

func (r *run) bridge() hypervisor.Bridge {
	for _, b := range r.node.Bridges {
		if b.Name == r.a.Network.Bridge {
			return b
		}
	}
	return hypervisor.Bridge{}
}

// pickAddresses sets two free static addresses on the bridge's subnet,
// above the first ten (commonly routers and infrastructure).
func pickAddresses(a *deployconfig.Answers, c hypervisor.Cluster, bridge netip.Prefix) error {
	var used []netip.Addr
	for _, ct := range c.Containers {
		used = append(used, ct.Addresses...)
	}
	var free []netip.Addr
	addr := bridge.Masked().Addr()
	for range 10 {
		addr = addr.Next()
	}
	for ; len(free) < 2 && bridge.Contains(addr) && bridge.Contains(addr.Next()); addr = addr.Next() {
		if addr != bridge.Addr() && !slices.Contains(used, addr) {
			free = append(free, addr)
		}
	}
	if len(free) < 2 {
		return fmt.Errorf("network.address: no two free addresses left on %s", bridge)
	}
	a.Network.Address = netip.PrefixFrom(free[0], bridge.Bits()).String()
	a.Network.AddressB = netip.PrefixFrom(free[1], bridge.Bits()).String()
	a.Network.Gateway = bridge.Addr().String()
	return nil
}

// dataVolume writes Vikunja's config and the one-shot secrets, owned for the
// container's service user. A volume left by an earlier run keeps its
// session secret, which both slots must share.
func (r *run) dataVolume(ctx context.Context) error {
	path := r.o.Root.DataVolume(r.a.Name)
	if r.o.restore != nil {
		return r.restoreDataVolume(ctx, path)
	}
	secret := ""
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := r.creating(stepDataVolume, map[string]string{"path": path}); err != nil {
			return err
		}
	} else if s, err := datavol.ReadSecret(path); err == nil {
		secret = s
	}
	uid, gid := r.m.DataVolume.UID, r.m.DataVolume.GID
	if err := hypervisor.PrepareDataVolume(path, uid, gid); err != nil {
		return err
	}
	settings, err := r.a.Settings(secret)
	if err != nil {
		return err
	}
	r.p.redact(settings.Secret)
	hu, err := hypervisor.MapID(uid)
	if err != nil {
		return err
	}
	hg, err := hypervisor.MapID(gid)
	if err != nil {
		return err
	}
	if err := datavol.Write(path, settings, datavol.Owner{UID: hu, GID: hg}); err != nil {
		return err
	}
	r.p.logf("data volume %s ready (owned by %d:%d)", path, hu, hg)
	return nil
}

// restoreDataVolume fills a new instance's data volume (and its external
// database) from the archive being restored.
func (r *run) restoreDataVolume(ctx context.Context, path string) error {
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("data volume %s exists: remove it, or restore into the instance that owns it", path)
	}
	if err := r.creating(stepDataVolume, map[string]string{"path": path}); err != nil {
		return err
	}
	if _, err := backup.Restore(ctx, r.o.restore.archive, backup.Target{DataVolume: path, IDBase: hypervisor.IDMapBase}); err != nil {
		return fmt.Errorf("restore %s: %w", r.o.restore.archive, err)
	}
	r.p.logf("data volume %s restored from %s", path, r.o.restore.archive)
	return r.setPublicURL()
}

// templateFile is where a template's plain rootfs is stored, one file per
// digest.
func templateFile(storage string, m *manifest.Manifest, digest v1.Hash) hypervisor.TemplateRef {
	return hypervisor.TemplateRef{Storage: storage, Name: fmt.Sprintf("vkimg-%s_%s-%s_amd64.tar.zst", m.Name, m.Version, digest.Hex[:12])}
}

func (r *run) upload(ctx context.Context) error { return r.uploadTemplate(ctx, r.tmpl, r.img) }

// uploadTemplate stores the template's plain rootfs on the template
// storage, once per digest.
func (r *operation) uploadTemplate(ctx context.Context, tmpl hypervisor.TemplateRef, img v1.Image) error {
	stored, err := r.o.Hypervisor.TemplateStored(ctx, tmpl.Storage, tmpl.Name)
	if err != nil {
		return err
	}
	if stored {
		r.p.logf("template %s already on storage %s", tmpl.Name, tmpl.Storage)
		return nil
	}
	dir, err := os.MkdirTemp("", "vkimg-upload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, tmpl.Name)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := ociimage.WriteRootfs(f, img); err != nil {
		f.Close()
		return fmt.Errorf("write template rootfs: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := hypervisor.UploadFile(ctx, r.o.Hypervisor, tmpl.Storage, tmpl.Name, path); err != nil {
		return err
	}
	r.p.logf("template %s uploaded to storage %s", tmpl.Name, tmpl.Storage)
	return nil
}

func (r *run) waitDirect(ctx context.Context) error {
	if !r.addr.IsValid() { // DHCP: the address is known once the container has one
		addr, err := r.dhcpAddress(ctx, r.spec.ID)
		if err != nil {
			return err
		}
		r.addr = addr
		r.cfg.Slots.A.Address = addr.String()
	}
	return r.waitHealthy(ctx, r.spec.ID, r.addr, r.m)
}

// dhcpAddress waits until a container has its IPv4 address from DHCP.
func (r *operation) dhcpAddress(ctx context.Context, id int) (netip.Addr, error) {
	deadline := time.Now().Add(r.o.HealthTimeout)
	for {
		addrs, err := r.o.Hypervisor.Addresses(ctx, id)
		if err != nil {
			return netip.Addr{}, err
		}
		if i := slices.IndexFunc(addrs, netip.Addr.Is4); i >= 0 {
			return addrs[i], nil
		}
		if time.Now().After(deadline) {
			return netip.Addr{}, fmt.Errorf("container %d got no address from DHCP", id)
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// waitHealthy runs the template's health checks on the container directly
// until they all pass: the version it runs, the rendered page, the MCP
// handshake, the backend's /health (which reaches the database).
func (r *operation) waitHealthy(ctx context.Context, id int, addr netip.Addr, m *manifest.Manifest) error {
	wait, cancel := context.WithTimeout(ctx, r.o.HealthTimeout)
	defer cancel()
	if err := (health.Prober{}).WaitHealthy(wait, m, health.Direct(addr.String()), 500*time.Millisecond); err != nil {
		return fmt.Errorf("container %d: %w", id, errors.Join(err, ctx.Err()))
	}
	r.p.logf("container %d healthy at %s (version %s)", id, addr, m.Version)
	return nil
}

// applyEdge writes the instance's nginx site, with the administrator's
// certificate or a self-signed one for the domain.
func (r *run) applyEdge(ctx context.Context) error {
	cfg := r.cfg
	if cfg.TLS.SelfSigned {
		if err := writeSelfSigned(cfg.TLS.Certificate, cfg.TLS.Key, cfg.Domain, r.o.Now()); err != nil {
			return err
		}
		r.p.logf("self-signed certificate for %s written to %s", cfg.Domain, cfg.TLS.Certificate)
	}
	r.site = siteFor(cfg, r.o.EdgeAddress, upstreamFor(cfg, cfg.Slots.Active, r.addr, r.m))
	data := map[string]string{"instance": cfg.Name}
	if err := r.creating(stepEdge, data); err != nil {
		return err
	}
	if err := r.o.Edge.Apply(ctx, r.site); err != nil {
		return err
	}
	if err := r.created(stepEdge, data); err != nil {
		return err
	}
	r.p.logf("nginx serves %s on ports %d/%d", cfg.Domain, cfg.Ports.HTTPS, cfg.Ports.HTTP)
	return nil
}

// upstreamFor is how the edge reaches a slot's container running m.
func upstreamFor(cfg *deployconfig.InstanceConfig, slot string, addr netip.Addr, m *manifest.Manifest) edge.Upstream {
	up := edge.Upstream{Slot: slot, Address: addr, APIPort: cfg.Ports.Backend, MCPPort: cfg.Ports.MCP}
	if f := m.Component(manifest.KindFrontend); f != nil && f.EmbeddedIn == "" {
		up.AppPort = cfg.Ports.Frontend
	}
	return up
}

// siteFor is the instance's nginx site, sending traffic to up.
func siteFor(cfg *deployconfig.InstanceConfig, listen netip.Addr, up edge.Upstream) edge.Site {
	return edge.Site{
		Instance: cfg.Name, Domains: []string{cfg.Domain},
		HTTPPort: cfg.Ports.HTTP, HTTPSPort: cfg.Ports.HTTPS, Address: listen,
		CertFile: cfg.TLS.Certificate, KeyFile: cfg.TLS.Key,
		Upstream: up,
	}
}

func writeSelfSigned(certFile, keyFile, domain string, now time.Time) error {
	cert, key, err := deployconfig.SelfSigned(domain, now)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return fmt.Errorf("self-signed certificate: %w", err)
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		return fmt.Errorf("self-signed certificate: %w", err)
	}
	if err := os.WriteFile(certFile, cert, 0o644); err != nil {
		return fmt.Errorf("self-signed certificate: %w", err)
	}
	return nil
}

func (r *run) waitEdge(ctx context.Context) error { return r.waitThroughEdge(ctx, r.site, r.m) }

// waitThroughEdge runs, through nginx over HTTPS with the domain as SNI,
// every health check whose path the edge routes to the check's port: the
// backend's version, the rendered page, the MCP handshake.
func (r *operation) waitThroughEdge(ctx context.Context, site edge.Site, mf *manifest.Manifest) error {
	client, err := EdgeClient(site)
	if err != nil {
		return err
	}
	m := *mf
	m.Components = nil
	for _, c := range mf.Components {
		c.Health = slices.DeleteFunc(slices.Clone(c.Health), func(h manifest.Health) bool { return edgePort(site.Upstream, h.Path) != h.Port })
		m.Components = append(m.Components, c)
	}
	var checks []string
	for _, c := range m.Components {
		for _, h := range c.Health {
			checks = append(checks, fmt.Sprintf("%s %s %s", c.Name, h.Kind, h.Path))
		}
	}
	r.p.logf("checks through nginx: %s", strings.Join(checks, ", "))
	base := fmt.Sprintf("https://%s:%d", site.Domains[0], site.HTTPSPort)
	wait, cancel := context.WithTimeout(ctx, r.o.HealthTimeout)
	defer cancel()
	target := func(h manifest.Health) string { return base + h.Path }
	if err := (health.Prober{Client: client}).WaitHealthy(wait, &m, target, 500*time.Millisecond); err != nil {
		return fmt.Errorf("through nginx: %w", errors.Join(err, ctx.Err()))
	}
	r.p.logf("healthy through nginx at %s", base)
	return nil
}

// edgePort is the container port the edge sends path to (see the site
// template in internal/edge).
func edgePort(up edge.Upstream, path string) int {
	switch {
	case path == "/health", strings.HasPrefix(path, "/api/"), strings.HasPrefix(path, "/dav/"), strings.HasPrefix(path, "/.well-known/"):
		return up.APIPort
	case path == "/mcp", strings.HasPrefix(path, "/mcp/"):
		return up.MCPPort
	case up.AppPort != 0:
		return up.AppPort
	}
	return up.APIPort
}

// EdgeClient reaches a site through the node's nginx over HTTPS, with the
// site's domain as SNI and Host, accepting only the site's own certificate:
// an answer is then the site's, not another server's.
func EdgeClient(s edge.Site) (*http.Client, error) {
	b, err := os.ReadFile(s.CertFile)
	if err != nil {
		return nil, fmt.Errorf("edge certificate: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("edge certificate %s: no PEM block", s.CertFile)
	}
	host := s.Address
	if !host.IsValid() || host.IsUnspecified() {
		host = netip.MustParseAddr("127.0.0.1")
	}
	target := net.JoinHostPort(host.String(), strconv.Itoa(s.HTTPSPort))
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, target)
			},
			TLSClientConfig: &tls.Config{
				ServerName: s.Domains[0],
				// The chain is checked by deployconfig before deploy; here
				// the leaf must be exactly the site's certificate.
				InsecureSkipVerify: true,
				VerifyConnection: func(cs tls.ConnectionState) error {
					if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, block.Bytes) {
						return fmt.Errorf("nginx presented another certificate than %s", s.CertFile)
					}
					return nil
				},
			},
			ForceAttemptHTTP2: true,
		},
	}, nil
}
