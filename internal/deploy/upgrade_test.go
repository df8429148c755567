package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vkimg/vkimg/builder/buildertest"
	"github.com/vkimg/vkimg/internal/backup/backuptest"
	"github.com/vkimg/vkimg/internal/datavol"
	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/edge"
	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/loadtest"
	"github.com/vkimg/vkimg/internal/recipe"
	"github.com/vkimg/vkimg/internal/registry"
	"github.com/vkimg/vkimg/internal/state"
)

// variant is a stand-in template version built for upgrade tests: N+1,
// N+1 patch (no migration), and N+1 builds with a failure knob.
type variant struct {
	name, version, ldflags string
}

var (
	vNext       = variant{"1.1.0", "1.1.0", ""}
	vPatch      = variant{"1.1.1", "1.1.1", ""}
	vSickHealth = variant{"1.1.0-failhealth", "1.1.0", "-X main.failHealth=1"}
	vBadMigrate = variant{"1.1.0-failmigration", "1.1.0", "-X main.failMigration=1"}
)

var (
	variantMu    sync.Mutex
	variantBuilt = map[string]string{} // variant name → unsigned build output
)

// buildVariant builds v once per test binary; its layout's ref is v.version.
func buildVariant(t testing.TB, v variant) string {
	t.Helper()
	variantMu.Lock()
	defer variantMu.Unlock()
	if out, ok := variantBuilt[v.name]; ok {
		return out
	}
	out, err := os.MkdirTemp("", "vkimg-variant-")
	if err != nil {
		t.Fatal(err)
	}
	templateDirs = append(templateDirs, out)
	o := recipe.Overrides{Versions: map[string]string{"template": v.version, "backend": v.version}}
	if v.ldflags != "" {
		bin := filepath.Join(out, "vikunja")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+v.version+" "+v.ldflags, "-o", bin, ".")
		cmd.Dir = filepath.Join(buildertest.RepoDir(t), "internal", "fixtures", "standin")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build stand-in %s: %v\n%s", v.name, err, b)
		}
		o.Sources = map[string]string{"backend": "file:" + bin}
	}
	buildertest.Build(t, "recipes/standin.yaml", o, out)
	variantBuilt[v.name] = out
	return out
}

// publish signs v into the layout instances of a test deploy from, as a
// release pipeline would publish a new version.
func (e *env) publish(t testing.TB, layout string, v variant) {
	t.Helper()
	out := buildVariant(t, v)
	_, err := registry.Publish(context.Background(), registry.LayoutRef(filepath.Join(out, "templates"), v.version),
		registry.LayoutRef(layout, ""), registry.PublishOptions{Key: e.tmpl.priv})
	if err != nil {
		t.Fatalf("publish %s: %v", v.name, err)
	}
}

// channel gives the test its own signed layout holding N, deployed from;
// later versions are published into it as the test goes.
func (e *env) channel(t testing.TB) string {
	t.Helper()
	layout := t.TempDir()
	_, err := registry.Publish(context.Background(), registry.LayoutRef(e.tmpl.layout, e.tmpl.version),
		registry.LayoutRef(layout, ""), registry.PublishOptions{Key: e.tmpl.priv})
	if err != nil {
		t.Fatal(err)
	}
	e.tmpl.layout = layout
	return layout
}

func (e *env) deployN(t testing.TB, name string) *Result {
	t.Helper()
	var progress bytes.Buffer
	res, err := Run(context.Background(), e.answers(t, name, ""), e.options(&progress))
	if err != nil {
		t.Fatalf("deploy %s: %v\n%s", name, err, progress.String())
	}
	t.Cleanup(func() { e.uninstall(t, name) })
	return res
}

