// Package preview boots a template in a throwaway local LXC container with
// SQLite and a generated admin login: the quickest way to see a freshly
// built template answer, with no Proxmox node, nginx or certificate.
// Instances meant to stay are made with deploy.
package preview

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/vkimg/vkimg/internal/datavol"
	"github.com/vkimg/vkimg/internal/health"
	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/lxc"
	"github.com/vkimg/vkimg/internal/manifest"
	"github.com/vkimg/vkimg/internal/state"
)

// Options say what to boot and where.
type Options struct {
	Root     state.Root
	Template string       // a plain rootfs .tar.zst made by vkimg build
	Bridge   string       // made when missing, without NAT
	Subnet   netip.Prefix // the bridge's own address and subnet
	Progress io.Writer
}

// Result tells where the preview answers.
type Result struct {
	ID            int        `json:"id"`
	Address       netip.Addr `json:"address"`
	URL           string     `json:"url"`
	Version       string     `json:"version"`
	AdminUser     string     `json:"adminUser"`
	AdminPassword string     `json:"-"`
}

const storage = "local"

func dir(root state.Root) string { return filepath.Join(root.Dir, "preview") }

func backend(root state.Root) (*lxc.Backend, error) {
	return lxc.New(lxc.Options{Root: root.LXC(), Storages: []string{storage}})
}

// Run replaces any earlier preview with a container from o.Template and
// waits until every health check of the template passes.
func Run(ctx context.Context, o Options) (Result, error) {
	logf := func(format string, args ...any) {
		fmt.Fprintf(o.Progress, "%s %s\n", time.Now().UTC().Format(time.TimeOnly), fmt.Sprintf(format, args...))
	}
	m, err := manifest.FromRootfsTarball(o.Template)
	if err != nil {
		return Result{}, err
	}
	lock, err := o.Root.NodeLock("preview")
	if err != nil {
		return Result{}, err
	}
	defer lock.Release()
	if err := Remove(ctx, o.Root); err != nil {
		return Result{}, err
	}
	be, err := backend(o.Root)
	if err != nil {
		return Result{}, err
	}
	if err := ensureBridge(o.Bridge, o.Subnet); err != nil {
		return Result{}, err
	}
	logf("uploading template %s", filepath.Base(o.Template))
	if err := hypervisor.UploadFile(ctx, be, storage, filepath.Base(o.Template), o.Template); err != nil {
		return Result{}, err
	}
	cluster, err := be.Cluster(ctx)
	if err != nil {
		return Result{}, err
	}
	addr, err := freeAddress(cluster, o.Subnet)
	if err != nil {
		return Result{}, err
	}
	id, err := be.NextID(ctx)
	if err != nil {
		return Result{}, err
	}
	res := Result{ID: id, Address: addr, Version: m.Version, AdminUser: "admin"}
	if res.AdminPassword, err = datavol.NewSecret(); err != nil {
		return Result{}, err
	}
	res.URL = fmt.Sprintf("http://%s:%d/", addr, pagePort(m))
	// Recorded before the container exists, so that an interrupted run is
	// cleaned up by the next one.
	if err := save(o.Root, res); err != nil {
		return Result{}, err
	}
	data := filepath.Join(dir(o.Root), "data")
	if err := hypervisor.PrepareDataVolume(data, m.DataVolume.UID, m.DataVolume.GID); err != nil {
		return Result{}, err
	}
	uid, _ := hypervisor.MapID(m.DataVolume.UID)
	gid, _ := hypervisor.MapID(m.DataVolume.GID)
	if err := datavol.Write(data, datavol.Settings{
		PublicURL: res.URL,
		Database:  datavol.Database{Type: datavol.SQLite},
		Admin:     datavol.Admin{Username: res.AdminUser, Email: "admin@preview.invalid", Password: res.AdminPassword},
	}, datavol.Owner{UID: uid, GID: gid}); err != nil {
		return Result{}, err
	}
	logf("creating container %d at %s", id, addr)
	spec := hypervisor.ContainerSpec{
		ID: id, Hostname: "vkimg-preview",
		Template: hypervisor.TemplateRef{Storage: storage, Name: filepath.Base(o.Template)},
		Cores:    max(1, m.Resources.MinCores), MemoryMB: max(512, m.Resources.MinMemoryMB),
		RootfsGB: max(2, m.Resources.MinDiskGB), Storage: storage,
		Net:    hypervisor.Net{Bridge: o.Bridge, Address: netip.PrefixFrom(addr, o.Subnet.Bits()), Gateway: o.Subnet.Addr()},
		Tags:   []string{"vkimg", "preview"},
		Mounts: []hypervisor.Mount{{HostPath: data, Path: m.DataVolume.Path}},
		Min:    hypervisor.Minimums{Cores: m.Resources.MinCores, MemoryMB: m.Resources.MinMemoryMB, RootfsGB: m.Resources.MinDiskGB},
	}
	if err := be.Create(ctx, spec); err != nil {
		return Result{}, err
	}
	if err := be.Start(ctx, id); err != nil {
		return Result{}, err
	}
	logf("waiting for the health checks")
	wait, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := (health.Prober{}).WaitHealthy(wait, m, health.Direct(addr.String()), 500*time.Millisecond); err != nil {
		return res, fmt.Errorf("preview container %d: %w (logs: lxc-attach -P %s -n %d -- journalctl -b)", id, err, be.Root(), id)
	}
	return res, nil
}

