// Tests that need no root: progress output, locks, version checks.

package deploy

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/state"
)

func TestProgressStepListAndRedaction(t *testing.T) {
	for _, terminal := range []bool{true, false} {
		var out bytes.Buffer
		logFile := filepath.Join(t.TempDir(), "log", "tasks.log")
		p, err := openProgress(&out, terminal, logFile, 4)
		if err != nil {
			t.Fatal(err)
		}
		p.redact("s3cret-pw")
		p.step("lock")
		p.step("upload template")
		p.logf("connecting with password s3cret-pw")
		p.finish("deployed")
		if err := p.close(); err != nil {
			t.Fatal(err)
		}
		log, err := os.ReadFile(logFile)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{out.String(), string(log)} {
			if strings.Contains(s, "s3cret-pw") || !strings.Contains(s, "password [redacted]") {
				t.Errorf("terminal=%v: secret not redacted:\n%s", terminal, s)
			}
		}
		if !regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\S+ step 2/4: upload template$`).Match(log) {
			t.Errorf("terminal=%v: log lines are not timestamped steps:\n%s", terminal, log)
		}
		want := `(?m)^\d{4}-\d\d-\d\dT\S+ step 2/4: upload template$`
		if terminal {
			want = `(?m)^\[ 2/4  25%\] upload template$[\s\S]*^\[ 4/4 100%\] deployed$`
		}
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("terminal=%v: output does not match %s:\n%s", terminal, want, out.String())
		}
	}
}

func TestDeployRefusedWhileInstanceLocked(t *testing.T) {
	dir := t.TempDir()
	root := state.Root{Dir: filepath.Join(dir, "root"), LogDir: filepath.Join(dir, "log")}
	lock, err := root.InstanceLock("busy", "upgrade busy")
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	_, err = Run(context.Background(), &deployconfig.Answers{Name: "busy"}, Options{Root: root})
	if !state.IsLocked(err) || !strings.Contains(err.Error(), "upgrade busy") {
		t.Fatalf("deploy while locked: %v, want a lock error naming the holder", err)
	}
	if _, err := os.Stat(filepath.Join(root.Instance("busy"), InstanceFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("instance configuration: %v", err)
	}
}

func TestCheckPVEVersion(t *testing.T) {
	for v, ok := range map[string]bool{"": true, "7.0": true, "8.2.4": true, "9.0.3": true, "6.4": false, "x": false} {
		if err := checkPVEVersion(v); (err == nil) != ok {
			t.Errorf("checkPVEVersion(%q) = %v, want ok=%v", v, err, ok)
		}
	}
}
