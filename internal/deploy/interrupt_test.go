package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/vkimg/vkimg/internal/signing"
)

// interruptPoints are the steps that make or change something, each paired
// with the step announced right after it: the progress line of the next
// step is written synchronously before that step does anything, so
// interrupting there interrupts exactly after the step.
var interruptPoints = []struct {
	after, next string
}{
	{stepDataVolume, stepUpload},
	{stepUpload, stepCreate},
	{stepCreate, stepStart},
	{stepStart, stepHealthy},
	{stepHealthy, stepEdge},
	{stepEdge, stepEdgeHealthy},
	{stepEdgeHealthy, stepInstance},
}

// killEnv carries a killSpec to the test binary re-run as a deploy process
// that SIGKILLs itself when its progress announces KillAt. It is read in
// init, before TestMain, since TestMain belongs to deploy_test.go.
const killEnv = "VKIMG_DEPLOY_TEST_KILL"

type killSpec struct {
	childSpec
	KillAt string
}

func init() {
	if spec := os.Getenv(killEnv); spec != "" {
		os.Exit(killChild(spec))
	}
}

// killAt passes progress through to stdout and kills the whole process,
// with no chance to undo anything, once the step is announced.
type killAt struct{ step string }

func (k killAt) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(": "+k.step)) {
		os.Stdout.Write(p)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way; deploy must not go on meanwhile
	}
	return os.Stdout.Write(p)
}

func killChild(spec string) int {
	var c killSpec
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	return c.childSpec.deploy(killAt{c.KillAt})
}

// TestDeployInterruptAtEveryStep interrupts a deploy right after each step
// that makes something. Ctrl+C (the context ending) must leave nothing; a
// SIGKILL leaves things behind, which the same deploy run again must undo
// before it succeeds, leaving exactly slot A and one nginx site.
func TestDeployInterruptAtEveryStep(t *testing.T) {
	e := newEnv(t)
	pem, err := signing.MarshalPublicKey(e.tmpl.key)
	if err != nil {
		t.Fatal(err)
	}
	for i, pt := range interruptPoints {
		name := fmt.Sprintf("int%d", i)
		sigint := func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			progress := &cancelAfter{step: pt.next, cancel: cancel}
			o := e.options(nil)
			o.Progress = progress
			res, err := Run(ctx, e.answers(t, name, ""), o)
			if err == nil {
				defer e.remove(t, res)
				t.Fatalf("the deploy interrupted after %q succeeded:\n%s", pt.after, progress.buf.String())
			}
			if !strings.Contains(progress.buf.String(), ": "+pt.next) {
				t.Fatalf("the deploy failed before %q: %v\n%s", pt.next, err, progress.buf.String())
			}
			t.Logf("interrupted: %v", err)
			e.assertNothing(t, name)
		}
		t.Run("SIGINT after "+pt.after, sigint)
		name = fmt.Sprintf("kill%d", i)
		t.Run("SIGKILL after "+pt.after, func(t *testing.T) {
			spec, _ := json.Marshal(killSpec{childSpec: childSpec{Root: e.root, LXCRoot: e.lxc.Root(), Edge: *e.edge,
				Answers: e.answersFile(t, name, ""), Trusted: pem}, KillAt: pt.next})
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), killEnv+"="+string(spec))
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("deploy process: %v, want killed by SIGKILL\n%s", err, out.String())
			}
			if !strings.Contains(out.String(), ": "+pt.next) {
				t.Fatalf("the deploy process was killed before %q:\n%s", pt.next, out.String())
			}
			if p, err := e.root.Journal(name).Pending(); err != nil || p == nil {
				t.Fatalf("after SIGKILL: pending operation %+v %v", p, err)
			}

			ctx := context.Background()
			var again bytes.Buffer
			res, err := Run(ctx, e.answers(t, name, ""), e.options(&again))
			if err != nil {
				t.Fatalf("rerun: %v\n%s", err, again.String())
			}
			if !strings.Contains(again.String(), "undoing the interrupted deploy") {
				t.Errorf("the rerun did not undo the killed deploy:\n%s", again.String())
			}
			defer func() {
				e.remove(t, res)
				e.assertNothing(t, name)
			}()
			c, err := e.be.Cluster(ctx)
			if err != nil || len(c.Containers) != 1 || c.Containers[0].ID != res.ContainerID {
				t.Fatalf("after the rerun: containers %+v (%v), want only slot A %d", c.Containers, err, res.ContainerID)
			}
			sites, err := e.edge.Sites(ctx)
			if err != nil || len(sites) != 1 || sites[0].Instance != name {
				t.Fatalf("after the rerun: nginx sites %+v (%v), want only %s", sites, err, name)
			}
			useInstance(t, e, res)
		})
	}
}

// remove takes a deployed instance away again with the deploy's own undo,
// so that the next case starts from an empty node.
func (e *env) remove(t testing.TB, res *Result) {
	t.Helper()
	ctx := context.Background()
	o := e.options(nil)
	if err := (&operation{o: o}).undo(ctx, stepCreate, map[string]string{"id": strconv.Itoa(res.ContainerID)}); err != nil {
		t.Errorf("remove container %d: %v", res.ContainerID, err)
	}
	if err := (&operation{o: o}).undo(ctx, stepEdge, map[string]string{"instance": res.Name}); err != nil {
		t.Errorf("remove nginx site of %s: %v", res.Name, err)
	}
	if err := os.RemoveAll(e.root.Instance(res.Name)); err != nil {
		t.Errorf("remove instance %s: %v", res.Name, err)
	}
}
