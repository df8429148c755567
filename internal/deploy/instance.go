package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/vkimg/vkimg/internal/backup"
	"github.com/vkimg/vkimg/internal/datavol"
	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/edge"
	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/manifest"
	"github.com/vkimg/vkimg/internal/ociimage"
	"github.com/vkimg/vkimg/internal/state"
)

// ErrNoInstance is returned (wrapped) when a command names an instance this
// node does not have.
var ErrNoInstance = errors.New("no such instance")

// instanceRun is an operation on a deployed instance: upgrade, rollback,
// backup, restore. It holds the instance's lock for its whole life.
type instanceRun struct {
	*operation
	cfg  *deployconfig.InstanceConfig
	lock *state.Lock
}

// openInstance reads the instance's configuration, opens its log, takes its
// lock (refused while another command holds it) and finishes or undoes what
// a killed command left in its journal. The caller must close it.
func openInstance(ctx context.Context, o Options, name, command string, total int) (*instanceRun, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.HealthTimeout == 0 {
		o.HealthTimeout = 3 * time.Minute
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = 5 * time.Minute
	}
	if err := state.CheckInstanceName(name); err != nil {
		return nil, fmt.Errorf("%s: %w", command, err)
	}
	if _, err := readInstance(o.Root, name); err != nil {
		return nil, err
	}
	p, err := openProgress(o.Progress, o.Terminal, o.Root.LogFile(name), total)
	if err != nil {
		return nil, err
	}
	r := &instanceRun{operation: &operation{o: o, name: name, p: p}}
	r.p.logf("%s started", command)
	r.begin(stepLock)
	if r.lock, err = o.Root.InstanceLock(name, command); err != nil {
		p.close()
		return nil, err
	}
	if r.cfg, err = readInstance(o.Root, name); err != nil {
		r.close()
		return nil, err
	}
	if err := r.recover(ctx); err != nil {
		r.close()
		return nil, err
	}
	// Read again under the lock: the command that held it may have
	// changed the instance.
	if r.cfg, err = readInstance(o.Root, name); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *instanceRun) close() {
	r.lock.Release()
	r.p.close()
}

func readInstance(root state.Root, name string) (*deployconfig.InstanceConfig, error) {
	path := InstancePath(root, name)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("instance %s: %w on this node (`vkimg list` shows them)", name, ErrNoInstance)
	}
	return deployconfig.ReadInstance(path)
}

func (r *instanceRun) writeInstance() error {
	return deployconfig.WriteInstance(InstancePath(r.o.Root, r.name), r.cfg)
}

// recover finishes or undoes the operation a killed command left
// unfinished, so that every command starts from a settled instance.
func (r *instanceRun) recover(ctx context.Context) error {
	j := r.o.Root.Journal(r.name)
	p, err := j.Pending()
	if err != nil || p == nil {
		return err
	}
	r.p.logf("an interrupted %s (%s, started %s) is in the journal: settling it first", p.Op, p.ID, p.Begin.Time.Format(time.RFC3339))
	op := j.Resume(p)
	ctx = context.WithoutCancel(ctx)
	switch p.Op {
	case opDeploy:
		// instance.yaml is the deploy's last step: the deploy finished.
		return op.End(state.StatusDone, nil)
	case opUpgrade:
		return r.recoverUpgrade(ctx, op, p)
	case opRollback, opRestore:
		return r.recoverSwap(ctx, op, p)
	}
	return fmt.Errorf("journal: unknown operation %q in progress; see %s", p.Op, r.o.Root.LogFile(r.name))
}

// resume makes op, found pending in the journal, the one this run records
// to, and returns its plan and how to switch back.
func (r *instanceRun) resume(op *state.Operation, p *state.Pending) (upgradePlan, func(), error) {
	plan, err := planOf(p)
	if err != nil {
		return plan, nil, err
	}
	saved := r.op
	r.op = op
	return plan, func() { r.op = saved }, nil
}

// Operations recorded in the journal.
const (
	opDeploy   = "deploy"
	opUpgrade  = "upgrade"
	opRollback = "rollback"
	opRestore  = "restore"
)

// slotState is one slot as an operation needs it, journaled as JSON so a
// later command can finish or undo the operation from the journal alone.
type slotState struct {
	Slot    string `json:"slot"`
	ID      int    `json:"id"`
	Address string `json:"address,omitempty"`
	Version string `json:"version"`
	Digest  string `json:"digest"`
}

func (r *instanceRun) slotState(name string) (slotState, error) {
	s, err := r.cfg.Slots.Slot(name)
	if err != nil {
		return slotState{}, err
	}
	return slotState{Slot: name, ID: s.ID, Address: s.Address, Version: s.Version, Digest: s.Digest}, nil
}

func (s slotState) addr() (netip.Addr, error) {
	p, err := netip.ParsePrefix(s.Address)
	if err == nil {
		return p.Addr(), nil
	}
	a, err := netip.ParseAddr(s.Address)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("slot %s address %q: %w", s.Slot, s.Address, err)
	}
	return a, nil
}

