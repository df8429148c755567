package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/vkimg/vkimg/internal/signing"
	"github.com/vkimg/vkimg/internal/state"
)

// opKillEnv carries an opKillSpec to the test binary re-run as a vkimg
// upgrade or rollback that SIGKILLs itself when its progress announces
// KillAt.
const opKillEnv = "VKIMG_DEPLOY_TEST_OP_KILL"

type opKillSpec struct {
	Root     state.Root
	LXCRoot  string
	Edge     json.RawMessage
	Trusted  []byte
	Op       string // opUpgrade, opRollback or opRestore
	Instance string
	Archive  string // what opRestore restores
	KillAt   string
}

func init() {
	if spec := os.Getenv(opKillEnv); spec != "" {
		os.Exit(opKillChild(spec))
	}
}

func opKillChild(spec string) int {
	var c opKillSpec
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	be, pub, err := childNode(c.LXCRoot, c.Trusted)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	o := Options{Root: c.Root, Hypervisor: be, EdgeAddress: netip.MustParseAddr("127.0.0.1"), Trusted: pub, Progress: killAt{c.KillAt}}
	if err := json.Unmarshal(c.Edge, &o.Edge); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	switch c.Op {
	case opUpgrade:
		_, err = Upgrade(context.Background(), c.Instance, UpgradeOptions{Options: o})
	case opRollback:
		_, err = Rollback(context.Background(), c.Instance, RollbackOptions{Options: o, Yes: true})
	case opRestore:
		_, err = Restore(context.Background(), c.Archive, RestoreOptions{Options: o, Yes: true})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// killOp runs op on the instance in a child process and SIGKILLs it when
// it announces step: the step has not started, everything before it has.
func (e *env) killOp(t *testing.T, op, name, step string) {
	t.Helper()
	e.kill(t, opKillSpec{Op: op, Instance: name, KillAt: step})
}

// kill runs the operation c describes (Op, Instance or Archive, KillAt)
// on this node in a child process, and SIGKILLs it at c.KillAt.
func (e *env) kill(t *testing.T, c opKillSpec) {
	t.Helper()
	pem, err := signing.MarshalPublicKey(e.tmpl.key)
	if err != nil {
		t.Fatal(err)
	}
	c.Root, c.LXCRoot, c.Trusted = e.root, e.lxc.Root(), pem
	c.Edge, _ = json.Marshal(e.edge)
	spec, _ := json.Marshal(c)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), opKillEnv+"="+string(spec))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("%s process: %v, want killed by SIGKILL at %q\n%s", c.Op, err, c.KillAt, out.String())
	}
}

// taskCount is how many tasks the instance's admin sees through nginx.
func (e *env) taskCount(t *testing.T, res *Result) int {
	t.Helper()
	var tasks []json.RawMessage
	e.api(t, res, "GET", "/api/v1/tasks?per_page=1000", nil, &tasks)
	return len(tasks)
}

// TestUpgradeKilledAtEveryStep kills `vkimg upgrade` right before each of
// its steps; the next command on the instance (the upgrade run again)
// settles what the killed one left, and the instance ends upgraded,
// healthy, with every task it had. A rollback (restoring the pre-upgrade
// backup) resets it for the next step.
func TestUpgradeKilledAtEveryStep(t *testing.T) {
	e := newEnv(t)
	layout := e.channel(t)
	res := e.deployN(t, "kup")
	e.publish(t, layout, vNext)
	ctx := context.Background()
	for _, step := range upgradeSteps[1:] {
		t.Run(step, func(t *testing.T) {
			useInstance(t, e, res)
			tasks := e.taskCount(t, res)
			e.killOp(t, opUpgrade, "kup", step)
			var progress bytes.Buffer
			if _, err := Upgrade(ctx, "kup", e.upgradeOptions(&progress)); err != nil {
				t.Fatalf("upgrade after the kill: %v\n%s", err, progress.String())
			}
			if !strings.Contains(progress.String(), "interrupted upgrade") && step != stepLatest && step != stepPreflight {
				t.Errorf("the next upgrade did not settle the killed one:\n%s", progress.String())
			}
			if v, slot := e.versionThroughEdge(t, "kup"); v != "1.1.0" || slot != "b" {
				t.Errorf("after the kill and a rerun: version %s from slot %s, want 1.1.0 from b", v, slot)
			}
			e.assertSlots(t, e.instanceConfig(t, "kup"), "b")
			if n := e.taskCount(t, res); n != tasks {
				t.Errorf("%d tasks after the kill and rerun, %d before", n, tasks)
			}
			if p, err := e.root.Journal("kup").Pending(); p != nil || err != nil {
				t.Errorf("journal left pending: %+v %v", p, err)
			}
			e.reset(t, res)
		})
	}
}

// reset rolls the instance back to N (restoring the pre-upgrade backup).
func (e *env) reset(t *testing.T, res *Result) {
	t.Helper()
	var progress bytes.Buffer
	if _, err := Rollback(context.Background(), res.Name, RollbackOptions{Options: e.upgradeOptions(&progress).Options, Yes: true}); err != nil {
		t.Fatalf("reset by rollback: %v\n%s", err, progress.String())
	}
	if v, _ := e.versionThroughEdge(t, res.Name); v != "1.0.0" {
		t.Fatalf("reset: version %s, want 1.0.0", v)
	}
}

// TestRollbackKilledAtEveryStep kills `vkimg rollback --yes` (across a
// migration: stop, restore, start, flip) right before each of its steps;
// the next command (the rollback again) finishes it.
func TestRollbackKilledAtEveryStep(t *testing.T) {
	e := newEnv(t)
	layout := e.channel(t)
	res := e.deployN(t, "krb")
	useInstance(t, e, res)
	e.publish(t, layout, vNext)
	ctx := context.Background()
	for _, step := range restoreSteps[1:] {
		t.Run(step, func(t *testing.T) {
			var progress bytes.Buffer
			if _, err := Upgrade(ctx, "krb", e.upgradeOptions(&progress)); err != nil {
				t.Fatalf("upgrade: %v\n%s", err, progress.String())
			}
			tasks := e.taskCount(t, res)
			e.killOp(t, opRollback, "krb", step)
			progress.Reset()
			_, err := Rollback(ctx, "krb", RollbackOptions{Options: e.upgradeOptions(&progress).Options, Yes: true})
			switch {
			case err == nil:
			case errors.Is(err, ErrNothingToRollBack):
				// The killed rollback was finished by this command's
				// recovery before it looked for something to roll back.
				if !strings.Contains(progress.String(), "finishing the interrupted rollback") {
					t.Errorf("nothing to roll back, but no interrupted rollback was finished:\n%s", progress.String())
				}
			default:
				t.Fatalf("rollback after the kill: %v\n%s", err, progress.String())
			}
			if v, slot := e.versionThroughEdge(t, "krb"); v != "1.0.0" || slot != "a" {
				t.Errorf("after the kill and a rerun: version %s from slot %s, want 1.0.0 from a", v, slot)
			}
			e.assertSlots(t, e.instanceConfig(t, "krb"), "a")
			if n := e.taskCount(t, res); n != tasks {
				t.Errorf("%d tasks after the rollback, %d before it", n, tasks)
			}
			if p, err := e.root.Journal("krb").Pending(); p != nil || err != nil {
				t.Errorf("journal left pending: %+v %v", p, err)
			}
		})
	}
}