// uninstall removes an instance's containers, site and directory.
func (e *env) uninstall(t testing.TB, name string) {
	t.Helper()
	cfg, err := deployconfig.ReadInstance(filepath.Join(e.root.Instance(name), InstanceFile))
	if err != nil {
		return
	}
	r := &operation{o: e.options(nil)}
	ctx := context.Background()
	for _, id := range []int{cfg.Slots.A.ID, cfg.Slots.B.ID} {
		if err := r.undo(ctx, stepCreate, map[string]string{"id": itoa(id)}); err != nil {
			t.Errorf("remove container %d: %v", id, err)
		}
	}
	if err := e.edge.Remove(ctx, name); err != nil {
		t.Errorf("remove nginx site of %s: %v", name, err)
	}
	os.RemoveAll(e.root.Instance(name))
	os.RemoveAll(e.root.Backups(name))
}

func (e *env) upgradeOptions(progress io.Writer) UpgradeOptions {
	o := e.options(nil)
	o.Progress = progress
	o.HealthTimeout = 30 * time.Second
	return UpgradeOptions{Options: o}
}

// dump is the instance's data as backuptest sees it: every table's rows and
// the attachments.
func (e *env) dump(t testing.TB, name string) string {
	t.Helper()
	s, err := datavol.ReadSettings(e.root.DataVolume(name))
	if err != nil {
		t.Fatal(err)
	}
	return backuptest.Dump(t, s.Database, e.root.DataVolume(name))
}

// versionThroughEdge is the version nginx's active slot reports, and the slot.
func (e *env) versionThroughEdge(t testing.TB, name string) (version, slot string) {
	t.Helper()
	resp, body := e.get(t, name, "/api/v1/info")
	var info struct{ Version string }
	if err := json.Unmarshal([]byte(body), &info); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /api/v1/info through nginx: %s %q %v", resp.Status, body, err)
	}
	return info.Version, resp.Header.Get(edge.SlotHeader)
}

