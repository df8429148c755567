package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vkimg/vkimg/internal/backup"
	"github.com/vkimg/vkimg/internal/datavol"
	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/edge"
	"github.com/vkimg/vkimg/internal/testenv"
)

// deployAnswers deploys a and removes the instance when the test ends.
func (e *env) deployAnswers(t *testing.T, a *deployconfig.Answers) *Result {
	t.Helper()
	var progress bytes.Buffer
	res, err := Run(context.Background(), a, e.options(&progress))
	if err != nil {
		t.Fatalf("deploy %s: %v\n%s", a.Name, err, progress.String())
	}
	t.Cleanup(func() { e.uninstall(t, a.Name) })
	return res
}

// deployDB deploys name on SQLite, or against a real PostgreSQL or MariaDB
// server reachable from the container on the bridge's host address (as in
// TestDeployExternalDatabases).
func (e *env) deployDB(t *testing.T, name, typ string) *Result {
	t.Helper()
	a := e.answers(t, name, "")
	if typ == datavol.SQLite {
		return e.deployAnswers(t, a)
	}
	start := map[string]func(testing.TB) testenv.Database{datavol.Postgres: testenv.PostgreSQL, datavol.MySQL: testenv.MariaDB}[typ]
	db := start(t)
	host, port, err := net.SplitHostPort(testenv.Forward(t, net.JoinHostPort(e.gateway(t).String(), "0"), db.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	a.Database = deployconfig.Database{Type: typ, Host: host, Name: db.Name, User: db.User, Password: db.Password}
	fmt.Sscan(port, &a.Database.Port)
	return e.deployAnswers(t, a)
}

// send sends a request through nginx over HTTPS as the instance's admin
// and returns the body of its 2xx answer.
func (e *env) send(t *testing.T, res *Result, method, path, contentType string, body io.Reader) []byte {
	t.Helper()
	var login struct{ Token string }
	// e.api logs in before its call: a login through it is a token of our own.
	e.api(t, res, "POST", "/api/v1/login", map[string]string{"username": res.AdminUser, "password": res.AdminPassword}, &login)
	cfg := e.instanceConfig(t, res.Name)
	client, err := EdgeClient(edge.Site{Domains: []string{cfg.Domain}, HTTPSPort: e.nginx.HTTPSPort, CertFile: cfg.TLS.Certificate})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, fmt.Sprintf("https://%s:%d%s", cfg.Domain, e.nginx.HTTPSPort, path), body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+login.Token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s through nginx: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s through nginx: %s %q %v", method, path, resp.Status, b, err)
	}
	return b
}

// attach uploads a file to a task as the web page does (multipart field
// "files") and returns the attachment's ID.
func (e *env) attach(t *testing.T, res *Result, task int, name string, content []byte) int {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, err := mw.CreateFormFile("files", name)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(content)
	mw.Close()
	var out struct {
		Success []struct{ ID int }
		Errors  []json.RawMessage
	}
	b := e.send(t, res, "PUT", fmt.Sprintf("/api/v1/tasks/%d/attachments", task), mw.FormDataContentType(), &body)
	if err := json.Unmarshal(b, &out); err != nil || len(out.Success) != 1 || out.Success[0].ID == 0 {
		t.Fatalf("upload %s to task %d: %s %v", name, task, b, err)
	}
	return out.Success[0].ID
}

// newTask creates a project holding one task and returns the task's ID.
func (e *env) newTask(t *testing.T, res *Result, title string) int {
	t.Helper()
	var project, task struct{ ID int }
	e.api(t, res, "PUT", "/api/v1/projects", map[string]string{"title": title}, &project)
	e.api(t, res, "PUT", fmt.Sprintf("/api/v1/projects/%d/tasks", project.ID), map[string]string{"title": title}, &task)
	if task.ID == 0 {
		t.Fatalf("task %q not created", title)
	}
	return task.ID
}

// seeded is what a backup must bring back: tasks, and an attachment on
// the task deleted after the backup.
type seeded struct {
	doomed, attachment int
	file               []byte
}

func (e *env) seed(t *testing.T, res *Result) seeded {
	t.Helper()
	useInstance(t, e, res)
	e.newTask(t, res, "kept")
	// Random bytes: the archive holds them as they are, uncompressed.
	s := seeded{doomed: e.newTask(t, res, "deleted after the backup"), file: make([]byte, 256<<10)}
	rand.NewChaCha8([32]byte{}).Read(s.file)
	s.attachment = e.attach(t, res, s.doomed, "before.txt", s.file)
	return s
}

// change writes, deletes and uploads what a restore must take back.
func (e *env) change(t *testing.T, res *Result, s seeded) {
	t.Helper()
	var deleted json.RawMessage
	e.api(t, res, "DELETE", fmt.Sprintf("/api/v1/tasks/%d", s.doomed), nil, &deleted)
	later := e.newTask(t, res, "written after the backup")
	e.attach(t, res, later, "after.txt", []byte("attached after the backup\n"))
}

// assertRestored checks that the instance serves exactly the data of want
// (a dump), from the slot given, with version 1.0.0 and nothing pending.
func (e *env) assertRestored(t *testing.T, res *Result, want string, s seeded, slot string) {
	t.Helper()
	if got := e.dump(t, res.Name); got != want {
		t.Errorf("data after the restore differs from the backup's:\n--- backup\n%s\n--- restored\n%s", want, got)
	}
	if v, from := e.versionThroughEdge(t, res.Name); v != "1.0.0" || from != slot {
		t.Errorf("through nginx after the restore: version %s from slot %s, want 1.0.0 from %s", v, from, slot)
	}
	e.assertSlots(t, e.instanceConfig(t, res.Name), slot)
	if p, err := e.root.Journal(res.Name).Pending(); p != nil || err != nil {
		t.Errorf("journal left pending: %+v %v", p, err)
	}
	if got := e.send(t, res, "GET", fmt.Sprintf("/api/v1/tasks/%d/attachments/%d", s.doomed, s.attachment), "", nil); !bytes.Equal(got, s.file) {
		t.Errorf("restored attachment through nginx: %d bytes, want the %d uploaded", len(got), len(s.file))
	}
	useInstance(t, e, res)
}

// TestBackupRestoreExact: a backup taken while the instance serves (under
// load, nothing fails), then writes, deletes and uploads; restoring brings
// back exactly the users, tasks and files of the backup, on SQLite,
// PostgreSQL and MariaDB. Without confirmation nothing happens.
func TestBackupRestoreExact(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, typ := range []string{datavol.SQLite, datavol.Postgres, datavol.MySQL} {
		t.Run(typ, func(t *testing.T) {
			name := "exact" + typ
			res := e.deployDB(t, name, typ)
			s := e.seed(t, res)
			var progress bytes.Buffer
			o := e.options(&progress)

			load := e.startLoad(t, res, 0, 0)
			start := time.Now()
			busy, err := Backup(ctx, name, o)
			took := time.Since(start)
			rep := stopLoad(t, "backup", load)
			if err != nil {
				t.Fatalf("backup under load: %v\n%s", err, progress.String())
			}
			t.Logf("%s: backup under load took %v, %d bytes", typ, took.Round(time.Millisecond), busy.Size)
			if rep.Sent == 0 {
				t.Errorf("no request went through during the backup: %s", rep)
			}
			if _, err := backup.Verify(ctx, busy.Path); err != nil {
				t.Errorf("the archive taken under load: %v", err)
			}

			want := e.dump(t, name)
			start = time.Now()
			info, err := Backup(ctx, name, o)
			if err != nil {
				t.Fatalf("backup: %v\n%s", err, progress.String())
			}
			t.Logf("%s: backup took %v, %d bytes", typ, time.Since(start).Round(time.Millisecond), info.Size)
			e.change(t, res, s)
			changed := e.dump(t, name)
			if changed == want {
				t.Fatal("the changes after the backup changed nothing in the dump: the comparison below would prove nothing")
			}

			if _, err := Restore(ctx, info.Path, RestoreOptions{Options: o}); !errors.Is(err, ErrNotConfirmed) {
				t.Errorf("restore without --yes or a terminal: %v, want ErrNotConfirmed", err)
			}
			asked := ""
			no := func(q string) (bool, error) { asked = q; return false, nil }
			if _, err := Restore(ctx, info.Path, RestoreOptions{Options: o, Confirm: no}); !errors.Is(err, ErrNotConfirmed) || !strings.Contains(asked, "lost") {
				t.Errorf("restore declined at %q: %v, want ErrNotConfirmed after a warning about lost writes", asked, err)
			}
			if got := e.dump(t, name); got != changed {
				t.Errorf("a refused restore changed the data:\n--- before\n%s\n--- after\n%s", changed, got)
			}

			start = time.Now()
			rr, err := Restore(ctx, info.Path, RestoreOptions{Options: o, Yes: true})
			took = time.Since(start)
			if err != nil {
				t.Fatalf("restore: %v\n%s", err, progress.String())
			}
			t.Logf("%s: restore took %v; steps: %v", typ, took.Round(time.Millisecond), rr.Steps)
			if rr.Name != name || rr.Version != "1.0.0" || rr.Slot != "a" || rr.Deployed || !rr.Created.Equal(info.Manifest.Created) {
				t.Errorf("restore result %+v", rr)
			}
			e.assertRestored(t, res, want, s, "a")

			infos, err := ListBackups(e.root, name)
			if err != nil || len(infos) != 2 {
				t.Fatalf("backups: %+v %v; want the two taken", infos, err)
			}
			for _, in := range infos {
				if in.Err != nil || in.Manifest.Kind != backup.KindManual || in.Manifest.Template.Version != "1.0.0" || in.Size <= 0 || in.Manifest.Database.Type != typ {
					t.Errorf("listed backup %s: kind %q, version %q, database %q, %d bytes, %v", in.Path, in.Manifest.Kind, in.Manifest.Template.Version, in.Manifest.Database.Type, in.Size, in.Err)
				}
			}
			if !slices.ContainsFunc(infos, func(in backup.Info) bool { return in.Path == info.Path }) {
				t.Errorf("backups %+v do not list %s", infos, info.Path)
			}
		})
	}
}

// TestRestoreRefusesTamperedArchive: a copy of an archive with a byte
// flipped (in the data, in the manifest) or cut short is refused before
// anything changes.
func TestRestoreRefusesTamperedArchive(t *testing.T) {
	e := newEnv(t)
	res := e.deployN(t, "tamper")
	s := e.seed(t, res)
	ctx := context.Background()
	var progress bytes.Buffer
	o := e.options(&progress)
	info, err := Backup(ctx, "tamper", o)
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, progress.String())
	}
	e.change(t, res, s)
	before, cfgBefore, cts, dir := e.dump(t, "tamper"), e.readConfig(t, "tamper"), e.containers(t), e.instanceDir(t, "tamper")
	orig, err := os.ReadFile(info.Path)
	if err != nil {
		t.Fatal(err)
	}
	// The manifest is the JSON just before the 12-byte footer.
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"flipped", flip(orig, len(orig)/2)},
		{"manifest", flip(orig, len(orig)-40)},
		{"truncated", orig[:len(orig)/2]},
	} {
		path := filepath.Join(t.TempDir(), filepath.Base(info.Path))
		if err := os.WriteFile(path, tc.b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Restore(ctx, path, RestoreOptions{Options: o, Yes: true})
		if !errors.Is(err, backup.ErrCorrupt) && !errors.Is(err, backup.ErrUnsafe) {
			t.Errorf("restore of a %s archive: %v, want ErrCorrupt or ErrUnsafe", tc.name, err)
			continue
		}
		t.Logf("%s archive refused: %v", tc.name, err)
	}
	if after := e.dump(t, "tamper"); after != before {
		t.Errorf("a refused restore changed the data:\n--- before\n%s\n--- after\n%s", before, after)
	}
	if v, slot := e.versionThroughEdge(t, "tamper"); v != "1.0.0" || slot != "a" {
		t.Errorf("through nginx: version %s from slot %s, want 1.0.0 from a", v, slot)
	}
	if after := e.containers(t); !slices.Equal(after, cts) {
		t.Errorf("containers changed: %v, were %v", after, cts)
	}
	if after := e.readConfig(t, "tamper"); after != cfgBefore {
		t.Errorf("instance.yaml changed:\n%s\nwas\n%s", after, cfgBefore)
	}
	if after := e.instanceDir(t, "tamper"); !slices.Equal(after, dir) {
		t.Errorf("instance directory holds %v, held %v", after, dir)
	}
	if p, err := e.root.Journal("tamper").Pending(); p != nil || err != nil {
		t.Errorf("journal left pending: %+v %v", p, err)
	}
	useInstance(t, e, res)
}

