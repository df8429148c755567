package proxmox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"

	pve "github.com/luthermonson/go-proxmox"

	"github.com/vkimg/vkimg/internal/hypervisor"
)

// NextID implements hypervisor.Hypervisor.
func (c *Client) NextID(ctx context.Context) (int, error) {
	var id flexInt
	if err := c.api.Get(ctx, "/cluster/nextid", &id); err != nil {
		return 0, wrap(err, "next free CT ID")
	}
	return int(id), nil
}

// Version returns the node's pve-manager version, e.g. "8.2.4".
func (c *Client) Version(ctx context.Context) (string, error) {
	v, err := c.api.Version(ctx)
	if err != nil {
		return "", wrap(err, "Proxmox version")
	}
	return v.Version, nil
}

// CanPullOCI reports whether the node pulls OCI images itself
// (oci-registry-pull, Proxmox VE 9.1 and later).
func (c *Client) CanPullOCI(ctx context.Context) (bool, error) {
	v, err := c.Version(ctx)
	if err != nil {
		return false, err
	}
	return versionAtLeast(v, 9, 1), nil
}

func versionAtLeast(v string, major, minor int) bool {
	parts := strings.SplitN(v, ".", 3)
	ma, err := strconv.Atoi(parts[0])
	if err != nil {
		return false
	}
	mi := 0
	if len(parts) > 1 {
		mi, _ = strconv.Atoi(parts[1])
	}
	return ma > major || ma == major && mi >= minor
}

// TemplateStored implements hypervisor.Hypervisor.
func (c *Client) TemplateStored(ctx context.Context, storage, name string) (bool, error) {
	var content []struct {
		VolID string `json:"volid"`
	}
	path := fmt.Sprintf("/nodes/%s/storage/%s/content?content=vztmpl", c.node, storage)
	if err := c.api.Get(ctx, path, &content); err != nil {
		return false, wrap(err, "list templates on %s", storage)
	}
	want := storage + ":vztmpl/" + name
	for _, e := range content {
		if e.VolID == want {
			return true, nil
		}
	}
	return false, nil
}

// UploadTemplate implements hypervisor.Hypervisor: a multipart upload
// (content vztmpl), then the import task Proxmox runs on it.
func (c *Client) UploadTemplate(ctx context.Context, storage, name string, r io.Reader, size int64) error {
	var upid pve.UPID
	path := fmt.Sprintf("/nodes/%s/storage/%s/upload", c.node, storage)
	if err := c.api.UploadReader(path, map[string]string{"content": "vztmpl"}, name, r, size, &upid); err != nil {
		return wrap(err, "upload template %s to %s", name, storage)
	}
	return wrap(c.await(ctx, upid, c.taskTimeout), "upload template %s to %s", name, storage)
}

// PullOCI makes the node pull an OCI image into an oci-archive template
// named name (ending in .tar) on storage (Proxmox VE 9.1+:
// oci-registry-pull, which uses skopeo on the node). Create then takes
// TemplateRef{storage, name}.
func (c *Client) PullOCI(ctx context.Context, storage, reference, name string) error {
	if !strings.HasSuffix(name, ".tar") {
		return fmt.Errorf("pull %s: template name %q must end in .tar (an oci-archive)", reference, name)
	}
	path := fmt.Sprintf("/nodes/%s/storage/%s/oci-registry-pull", c.node, storage)
	params := map[string]any{"reference": reference, "filename": name}
	return wrap(c.task(ctx, http.MethodPost, path, params, c.taskTimeout), "pull %s to %s", reference, storage)
}

// createParams are the create call's parameters for spec.
func createParams(spec hypervisor.ContainerSpec) map[string]any {
	p := map[string]any{
		"vmid":         spec.ID,
		"ostemplate":   spec.Template.Storage + ":vztmpl/" + spec.Template.Name,
		"hostname":     spec.Hostname,
		"cores":        spec.Cores,
		"memory":       spec.MemoryMB,
		"swap":         spec.SwapMB,
		"rootfs":       fmt.Sprintf("%s:%d", spec.Storage, spec.RootfsGB),
		"net0":         net0(spec.Net),
		"onboot":       boolParam(spec.OnBoot),
		"unprivileged": 1, // Proxmox before 9 defaults to privileged
	}
	if len(spec.Tags) > 0 {
		p["tags"] = strings.Join(spec.Tags, ";")
	}
	if spec.Description != "" {
		p["description"] = spec.Description
	}
	for i, m := range spec.Mounts {
		v := m.HostPath + ",mp=" + m.Path
		if m.ReadOnly {
			v += ",ro=1"
		}
		p["mp"+strconv.Itoa(i)] = v
	}
	return p
}