// startLoad runs reads, writes and a slow upload through nginx over HTTPS,
// on HTTP/2 and HTTP/1.1 keep-alive connections.
func (e *env) startLoad(t testing.TB, res *Result, upload int64, uploadFor time.Duration) *loadtest.Load {
	t.Helper()
	cfg := e.instanceConfig(t, res.Name)
	site := edge.Site{Domains: []string{cfg.Domain}, HTTPSPort: e.nginx.HTTPSPort, CertFile: cfg.TLS.Certificate}
	client := func(h2 bool) *http.Client {
		c, err := EdgeClient(site)
		if err != nil {
			t.Fatal(err)
		}
		if h2 {
			return c
		}
		if c, err = loadtest.HTTP11(c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	l, err := loadtest.Start(context.Background(), loadtest.Options{
		BaseURL: fmt.Sprintf("https://%s:%d", cfg.Domain, e.nginx.HTTPSPort), Client: client,
		Username: res.AdminUser, Password: res.AdminPassword,
		Upload: upload, UploadRate: upload / int64(max(uploadFor/time.Second, 1)),
	})
	if err != nil {
		t.Fatalf("start load: %v", err)
	}
	return l
}

func stopLoad(t testing.TB, what string, l *loadtest.Load) loadtest.Report {
	t.Helper()
	rep := l.Stop()
	t.Logf("%s under load: %s", what, rep)
	if rep.Failed != 0 {
		t.Errorf("%s: %d of %d requests failed: %v", what, rep.Failed, rep.Sent, rep.Errors)
	}
	if err := l.CheckWritten(context.Background()); err != nil {
		t.Errorf("%s: %v", what, err)
	}
	return rep
}

// TestUpgradeUnderLoadAndRollback upgrades N → N+1 (one migration) and
// N+1 → N+1 patch (none) while clients read and write through nginx and a
// large upload crosses the flip, then rolls the patch back under the same
// load: no request fails, no write is lost.
func TestUpgradeUnderLoadAndRollback(t *testing.T) {
	e := newEnv(t)
	layout := e.channel(t)
	res := e.deployN(t, "zdt")
	ctx := context.Background()

	check, err := CheckUpgrade(ctx, "zdt", e.upgradeOptions(nil))
	if err != nil || !check.UpToDate {
		t.Fatalf("check with nothing newer = %+v, %v; want up to date", check, err)
	}
	e.publish(t, layout, vNext)
	check, err = CheckUpgrade(ctx, "zdt", e.upgradeOptions(nil))
	if err != nil || check.UpToDate || check.To != "1.1.0" || !slices.Equal(check.Migrations, []string{"20260301000001"}) {
		t.Fatalf("check = %+v, %v; want 1.1.0 with migration 20260301000001", check, err)
	}

	// The upload outlasts the upgrade's steps before the flip (template
	// upload and container start: 12 s on a quiet machine, 25 s loaded).
	load := e.startLoad(t, res, 16<<20, 45*time.Second)
	progress := &atFlip{load: load}
	start := time.Now()
	up, err := Upgrade(ctx, "zdt", e.upgradeOptions(progress))
	took := time.Since(start)
	if err != nil {
		load.Stop()
		t.Fatalf("upgrade: %v\n%s", err, progress.String())
	}
	rep := stopLoad(t, "upgrade 1.0.0 → 1.1.0", load)
	t.Logf("upgrade took %v; steps: %v", took, up.Steps)
	if !rep.UploadOK || rep.UploadSlot != "a" || !progress.uploading || rep.BySlot["a"] == 0 || rep.BySlot["b"] == 0 {
		t.Errorf("load report %s (upload in flight at the flip: %v): want the upload, in flight across the flip, stored by a, and answers from both slots", rep, progress.uploading)
	}
	if v, slot := e.versionThroughEdge(t, "zdt"); v != "1.1.0" || slot != "b" {
		t.Errorf("through nginx after the upgrade: version %s from slot %s, want 1.1.0 from b", v, slot)
	}
	cfg := e.instanceConfig(t, "zdt")
	if cfg.Slots.Active != "b" || cfg.Slots.B.Version != "1.1.0" || cfg.LastUpgrade == nil ||
		!slices.Equal(cfg.LastUpgrade.Migrations, []string{"20260301000001"}) || cfg.LastUpgrade.Backup != up.Backup {
		t.Errorf("instance.yaml after the upgrade: %+v / %+v", cfg.Slots, cfg.LastUpgrade)
	}
	e.assertSlots(t, cfg, "b")
	if infos, err := ListBackups(e.root, "zdt"); err != nil || len(infos) != 1 || infos[0].Manifest.Kind != "pre-upgrade" || infos[0].Manifest.Template.Version != "1.0.0" {
		t.Errorf("backups after the upgrade: %+v %v; want one pre-upgrade backup of 1.0.0", infos, err)
	}
	if again, err := Upgrade(ctx, "zdt", e.upgradeOptions(nil)); err != nil || !again.UpToDate {
		t.Errorf("second upgrade = %+v, %v; want up to date", again, err)
	}

	e.publish(t, layout, vPatch)
	load = e.startLoad(t, res, 16<<20, 10*time.Second)
	if _, err := Upgrade(ctx, "zdt", e.upgradeOptions(progress)); err != nil {
		load.Stop()
		t.Fatalf("upgrade to the patch: %v\n%s", err, progress.String())
	}
	stopLoad(t, "upgrade 1.1.0 → 1.1.1", load)

	load = e.startLoad(t, res, 0, 0)
	start = time.Now()
	rb, err := Rollback(ctx, "zdt", RollbackOptions{Options: e.upgradeOptions(progress).Options})
	took = time.Since(start)
	if err != nil {
		load.Stop()
		t.Fatalf("rollback: %v\n%s", err, progress.String())
	}
	stopLoad(t, "rollback 1.1.1 → 1.1.0", load)
	t.Logf("rollback without migrations took %v; steps: %v", took, rb.Steps)
	if rb.Restored != "" || rb.To != "1.1.0" {
		t.Errorf("rollback = %+v; want 1.1.0 with nothing restored", rb)
	}
	if v, slot := e.versionThroughEdge(t, "zdt"); v != "1.1.0" || slot != "b" {
		t.Errorf("through nginx after the rollback: version %s from slot %s, want 1.1.0 from b", v, slot)
	}
	cfg = e.instanceConfig(t, "zdt")
	e.assertSlots(t, cfg, "b")
	if cfg.LastUpgrade != nil {
		t.Errorf("instance.yaml after the rollback still records an upgrade: %+v", cfg.LastUpgrade)
	}
	if _, err := Rollback(ctx, "zdt", RollbackOptions{Options: e.upgradeOptions(nil).Options}); !errors.Is(err, ErrNothingToRollBack) {
		t.Errorf("second rollback: %v, want ErrNothingToRollBack", err)
	}
}

// atFlip records whether the load's upload is in flight when the upgrade
// announces its flip.
type atFlip struct {
	bytes.Buffer
	load      *loadtest.Load
	uploading bool
}

func (a *atFlip) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(": "+stepFlip)) {
		a.uploading = a.load.Uploading()
	}
	return a.Buffer.Write(p)
}

