package deploy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/vkimg/vkimg/internal/backup"
	"github.com/vkimg/vkimg/internal/datavol"
	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/state"
)

const (
	stepVerify  = "verify the archive"
	stepArchive = "back up"
)

var backupSteps = []string{stepLock, stepArchive}

// Backup archives a running instance (database dump, Vikunja's config and
// secrets, attachments, instance.yaml) without stopping it. It holds the
// instance's lock, so no upgrade or restore changes the instance meanwhile.
func Backup(ctx context.Context, name string, o Options) (*backup.Info, error) {
	r, err := openInstance(ctx, o, name, "backup "+name, len(backupSteps))
	if err != nil {
		return nil, err
	}
	defer r.close()
	r.begin(stepArchive)
	active, err := r.slotState(r.cfg.Slots.Active)
	if err != nil {
		return nil, r.fail(err)
	}
	info, err := r.archive(ctx, active, backup.KindManual)
	if err != nil {
		return nil, r.fail(err)
	}
	r.end()
	r.p.finish(fmt.Sprintf("backup of %s (version %s): %s, %s", name, active.Version, info.Path, backup.HumanSize(info.Size)))
	return info, nil
}

// archive writes a backup of the instance as the slot s runs it.
func (r *instanceRun) archive(ctx context.Context, s slotState, kind string) (*backup.Info, error) {
	settings, err := r.settings()
	if err != nil {
		return nil, err
	}
	m, err := manifestOf(r.o.Root, s.Digest)
	if err != nil {
		return nil, err
	}
	last := time.Time{}
	info, err := backup.Create(ctx, backup.Source{
		Instance: r.name, ConfigFile: InstancePath(r.o.Root, r.name), DataVolume: r.o.Root.DataVolume(r.name), Database: settings.Database,
		Template: backup.Template{Name: m.Name, Version: m.Version, Digest: s.Digest, Migrations: m.Migrations},
		Kind:     kind,
	}, backup.Options{Dir: r.o.Root.Backups(r.name), Now: r.o.Now, IDBase: hypervisor.IDMapBase,
		Progress: func(done, total int64) {
			// A line every few seconds is progress enough for a log.
			if total > 0 && (time.Since(last) > 3*time.Second || done == total) {
				last = time.Now()
				r.p.logf("%3d%%  %s of %s", 100*done/total, backup.HumanSize(done), backup.HumanSize(total))
			}
		}})
	if err != nil {
		return nil, fmt.Errorf("back up %s: %w", r.name, err)
	}
	return info, nil
}

// ListBackups lists an instance's backups, newest first; with name empty,
// every instance's.
func ListBackups(root state.Root, name string) ([]backup.Info, error) {
	if name != "" {
		if err := state.CheckInstanceName(name); err != nil {
			return nil, err
		}
		return backup.List(root.Backups(name))
	}
	dirs, err := os.ReadDir(filepath.Dir(root.Backups("x")))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var all []backup.Info
	for _, d := range dirs {
		if state.CheckInstanceName(d.Name()) != nil {
			continue
		}
		infos, err := backup.List(root.Backups(d.Name()))
		if err != nil {
			return nil, err
		}
		all = append(all, infos...)
	}
	slices.SortStableFunc(all, func(a, b backup.Info) int { return b.Manifest.Created.Compare(a.Manifest.Created) })
	return all, nil
}

// RestoreOptions are what a restore needs besides the deploy options.
type RestoreOptions struct {
	Options
	// Yes confirms replacing an existing instance's data.
	Yes bool
	// Confirm asks the administrator; without it (and without Yes)
	// replacing an existing instance's data is refused.
	Confirm func(question string) (bool, error)
	// Placement applies only on a node that does not have the instance.
	Placement Placement
}

