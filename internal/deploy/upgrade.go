package deploy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/Masterminds/semver/v3"

	"github.com/vkimg/vkimg/internal/backup"
	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/manifest"
	"github.com/vkimg/vkimg/internal/registry"
	"github.com/vkimg/vkimg/internal/state"
)

// UpgradeOptions are what an upgrade needs besides the deploy options.
type UpgradeOptions struct {
	Options
	// To is a version or channel to upgrade to instead of the instance's
	// own channel (instance.yaml template.version).
	To string
}

// UpgradeResult says what an upgrade did, or (Check) would do.
type UpgradeResult struct {
	Name        string     `json:"name"`
	From        string     `json:"from"`
	To          string     `json:"to"`
	UpToDate    bool       `json:"upToDate"`
	Migrations  []string   `json:"migrations"` // schema migrations the new version adds
	Backup      string     `json:"backup,omitempty"`
	Slot        string     `json:"slot,omitempty"` // the slot serving after the upgrade
	ContainerID int        `json:"containerId,omitempty"`
	Steps       []StepTime `json:"-"`
}

// RolledBackError is an upgrade that failed and was rolled back: the old
// version serves again and the data is as it was.
type RolledBackError struct {
	Step     string
	Err      error
	Version  string // the version serving again
	Restored string // the backup restored because the database had migrated, if any
	Log      string
}

func (e *RolledBackError) Error() string {
	msg := fmt.Sprintf("upgrade failed at %q: %v\nrolled back: version %s serves again", e.Step, e.Err, e.Version)
	if e.Restored != "" {
		msg += fmt.Sprintf(", its data restored from the pre-upgrade backup %s", e.Restored)
	}
	return msg + fmt.Sprintf("\nlog (with the new version's service logs): %s", e.Log)
}

func (e *RolledBackError) Unwrap() error { return e.Err }

const (
	stepLatest     = "find the newest template"
	stepBackup     = "back up with the running version"
	stepClearIdle  = "remove the container kept for the previous rollback"
	stepMigrate    = "start the new version (it migrates the database)"
	stepFlip       = "switch nginx to the other slot"
	stepDrain      = "let requests in flight on the previous slot finish"
	stepStopOld    = "stop the previous slot (kept for rollback)"
	minFreeUpgrade = 2 << 30 // bytes free for the pre-upgrade backup and the new container
)

var upgradeSteps = []string{
	stepLock, stepLatest, stepPreflight, stepBackup, stepClearIdle, stepUpload, stepCreate,
	stepMigrate, stepHealthy, stepFlip, stepEdgeHealthy, stepDrain, stepStopOld, stepInstance,
}

// upgradePlan is an upgrade as journaled: enough for a later command to
// finish it or undo it from the journal alone.
type upgradePlan struct {
	Instance   string    `json:"instance"`
	From       slotState `json:"from"`
	To         slotState `json:"to"`
	Migrations []string  `json:"migrations,omitempty"`
	// Backup is the archive taken with the old version; DBMigrations the
	// migrations its database had, to tell whether the new version changed
	// the schema before it was rolled back.
	Backup       string   `json:"backup,omitempty"`
	DBMigrations []string `json:"dbMigrations,omitempty"`
	// RestoreBackup: a rollback across schema migrations, or a restore,
	// brings Backup back before To starts.
	RestoreBackup bool `json:"restoreBackup,omitempty"`
}

func (p upgradePlan) data() map[string]string {
	return map[string]string{"instance": p.Instance, "plan": encode(p)}
}

// planOf reads the newest plan a journaled upgrade recorded.
func planOf(p *state.Pending) (upgradePlan, error) {
	for _, e := range slices.Backward(append([]state.Entry{p.Begin}, p.Steps...)) {
		if _, ok := e.Data["plan"]; ok {
			return decode[upgradePlan](e.Data, "plan")
		}
	}
	return upgradePlan{}, errors.New("journal: the upgrade recorded no plan")
}

