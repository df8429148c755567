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
	Now           func() time.Time
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
	o       Options
	a       *deployconfig.Answers
	p       *progress
	op      *state.Operation
	made    []made // undone in reverse order on failure
	times   []StepTime
	current string
	started time.Time

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

// made is one thing this run created, as journaled.
type made struct {
	step string
	data map[string]string
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
	r := &run{o: o, a: a, p: p}
	return r.run(ctx)
}

func refuseExisting(root state.Root, name string) error {
	path := filepath.Join(root.Instance(name), InstanceFile)
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

// begin starts a step of the list and times the previous one.
func (r *run) begin(step string) {
	r.end()
	r.current, r.started = step, time.Now()
	r.p.step(step)
}

func (r *run) end() {
	if r.current != "" {
		r.times = append(r.times, StepTime{Step: r.current, Duration: time.Since(r.started)})
	}
}

// creating journals what step is about to make, before making it: a run
// killed halfway leaves a record of everything that may exist.
func (r *run) creating(step string, data map[string]string) error {
	if err := r.op.Step(step, state.StatusBegin, data); err != nil {
		return err
	}
	r.made = append(r.made, made{step, data})
	return nil
}

func (r *run) created(step string, data map[string]string) error {
	return r.op.Step(step, state.StatusDone, data)
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
	ps := a.Validate(ctx, deployconfig.Checks{Min: r.min, Now: r.o.Now})
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
	if err := r.dataVolume(); err != nil {
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
	path := filepath.Join(r.o.Root.Instance(a.Name), InstanceFile)
	if err := deployconfig.WriteInstance(path, r.cfg); err != nil {
		return err
	}
	r.p.logf("instance configuration written to %s", path)
	return nil
}

func (r *run) result() *Result {
	return &Result{
		Name: r.a.Name, URL: r.cfg.URL, Version: r.m.Version,
		ContainerID: r.spec.ID, Address: r.addr,
		AdminUser: r.a.Admin.Username, AdminPassword: r.a.Admin.Password,
		PasswordGenerated: r.a.Admin.PasswordGenerated,
		Steps:             r.times,
	}
}

// undoAll removes what this run made, newest first. It runs on its own
// context: an interrupt must not also interrupt the cleanup.
func (r *run) undoAll(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	for _, m := range slices.Backward(r.made) {
		r.undoStep(ctx, r.op, m.step, m.data)
	}
}

func (r *run) undoStep(ctx context.Context, op *state.Operation, step string, data map[string]string) {
	if err := undo(ctx, r.o, step, data); err != nil {
		r.p.logf("undo %s: %v (remove it by hand)", step, err)
		return
	}
	r.p.logf("undone: %s %v", step, data)
	op.Step(step, state.StatusUndone, data)
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
	var left []made
	for _, e := range p.Steps {
		switch e.Status {
		case state.StatusBegin:
			left = append(left, made{e.Step, e.Data})
		case state.StatusUndone:
			left = slices.DeleteFunc(left, func(m made) bool { return m.step == e.Step })
		}
	}
	for _, m := range slices.Backward(left) {
		r.undoStep(ctx, op, m.step, m.data)
	}
	return op.End(state.StatusFailed, errors.New("interrupted; undone by the next deploy"))
}

// undo removes one thing a deploy step made. Each is idempotent, so a
// journal replayed twice does no harm.
func undo(ctx context.Context, o Options, step string, data map[string]string) error {
	switch step {
	case stepCreate:
		id, err := strconv.Atoi(data["id"])
		if err != nil {
			return fmt.Errorf("journal: container id %q: %w", data["id"], err)
		}
		st, err := o.Hypervisor.Status(ctx, id)
		if errors.Is(err, hypervisor.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if st.State == hypervisor.StateRunning {
			if err := o.Hypervisor.Stop(ctx, id); err != nil {
				return err
			}
		}
		return o.Hypervisor.Destroy(ctx, id)
	case stepEdge:
		return o.Edge.Remove(ctx, data["instance"])
	case stepDataVolume:
		return os.RemoveAll(data["path"])
	}
	return fmt.Errorf("journal: unknown step %q", step)
}