func net0(n hypervisor.Net) string {
	v := "name=eth0,bridge=" + n.Bridge
	if n.DHCP() {
		v += ",ip=dhcp"
	} else {
		v += ",ip=" + n.Address.String()
		if n.Gateway.IsValid() {
			v += ",gw=" + n.Gateway.String()
		}
	}
	if n.HWAddr != "" {
		v += ",hwaddr=" + n.HWAddr
	}
	return v + ",type=veth"
}

func boolParam(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Create implements hypervisor.Hypervisor. The spec is checked against the
// whole cluster before any call; if the create task fails or times out,
// whatever it made is destroyed.
func (c *Client) Create(ctx context.Context, spec hypervisor.ContainerSpec) error {
	// Every other call addresses the client's node: create there too.
	if spec.Node == "" {
		spec.Node = c.node
	}
	if spec.Node != c.node {
		return fmt.Errorf("create container %d: %w", spec.ID,
			&hypervisor.SpecError{Field: "node", Reason: fmt.Sprintf("this client manages node %s, not %s", c.node, spec.Node)})
	}
	cl, err := c.Cluster(ctx)
	if err != nil {
		return fmt.Errorf("create container %d: %w", spec.ID, err)
	}
	if err := hypervisor.ValidateSpec(spec, cl); err != nil {
		return fmt.Errorf("create container %d: %w", spec.ID, err)
	}
	var upid pve.UPID
	if err := c.api.Post(ctx, fmt.Sprintf("/nodes/%s/lxc", c.node), createParams(spec), &upid); err != nil {
		return wrap(err, "create container %d", spec.ID)
	}
	err = c.await(ctx, upid, c.taskTimeout)
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrTaskTimeout) {
		// The container is locked while the task runs: give it the same
		// time again before cleaning up.
		_ = c.await(ctx, upid, c.taskTimeout)
	}
	if cerr := c.removeFailed(ctx, spec.ID); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return fmt.Errorf("create container %d: %w", spec.ID, err)
}

// removeFailed destroys what a failed create left, if anything.
func (c *Client) removeFailed(ctx context.Context, id int) error {
	st, err := c.Status(ctx, id)
	if errors.Is(err, hypervisor.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("clean up: %w", err)
	}
	if st.State == hypervisor.StateRunning {
		if err := c.Stop(ctx, id); err != nil {
			return fmt.Errorf("clean up: %w", err)
		}
	}
	if err := c.Destroy(ctx, id); err != nil {
		return fmt.Errorf("clean up: %w", err)
	}
	return nil
}

// Start implements hypervisor.Hypervisor.
func (c *Client) Start(ctx context.Context, id int) error {
	return wrap(c.task(ctx, http.MethodPost, c.ctPath(id, "/status/start"), nil, c.taskTimeout), "start container %d", id)
}

// Shutdown implements hypervisor.Hypervisor: Proxmox's shutdown with
// forceStop, which stops the container hard after timeout.
func (c *Client) Shutdown(ctx context.Context, id int, timeout time.Duration) error {
	secs := int(timeout.Round(time.Second) / time.Second)
	params := map[string]any{"timeout": secs, "forceStop": 1}
	err := c.task(ctx, http.MethodPost, c.ctPath(id, "/status/shutdown"), params, timeout+c.taskTimeout)
	return wrap(err, "shut down container %d", id)
}

// Stop implements hypervisor.Hypervisor.
func (c *Client) Stop(ctx context.Context, id int) error {
	return wrap(c.task(ctx, http.MethodPost, c.ctPath(id, "/status/stop"), nil, c.taskTimeout), "stop container %d", id)
}