func flip(b []byte, i int) []byte {
	c := slices.Clone(b)
	c[i] ^= 0x01
	return c
}

func (e *env) readConfig(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.root.Instance(name), InstanceFile))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// containers lists the node's containers with their states.
func (e *env) containers(t *testing.T) []string {
	t.Helper()
	c, err := e.be.Cluster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ct := range c.Containers {
		out = append(out, fmt.Sprintf("%d %s %s", ct.ID, ct.Name, ct.State))
	}
	slices.Sort(out)
	return out
}

// instanceDir lists the instance directory and its data volume's top
// level: a refused restore leaves no work directory behind.
func (e *env) instanceDir(t *testing.T, name string) []string {
	t.Helper()
	var out []string
	for _, dir := range []string{e.root.Instance(name), e.root.DataVolume(name)} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range entries {
			out = append(out, filepath.Join(dir, en.Name()))
		}
	}
	return out
}

// TestRestoreOtherVersion: a backup made by 1.0.0, restored after an
// upgrade to 1.1.0 (which migrated the schema), brings 1.0.0 back in the
// other slot with the backup's data; there is no upgrade left to roll back.
func TestRestoreOtherVersion(t *testing.T) {
	e := newEnv(t)
	layout := e.channel(t)
	res := e.deployN(t, "older")
	s := e.seed(t, res)
	ctx := context.Background()
	var progress bytes.Buffer
	o := e.options(&progress)
	info, err := Backup(ctx, "older", o)
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, progress.String())
	}
	want := e.dump(t, "older")
	e.publish(t, layout, vNext)
	if _, err := Upgrade(ctx, "older", UpgradeOptions{Options: o}); err != nil {
		t.Fatalf("upgrade: %v\n%s", err, progress.String())
	}
	e.change(t, res, s)
	if v, slot := e.versionThroughEdge(t, "older"); v != "1.1.0" || slot != "b" {
		t.Fatalf("after the upgrade: version %s from slot %s, want 1.1.0 from b", v, slot)
	}

	start := time.Now()
	rr, err := Restore(ctx, info.Path, RestoreOptions{Options: o, Yes: true})
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, progress.String())
	}
	t.Logf("restore of 1.0.0 over 1.1.0 took %v; steps: %v", time.Since(start).Round(time.Millisecond), rr.Steps)
	if rr.Version != "1.0.0" || rr.Slot != "a" {
		t.Errorf("restore result %+v, want 1.0.0 in slot a", rr)
	}
	e.assertRestored(t, res, want, s, "a")
	cfg := e.instanceConfig(t, "older")
	if cfg.Slots.Active != "a" || cfg.Slots.A.Version != "1.0.0" || cfg.LastUpgrade != nil {
		t.Errorf("instance.yaml after the restore: %+v, last upgrade %+v", cfg.Slots, cfg.LastUpgrade)
	}
	if _, err := Rollback(ctx, "older", RollbackOptions{Options: o, Yes: true}); !errors.Is(err, ErrNothingToRollBack) {
		t.Errorf("rollback after the restore: %v, want ErrNothingToRollBack", err)
	}
}

