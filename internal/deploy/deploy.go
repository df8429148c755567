// Package deploy turns validated deploy answers into a running instance:
// the slot-A container from a verified template, its data volume, an nginx
// site with TLS, all proven healthy through the edge. Every step that
// changes something is journaled with what it made before it makes it, so
// a failed, interrupted or killed run is undone — by this run, or by the
// next one from the journal.
package deploy

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/edge"
	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/manifest"
	"github.com/vkimg/vkimg/internal/registry"
	"github.com/vkimg/vkimg/internal/state"
)

// InstanceFile is the instance configuration's name in its directory.
const InstanceFile = "instance.yaml"

// InstancePath is where an instance's configuration file is: the file
// whose presence makes a directory under root an instance.
func InstancePath(root state.Root, name string) string {
	return filepath.Join(root.Instance(name), InstanceFile)
}

// ErrExists refuses a deploy over an existing instance, which is never touched.
var ErrExists = errors.New("instance already exists")

// Options are what a deploy needs besides the answers.
type Options struct {
	Root       state.Root
	Hypervisor hypervisor.Hypervisor
	Edge       *edge.Nginx
	// EdgeAddress is the address nginx listens on for the site; zero means
	// every address, and the edge is then checked on 127.0.0.1.
	EdgeAddress netip.Addr
	// Trusted is the pinned key templates must be signed with. Without it,
	// only InsecureLocal lets an unsigned local layout through.
	Trusted       *ecdsa.PublicKey
	InsecureLocal bool
	Registry      registry.Options
	Progress      io.Writer
	Terminal      bool // Progress is a terminal: show a step list with percentages
	// HealthTimeout bounds each wait for health (default 3 minutes).
	HealthTimeout time.Duration
	// DrainTimeout bounds the wait, after a flip, for requests in flight
	// on the old slot (a large upload) to finish. Default 5 minutes.
	DrainTimeout time.Duration
	Now          func() time.Time

	restore *restoreFrom // set by Restore on a node without the instance
}

// Result is what the administrator is told at the end.
type Result struct {
	Name              string
	URL               string
	Version           string
	ContainerID       int
	Address           netip.Addr
	AdminUser         string
	AdminPassword     string
	PasswordGenerated bool
	Steps             []StepTime
}

// StepTime is how long one step took.
type StepTime struct {
	Step     string
	Duration time.Duration
}

// steps is the list the administrator sees; each name is also its journal key.
var steps = []string{
	stepLock, stepTemplate, stepValidate, stepPreflight, stepAllocate, stepDataVolume,
	stepUpload, stepCreate, stepStart, stepHealthy, stepEdge, stepEdgeHealthy, stepInstance,
}

const (
	stepLock        = "lock"
	stepTemplate    = "resolve template"
	stepValidate    = "validate answers"
	stepPreflight   = "pre-flight checks"
	stepAllocate    = "allocate container IDs and addresses"
	stepDataVolume  = "prepare data volume"
	stepUpload      = "upload template"
	stepCreate      = "create container"
	stepStart       = "start container"
	stepHealthy     = "wait until healthy"
	stepEdge        = "configure nginx"
	stepEdgeHealthy = "check health through nginx over HTTPS"
	stepInstance    = "write instance configuration"
)

// run is one deploy in progress.
type run struct {
	*operation
	a *deployconfig.Answers

	img    v1.Image
	digest v1.Hash
	m      *manifest.Manifest
	min    hypervisor.Minimums
	node   hypervisor.Node
	cfg    *deployconfig.InstanceConfig
	spec   hypervisor.ContainerSpec
	addr   netip.Addr
	tmpl   hypervisor.TemplateRef
	site   edge.Site
	pinned string // the certificate file the edge must present
}

