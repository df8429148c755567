package deploy

import (
	"context"
	"slices"
	"time"

	"github.com/vkimg/vkimg/internal/state"
)

// operation is what deploy, upgrade, rollback and restore share: the
// administrator's step list and log, the journal entry of the operation,
// and what it made so far, undone newest first when it fails.
type operation struct {
	o       Options
	name    string // the instance
	p       *progress
	op      *state.Operation
	made    []made
	times   []StepTime
	current string
	started time.Time
}

// made is one thing an operation created or changed, as journaled.
type made struct {
	step string
	data map[string]string
}

// begin starts a step of the list and times the previous one.
func (r *operation) begin(step string) {
	r.end()
	r.current, r.started = step, time.Now()
	r.p.step(step)
}

func (r *operation) end() {
	if r.current != "" {
		r.times = append(r.times, StepTime{Step: r.current, Duration: time.Since(r.started)})
	}
}

// creating journals what step is about to make, before making it: a run
// killed halfway leaves a record of everything that may exist.
func (r *operation) creating(step string, data map[string]string) error {
	if err := r.op.Step(step, state.StatusBegin, data); err != nil {
		return err
	}
	r.made = append(r.made, made{step, data})
	return nil
}

func (r *operation) created(step string, data map[string]string) error {
	return r.op.Step(step, state.StatusDone, data)
}

// undoAll reverts what this run made, newest first. It runs on its own
// context: an interrupt must not also interrupt the cleanup.
func (r *operation) undoAll(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	for _, m := range slices.Backward(r.made) {
		r.undoStep(ctx, r.op, m.step, m.data)
	}
	r.made = nil
}

func (r *operation) undoStep(ctx context.Context, op *state.Operation, step string, data map[string]string) {
	if err := r.undo(ctx, step, data); err != nil {
		r.p.logf("undo %s: %v (remove it by hand)", step, err)
		return
	}
	r.p.logf("undone: %s %v", step, data)
	op.Step(step, state.StatusUndone, data)
}

// begun returns what a journaled operation began and did not undo, oldest
// first: what is left to undo after a kill.
func begun(p *state.Pending) []made {
	var left []made
	for _, e := range p.Steps {
		switch e.Status {
		case state.StatusBegin:
			left = append(left, made{e.Step, e.Data})
		case state.StatusUndone:
			left = slices.DeleteFunc(left, func(m made) bool { return m.step == e.Step })
		}
	}
	return left
}
