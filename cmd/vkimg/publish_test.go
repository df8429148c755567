package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vkimg/vkimg/internal/registry/registrytest"
	"github.com/vkimg/vkimg/internal/testenv"
)

// vkimg runs the CLI in-process and returns its output and exit status.
func vkimg(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, &errOut
	err := app.Run(append([]string{"vkimg"}, args...))
	if err != nil {
		fmt.Fprintln(&errOut, "vkimg:", err)
	}
	return out.String() + errOut.String(), exitCode(err)
}

func mustVkimg(t *testing.T, args ...string) string {
	t.Helper()
	out, code := vkimg(t, args...)
	if code != 0 {
		t.Fatalf("vkimg %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// TestPublishPullCommands drives keys, publish, templates and pull against
// a real registry, including the exit statuses of refused and bad input.
func TestPublishPullCommands(t *testing.T) {
	reg := testenv.RegistryPlain(t)
	dir := t.TempDir()
	t.Setenv("VKIMG_ROOT", filepath.Join(dir, "root"))
	t.Setenv("COSIGN_PASSWORD", "pw")
	prefix := filepath.Join(dir, "ci")
	mustVkimg(t, "keys", "generate", prefix)
	if out, code := vkimg(t, "keys", "generate", prefix); code != exitUsage || !strings.Contains(out, "refusing to overwrite") {
		t.Errorf("second keys generate: exit %d: %s", code, out)
	}
	key, _ := os.ReadFile(prefix + ".key")
	t.Setenv("VKIMG_SIGNING_KEY", string(key))

	layoutDir, digest := registrytest.TemplateLayout(t, "1.2.0", 4096)
	repo := reg.Host + "/standin"
	var pub struct {
		Digest string   `json:"digest"`
		Tags   []string `json:"tags"`
	}
	out := mustVkimg(t, "publish", "--layout", layoutDir, "--main", "--json", repo)
	if err := json.Unmarshal([]byte(out), &pub); err != nil || pub.Digest != digest.String() {
		t.Fatalf("publish output %q (%v), want digest %s", out, err, digest)
	}
	if got := mustVkimg(t, "templates", "list", repo); got != "1.2.0\nmain\n" {
		t.Errorf("templates list = %q", got)
	}
	latest := mustVkimg(t, "templates", "latest", "--channel", "^1", "--installed", "1.0.0", repo)
	if !strings.Contains(latest, "behind: 1.2.0 is available") {
		t.Errorf("templates latest: %s", latest)
	}
	show := mustVkimg(t, "templates", "show", "--trusted-key", prefix+".pub", repo+":main")
	if !strings.Contains(show, "verified with sha256:") || !strings.Contains(show, "standin 1.2.0") {
		t.Errorf("templates show: %s", show)
	}

	pull := mustVkimg(t, "pull", "--trusted-key", prefix+".pub", "--json", repo+":1.2.0")
	if !strings.Contains(pull, `"blobsFetched": 3`) {
		t.Errorf("first pull: %s", pull)
	}
	pull = mustVkimg(t, "pull", "--trusted-key", prefix+".pub", "--json", repo+":1.2.0")
	if !strings.Contains(pull, `"blobsFetched": 0`) {
		t.Errorf("second pull: %s", pull)
	}

	mustVkimg(t, "keys", "generate", filepath.Join(dir, "other"))
	for _, c := range []struct {
		name string
		args []string
		code int
		says string
	}{
		{"wrong key", []string{"pull", "--trusted-key", filepath.Join(dir, "other.pub"), repo + ":1.2.0"}, exitVerify, "does not verify with trusted key"},
		{"unsigned", []string{"pull", "--trusted-key", prefix + ".pub", "--layout", layoutDir, "1.2.0"}, exitVerify, "no signatures found"},
		{"bad reference", []string{"pull", "--trusted-key", prefix + ".pub", "Not A Ref"}, exitUsage, "template reference"},
		{"missing trusted key", []string{"pull", "--trusted-key", filepath.Join(dir, "nope.pub"), repo + ":1.2.0"}, exitUsage, "nope.pub"},
		{"registry down", []string{"pull", "--trusted-key", prefix + ".pub", fmt.Sprintf("127.0.0.1:%d/x:1.0.0", testenv.FreePort(t))}, exitFailure, "connection refused"},
		{"missing signing key", []string{"publish", "--layout", layoutDir, "--key", filepath.Join(dir, "nope.key"), repo}, exitUsage, "nope.key"},
		{"publish to a tag", []string{"publish", "--layout", layoutDir, repo + ":1.2.0"}, exitUsage, "without tag"},
	} {
		out, code := vkimg(t, c.args...)
		if code != c.code || !strings.Contains(out, c.says) {
			t.Errorf("%s: exit %d, want %d saying %q:\n%s", c.name, code, c.code, c.says, out)
		}
	}
	t.Setenv("COSIGN_PASSWORD", "wrong")
	if out, code := vkimg(t, "publish", "--layout", layoutDir, repo); code != exitUsage || !strings.Contains(out, "password") {
		t.Errorf("wrong key password: exit %d: %s", code, out)
	}
}