// CheckUpgrade reports what `vkimg upgrade` would do without changing
// anything or taking the instance's lock.
func CheckUpgrade(ctx context.Context, name string, o UpgradeOptions) (*UpgradeResult, error) {
	cfg, err := readInstance(o.Root, name)
	if err != nil {
		return nil, err
	}
	active, err := cfg.Slots.Slot(cfg.Slots.Active)
	if err != nil {
		return nil, err
	}
	r := &operation{o: o.Options, name: name, p: nil}
	tag, err := r.latest(ctx, cfg, o.To)
	if err != nil {
		return nil, err
	}
	info, err := registry.Inspect(ctx, templateRef(o.Root, cfg.Template.Source, tag), o.Registry, o.Trusted)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", tag, err)
	}
	res := &UpgradeResult{Name: name, From: active.Version, To: info.Manifest.Version}
	if res.UpToDate = upToDate(active, info.Digest.String(), info.Manifest.Version); res.UpToDate {
		return res, nil
	}
	res.Migrations, err = newMigrations(o.Root, active.Digest, info.Manifest)
	return res, err
}

// Upgrade moves an instance to the newest template of its channel with no
// downtime: the new version starts in the idle slot on the same data
// volume after a backup taken with the old version, is health-checked,
// and nginx flips to it; the old version finishes its requests in flight
// and is kept, stopped, for `vkimg rollback`. Any failure rolls back
// automatically (RolledBackError).
func Upgrade(ctx context.Context, name string, o UpgradeOptions) (*UpgradeResult, error) {
	r, err := openInstance(ctx, o.Options, name, "upgrade "+name, len(upgradeSteps))
	if err != nil {
		return nil, err
	}
	defer r.close()
	u := &upgrade{instanceRun: r}
	return u.run(ctx, o.To)
}

type upgrade struct{ *instanceRun }

func (u *upgrade) run(ctx context.Context, to string) (*UpgradeResult, error) {
	cfg := u.cfg
	from, err := u.slotState(cfg.Slots.Active)
	if err != nil {
		return nil, u.fail(err)
	}
	u.begin(stepLatest)
	tag, err := u.latest(ctx, cfg, to)
	if err != nil {
		return nil, u.fail(err)
	}
	t, err := u.template(ctx, cfg.Template.Source, tag)
	if err != nil {
		return nil, u.fail(err)
	}
	res := &UpgradeResult{Name: u.name, From: from.Version, To: t.m.Version}
	active, _ := cfg.Slots.Slot(cfg.Slots.Active)
	if upToDate(active, t.digest.String(), t.m.Version) {
		res.UpToDate, res.To = true, from.Version
		u.end()
		u.p.finish(fmt.Sprintf("%s is up to date: version %s (%s)", u.name, from.Version, from.Digest))
		return res, nil
	}
	if res.Migrations, err = newMigrations(u.o.Root, from.Digest, t.m); err != nil {
		return nil, u.fail(err)
	}
	u.p.logf("upgrade %s: %s → %s; %s", u.name, from.Version, t.m.Version, describeMigrations(res.Migrations))
	u.begin(stepPreflight)
	if err := u.preflight(ctx, t, from); err != nil {
		return nil, u.fail(err)
	}
	idle := cfg.Slots.Idle()
	toSlot, err := u.slotState(idle)
	if err != nil {
		return nil, u.fail(err)
	}
	plan := upgradePlan{Instance: u.name, From: from, Migrations: res.Migrations,
		To: slotState{Slot: idle, ID: toSlot.ID, Version: t.m.Version, Digest: t.digest.String()}}
	if !cfg.Network.DHCP {
		plan.To.Address = toSlot.Address
	}
	if u.op, err = u.o.Root.Journal(u.name).Begin(opUpgrade, plan.data()); err != nil {
		return nil, u.fail(err)
	}
	err = u.steps(ctx, t, &plan)
	if err == nil {
		u.end()
		u.op.End(state.StatusDone, nil)
		u.p.finish(fmt.Sprintf("upgraded %s to %s: %s (slot %s; %s kept stopped for `vkimg rollback`)", u.name, t.m.Version, cfg.URL, idle, from.Version))
		res.Backup, res.Slot, res.ContainerID, res.Steps = plan.Backup, idle, plan.To.ID, u.times
		return res, nil
	}
	return nil, u.rollBack(ctx, err, plan)
}

