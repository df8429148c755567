// Package hypervisor is the seam between vkimg and whatever runs its
// containers: Proxmox VE (through its API or the node's pvesh) or plain LXC.
// Everything above this package speaks only these types, so the same deploy,
// upgrade and rollback code runs against a real node, the Proxmox API
// simulator and the local LXC backend.
package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"
)

// Hypervisor is what vkimg needs from a container host.
type Hypervisor interface {
	// NextID returns a container ID no container in the cluster uses.
	NextID(ctx context.Context) (int, error)
	// Cluster describes every node, storage and container the host knows,
	// including the addresses containers use, for conflict checks.
	Cluster(ctx context.Context) (Cluster, error)

	// TemplateStored reports whether a template file is already on storage.
	TemplateStored(ctx context.Context, storage, name string) (bool, error)
	// UploadTemplate stores a template file (plain rootfs .tar.zst or an OCI
	// archive) under name on storage. It is atomic: on error nothing is left.
	UploadTemplate(ctx context.Context, storage, name string, r io.Reader, size int64) error

	// Create makes a stopped container from spec. It validates spec first
	// and, on failure, removes everything it made.
	Create(ctx context.Context, spec ContainerSpec) error
	Start(ctx context.Context, id int) error
	// Shutdown asks the container's init to stop and waits up to timeout,
	// then stops it hard.
	Shutdown(ctx context.Context, id int, timeout time.Duration) error
	Stop(ctx context.Context, id int) error
	// Destroy removes a stopped container, its rootfs and its config.
	// Bind-mounted data volumes are never touched.
	Destroy(ctx context.Context, id int) error
	Status(ctx context.Context, id int) (ContainerStatus, error)
	// SetOnBoot sets whether the container starts when the node boots.
	SetOnBoot(ctx context.Context, id int, on bool) error
	// Addresses lists the container's IP addresses (not loopback).
	Addresses(ctx context.Context, id int) ([]netip.Addr, error)
	// Exec runs argv inside a running container. Only for what nothing
	// else can do: the Proxmox API has no exec, so it needs the node.
	Exec(ctx context.Context, id int, argv []string, stdin io.Reader) (ExecResult, error)
}

// ErrNotFound is returned (wrapped) when a container ID does not exist.
var ErrNotFound = errors.New("container not found")

// ErrInvalidSpec is returned (wrapped) when a ContainerSpec is refused
// before any change was made.
var ErrInvalidSpec = errors.New("invalid container spec")

// TemplateRef names the template a container is created from.
type TemplateRef struct {
	// Storage and Name locate a template uploaded with UploadTemplate
	// (Proxmox volid "<storage>:vztmpl/<name>").
	Storage string
	Name    string
}

// Net is the container's single network interface (eth0).
type Net struct {
	Bridge string
	// Address is the static address with its prefix length; invalid (zero)
	// means DHCP.
	Address netip.Prefix
	Gateway netip.Addr
	// HWAddr is optional; backends generate a stable 00:16:3e address.
	HWAddr string
}

// DHCP reports whether the interface takes its address from DHCP.
func (n Net) DHCP() bool { return !n.Address.IsValid() }

// Mount is a host directory bind-mounted into the container.
type Mount struct {
	HostPath string
	Path     string // inside the container
	ReadOnly bool
}

// ContainerSpec is everything needed to create a container. Containers are
// always unprivileged: there is deliberately no way to ask otherwise.
type ContainerSpec struct {
	ID int
	// Node is the node to create the container on; empty means the
	// cluster's only node.
	Node        string
	Hostname    string
	Template    TemplateRef
	Cores       int
	MemoryMB    int
	SwapMB      int
	RootfsGB    int
	Storage     string // rootfs storage
	Net         Net
	OnBoot      bool
	Tags        []string
	Description string
	Mounts      []Mount
	// Min is the template's minimum resources (from its manifest); a spec
	// below it is refused before any call.
	Min Minimums
}

// Minimums are the least resources a template needs.
type Minimums struct {
	Cores    int
	MemoryMB int
	RootfsGB int
}

// State is a container's run state as Proxmox reports it.
type State string

const (
	StateRunning State = "running"
	StateStopped State = "stopped"
)

// ContainerStatus is what Status returns.
type ContainerStatus struct {
	ID       int
	Name     string
	Node     string
	State    State
	Uptime   time.Duration
	MemoryMB int // used
	MaxMemMB int
	Cores    int
	Tags     []string
	OnBoot   bool
}

// ExecResult is the outcome of Exec.
type ExecResult struct {
	ExitCode int
	Stdout   []byte
	Stderr   []byte
}

// Cluster is a snapshot of the whole cluster's resources.
type Cluster struct {
	Version    string // e.g. "8.2.4"; empty for plain LXC
	Nodes      []Node
	Containers []Container
}

// Node is one cluster node.
type Node struct {
	Name       string
	Online     bool
	Cores      int
	CPUUsage   float64 // 0..1
	MemTotalMB int
	MemFreeMB  int
	Storages   []Storage
	Bridges    []Bridge
}

// Storage is one storage on a node.
type Storage struct {
	Name    string
	Content []string // "rootdir", "vztmpl", "backup", ...
	TotalMB int64
	FreeMB  int64
	Active  bool
	Shared  bool
	Type    string
}

// Bridge is a network bridge on a node with the subnet it serves.
type Bridge struct {
	Name   string
	Prefix netip.Prefix // the bridge's own address and subnet, if any
}

// Container is one container anywhere in the cluster.
type Container struct {
	ID        int
	Name      string
	Node      string
	State     State
	Tags      []string
	Addresses []netip.Addr // configured static addresses and, when running, the live ones
	HWAddrs   []string
}

// UploadFile stores the template file at path on storage as name, unless a
// template of that name is already there.
func UploadFile(ctx context.Context, h Hypervisor, storage, name, path string) error {
	if stored, err := h.TemplateStored(ctx, storage, name); err != nil || stored {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("upload template: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("upload template: %w", err)
	}
	return h.UploadTemplate(ctx, storage, name, f, fi.Size())
}
