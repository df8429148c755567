package deploy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vkimg/vkimg/internal/backup"
	"github.com/vkimg/vkimg/internal/state"
)

// RollbackOptions are what a rollback needs besides the deploy options.
type RollbackOptions struct {
	Options
	// Yes confirms a rollback that restores the pre-upgrade backup.
	Yes bool
	// Confirm asks the administrator; without it (and without Yes) a
	// rollback that would lose data is refused.
	Confirm func(question string) (bool, error)
}

// RollbackResult says what a rollback did.
type RollbackResult struct {
	Name        string     `json:"name"`
	From        string     `json:"from"`
	To          string     `json:"to"`
	Restored    string     `json:"restored,omitempty"` // the backup restored (the schema had changed)
	Slot        string     `json:"slot"`
	ContainerID int        `json:"containerId"`
	Steps       []StepTime `json:"-"`
}

// ErrNothingToRollBack is returned when the instance has no earlier
// version kept (no upgrade, or it was rolled back already).
var ErrNothingToRollBack = errors.New("nothing to roll back to")

// ErrNotConfirmed is returned when a rollback or a restore that replaces
// data was not confirmed.
var ErrNotConfirmed = errors.New("not confirmed")

const (
	stepRollbackPlan = "check what the rollback changes"
	stepStartPrev    = "start the slot to switch to"
	stepStopNew      = "stop the serving slot"
	stepRestore      = "restore the data from the backup"
	// stepRestored marks, in an upgrade's journal, that its undo restored
	// the pre-upgrade backup.
	stepRestored = "restored the pre-upgrade backup"
)

var (
	rollbackSteps = []string{stepLock, stepRollbackPlan, stepStartPrev, stepHealthy, stepFlip, stepEdgeHealthy, stepDrain, stepStopOld, stepInstance}
	restoreSteps  = []string{stepLock, stepRollbackPlan, stepStopNew, stepRestore, stepStartPrev, stepHealthy, stepFlip, stepEdgeHealthy, stepDrain, stepStopOld, stepInstance}
)

// Rollback returns an instance to the version its last upgrade replaced,
// which was kept stopped. Without schema migrations in between it is a
// start, a health check and a flip; when the newer version migrated the
// database, the pre-upgrade backup is restored too, which loses what was
// written since: only after confirmation.
func Rollback(ctx context.Context, name string, o RollbackOptions) (*RollbackResult, error) {
	cfg, err := readInstance(o.Root, name)
	if err != nil {
		return nil, err
	}
	total := len(rollbackSteps)
	if cfg.LastUpgrade != nil && len(cfg.LastUpgrade.Migrations) > 0 {
		total = len(restoreSteps)
	}
	r, err := openInstance(ctx, o.Options, name, "rollback "+name, total)
	if err != nil {
		return nil, err
	}
	defer r.close()
	r.begin(stepRollbackPlan)
	plan, taken, err := r.rollbackPlan(ctx)
	if err != nil {
		return nil, r.fail(err)
	}
	if plan.RestoreBackup {
		statement := fmt.Sprintf("Version %s changed the database schema (%s: %s).\n"+
			"Rolling back to %s restores the backup taken before the upgrade, at %s:\n"+
			"everything written since then (tasks, comments, attachments, users, settings) is lost.",
			plan.From.Version, plural(len(plan.Migrations), "migration"), strings.Join(plan.Migrations, ", "), plan.To.Version, taken.Format(time.RFC3339))
		if err := confirmLoss(o.Yes, o.Confirm, statement, "Roll back?"); err != nil {
			return nil, r.fail(err)
		}
	}
	if r.op, err = r.o.Root.Journal(name).Begin(opRollback, plan.data()); err != nil {
		return nil, r.fail(err)
	}
	if err := r.swap(ctx, plan, nil); err != nil {
		if slices.ContainsFunc(r.made, func(m made) bool { return m.step == stepRestore }) {
			// The data is restored already: there is no going back, only
			// forward. The journal keeps the rollback open for the next
			// command to finish.
			r.end()
			r.p.logf("rollback failed after the restore: %v; run `vkimg rollback %s` again to finish it", err, name)
			return nil, fmt.Errorf("rollback failed after the backup was restored: %w; run `vkimg rollback %s` again to finish it (log: %s)", err, name, r.o.Root.LogFile(name))
		}
		err = r.fail(err)
		r.undoAll(ctx)
		r.op.End(state.StatusFailed, err)
		return nil, fmt.Errorf("%w; nothing changed: %s still serves", err, plan.From.Version)
	}
	r.end()
	r.op.End(state.StatusDone, nil)
	r.p.finish(fmt.Sprintf("rolled back %s to %s (slot %s); %s is kept stopped", name, plan.To.Version, plan.To.Slot, plan.From.Version))
	res := &RollbackResult{Name: name, From: plan.From.Version, To: plan.To.Version, Slot: plan.To.Slot, ContainerID: plan.To.ID, Steps: r.times}
	if plan.RestoreBackup {
		res.Restored = plan.Backup
	}
	return res, nil
}