// TestRestoreOnAnotherNode: an archive copied to a node without the
// instance deploys it there, placed on that node's bridge and nginx ports,
// with the same data and the admin's original password; A's archive
// names a bridge, addresses and ports the new node does not have for it.
func TestRestoreOnAnotherNode(t *testing.T) {
	a := newEnv(t)
	res := a.deployN(t, "moved")
	s := a.seed(t, res)
	ctx := context.Background()
	var progress bytes.Buffer
	start := time.Now()
	info, err := Backup(ctx, "moved", a.options(&progress))
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, progress.String())
	}
	t.Logf("backup on node A took %v, %d bytes", time.Since(start).Round(time.Millisecond), info.Size)
	want := a.dump(t, "moved")
	cfgA := a.instanceConfig(t, "moved")

	b := newEnv(t)
	archive := filepath.Join(t.TempDir(), filepath.Base(info.Path))
	raw, err := os.ReadFile(info.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(archive, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	place := Placement{Bridge: b.bridge, Ports: deployconfig.Ports{HTTP: b.nginx.HTTPPort, HTTPS: b.nginx.HTTPSPort},
		URL: fmt.Sprintf("https://%s:%d", cfgA.Domain, b.nginx.HTTPSPort)}
	o := b.options(&progress)

	missing := place
	missing.Bridge = "vkimgnone0"
	if _, err := Restore(ctx, archive, RestoreOptions{Options: o, Yes: true, Placement: missing}); err == nil || !strings.Contains(err.Error(), "network.bridge") {
		t.Fatalf("restore onto a bridge node B lacks: %v, want the bridge refused", err)
	}
	b.assertNothing(t, "moved")

	t.Cleanup(func() { b.uninstall(t, "moved") })
	start = time.Now()
	rr, err := Restore(ctx, archive, RestoreOptions{Options: o, Placement: place})
	if err != nil {
		t.Fatalf("restore on node B: %v\n%s", err, progress.String())
	}
	t.Logf("restore on node B (deploy from the archive) took %v; steps: %v", time.Since(start).Round(time.Millisecond), rr.Steps)
	if !rr.Deployed || rr.Version != "1.0.0" || rr.Name != "moved" || !strings.Contains(rr.URL, fmt.Sprint(b.nginx.HTTPSPort)) {
		t.Errorf("restore result %+v, want moved deployed with 1.0.0 at B's port", rr)
	}
	cfgB := b.instanceConfig(t, "moved")
	addrB, err := netip.ParsePrefix(cfgB.Slots.A.Address)
	if err != nil || cfgB.Network.Bridge != b.bridge || cfgB.Ports.HTTPS != b.nginx.HTTPSPort || cfgB.Slots.A.Address == cfgA.Slots.A.Address || !addrB.Contains(b.gateway(t)) {
		t.Errorf("instance.yaml on B: network %+v, ports %+v, slot a %+v (%v); want B's bridge, ports and subnet", cfgB.Network, cfgB.Ports, cfgB.Slots.A, err)
	}
	if set, err := datavol.ReadSettings(b.root.DataVolume("moved")); err != nil || set.PublicURL != cfgB.URL {
		t.Errorf("Vikunja's public URL on B: %q (%v), want %s", set.PublicURL, err, cfgB.URL)
	}
	// The admin logs in with the password given on node A.
	b.assertRestored(t, res, want, s, "a")
	if infos, err := ListBackups(b.root, ""); err != nil || len(infos) != 0 {
		t.Errorf("backups on B: %+v %v; a restore makes none", infos, err)
	}
	if _, err := Restore(ctx, archive, RestoreOptions{Options: o, Yes: true, Placement: place}); err == nil || !strings.Contains(err.Error(), "placement") {
		t.Errorf("restore with a placement onto the instance B now has: %v, want it refused", err)
	}
	useInstance(t, a, res)
}

// TestRestoreKilledAtEveryStep kills `vkimg restore --yes` right before
// each step that stops, restores, starts or switches; the next command on
// the instance (a backup) settles it: undone before the data was
// replaced (the restore is then run again), finished after.
func TestRestoreKilledAtEveryStep(t *testing.T) {
	e := newEnv(t)
	res := e.deployN(t, "krs")
	s := e.seed(t, res)
	ctx := context.Background()
	var progress bytes.Buffer
	o := e.options(&progress)
	info, err := Backup(ctx, "krs", o)
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, progress.String())
	}
	want := e.dump(t, "krs")
	for _, step := range []string{stepStopNew, stepRestore, stepStartPrev, stepFlip} {
		t.Run(step, func(t *testing.T) {
			e.change(t, res, s)
			changed := e.dump(t, "krs")
			if changed == want {
				t.Fatal("the changes changed nothing in the dump: the comparison below would prove nothing")
			}
			e.kill(t, opKillSpec{Op: opRestore, Archive: info.Path, KillAt: step})
			if p, err := e.root.Journal("krs").Pending(); p == nil || p.Op != opRestore {
				t.Fatalf("after SIGKILL: pending %+v %v, want the restore", p, err)
			}
			progress.Reset()
			if _, err := Backup(ctx, "krs", o); err != nil {
				t.Fatalf("backup after the kill: %v\n%s", err, progress.String())
			}
			if !strings.Contains(progress.String(), "interrupted restore") {
				t.Errorf("the backup did not settle the killed restore:\n%s", progress.String())
			}
			if step == stepStopNew || step == stepRestore {
				if got := e.dump(t, "krs"); got != changed {
					t.Errorf("a restore killed before replacing the data, undone, changed it:\n--- before\n%s\n--- after\n%s", changed, got)
				}
				useInstance(t, e, res)
				if _, err := Restore(ctx, info.Path, RestoreOptions{Options: o, Yes: true}); err != nil {
					t.Fatalf("restore again: %v\n%s", err, progress.String())
				}
			}
			e.assertRestored(t, res, want, s, "a")
		})
	}
}