// Destroy implements hypervisor.Hypervisor. purge also drops the ID from
// backup, replication and HA jobs, so nothing refers to it afterwards.
func (c *Client) Destroy(ctx context.Context, id int) error {
	params := map[string]any{"purge": 1}
	return wrap(c.task(ctx, http.MethodDelete, c.ctPath(id, ""), params, c.taskTimeout), "destroy container %d", id)
}

// Status implements hypervisor.Hypervisor. Proxmox's current status has
// no onboot: that comes from the container's config.
func (c *Client) Status(ctx context.Context, id int) (hypervisor.ContainerStatus, error) {
	var st struct {
		Name   string  `json:"name"`
		Status string  `json:"status"`
		Uptime flexInt `json:"uptime"`
		Mem    flexInt `json:"mem"`
		MaxMem flexInt `json:"maxmem"`
		CPUs   flexInt `json:"cpus"`
		Tags   string  `json:"tags"`
	}
	if err := c.api.Get(ctx, c.ctPath(id, "/status/current"), &st); err != nil {
		return hypervisor.ContainerStatus{}, wrap(err, "status of container %d", id)
	}
	var conf struct {
		OnBoot flexInt `json:"onboot"`
	}
	if err := c.api.Get(ctx, c.ctPath(id, "/config"), &conf); err != nil {
		return hypervisor.ContainerStatus{}, wrap(err, "config of container %d", id)
	}
	return hypervisor.ContainerStatus{
		ID: id, Name: st.Name, Node: c.node, State: hypervisor.State(st.Status),
		Uptime:   time.Duration(st.Uptime) * time.Second,
		MemoryMB: int(st.Mem >> 20), MaxMemMB: int(st.MaxMem >> 20), Cores: int(st.CPUs),
		Tags: splitTags(st.Tags), OnBoot: conf.OnBoot != 0,
	}, nil
}

// SetOnBoot implements hypervisor.Hypervisor. A container's config change
// is no task in Proxmox: the answer comes once the config is written.
func (c *Client) SetOnBoot(ctx context.Context, id int, on bool) error {
	params := map[string]any{"onboot": boolParam(on)}
	return wrap(c.api.Put(ctx, c.ctPath(id, "/config"), params, nil), "set onboot of container %d", id)
}

func splitTags(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == ',' || r == ' ' })
}

type ctInterface struct {
	Name   string `json:"name"`
	HWAddr string `json:"hwaddr"`
	Inet   string `json:"inet"`
	Inet6  string `json:"inet6"`
}

// Addresses implements hypervisor.Hypervisor, from the running container's
// interfaces as Proxmox reads them.
func (c *Client) Addresses(ctx context.Context, id int) ([]netip.Addr, error) {
	var ifs []ctInterface
	if err := c.api.Get(ctx, c.ctPath(id, "/interfaces"), &ifs); err != nil {
		return nil, wrap(err, "addresses of container %d", id)
	}
	var out []netip.Addr
	for _, i := range ifs {
		for _, s := range []string{i.Inet, i.Inet6} {
			p, err := netip.ParsePrefix(s)
			if err != nil || p.Addr().IsLoopback() || p.Addr().IsLinkLocalUnicast() {
				continue
			}
			out = append(out, p.Addr())
		}
	}
	return out, nil
}

// Exec implements hypervisor.Hypervisor with pct exec on the node; over
// HTTPS it fails with ErrExecNeedsNode.
func (c *Client) Exec(ctx context.Context, id int, argv []string, stdin io.Reader) (hypervisor.ExecResult, error) {
	if c.pct == "" {
		return hypervisor.ExecResult{}, fmt.Errorf("exec in container %d: %w", id, ErrExecNeedsNode)
	}
	if len(argv) == 0 {
		return hypervisor.ExecResult{}, fmt.Errorf("exec in container %d: empty command", id)
	}
	cmd := exec.CommandContext(ctx, c.pct, append([]string{"exec", strconv.Itoa(id), "--"}, argv...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		return hypervisor.ExecResult{}, fmt.Errorf("exec in container %d: %w", id, err)
	}
	return hypervisor.ExecResult{ExitCode: cmd.ProcessState.ExitCode(), Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}, nil
}