// Run deploys the instance the answers describe. Without a terminal it never
// asks: the answers must be complete (see wizard.Run). On failure or when
// ctx ends, everything this run created is removed before it returns.
func Run(ctx context.Context, a *deployconfig.Answers, o Options) (res *Result, err error) {
	if a.Name == "" {
		// Only the name is needed this early; sizes default once the
		// template's minimums are known.
		named := *a
		named.Defaults(hypervisor.Minimums{})
		a.Name = named.Name
	}
	if err := state.CheckInstanceName(a.Name); err != nil {
		return nil, &deployconfig.InvalidError{Problems: []deployconfig.Problem{{Key: "name", Reason: err.Error()}}}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.HealthTimeout == 0 {
		o.HealthTimeout = 3 * time.Minute
	}
	// Checked before any lock or log: an existing instance is not touched.
	if err := refuseExisting(o.Root, a.Name); err != nil {
		return nil, err
	}
	p, err := openProgress(o.Progress, o.Terminal, o.Root.LogFile(a.Name), len(steps))
	if err != nil {
		return nil, err
	}
	defer p.close()
	p.redact(a.Admin.Password)
	p.redact(a.Database.Password)
	r := &run{operation: &operation{o: o, name: a.Name, p: p}, a: a}
	return r.run(ctx)
}

func refuseExisting(root state.Root, name string) error {
	path := InstancePath(root, name)
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("deploy %s: %w (%s); upgrade or reconfigure it instead", name, ErrExists, path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("deploy %s: %w", name, err)
	}
	return nil
}

func (r *run) run(ctx context.Context) (*Result, error) {
	name := r.a.Name
	r.p.logf("deploy %s started", name)
	r.begin(stepLock)
	nodeLock, err := r.o.Root.NodeLock("deploy " + name)
	if err != nil {
		return nil, r.fail(fmt.Errorf("deploy %s: %w", name, err))
	}
	defer func() {
		if nodeLock != nil {
			nodeLock.Release()
		}
	}()
	instDir := r.o.Root.Instance(name)
	_, statErr := os.Stat(instDir)
	newDir := errors.Is(statErr, os.ErrNotExist)
	if err := os.MkdirAll(instDir, 0o755); err != nil { // the container reaches data/ below it
		return nil, r.fail(fmt.Errorf("deploy %s: %w", name, err))
	}
	lock, err := r.o.Root.InstanceLock(name, "deploy "+name)
	if err != nil {
		if newDir {
			os.RemoveAll(instDir)
		}
		return nil, r.fail(fmt.Errorf("deploy %s: %w", name, err))
	}
	defer lock.Release()
	// A deploy that raced us to the lock may have finished meanwhile.
	if err := refuseExisting(r.o.Root, name); err != nil {
		return nil, r.fail(err)
	}
	journal := r.o.Root.Journal(name)
	if err := r.recover(ctx, journal); err != nil {
		return nil, r.fail(err)
	}
	if r.op, err = journal.Begin("deploy", map[string]string{"name": name}); err != nil {
		return nil, r.fail(fmt.Errorf("deploy %s: %w", name, err))
	}

	err = r.steps(ctx, func() {
		nodeLock.Release()
		nodeLock = nil
	})
	if err == nil {
		r.end()
		r.op.End(state.StatusDone, nil)
		r.p.finish(fmt.Sprintf("deployed %s: %s (template %s)", name, r.cfg.URL, r.m.Version))
		return r.result(), nil
	}
	r.end()
	r.undoAll(ctx)
	r.op.End(state.StatusFailed, err)
	if newDir {
		os.RemoveAll(instDir)
	}
	return nil, r.fail(err)
}

// fail logs err with how to go on, and returns it.
func (r *run) fail(err error) error {
	if r.current != "" {
		err = fmt.Errorf("%s: %w", r.current, err)
	}
	r.p.logf("failed: %v", err)
	r.p.logf("everything this run created was removed; fix the cause and run the same command again (log: %s)", r.o.Root.LogFile(r.a.Name))
	return err
}

func (r *run) steps(ctx context.Context, allocated func()) error {
	a := r.a
	r.begin(stepTemplate)
	if err := r.resolveTemplate(ctx); err != nil {
		return err
	}
	r.begin(stepValidate)
	a.Defaults(r.min)
	if err := a.ReadSecrets(); err != nil {
		return err
	}
	r.p.redact(a.Admin.Password)
	r.p.redact(a.Database.Password)
	ps := a.Validate(ctx, deployconfig.Checks{Min: r.min, Now: r.o.Now, ReplaceDatabase: r.o.restore != nil})
	for _, w := range ps.Warnings() {
		r.p.logf("warning: %s", w)
	}
	if err := ps.Err(); err != nil {
		return err
	}
	r.begin(stepPreflight)
	cluster, err := r.o.Hypervisor.Cluster(ctx)
	if err != nil {
		return err
	}
	if err := r.preflight(cluster); err != nil {
		return err
	}
	r.begin(stepAllocate)
	if err := r.allocate(ctx, cluster); err != nil {
		return err
	}
	r.begin(stepDataVolume)
	if err := r.dataVolume(ctx); err != nil {
		return err
	}
	r.begin(stepUpload)
	if err := r.upload(ctx); err != nil {
		return err
	}
	r.begin(stepCreate)
	id := strconv.Itoa(r.spec.ID)
	if err := r.creating(stepCreate, map[string]string{"id": id}); err != nil {
		return err
	}
	if err := r.o.Hypervisor.Create(ctx, r.spec); err != nil {
		return fmt.Errorf("create container %d: %w", r.spec.ID, err)
	}
	if err := r.created(stepCreate, map[string]string{"id": id}); err != nil {
		return err
	}
	r.p.logf("container %d (%s) created at %s", r.spec.ID, r.spec.Hostname, r.spec.Net.Address)
	// The container now holds its ID and address in the cluster: other
	// deploys may allocate.
	allocated()
	r.begin(stepStart)
	if err := r.o.Hypervisor.Start(ctx, r.spec.ID); err != nil {
		return fmt.Errorf("start container %d: %w", r.spec.ID, err)
	}
	r.begin(stepHealthy)
	if err := r.waitDirect(ctx); err != nil {
		return err
	}
	r.begin(stepEdge)
	if err := r.applyEdge(ctx); err != nil {
		return err
	}
	r.begin(stepEdgeHealthy)
	if err := r.waitEdge(ctx); err != nil {
		return err
	}
	r.begin(stepInstance)
	// The last chance to honour Ctrl+C: once instance.yaml exists the
	// instance is deployed and a rerun would refuse to touch it.
	if err := ctx.Err(); err != nil {
		return err
	}
	path := InstancePath(r.o.Root, a.Name)
	if err := deployconfig.WriteInstance(path, r.cfg); err != nil {
		return err
	}
	r.p.logf("instance configuration written to %s", path)
	return nil
}

func (r *run) result() *Result {
	if r.o.restore != nil { // the admin's password is the one in the restored database
		r.a.Admin.Password, r.a.Admin.PasswordGenerated = "", false
	}
	return &Result{
		Name: r.a.Name, URL: r.cfg.URL, Version: r.m.Version,
		ContainerID: r.spec.ID, Address: r.addr,
		AdminUser: r.a.Admin.Username, AdminPassword: r.a.Admin.Password,
		PasswordGenerated: r.a.Admin.PasswordGenerated,
		Steps:             r.times,
	}
}

// recover undoes what a killed deploy of this instance left, from its journal.
func (r *run) recover(ctx context.Context, j *state.Journal) error {
	p, err := j.Pending()
	if err != nil || p == nil {
		return err
	}
	if p.Op != "deploy" {
		return fmt.Errorf("an unfinished %s of %s is in its journal: finish it first", p.Op, r.a.Name)
	}
	r.p.logf("undoing the interrupted deploy %s", p.ID)
	op := j.Resume(p)
	left := begun(p)
	for _, m := range slices.Backward(left) {
		r.undoStep(ctx, op, m.step, m.data)
	}
	return op.End(state.StatusFailed, errors.New("interrupted; undone by the next deploy"))
}

// undo reverts one journaled step: what a deploy made, or what an upgrade
// or rollback changed. Each is idempotent, so a journal replayed twice
// does no harm.
func (r *operation) undo(ctx context.Context, step string, data map[string]string) error {
	switch step {
	case stepCreate:
		id, err := strconv.Atoi(data["id"])
		if err != nil {
			return fmt.Errorf("journal: container id %q: %w", data["id"], err)
		}
		if _, err := r.o.Hypervisor.Status(ctx, id); errors.Is(err, hypervisor.ErrNotFound) {
			return nil
		}
		if err := r.halt(ctx, id); err != nil {
			return err
		}
		return r.o.Hypervisor.Destroy(ctx, id)
	case stepEdge:
		return r.o.Edge.Remove(ctx, data["instance"])
	case stepDataVolume:
		return os.RemoveAll(data["path"])
	}
	plan, err := decode[upgradePlan](data, "plan")
	if err != nil {
		return err
	}
	switch step {
	case stepMigrate:
		if err := r.stopSlot(ctx, plan.To.ID); err != nil {
			return err
		}
		return r.restoreIfMigrated(ctx, plan)
	case stepFlip:
		if err := r.startSlot(ctx, plan.From); err != nil {
			return err
		}
		cfg, err := readInstance(r.o.Root, plan.Instance)
		if err != nil {
			return err
		}
		return r.flip(ctx, cfg, plan.From)
	case stepStopOld:
		if err := r.startSlot(ctx, plan.From); err != nil {
			return err
		}
		return r.bootWith(ctx, plan.From.ID, plan.To.ID)
	case stepStopNew:
		return r.startSlot(ctx, plan.From)
	case stepStartPrev:
		return r.stopSlot(ctx, plan.To.ID)
	}
	return fmt.Errorf("journal: unknown step %q", step)
}