// Placement puts an instance restored onto a node that does not have it
// where that node wants it: the archive's instance.yaml names the old
// node's bridge, addresses, nginx ports, storages, certificate files and
// template source. Each field set replaces the archive's value; the
// instance's name, database and data stay the archive's.
type Placement struct {
	Node    string
	Storage deployconfig.Storage
	Bridge  string
	// Address is slot A's address with prefix length, or "dhcp"; AddressB
	// and Gateway go with it. Another Bridge without an Address means
	// "dhcp" (free static addresses when the bridge has a subnet): the old
	// addresses belong to the old network.
	Address, AddressB, Gateway string
	Ports                      deployconfig.Ports
	// URL is the instance's new public URL, needed when it names a port
	// and Ports.HTTPS changes; Vikunja's config is rewritten to it.
	URL string
	TLS deployconfig.TLS
	// TemplateSource is where this node finds the template version that
	// made the backup, when the archive's source is not reachable here.
	TemplateSource string
}

// apply overrides the answers read from an archive.
func (p Placement) apply(a *deployconfig.Answers) {
	a.Node = cmp.Or(p.Node, a.Node)
	a.Storage.Rootfs = cmp.Or(p.Storage.Rootfs, a.Storage.Rootfs)
	a.Storage.Template = cmp.Or(p.Storage.Template, a.Storage.Template)
	if p.Bridge != "" && p.Address == "" {
		a.Network = deployconfig.Network{Address: deployconfig.DHCP}
	}
	a.Network.Bridge = cmp.Or(p.Bridge, a.Network.Bridge)
	if p.Address != "" {
		a.Network.Address, a.Network.AddressB, a.Network.Gateway = p.Address, p.AddressB, p.Gateway
	}
	a.Ports.HTTP = cmp.Or(p.Ports.HTTP, a.Ports.HTTP)
	a.Ports.HTTPS = cmp.Or(p.Ports.HTTPS, a.Ports.HTTPS)
	a.URL = cmp.Or(p.URL, a.URL)
	if p.TLS != (deployconfig.TLS{}) {
		a.TLS = p.TLS
	}
	a.Template.Source = cmp.Or(p.TemplateSource, a.Template.Source)
}

// RestoreResult says what a restore did.
type RestoreResult struct {
	Name        string     `json:"name"`
	Archive     string     `json:"archive"`
	Created     time.Time  `json:"created"` // when the backup was taken
	Version     string     `json:"version"`
	Slot        string     `json:"slot"`
	ContainerID int        `json:"containerId"`
	URL         string     `json:"url"`
	Deployed    bool       `json:"deployed"` // the instance did not exist on this node
	Steps       []StepTime `json:"-"`
}

var restoreInstanceSteps = []string{stepLock, stepVerify, stepTemplate, stepClearIdle, stepUpload, stepCreate,
	stepStopNew, stepRestore, stepStartPrev, stepHealthy, stepFlip, stepEdgeHealthy, stepDrain, stepStopOld, stepInstance}

// Restore brings an instance back to the state an archive holds: users,
// tasks, files, Vikunja's config, with the template version that made it.
// The archive is verified completely before anything changes. When the
// instance exists on this node its data is replaced (after confirmation);
// otherwise it is deployed from the archive, on this node or another.
func Restore(ctx context.Context, archive string, o RestoreOptions) (*RestoreResult, error) {
	// One pass checks the whole archive and keeps what a restore onto a
	// node without the instance deploys it from.
	m, members, err := backup.ReadMembers(ctx, archive, backup.InstanceMember, backup.DataMember+datavol.ConfigFile)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", archive, err)
	}
	cur, err := readInstance(o.Root, m.Instance)
	if errors.Is(err, ErrNoInstance) {
		return restoreByDeploy(ctx, archive, m, members, o)
	}
	if err != nil {
		return nil, err
	}
	if o.Placement != (Placement{}) {
		return nil, fmt.Errorf("restore %s: %s exists on this node, where it stays as placed: the placement options (node, bridge, addresses, ports, URL, storages, certificate, template source) apply only on a node that does not have it", archive, m.Instance)
	}
	active, _ := cur.Slots.Slot(cur.Slots.Active)
	statement := fmt.Sprintf("Restoring %s from the backup taken %s (version %s) replaces its data (now version %s):\n"+
		"everything written since the backup is lost.", m.Instance, m.Created.Format(time.RFC3339), m.Template.Version, active.Version)
	if err := confirmLoss(o.Yes, o.Confirm, statement, "Restore?"); err != nil {
		return nil, err
	}
	r, err := openInstance(ctx, o.Options, m.Instance, "restore "+m.Instance, len(restoreInstanceSteps))
	if err != nil {
		return nil, err
	}
	defer r.close()
	r.begin(stepVerify)
	r.p.logf("archive %s verified: %s backup of %s taken %s with version %s (%d members)", archive, m.Kind, m.Instance, m.Created.Format(time.RFC3339), m.Template.Version, len(m.Entries))
	return r.restore(ctx, archive, m)
}