// Remove destroys the preview container and its data, if there is one.
func Remove(ctx context.Context, root state.Root) error {
	b, err := os.ReadFile(filepath.Join(dir(root), "preview.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove preview: %w", err)
	}
	var prev Result
	if err := json.Unmarshal(b, &prev); err != nil {
		return fmt.Errorf("remove preview: %s: %w", filepath.Join(dir(root), "preview.json"), err)
	}
	be, err := backend(root)
	if err != nil {
		return err
	}
	if _, err := be.Status(ctx, prev.ID); err == nil {
		if err := be.Stop(ctx, prev.ID); err != nil {
			return fmt.Errorf("remove preview: %w", err)
		}
		if err := be.Destroy(ctx, prev.ID); err != nil {
			return fmt.Errorf("remove preview: %w", err)
		}
	} else if !errors.Is(err, hypervisor.ErrNotFound) {
		return fmt.Errorf("remove preview: %w", err)
	}
	return os.RemoveAll(dir(root))
}

func save(root state.Root, r Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir(root), 0o755); err != nil { // the container reaches data/ below it
		return fmt.Errorf("save preview: %w", err)
	}
	return os.WriteFile(filepath.Join(dir(root), "preview.json"), b, 0o600)
}

func ensureBridge(name string, subnet netip.Prefix) error {
	if _, err := os.Stat(filepath.Join("/sys/class/net", name)); err == nil {
		return nil
	}
	return lxc.CreateBridge(name, subnet)
}

// freeAddress picks the first host address from .10 on that no container
// in the cluster uses.
func freeAddress(c hypervisor.Cluster, subnet netip.Prefix) (netip.Addr, error) {
	var used []netip.Addr
	for _, ct := range c.Containers {
		used = append(used, ct.Addresses...)
	}
	a := subnet.Masked().Addr()
	for range 10 {
		a = a.Next()
	}
	for ; subnet.Contains(a) && subnet.Contains(a.Next()); a = a.Next() {
		if a != subnet.Addr() && !slices.Contains(used, a) {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free address in %s", subnet)
}

// pagePort is where the template serves its web page.
func pagePort(m *manifest.Manifest) int {
	for _, c := range m.Components {
		for _, h := range c.Health {
			if h.Kind == manifest.HealthPage {
				return h.Port
			}
		}
	}
	return m.Component(manifest.KindBackend).Ports[0].Port
}
