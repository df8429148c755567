package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vkimg/vkimg/builder/buildertest"
	"github.com/vkimg/vkimg/internal/backup/backuptest"
	"github.com/vkimg/vkimg/internal/datavol"
	"github.com/vkimg/vkimg/internal/deploy"
	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/edge"
	"github.com/vkimg/vkimg/internal/lxc/lxctest"
	"github.com/vkimg/vkimg/internal/recipe"
	"github.com/vkimg/vkimg/internal/registry"
	"github.com/vkimg/vkimg/internal/state"
)

// vkimgBinary is the vkimg command built from this package and run as an
// administrator runs it: its own process, with no terminal on stdin, and
// stdout (what scripts parse) apart from stderr (progress). Unlike the
// in-process vkimg helper, its defaults come from the environment it
// starts in, as $VKIMG_ROOT/etc/trusted.pub does.
type vkimgBinary string

func buildVkimg(t *testing.T) vkimgBinary {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "vkimg")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return vkimgBinary(bin)
}

func (b vkimgBinary) run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(string(b), args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	var exit *exec.ExitError
	if err := cmd.Run(); err != nil && !errors.As(err, &exit) {
		t.Fatalf("run vkimg %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// must runs vkimg and returns its stdout; any exit status but 0 fails.
func (b vkimgBinary) must(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := b.run(t, args...)
	if code != exitOK {
		t.Fatalf("vkimg %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// refused runs vkimg, wants exit status code with every one of says in its
// output, and returns the output.
func (b vkimgBinary) refused(t *testing.T, code int, says []string, args ...string) string {
	t.Helper()
	out, errOut, got := b.run(t, args...)
	all := out + errOut
	if got != code || slices.ContainsFunc(says, func(s string) bool { return !strings.Contains(all, s) }) {
		t.Fatalf("vkimg %s: exit %d, want %d saying %q:\n%s", strings.Join(args, " "), got, code, says, all)
	}
	return all
}

// signedChannel builds the stand-in at each version, signs them with a key
// made by `vkimg keys generate` into one layout, and pins that key as the
// node's trusted key ($VKIMG_ROOT/etc/trusted.pub): what users run.
func signedChannel(t *testing.T, b vkimgBinary, versions ...string) string {
	t.Helper()
	t.Setenv("COSIGN_PASSWORD", "release-pw")
	prefix := filepath.Join(t.TempDir(), "release")
	b.must(t, "keys", "generate", prefix)
	pub, err := os.ReadFile(prefix + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	trusted := state.FromEnv().TrustedKey()
	if err := os.MkdirAll(filepath.Dir(trusted), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(trusted, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(t.TempDir(), "channel")
	for _, v := range versions {
		o := recipe.Overrides{Versions: map[string]string{"template": v, "backend": v}}
		built := buildertest.Build(t, "recipes/standin.yaml", o, t.TempDir())
		b.must(t, "publish", "--layout", built.Layout, "--key", prefix+".key", registry.LayoutPrefix+layout)
	}
	return layout
}

// instanceState is what an administrator sees of an instance: the version
// and slot nginx answers from, and what `vkimg list` says.
type instanceState struct {
	edgeVersion, edgeSlot string
	list                  deploy.Instance
}

func (b vkimgBinary) state(t *testing.T, name string, httpsPort int) instanceState {
	t.Helper()
	var list []deploy.Instance
	if err := json.Unmarshal([]byte(b.must(t, "list", "--json", "--hypervisor", "lxc")), &list); err != nil {
		t.Fatalf("list --json: %v", err)
	}
	i := slices.IndexFunc(list, func(in deploy.Instance) bool { return in.Name == name })
	if i < 0 {
		t.Fatalf("list --json = %+v, want %s", list, name)
	}
	cfg, err := deployconfig.ReadInstance(filepath.Join(state.FromEnv().Instance(name), deploy.InstanceFile))
	if err != nil {
		t.Fatal(err)
	}
	client, err := deploy.EdgeClient(edge.Site{Domains: []string{cfg.Domain}, HTTPSPort: httpsPort, CertFile: cfg.TLS.Certificate})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Get(cfg.URL + "/api/v1/info")
	if err != nil {
		t.Fatalf("GET /api/v1/info through nginx: %v", err)
	}
	defer resp.Body.Close()
	var info struct{ Version string }
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /api/v1/info through nginx: %s %v", resp.Status, err)
	}
	return instanceState{info.Version, resp.Header.Get(edge.SlotHeader), list[i]}
}

// serves fails unless the instance runs version on slot, through nginx
// and in `vkimg list`.
func (s instanceState) serves(t *testing.T, when, version, slot string) {
	t.Helper()
	if s.edgeVersion != version || s.edgeSlot != slot || s.list.Version != version || s.list.ActiveSlot != slot || s.list.State != "running" {
		t.Fatalf("%s: nginx answers %s from slot %s, list says %+v; want %s on slot %s, running", when, s.edgeVersion, s.edgeSlot, s.list, version, slot)
	}
}

// dump is the instance's data (every table's rows, the attachments).
func dump(t *testing.T, name string) string {
	t.Helper()
	dv := state.FromEnv().DataVolume(name)
	s, err := datavol.ReadSettings(dv)
	if err != nil {
		t.Fatal(err)
	}
	return backuptest.Dump(t, s.Database, dv)
}

// backupList is `vkimg backups --json`.
func (b vkimgBinary) backupList(t *testing.T, args ...string) []backupJSON {
	t.Helper()
	var list []backupJSON
	if err := json.Unmarshal([]byte(b.must(t, append([]string{"backups", "--json"}, args...)...)), &list); err != nil {
		t.Fatalf("backups --json: %v", err)
	}
	return list
}

// TestUpgradeRollbackBackupRestoreCommands drives upgrade, rollback,
// backup, backups and restore through the vkimg binary on a stand-in
// instance deployed from a signed channel holding 1.0.0 and 1.1.0 (one
// schema migration): their output, JSON and exit statuses, the
// confirmations a data-losing rollback or restore needs (refused off a
// terminal, "n" on a terminal), a tampered archive, a held lock, and the
// data after each restore.
func TestUpgradeRollbackBackupRestoreCommands(t *testing.T) {
	lxctest.RequireRoot(t)
	vk := buildVkimg(t)
	tmp, _, bridge, srv := deployEnv(t)
	layout := signedChannel(t, vk, "1.0.0", "1.1.0")
	const name, migration = "rel", "20260301000001"
	ops := append([]string{"--hypervisor", "lxc"}, nginxFlags(srv)...)
	// Options go before INSTANCE or ARCHIVE.
	cmd := func(command string, args ...string) []string {
		return append(append([]string{command}, ops...), args...)
	}

	vk.refused(t, exitUsage, []string{"no instance on this node"}, cmd("upgrade")...)

	answers := writeAnswers(t, tmp, name, layout, "1.0.0", bridge, srv)
	if out := vk.must(t, cmd("deploy", "--config", answers, "--yes")...); !strings.Contains(out, "Vikunja 1.0.0 is ready at") {
		t.Fatalf("deploy output:\n%s", out)
	}
	vk.state(t, name, srv.HTTPSPort).serves(t, "after the deploy", "1.0.0", "a")
	deployed := dump(t, name)

	// --check reports and changes nothing.
	check := vk.must(t, cmd("upgrade", "--check")...)
	if !strings.Contains(check, name+": version 1.1.0 is available (running 1.0.0)") || !strings.Contains(check, migration) {
		t.Errorf("upgrade --check:\n%s", check)
	}
	var checked deploy.UpgradeResult
	if err := json.Unmarshal([]byte(vk.must(t, cmd("upgrade", "--check", "--json")...)), &checked); err != nil ||
		checked.UpToDate || checked.From != "1.0.0" || checked.To != "1.1.0" || !slices.Equal(checked.Migrations, []string{migration}) {
		t.Errorf("upgrade --check --json = %+v, %v; want 1.0.0 → 1.1.0 with migration %s", checked, err, migration)
	}
	vk.state(t, name, srv.HTTPSPort).serves(t, "after upgrade --check", "1.0.0", "a")

	// The only instance needs no name.
	out := vk.must(t, cmd("upgrade")...)
	m := regexp.MustCompile(`pre-upgrade backup: (\S+)`).FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, name+" upgraded from 1.0.0 to 1.1.0 (slot b") {
		t.Fatalf("upgrade output:\n%s", out)
	}
	preUpgrade := m[1]
	if _, err := os.Stat(preUpgrade); err != nil {
		t.Fatalf("the printed pre-upgrade backup: %v", err)
	}
	vk.state(t, name, srv.HTTPSPort).serves(t, "after the upgrade", "1.1.0", "b")
	if out := vk.must(t, cmd("upgrade")...); !strings.Contains(out, name+" is up to date (version 1.1.0)") {
		t.Errorf("second upgrade:\n%s", out)
	}

	table := vk.must(t, "backups")
	if !strings.Contains(table, preUpgrade) || !regexp.MustCompile(name+` +1\.0\.0 +pre-upgrade `).MatchString(table) {
		t.Errorf("backups:\n%s", table)
	}
	list := vk.backupList(t)
	if len(list) != 1 || list[0].Path != preUpgrade || list[0].Kind != "pre-upgrade" || list[0].Version != "1.0.0" ||
		list[0].Instance != name || list[0].Database != "sqlite" || list[0].Size == 0 || list[0].Error != "" {
		t.Errorf("backups --json = %+v; want the pre-upgrade backup of 1.0.0", list)
	}
	manual := strings.TrimSpace(vk.must(t, cmd("backup")...))
	if fi, err := os.Stat(manual); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup printed %q: %v; want a 0600 archive", manual, err)
	}
	list = vk.backupList(t, name)
	if len(list) != 2 || list[0].Path != manual || list[0].Kind != "manual" || list[0].Version != "1.1.0" || list[1].Path != preUpgrade {
		t.Errorf("backups --json %s = %+v; want the manual backup of 1.1.0, then the pre-upgrade one", name, list)
	}

	// Rolling back across the migration restores the pre-upgrade backup:
	// with no terminal to ask, only --yes confirms it.
	vk.refused(t, exitUsage, []string{"after the options"}, "rollback", name, "--yes")
	vk.refused(t, exitUsage, []string{migration, "--yes", "lost"}, cmd("rollback")...)
	vk.state(t, name, srv.HTTPSPort).serves(t, "after the refused rollback", "1.1.0", "b")
	out = vk.must(t, cmd("rollback", "--yes")...)
	if !strings.Contains(out, name+" rolled back from 1.1.0 to 1.0.0 (slot a") || !strings.Contains(out, "data restored from "+preUpgrade) {
		t.Errorf("rollback --yes:\n%s", out)
	}
	vk.state(t, name, srv.HTTPSPort).serves(t, "after the rollback", "1.0.0", "a")
	if got := dump(t, name); got != deployed {
		t.Errorf("data after the rollback differs from before the upgrade:\n--- before\n%s\n--- after\n%s", deployed, got)
	}

	// Upgraded again, a rollback asks on the terminal; "n" changes nothing.
	vk.must(t, cmd("upgrade", name)...)
	vk.state(t, name, srv.HTTPSPort).serves(t, "after the second upgrade", "1.1.0", "b")
	upgraded := dump(t, name)
	if upgraded == deployed {
		t.Fatal("the migration changed nothing in the dump: the restore below would prove nothing")
	}
	term := startTerminal(t, exec.Command(string(vk), cmd("rollback", name)...))
	term.expect(migration, 2*time.Minute)
	term.expect("is lost", time.Minute)
	term.expect("Roll back? [y/N]", time.Minute)
	term.keys("n", keyEnter)
	select {
	case err := <-term.exited:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != exitUsage {
			t.Fatalf("rollback answered n: %v, want exit %d; screen:\n%s", err, exitUsage, lastOf(term.screen()))
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("rollback answered n did not exit; screen:\n%s", lastOf(term.screen()))
	}
	<-term.closed
	term.expect("nothing changed", time.Second)
	vk.state(t, name, srv.HTTPSPort).serves(t, `after the rollback answered "n"`, "1.1.0", "b")
	if got := dump(t, name); got != upgraded {
		t.Errorf(`data changed by the rollback answered "n":\n--- before\n%s\n--- after\n%s`, upgraded, got)
	}

	// A tampered archive is refused before anything changes.
	original, err := os.ReadFile(preUpgrade)
	if err != nil {
		t.Fatal(err)
	}
	tampered := filepath.Join(tmp, filepath.Base(preUpgrade))
	original[len(original)/3] ^= 0x55
	if err := os.WriteFile(tampered, original, 0o600); err != nil {
		t.Fatal(err)
	}
	vk.refused(t, exitVerify, []string{"refused", "corrupt"}, cmd("restore", "--yes", tampered)...)
	vk.refused(t, exitUsage, []string{"Restoring " + name, "--yes", "lost"}, cmd("restore", preUpgrade)...)
	vk.refused(t, exitUsage, []string{"no such file"}, cmd("restore", "--yes", preUpgrade+".missing")...)
	vk.state(t, name, srv.HTTPSPort).serves(t, "after the refused restores", "1.1.0", "b")
	if got := dump(t, name); got != upgraded {
		t.Errorf("data changed by the refused restores:\n--- before\n%s\n--- after\n%s", upgraded, got)
	}

	// The pre-upgrade archive was made by 1.0.0: restoring it brings 1.0.0
	// back, in the idle slot, with exactly the data it holds.
	out = vk.must(t, cmd("restore", "--yes", preUpgrade)...)
	if !strings.Contains(out, name+" restored from "+preUpgrade) || !strings.Contains(out, "version 1.0.0") {
		t.Errorf("restore --yes:\n%s", out)
	}
	vk.state(t, name, srv.HTTPSPort).serves(t, "after the restore", "1.0.0", "a")
	if got := dump(t, name); got != deployed {
		t.Errorf("data after the restore differs from the archive's:\n--- archived\n%s\n--- restored\n%s", deployed, got)
	}
	vk.refused(t, exitUsage, []string{"nothing to roll back to"}, cmd("rollback", "--yes")...)

	lock, err := state.FromEnv().InstanceLock(name, "test holder")
	if err != nil {
		t.Fatal(err)
	}
	vk.refused(t, exitLocked, []string{"test holder"}, cmd("upgrade")...)
	lock.Release()
	vk.refused(t, exitUsage, []string{"nosuch"}, cmd("upgrade", "nosuch")...)
	vk.state(t, name, srv.HTTPSPort).serves(t, "at the end", "1.0.0", "a")
}