// assertSlots checks that the active slot runs and starts on boot, and the
// other one (if it exists) is stopped and does not.
func (e *env) assertSlots(t *testing.T, cfg *deployconfig.InstanceConfig, active string) {
	t.Helper()
	ctx := context.Background()
	for _, name := range []string{"a", "b"} {
		s, _ := cfg.Slots.Slot(name)
		st, err := e.be.Status(ctx, s.ID)
		if errors.Is(err, hypervisor.ErrNotFound) && name != active {
			continue
		}
		if err != nil {
			t.Errorf("slot %s container %d: %v", name, s.ID, err)
			continue
		}
		running := st.State == hypervisor.StateRunning
		if running != (name == active) || st.OnBoot != (name == active) {
			t.Errorf("slot %s (container %d): state %s, onboot %v; active slot is %s", name, s.ID, st.State, st.OnBoot, active)
		}
	}
}

// TestRollbackAcrossMigrationRestoresBackup: after N → N+1 (a migration),
// a rollback needs confirmation, then restores the pre-upgrade backup: the
// data is exactly what it was before the upgrade, and N serves.
func TestRollbackAcrossMigrationRestoresBackup(t *testing.T) {
	e := newEnv(t)
	layout := e.channel(t)
	res := e.deployN(t, "rbm")
	useInstance(t, e, res)
	before := e.dump(t, "rbm")
	e.publish(t, layout, vNext)
	ctx := context.Background()
	var progress bytes.Buffer
	if _, err := Upgrade(ctx, "rbm", e.upgradeOptions(&progress)); err != nil {
		t.Fatalf("upgrade: %v\n%s", err, progress.String())
	}
	useInstance(t, e, res) // written after the upgrade: lost by the rollback
	if after := e.dump(t, "rbm"); after == before {
		t.Fatal("the upgrade and new writes changed nothing in the dump: the comparison below would prove nothing")
	}
	o := RollbackOptions{Options: e.upgradeOptions(&progress).Options}
	if _, err := Rollback(ctx, "rbm", o); !errors.Is(err, ErrNotConfirmed) || !strings.Contains(err.Error(), "20260301000001") {
		t.Fatalf("unconfirmed rollback across a migration: %v, want ErrNotConfirmed naming the migration", err)
	}
	if v, _ := e.versionThroughEdge(t, "rbm"); v != "1.1.0" {
		t.Fatalf("a refused rollback changed the version to %s", v)
	}
	asked := ""
	o.Confirm = func(q string) (bool, error) { asked = q; return true, nil }
	rb, err := Rollback(ctx, "rbm", o)
	if err != nil {
		t.Fatalf("rollback: %v\n%s", err, progress.String())
	}
	if !strings.Contains(asked, "lost") || rb.Restored == "" || rb.To != "1.0.0" {
		t.Errorf("rollback %+v after question %q; want 1.0.0, restored, and a warning about lost writes", rb, asked)
	}
	if after := e.dump(t, "rbm"); after != before {
		t.Errorf("data after the rollback differs from before the upgrade:\n--- before\n%s\n--- after\n%s", before, after)
	}
	if v, slot := e.versionThroughEdge(t, "rbm"); v != "1.0.0" || slot != "a" {
		t.Errorf("through nginx after the rollback: %s from slot %s, want 1.0.0 from a", v, slot)
	}
	e.assertSlots(t, e.instanceConfig(t, "rbm"), "a")
	useInstance(t, e, res)
}