func (r *instanceRun) restore(ctx context.Context, archive string, m *backup.Manifest) (*RestoreResult, error) {
	from, err := r.slotState(r.cfg.Slots.Active)
	if err != nil {
		return nil, r.fail(err)
	}
	r.begin(stepTemplate)
	t, err := r.exactTemplate(ctx, r.cfg.Template.Source, m.Template)
	if err != nil {
		return nil, r.fail(err)
	}
	plan := upgradePlan{Instance: r.name, From: from, To: from, Backup: archive, RestoreBackup: true}
	if r.op, err = r.o.Root.Journal(r.name).Begin(opRestore, plan.data()); err != nil {
		return nil, r.fail(err)
	}
	idle := r.cfg.Slots.Idle()
	kept, _ := r.slotState(idle)
	switch {
	case from.Digest == t.digest.String():
	case kept.Digest == t.digest.String() && r.exists(ctx, kept.ID):
		// The container kept for rollback runs that version already.
		plan.To = kept
	default:
		// The archive was made by another version than the one running:
		// that version goes into the idle slot, and nginx flips to it.
		r.begin(stepClearIdle)
		u := &upgrade{instanceRun: r}
		if err := u.clearIdle(ctx, idle); err != nil {
			return nil, r.restoreFailed(ctx, err)
		}
		to, _ := r.slotState(idle)
		plan.To = slotState{Slot: idle, ID: to.ID, Address: to.Address, Version: t.m.Version, Digest: t.digest.String()}
		r.begin(stepUpload)
		tmpl := templateFile(r.cfg.Storage.Template, t.m, t.digest)
		if err := r.uploadTemplate(ctx, tmpl, t.img); err != nil {
			return nil, r.restoreFailed(ctx, err)
		}
		r.begin(stepCreate)
		if err := u.createSlot(ctx, t, tmpl, &plan); err != nil {
			return nil, r.restoreFailed(ctx, err)
		}
	}
	if err := r.op.Step(stepTemplate, state.StatusDone, plan.data()); err != nil {
		return nil, r.restoreFailed(ctx, err)
	}
	if err := r.swap(ctx, plan, nil); err != nil {
		return nil, r.restoreFailed(ctx, err)
	}
	r.end()
	r.op.End(state.StatusDone, nil)
	r.p.finish(fmt.Sprintf("restored %s from %s: version %s serves %s", r.name, archive, plan.To.Version, r.cfg.URL))
	return &RestoreResult{Name: r.name, Archive: archive, Created: m.Created, Version: plan.To.Version,
		Slot: plan.To.Slot, ContainerID: plan.To.ID, URL: r.cfg.URL, Steps: r.times}, nil
}

// restoreFailed undoes a restore that failed before its data was replaced;
// after that there is no way back, and the journal keeps the restore open
// for the next command to finish.
func (r *instanceRun) restoreFailed(ctx context.Context, err error) error {
	err = r.fail(err)
	if slices.ContainsFunc(r.made, func(m made) bool { return m.step == stepRestore }) {
		r.end()
		return fmt.Errorf("%w; the data was restored already: run the same restore again to finish", err)
	}
	r.undoAll(ctx)
	r.op.End(state.StatusFailed, err)
	return fmt.Errorf("%w; nothing changed", err)
}