// TestPlacementApply: a placement changes only what it sets, and a new
// bridge without an address drops the old network's addresses.
func TestPlacementApply(t *testing.T) {
	archived := func() *deployconfig.Answers {
		return &deployconfig.Answers{Name: "moved", URL: "https://moved.example.org:8443/",
			Template: deployconfig.Template{Source: "/srv/old/templates", Version: "1.0.0"},
			Network:  deployconfig.Network{Bridge: "vmbr0", Address: "192.0.2.11/24", AddressB: "192.0.2.12/24", Gateway: "192.0.2.1"},
			Ports:    deployconfig.Ports{HTTP: 8080, HTTPS: 8443}, Storage: deployconfig.Storage{Rootfs: "local-lvm", Template: "local"},
			Node: "pve1"}
	}
	for _, tc := range []struct {
		name string
		p    Placement
		want func(a *deployconfig.Answers)
	}{
		{"nothing", Placement{}, func(*deployconfig.Answers) {}},
		{"bridge", Placement{Bridge: "vmbr1"}, func(a *deployconfig.Answers) {
			a.Network = deployconfig.Network{Bridge: "vmbr1", Address: deployconfig.DHCP}
		}},
		{"bridge and address", Placement{Bridge: "vmbr1", Address: "198.51.100.5/24", Gateway: "198.51.100.1"}, func(a *deployconfig.Answers) {
			a.Network = deployconfig.Network{Bridge: "vmbr1", Address: "198.51.100.5/24", Gateway: "198.51.100.1"}
		}},
		{"everything else", Placement{Node: "pve2", Storage: deployconfig.Storage{Rootfs: "zfs"}, Ports: deployconfig.Ports{HTTPS: 443},
			URL: "https://moved.example.org", TLS: deployconfig.TLS{SelfSigned: true}, TemplateSource: "registry.example.org/vkimg/vikunja"},
			func(a *deployconfig.Answers) {
				a.Node, a.Storage.Rootfs, a.Ports.HTTPS, a.URL = "pve2", "zfs", 443, "https://moved.example.org"
				a.TLS, a.Template.Source = deployconfig.TLS{SelfSigned: true}, "registry.example.org/vkimg/vikunja"
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, want := archived(), archived()
			tc.p.apply(got)
			tc.want(want)
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
				t.Errorf("placement %+v gave\n%+v\nwant\n%+v", tc.p, got, want)
			}
		})
	}
}