// TestFailedUpgradeRollsBack: a new version whose health check fails (after
// migrating the database) and one whose migration fails are both rolled
// back by the upgrade itself; the old version serves and the data is
// exactly as before.
func TestFailedUpgradeRollsBack(t *testing.T) {
	for _, tc := range []struct {
		v        variant
		restored bool // the new version changed the database before failing
	}{{vSickHealth, true}, {vBadMigrate, false}} {
		t.Run(tc.v.name, func(t *testing.T) {
			e := newEnv(t)
			layout := e.channel(t)
			res := e.deployN(t, "fail")
			useInstance(t, e, res)
			before := e.dump(t, "fail")
			cfgBefore := e.instanceConfig(t, "fail")
			e.publish(t, layout, tc.v)
			var progress bytes.Buffer
			_, err := Upgrade(context.Background(), "fail", e.upgradeOptions(&progress))
			var rb *RolledBackError
			if !errors.As(err, &rb) {
				t.Fatalf("upgrade to %s: %v, want a RolledBackError\n%s", tc.v.name, err, progress.String())
			}
			t.Logf("upgrade refused as expected: %v", err)
			if (rb.Restored != "") != tc.restored {
				t.Errorf("restored %q; want a restore: %v", rb.Restored, tc.restored)
			}
			if rb.Step != stepHealthy || !strings.Contains(progress.String(), "container ") {
				t.Errorf("failed step %q; want %q with the service logs in the log", rb.Step, stepHealthy)
			}
			if after := e.dump(t, "fail"); after != before {
				t.Errorf("data after the rollback differs:\n--- before\n%s\n--- after\n%s", before, after)
			}
			if v, slot := e.versionThroughEdge(t, "fail"); v != "1.0.0" || slot != "a" {
				t.Errorf("through nginx: %s from slot %s, want 1.0.0 from a", v, slot)
			}
			cfg := e.instanceConfig(t, "fail")
			if cfg.Slots.Active != "a" || cfg.Slots.A != cfgBefore.Slots.A || cfg.LastUpgrade != nil {
				t.Errorf("instance.yaml changed: %+v %+v", cfg.Slots, cfg.LastUpgrade)
			}
			e.assertSlots(t, cfg, "a")
			if _, err := e.be.Status(context.Background(), cfg.Slots.B.ID); !errors.Is(err, hypervisor.ErrNotFound) {
				t.Errorf("the failed version's container %d is left: %v", cfg.Slots.B.ID, err)
			}
			if p, err := e.root.Journal("fail").Pending(); p != nil || err != nil {
				t.Errorf("journal left pending: %+v %v", p, err)
			}
			useInstance(t, e, res)
		})
	}
}

// TestConcurrentUpgradesOneProceeds: of two upgrades started at once,
// exactly one runs; the other is refused naming the holder.
func TestConcurrentUpgradesOneProceeds(t *testing.T) {
	e := newEnv(t)
	layout := e.channel(t)
	e.deployN(t, "twice")
	e.publish(t, layout, vNext)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { _, errs[i] = Upgrade(context.Background(), "twice", e.upgradeOptions(nil)) })
	}
	wg.Wait()
	var locked, ok int
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case state.IsLocked(err) && strings.Contains(err.Error(), "upgrade twice"):
			locked++
		default:
			t.Errorf("upgrade: %v", err)
		}
	}
	if ok != 1 || locked != 1 {
		t.Fatalf("two concurrent upgrades: %d succeeded, %d refused as locked (%v); want 1 and 1", ok, locked, errs)
	}
	if v, _ := e.versionThroughEdge(t, "twice"); v != "1.1.0" {
		t.Errorf("version %s after the upgrade", v)
	}
}