// rollBack undoes a failed upgrade: the old version serves again, and if
// the new one had already migrated the database, the pre-upgrade backup is
// restored.
func (u *upgrade) rollBack(ctx context.Context, cause error, plan upgradePlan) error {
	step := u.current
	u.end()
	u.p.logf("upgrade failed at %q: %v", step, cause)
	u.p.logf("rolling back to %s", plan.From.Version)
	u.serviceLogs(ctx, plan.To.ID)
	u.undoAll(ctx)
	e := &RolledBackError{Step: step, Err: cause, Version: plan.From.Version, Log: u.o.Root.LogFile(u.name)}
	entries, _ := u.o.Root.Journal(u.name).Entries()
	for _, en := range entries {
		if en.OpID == u.op.ID && en.Step == stepRestored {
			e.Restored = en.Data["archive"]
		}
	}
	u.op.End(state.StatusFailed, cause)
	u.p.logf("rolled back: %s serves again; fix the cause and run `vkimg upgrade %s` again", plan.From.Version, u.name)
	return e
}

// serviceLogs copies the new version's service logs into the instance log
// before its container is removed: they say why it failed.
func (u *upgrade) serviceLogs(ctx context.Context, id int) {
	if up, err := u.running(ctx, id); err != nil || !up {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	res, err := u.o.Hypervisor.Exec(ctx, id, []string{"journalctl", "--no-pager", "-n", "40", "-u", "vikunja.service", "-u", "vkimg-firstboot.service"}, nil)
	if err != nil {
		u.p.logf("service logs of container %d: %v", id, err)
		return
	}
	for _, line := range strings.Split(strings.TrimSpace(string(res.Stdout)), "\n") {
		u.p.logf("container %d: %s", id, line)
	}
}

func (u *upgrade) steps(ctx context.Context, t *resolved, plan *upgradePlan) error {
	cfg := u.cfg
	u.begin(stepBackup)
	if err := u.backup(ctx, plan); err != nil {
		return err
	}
	u.begin(stepClearIdle)
	if err := u.clearIdle(ctx, plan.To.Slot); err != nil {
		return err
	}
	u.begin(stepUpload)
	tmpl := templateFile(cfg.Storage.Template, t.m, t.digest)
	if err := u.uploadTemplate(ctx, tmpl, t.img); err != nil {
		return err
	}
	u.begin(stepCreate)
	if err := u.createSlot(ctx, t, tmpl, plan); err != nil {
		return err
	}
	u.begin(stepMigrate)
	if err := u.creating(stepMigrate, plan.data()); err != nil {
		return err
	}
	if err := u.o.Hypervisor.Start(ctx, plan.To.ID); err != nil {
		return fmt.Errorf("start container %d: %w", plan.To.ID, err)
	}
	u.begin(stepHealthy)
	if cfg.Network.DHCP {
		addr, err := u.dhcpAddress(ctx, plan.To.ID)
		if err != nil {
			return err
		}
		plan.To.Address = addr.String()
	}
	addr, err := plan.To.addr()
	if err != nil {
		return err
	}
	if err := u.waitHealthy(ctx, plan.To.ID, addr, t.m); err != nil {
		return err
	}
	if err := u.created(stepMigrate, plan.data()); err != nil {
		return err
	}
	u.begin(stepFlip)
	if err := u.creating(stepFlip, plan.data()); err != nil {
		return err
	}
	if err := u.flip(ctx, cfg, plan.To); err != nil {
		return err
	}
	if err := u.created(stepFlip, plan.data()); err != nil {
		return err
	}
	return u.finish(ctx, *plan, t.m, u.record(*plan))
}

// record is what instance.yaml keeps of an upgrade for `vkimg rollback`.
func (u *instanceRun) record(plan upgradePlan) *deployconfig.Upgrade {
	return &deployconfig.Upgrade{
		FromSlot: plan.From.Slot, FromVersion: plan.From.Version, ToSlot: plan.To.Slot, ToVersion: plan.To.Version,
		Time: u.o.Now().UTC().Truncate(time.Second), Migrations: plan.Migrations, Backup: plan.Backup,
	}
}

// backup archives the instance with the running (old) version, before the
// new one can migrate anything.
func (u *upgrade) backup(ctx context.Context, plan *upgradePlan) error {
	s, err := u.settings()
	if err != nil {
		return err
	}
	dv := u.o.Root.DataVolume(u.name)
	if plan.DBMigrations, err = backup.Migrations(ctx, s.Database, dv); err != nil {
		return fmt.Errorf("read the database's migrations: %w", err)
	}
	m, err := manifestOf(u.o.Root, plan.From.Digest)
	if err != nil {
		return err
	}
	info, err := backup.Create(ctx, backup.Source{
		Instance: u.name, ConfigFile: InstancePath(u.o.Root, u.name), DataVolume: dv, Database: s.Database,
		Template: backup.Template{Name: m.Name, Version: m.Version, Digest: plan.From.Digest, Migrations: m.Migrations},
		Kind:     backup.KindPreUpgrade,
	}, backup.Options{Dir: u.o.Root.Backups(u.name), Now: u.o.Now, IDBase: hypervisor.IDMapBase})
	if err != nil {
		return fmt.Errorf("pre-upgrade backup: %w", err)
	}
	plan.Backup = info.Path
	u.p.logf("pre-upgrade backup %s (%d bytes, version %s, %d migrations in the database)", info.Path, info.Size, m.Version, len(plan.DBMigrations))
	return u.op.Step(stepBackup, state.StatusDone, plan.data())
}

// clearIdle removes the container an earlier upgrade kept for rollback:
// the idle slot is where the new version goes. From here on there is
// nothing older to roll back to, and instance.yaml says so at once.
func (u *upgrade) clearIdle(ctx context.Context, idle string) error {
	s, err := u.cfg.Slots.Slot(idle)
	if err != nil {
		return err
	}
	if _, err := u.o.Hypervisor.Status(ctx, s.ID); err == nil {
		if err := u.stopSlot(ctx, s.ID); err != nil {
			return err
		}
		if err := u.o.Hypervisor.Destroy(ctx, s.ID); err != nil {
			return fmt.Errorf("remove container %d (slot %s, version %s): %w", s.ID, idle, s.Version, err)
		}
		u.p.logf("container %d (slot %s, version %s) removed", s.ID, idle, s.Version)
	} else if !errors.Is(err, hypervisor.ErrNotFound) {
		return fmt.Errorf("container %d: %w", s.ID, err)
	}
	if s.Version == "" && u.cfg.LastUpgrade == nil {
		return nil
	}
	s.Version, s.Digest = "", ""
	if u.cfg.Network.DHCP {
		s.Address = ""
	}
	u.cfg.LastUpgrade = nil
	return u.writeInstance()
}

// finish completes a swap (upgrade or rollback) whose flip is proven: the
// new slot is checked through nginx, the old one drains, stops and stays,
// and instance.yaml records the swap with last as what a rollback would
// undo. A later command that finds the swap killed after its flip runs
// this too.
func (u *instanceRun) finish(ctx context.Context, plan upgradePlan, m *manifest.Manifest, last *deployconfig.Upgrade) error {
	u.begin(stepEdgeHealthy)
	site, err := u.siteOf(ctx)
	if err != nil {
		return err
	}
	if err := u.waitThroughEdge(ctx, site, m); err != nil {
		return err
	}
	u.begin(stepDrain)
	dctx, cancel := context.WithTimeout(ctx, u.o.DrainTimeout)
	err = u.o.Edge.Drain(dctx)
	cancel()
	if err != nil {
		return fmt.Errorf("nginx: requests in flight on %s did not finish: %w", plan.From.Version, err)
	}
	u.begin(stepStopOld)
	if plan.From.ID != plan.To.ID {
		if err := u.creating(stepStopOld, plan.data()); err != nil {
			return err
		}
		if err := u.stopSlot(ctx, plan.From.ID); err != nil {
			return err
		}
		if err := u.bootWith(ctx, plan.To.ID, plan.From.ID); err != nil {
			return err
		}
		if err := u.created(stepStopOld, plan.data()); err != nil {
			return err
		}
		u.p.logf("container %d (%s) stopped and kept", plan.From.ID, plan.From.Version)
	}
	u.begin(stepInstance)
	// The last chance to honour Ctrl+C; after this the upgrade is done.
	if err := ctx.Err(); err != nil {
		return err
	}
	to, _ := u.cfg.Slots.Slot(plan.To.Slot)
	to.Version, to.Digest = plan.To.Version, plan.To.Digest
	if u.cfg.Network.DHCP {
		to.Address = plan.To.Address
	}
	u.cfg.Slots.Active = plan.To.Slot
	u.cfg.LastUpgrade = last
	return u.writeInstance()
}

// preflight refuses an upgrade the node cannot take before anything
// changes: room for the backup and a second container, a running old
// version, nginx, and resources the new template is content with.
func (u *upgrade) preflight(ctx context.Context, t *resolved, from slotState) error {
	cfg := u.cfg
	var problems []string
	for _, dir := range []string{u.o.Root.Dir, u.o.Root.DataVolume(u.name)} {
		var fs syscall.Statfs_t
		if err := syscall.Statfs(dir, &fs); err != nil {
			problems = append(problems, fmt.Sprintf("free space of %s: %v", dir, err))
			continue
		}
		if free := int64(fs.Bavail) * fs.Bsize; free < minFreeUpgrade {
			problems = append(problems, fmt.Sprintf("%s has %d MB free; an upgrade needs 2 GB (the pre-upgrade backup and the new container): free some space", dir, free>>20))
		}
	}
	if t.min.MemoryMB > cfg.Resources.MemoryMB || t.min.Cores > cfg.Resources.Cores || t.min.RootfsGB > cfg.Resources.DiskGB {
		problems = append(problems, fmt.Sprintf("template %s needs at least %d cores, %d MB memory, %d GB disk; the instance has %d, %d MB, %d GB: raise them in instance.yaml and run vkimg reconfigure",
			t.m.Version, t.min.Cores, t.min.MemoryMB, t.min.RootfsGB, cfg.Resources.Cores, cfg.Resources.MemoryMB, cfg.Resources.DiskGB))
	}
	cluster, err := u.o.Hypervisor.Cluster(ctx)
	if err != nil {
		return err
	}
	if n, err := findNode(cluster, cfg.Node); err != nil {
		problems = append(problems, err.Error())
	} else if n.MemFreeMB < cfg.Resources.MemoryMB {
		problems = append(problems, fmt.Sprintf("node %s has %d MB memory free; the new version needs %d MB beside the running one", n.Name, n.MemFreeMB, cfg.Resources.MemoryMB))
	}
	if up, err := u.running(ctx, from.ID); err != nil {
		problems = append(problems, err.Error())
	} else if !up {
		problems = append(problems, fmt.Sprintf("the active slot %s (container %d, %s) is not running: start it, or `vkimg rollback`", from.Slot, from.ID, from.Version))
	}
	if err := u.o.Edge.Running(); err != nil {
		problems = append(problems, err.Error())
	} else if _, err := u.siteOf(ctx); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return fmt.Errorf("pre-flight: %s", strings.Join(problems, "; "))
	}
	return nil
}

