// Package buildertest builds real templates for tests in any package, with
// the Debian base cached across runs (under $VKIMG_TEST_CACHE/builder).
package buildertest

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/vkimg/vkimg/builder"
	"github.com/vkimg/vkimg/internal/recipe"
	"github.com/vkimg/vkimg/internal/testenv"
)

// Epoch is SOURCE_DATE_EPOCH for every test build, so all of them share
// one cached Debian base.
var Epoch = time.Unix(1700000000, 0).UTC()

// Revision is the source revision test builds record.
const Revision = "0123456789abcdef0123456789abcdef01234567"

// RepoDir is the repository root (recipes/, rootfs-overlays/).
func RepoDir(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the buildertest package")
	}
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}

// CacheDir holds the builder's cache (Debian bases) across test runs.
func CacheDir() string {
	if d := os.Getenv("VKIMG_TEST_CACHE"); d != "" {
		return filepath.Join(d, "builder")
	}
	return filepath.Join(os.TempDir(), "vkimg-test-cache", "builder")
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}

// Build builds the recipe at path (relative to the repository) with
// overrides into out (templates/ and rootfs/ below it). It needs root:
// mmdebstrap builds the Debian base as root.
func Build(t testing.TB, path string, o recipe.Overrides, out string) *builder.Result {
	t.Helper()
	testenv.NeedRoot(t)
	r, err := recipe.Load(filepath.Join(RepoDir(t), path))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(o); err != nil {
		t.Fatal(err)
	}
	b, err := builder.New(builder.Options{
		Overlays:  filepath.Join(RepoDir(t), "rootfs-overlays"),
		CacheDir:  CacheDir(),
		Layout:    filepath.Join(out, "templates"),
		RootfsDir: filepath.Join(out, "rootfs"),
		Epoch:     Epoch,
		Revision:  Revision,
		Log:       logWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Build(context.Background(), r)
	if err != nil {
		t.Fatalf("build %s: %v", path, err)
	}
	return res
}
