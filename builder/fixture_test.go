package builder_test

import (
	"os"
	"sync"
	"testing"

	"github.com/vkimg/vkimg/builder"
	"github.com/vkimg/vkimg/builder/buildertest"
	"github.com/vkimg/vkimg/internal/recipe"
	"github.com/vkimg/vkimg/internal/testenv"
)

// build builds the recipe at path (relative to the repository) with
// overrides into a fresh output directory under t's temp dir.
func build(t testing.TB, path string, o recipe.Overrides) *builder.Result {
	t.Helper()
	return buildertest.Build(t, path, o, t.TempDir())
}

var (
	standinOnce sync.Once
	standinRes  *builder.Result
	sharedDirs  []string // removed by TestMain
)

// standin builds the stand-in template once per test binary; later callers
// share it. Its outputs outlive the test that built it, so they go to a
// directory TestMain removes.
func standin(t *testing.T) *builder.Result {
	t.Helper()
	testenv.NeedRoot(t)
	standinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vkimg-standin-")
		if err != nil {
			t.Fatal(err)
		}
		sharedDirs = append(sharedDirs, dir)
		standinRes = buildertest.Build(t, "recipes/standin.yaml", recipe.Overrides{}, dir)
	})
	if standinRes == nil {
		t.Fatal("the shared stand-in build failed (see the first test that asked for it)")
	}
	return standinRes
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range sharedDirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}