// findNode is the cluster node an instance lives on ("" when there is one).
func findNode(c hypervisor.Cluster, name string) (hypervisor.Node, error) {
	i := slices.IndexFunc(c.Nodes, func(n hypervisor.Node) bool { return n.Name == name || (name == "" && len(c.Nodes) == 1) })
	if i < 0 {
		return hypervisor.Node{}, fmt.Errorf("node %q not found in the cluster (give node: when there are several)", name)
	}
	return c.Nodes[i], nil
}

// latest is the tag to upgrade to: an exact version given with --to, or
// the newest template of the channel. An instance deployed with an exact
// version follows that version's compatible releases (^X.Y.Z).
func (r *operation) latest(ctx context.Context, cfg *deployconfig.InstanceConfig, to string) (string, error) {
	channel := cmpOr(to, cfg.Template.Version)
	if _, err := semver.StrictNewVersion(channel); err == nil {
		if to != "" {
			return to, nil
		}
		channel = "^" + channel
	}
	repo := templateRef(r.o.Root, cfg.Template.Source, "")
	t, err := registry.Latest(ctx, repo, channel, r.o.Registry)
	if err != nil {
		return "", fmt.Errorf("newest template of channel %q: %w", channel, err)
	}
	return t.Tag, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// templateRef is a template tag in the instance's template source.
func templateRef(root state.Root, source, tag string) registry.Ref {
	if source == "" {
		source = root.Templates()
	}
	if source == root.Templates() || deployconfig.IsLocalSource(source) {
		return registry.LayoutRef(source, tag)
	}
	ref, err := registry.ParseRef(source)
	if err != nil {
		return registry.LayoutRef(source, tag) // refused with the parse error on use
	}
	ref.Tag = tag
	return ref
}

// upToDate: the same template, or an older version (a downgrade is a
// rollback, never an upgrade).
func upToDate(active *deployconfig.Slot, digest, version string) bool {
	if active.Digest == digest {
		return true
	}
	cur, err1 := semver.StrictNewVersion(active.Version)
	next, err2 := semver.StrictNewVersion(version)
	return err1 == nil && err2 == nil && next.LessThan(cur)
}

// newMigrations are the migrations the new template adds to the running
// one's, from the two manifests.
func newMigrations(root state.Root, digest string, next *manifest.Manifest) ([]string, error) {
	cur, err := manifestOf(root, digest)
	if err != nil {
		return nil, err
	}
	return next.NewMigrations(cur), nil
}

func describeMigrations(ms []string) string {
	if len(ms) == 0 {
		return "no schema migrations: rollback is instant"
	}
	return fmt.Sprintf("%s (%s): rollback would restore the pre-upgrade backup", plural(len(ms), "schema migration"), strings.Join(ms, ", "))
}

// recoverUpgrade settles an upgrade a killed command left: past its proven
// flip with the new version healthy, it is finished; otherwise it is undone
// and the old version serves.
func (r *instanceRun) recoverUpgrade(ctx context.Context, op *state.Operation, p *state.Pending) error {
	plan, back, err := r.resume(op, p)
	if err != nil {
		return err
	}
	defer back()
	if p.Completed(stepFlip) {
		m, addr, err := plan.To.running(r.o.Root)
		if err == nil {
			err = r.waitHealthy(ctx, plan.To.ID, addr, m)
		}
		if err == nil {
			r.p.logf("the upgrade to %s had switched nginx and the new version is healthy: finishing it", plan.To.Version)
			r.made = nil
			if err = r.finish(ctx, plan, m, r.record(plan)); err == nil {
				return op.End(state.StatusDone, nil)
			}
		}
		r.p.logf("cannot finish the upgrade to %s (%v): undoing it", plan.To.Version, err)
	}
	r.made = append(begun(p), r.made...) // with what a failed finish began
	r.undoAll(ctx)
	return op.End(state.StatusFailed, fmt.Errorf("interrupted; rolled back to %s by the next command", plan.From.Version))
}

// restoreIfMigrated restores the pre-upgrade backup when the new version
// changed the database before it was rolled back: the old version must
// find its own schema, and the data as it was.
func (r *operation) restoreIfMigrated(ctx context.Context, plan upgradePlan) error {
	s, err := r.settings()
	if err != nil {
		return err
	}
	now, err := backup.Migrations(ctx, s.Database, r.o.Root.DataVolume(r.name))
	if err != nil {
		return fmt.Errorf("read the database's migrations: %w", err)
	}
	if slices.Equal(now, plan.DBMigrations) {
		r.p.logf("the database was not migrated: no restore needed")
		return nil
	}
	r.p.logf("the new version changed the database (%d → %d migrations): restoring the pre-upgrade backup %s", len(plan.DBMigrations), len(now), plan.Backup)
	if err := r.restoreBackup(ctx, plan.Backup, plan.From.ID); err != nil {
		return err
	}
	if r.op != nil {
		r.op.Step(stepRestored, state.StatusDone, map[string]string{"archive": plan.Backup})
	}
	return r.startSlot(ctx, plan.From)
}