// exactTemplate pulls the template that made a backup: its version, and
// exactly its digest (a tag such as main may point elsewhere by now).
func (r *operation) exactTemplate(ctx context.Context, source string, want backup.Template) (*resolved, error) {
	t, err := r.template(ctx, source, want.Version)
	if err != nil {
		return nil, fmt.Errorf("the backup was made by template %s %s: %w", want.Name, want.Version, err)
	}
	if t.digest.String() != want.Digest {
		return nil, fmt.Errorf("the backup was made by template %s %s with digest %s, but %s now holds %s under that version: publish the original again to restore this backup",
			want.Name, want.Version, want.Digest, cmpOr(source, r.o.Root.Templates()), t.digest)
	}
	return t, nil
}

// createSlot creates the container of plan.To from t (stopped).
func (u *upgrade) createSlot(ctx context.Context, t *resolved, tmpl hypervisor.TemplateRef, plan *upgradePlan) error {
	next := *u.cfg
	slot, _ := next.Slots.Slot(plan.To.Slot)
	slot.Version, slot.Digest = plan.To.Version, plan.To.Digest
	spec, err := next.SlotSpec(plan.To.Slot, tmpl, t.min, u.o.Root.DataVolume(u.name))
	if err != nil {
		return err
	}
	cluster, err := u.o.Hypervisor.Cluster(ctx)
	if err != nil {
		return err
	}
	if err := hypervisor.ValidateSpec(spec, cluster); err != nil {
		return err
	}
	id := map[string]string{"id": itoa(spec.ID)}
	if err := u.creating(stepCreate, id); err != nil {
		return err
	}
	if err := u.o.Hypervisor.Create(ctx, spec); err != nil {
		return fmt.Errorf("create container %d: %w", spec.ID, err)
	}
	return u.created(stepCreate, id)
}

// restoreByDeploy deploys an instance this node does not have from an
// archive: the archive's instance configuration, its data volume and
// database, and exactly the template that made it.
func restoreByDeploy(ctx context.Context, archive string, m *backup.Manifest, members map[string][]byte, o RestoreOptions) (*RestoreResult, error) {
	cfg, err := deployconfig.ParseInstance(archive+":"+backup.InstanceMember, members[backup.InstanceMember])
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", archive, err)
	}
	settings, err := datavol.ParseSettings(members[backup.DataMember+datavol.ConfigFile])
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", archive, err)
	}
	a := cfg.Answers(settings.Database.Password)
	a.Template.Version = m.Template.Version
	o.Placement.apply(a)
	o.Options.restore = &restoreFrom{archive: archive, template: m.Template}
	res, err := Run(ctx, a, o.Options)
	if err != nil {
		return nil, err
	}
	return &RestoreResult{Name: res.Name, Archive: archive, Created: m.Created, Version: res.Version,
		Slot: "a", ContainerID: res.ContainerID, URL: res.URL, Deployed: true, Steps: res.Steps}, nil
}

// restoreFrom is a deploy that fills the data volume from an archive
// instead of a fresh configuration.
type restoreFrom struct {
	archive  string
	template backup.Template
}

// setPublicURL points Vikunja's config at the URL the instance is restored
// under, when a placement changed it (another node's HTTPS port, say).
// The restored config.yml keeps its owner.
func (r *run) setPublicURL() error {
	s, err := r.settings()
	if err != nil || s.PublicURL == r.cfg.URL {
		return err
	}
	volume := r.o.Root.DataVolume(r.name)
	fi, err := os.Stat(filepath.Join(volume, datavol.ConfigFile))
	if err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	old := s.PublicURL
	s.PublicURL = r.cfg.URL
	if err := datavol.Write(volume, s, datavol.Owner{UID: int(st.Uid), GID: int(st.Gid)}); err != nil {
		return fmt.Errorf("public URL %s: %w", r.cfg.URL, err)
	}
	r.p.logf("Vikunja's public URL changed from %s to %s", old, r.cfg.URL)
	return nil
}