// encode journals a plain struct (which always marshals).
func encode(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func decode[T any](data map[string]string, key string) (T, error) {
	var v T
	if err := json.Unmarshal([]byte(data[key]), &v); err != nil {
		return v, fmt.Errorf("journal: %s: %w", key, err)
	}
	return v, nil
}

// manifestOf returns the manifest of a template already used on this node,
// from the verified cache or the local template layout.
func manifestOf(root state.Root, digest string) (*manifest.Manifest, error) {
	h, err := v1.NewHash(digest)
	if err != nil {
		return nil, fmt.Errorf("template digest %q: %w", digest, err)
	}
	for _, dir := range []string{root.Cache(), root.Templates()} {
		img, err := layout.Path(dir).Image(h)
		if err != nil {
			continue
		}
		if m, err := ociimage.ManifestOf(img); err == nil {
			return m, nil
		}
	}
	return nil, fmt.Errorf("template %s is no longer in %s or %s", digest, root.Cache(), root.Templates())
}

// settings reads the instance's Vikunja settings (database credentials
// included) from its data volume, and redacts the secrets from the log.
func (r *operation) settings() (datavol.Settings, error) {
	s, err := datavol.ReadSettings(r.o.Root.DataVolume(r.name))
	if err != nil {
		return s, err
	}
	r.p.redact(s.Database.Password)
	r.p.redact(s.Secret)
	return s, nil
}

// running reports whether container id runs.
func (r *operation) running(ctx context.Context, id int) (bool, error) {
	st, err := r.o.Hypervisor.Status(ctx, id)
	if errors.Is(err, hypervisor.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("container %d: %w", id, err)
	}
	return st.State == hypervisor.StateRunning, nil
}

// exists reports whether container id exists.
func (r *operation) exists(ctx context.Context, id int) bool {
	_, err := r.o.Hypervisor.Status(ctx, id)
	return err == nil
}

// startSlot starts a slot's container (if it is not running) and waits
// until it is healthy with the version it should run.
func (r *operation) startSlot(ctx context.Context, s slotState) error {
	up, err := r.running(ctx, s.ID)
	if err != nil {
		return err
	}
	if !up {
		if err := r.o.Hypervisor.Start(ctx, s.ID); err != nil {
			return fmt.Errorf("start container %d: %w", s.ID, err)
		}
	}
	m, addr, err := s.running(r.o.Root)
	if err != nil {
		return err
	}
	return r.waitHealthy(ctx, s.ID, addr, m)
}

// running is what the slot runs (its template's manifest) and where.
func (s slotState) running(root state.Root) (*manifest.Manifest, netip.Addr, error) {
	m, err := manifestOf(root, s.Digest)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	addr, err := s.addr()
	return m, addr, err
}

// stopSlot shuts a slot's container down (SIGINT to Vikunja: requests in
// flight finish) if it runs.
func (r *operation) stopSlot(ctx context.Context, id int) error {
	up, err := r.running(ctx, id)
	if err != nil || !up {
		return err
	}
	if err := r.o.Hypervisor.Shutdown(ctx, id, stopTimeout); err != nil {
		return fmt.Errorf("stop container %d: %w", id, err)
	}
	return nil
}

// halt stops a slot's container at once if it runs.
func (r *operation) halt(ctx context.Context, id int) error {
	up, err := r.running(ctx, id)
	if err != nil || !up {
		return err
	}
	if err := r.o.Hypervisor.Stop(ctx, id); err != nil {
		return fmt.Errorf("stop container %d: %w", id, err)
	}
	return nil
}

// stopTimeout bounds a slot's shutdown: Vikunja drains for up to 10 s.
const stopTimeout = 30 * time.Second

// bootWith makes the active slot, and only it, start with the node.
func (r *operation) bootWith(ctx context.Context, active, idle int) error {
	if err := r.o.Hypervisor.SetOnBoot(ctx, active, true); err != nil {
		return fmt.Errorf("container %d: start on boot: %w", active, err)
	}
	if idle != 0 {
		if err := r.o.Hypervisor.SetOnBoot(ctx, idle, false); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
			return fmt.Errorf("container %d: do not start on boot: %w", idle, err)
		}
	}
	return nil
}

// flip points the instance's nginx site at a slot and proves it answers.
func (r *operation) flip(ctx context.Context, cfg *deployconfig.InstanceConfig, s slotState) error {
	m, addr, err := s.running(r.o.Root)
	if err != nil {
		return err
	}
	up := upstreamFor(cfg, s.Slot, addr, m)
	if err := r.o.Edge.Flip(ctx, cfg.Name, up); err != nil {
		return fmt.Errorf("nginx: send %s to slot %s: %w", cfg.Name, s.Slot, err)
	}
	r.p.logf("nginx sends %s to slot %s (container %d, %s)", cfg.Domain, s.Slot, s.ID, s.Version)
	return nil
}

// restoreBackup brings the data volume (and an external database) back to
// an archive, with every container of the instance stopped: nothing may
// write while the data is replaced.
func (r *operation) restoreBackup(ctx context.Context, archive string, ids ...int) error {
	for _, id := range ids {
		if err := r.stopSlot(ctx, id); err != nil {
			return err
		}
	}
	if _, err := backup.Restore(ctx, archive, backup.Target{DataVolume: r.o.Root.DataVolume(r.name), IDBase: hypervisor.IDMapBase}); err != nil {
		return fmt.Errorf("restore %s: %w", archive, err)
	}
	r.p.logf("data restored from %s", archive)
	return nil
}

// siteOf is the instance's site as the edge serves it now.
func (r *operation) siteOf(ctx context.Context) (edge.Site, error) {
	sites, err := r.o.Edge.Sites(ctx)
	if err != nil {
		return edge.Site{}, err
	}
	for _, s := range sites {
		if s.Instance == r.name {
			return s, nil
		}
	}
	return edge.Site{}, fmt.Errorf("nginx: %w %s", edge.ErrNotFound, r.name)
}

func itoa(i int) string { return strconv.Itoa(i) }

// fail logs err with the step it happened in, and returns it.
func (r *instanceRun) fail(err error) error {
	if r.current != "" {
		err = fmt.Errorf("%s: %w", r.current, err)
	}
	r.p.logf("failed: %v (log: %s)", err, r.o.Root.LogFile(r.name))
	return err
}