// rollbackPlan is the rollback of the instance's last upgrade: from the
// active slot back to the one kept stopped.
func (r *instanceRun) rollbackPlan(ctx context.Context) (plan upgradePlan, backupTaken time.Time, err error) {
	u := r.cfg.LastUpgrade
	if u == nil || u.ToSlot != r.cfg.Slots.Active {
		return plan, backupTaken, fmt.Errorf("%s: %w: no upgrade since the last deploy, restore or rollback (`vkimg backups %s` lists backups to restore)", r.name, ErrNothingToRollBack, r.name)
	}
	from, err := r.slotState(u.ToSlot)
	if err != nil {
		return plan, backupTaken, err
	}
	to, err := r.slotState(u.FromSlot)
	if err != nil {
		return plan, backupTaken, err
	}
	if _, err := r.o.Hypervisor.Status(ctx, to.ID); err != nil {
		return plan, backupTaken, fmt.Errorf("%s: %w: container %d of version %s: %v", r.name, ErrNothingToRollBack, to.ID, to.Version, err)
	}
	plan = upgradePlan{Instance: r.name, From: from, To: to, Migrations: u.Migrations, Backup: u.Backup, RestoreBackup: len(u.Migrations) > 0}
	if plan.RestoreBackup {
		m, err := backup.Verify(ctx, plan.Backup)
		if err != nil {
			return plan, backupTaken, fmt.Errorf("the upgrade to %s changed the schema, so rolling back needs the pre-upgrade backup, which is unusable: %w", from.Version, err)
		}
		backupTaken = m.Created
		r.p.logf("the upgrade to %s added %s: rolling back restores %s", from.Version, plural(len(plan.Migrations), "schema migration"), plan.Backup)
	} else {
		r.p.logf("no schema migrations since %s: the data stays as it is", to.Version)
	}
	return plan, backupTaken, nil
}

// confirmLoss asks before an operation that loses data: statement says
// what is lost. Without a way to ask, only yes lets it go ahead.
func confirmLoss(yes bool, ask func(string) (bool, error), statement, question string) error {
	if yes {
		return nil
	}
	if ask == nil {
		return fmt.Errorf("%w: %s\nrerun with --yes to go ahead", ErrNotConfirmed, statement)
	}
	ok, err := ask(statement + "\n" + question)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: nothing changed", ErrNotConfirmed)
	}
	return nil
}

// plural is "n thing" or "n things".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// swap moves the instance from plan.From to plan.To, an existing
// container (rollback, restore), restoring plan.Backup first when the plan
// says so. Every step is safe to run again, so a swap a killed command left
// is finished by running it again (skip says which steps the journal shows
// done).
func (r *instanceRun) swap(ctx context.Context, plan upgradePlan, skip func(step string) bool) error {
	if skip == nil {
		skip = func(string) bool { return false }
	}
	if plan.RestoreBackup {
		r.begin(stepStopNew)
		if err := r.creating(stepStopNew, plan.data()); err != nil {
			return err
		}
		// Stopped at once, not drained: what it would still write is
		// replaced by the backup anyway, and a drain under traffic takes
		// Vikunja's whole 10 s shutdown limit, all of it outage.
		if err := r.halt(ctx, plan.From.ID); err != nil {
			return err
		}
		r.begin(stepRestore)
		if !skip(stepRestore) {
			if err := r.creating(stepRestore, plan.data()); err != nil {
				return err
			}
			if err := r.restoreBackup(ctx, plan.Backup, plan.From.ID, plan.To.ID); err != nil {
				return err
			}
			if err := r.created(stepRestore, plan.data()); err != nil {
				return err
			}
		}
	}
	r.begin(stepStartPrev)
	if err := r.creating(stepStartPrev, plan.data()); err != nil {
		return err
	}
	r.begin(stepHealthy)
	if err := r.startSlot(ctx, plan.To); err != nil {
		return err
	}
	r.begin(stepFlip)
	if err := r.creating(stepFlip, plan.data()); err != nil {
		return err
	}
	if err := r.flip(ctx, r.cfg, plan.To); err != nil {
		return err
	}
	if err := r.created(stepFlip, plan.data()); err != nil {
		return err
	}
	m, _, err := plan.To.running(r.o.Root)
	if err != nil {
		return err
	}
	return r.finish(ctx, plan, m, nil)
}

// recoverSwap settles a rollback or restore a killed command left. A
// rollback is finished: the administrator asked for it. A restore is
// finished once its data restore began (there is no way back), and undone
// before that.
func (r *instanceRun) recoverSwap(ctx context.Context, op *state.Operation, p *state.Pending) error {
	plan, back, err := r.resume(op, p)
	if err != nil {
		return err
	}
	defer back()
	if p.Op == opRestore && !slices.ContainsFunc(p.Steps, func(e state.Entry) bool { return e.Step == stepRestore }) {
		r.made = begun(p)
		r.undoAll(ctx)
		return op.End(state.StatusFailed, errors.New("interrupted before the data was restored; undone by the next command"))
	}
	r.p.logf("finishing the interrupted %s to %s", p.Op, plan.To.Version)
	if err := r.swap(ctx, plan, p.Completed); err != nil {
		return fmt.Errorf("finish the interrupted %s of %s: %w; run the command again", p.Op, r.name, err)
	}
	r.made = nil
	return op.End(state.StatusDone, nil)
}
