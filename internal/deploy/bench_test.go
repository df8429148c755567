package deploy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vkimg/vkimg/builder/buildertest"
	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/edge"
	"github.com/vkimg/vkimg/internal/lxc/lxctest"
	"github.com/vkimg/vkimg/internal/recipe"
	"github.com/vkimg/vkimg/internal/registry"
	"github.com/vkimg/vkimg/internal/state"
	"github.com/vkimg/vkimg/internal/testenv"
)

// BenchmarkDeploy deploys the signed stand-in template from the node's
// cache (uploaded once before the timer starts) until it is healthy through
// nginx over HTTPS, checks it, and removes it again, b.N times in a row. It
// prints the median of each step and of the whole deploy, and how many of
// the deploys succeeded.
func BenchmarkDeploy(b *testing.B) {
	e := benchEnv(b)
	ctx := context.Background()
	deployOnce := func(name string) (*Result, error) {
		var progress bytes.Buffer
		res, err := Run(ctx, e.benchAnswers(name), e.options(&progress))
		if err != nil {
			return nil, fmt.Errorf("%w\n%s", err, progress.String())
		}
		if err := checkThroughEdge(e, res); err != nil {
			e.remove(b, res)
			return nil, err
		}
		return res, nil
	}
	warm, err := deployOnce("warmup") // puts the template on storage
	if err != nil {
		b.Fatalf("warm-up deploy: %v", err)
	}
	e.remove(b, warm)

	byStep := map[string][]time.Duration{}
	var totals []time.Duration
	ok := 0
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		res, err := deployOnce(fmt.Sprintf("bench%d", i))
		total := time.Since(start)
		if err != nil {
			b.Logf("deploy %d failed: %v", i, err)
			continue
		}
		b.StopTimer()
		ok++
		totals = append(totals, total)
		for _, s := range res.Steps {
			byStep[s.Step] = append(byStep[s.Step], s.Duration)
		}
		e.remove(b, res)
		b.StartTimer()
	}
	b.StopTimer()
	for _, s := range steps {
		if d := byStep[s]; len(d) > 0 {
			fmt.Printf("deploy step %-40s median %8.3fs\n", s, median(d).Seconds())
		}
	}
	if len(totals) > 0 {
		fmt.Printf("deploy from cached template to healthy through nginx: median %.2fs of %d\n", median(totals).Seconds(), len(totals))
	}
	fmt.Printf("%d/%d succeeded\n", ok, b.N)
	if ok != b.N {
		b.Fail()
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// benchAnswers are those of the tests' answers file (see answersFile).
func (e *env) benchAnswers(name string) *deployconfig.Answers {
	return &deployconfig.Answers{
		Name:      name,
		Template:  deployconfig.Template{Source: e.tmpl.layout, Version: e.tmpl.version},
		Database:  deployconfig.Database{Type: "sqlite"},
		URL:       fmt.Sprintf("https://%s.vkimg.test:%d", name, e.nginx.HTTPSPort),
		Admin:     deployconfig.Admin{Email: "admin@example.org", Username: "admin"},
		Resources: deployconfig.Resources{Cores: 1, MemoryMB: 512, DiskGB: 2},
		Network:   deployconfig.Network{Bridge: e.bridge},
		Ports:     deployconfig.Ports{HTTP: e.nginx.HTTPPort, HTTPS: e.nginx.HTTPSPort},
		Storage:   deployconfig.Storage{Rootfs: "local", Template: "local"},
		TLS:       deployconfig.TLS{SelfSigned: true},
	}
}

// checkThroughEdge asks the deployed instance for its version through
// nginx over HTTPS, as an administrator's first request would.
func checkThroughEdge(e *env, res *Result) error {
	cfg, err := deployconfig.ReadInstance(filepath.Join(e.root.Instance(res.Name), InstanceFile))
	if err != nil {
		return err
	}
	client, err := EdgeClient(edge.Site{Domains: []string{cfg.Domain}, HTTPSPort: e.nginx.HTTPSPort, CertFile: cfg.TLS.Certificate})
	if err != nil {
		return err
	}
	resp, err := client.Get(fmt.Sprintf("https://%s:%d/api/v1/info", cfg.Domain, e.nginx.HTTPSPort))
	if err != nil {
		return fmt.Errorf("%s through nginx: %w", res.Name, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s through nginx: /api/v1/info: %s", res.Name, resp.Status)
	}
	return nil
}

// benchEnv is newEnv for a benchmark: the same node, with its own signed
// stand-in template (standin and newEnv take a *testing.T).
func benchEnv(b *testing.B) *env {
	lxctest.RequireRoot(b)
	tmp, err := os.MkdirTemp("", "vkimg-deploy-bench-")
	if err != nil {
		b.Fatal(err)
	}
	// The container's service user reaches its data volume below it.
	if err := os.Chmod(tmp, 0o755); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(tmp) })
	built := buildertest.Build(b, "recipes/standin.yaml", recipe.Overrides{}, filepath.Join(tmp, "build"))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	layout := filepath.Join(tmp, "layout")
	if _, err := registry.Publish(context.Background(), registry.LayoutRef(built.Layout, built.RefName),
		registry.LayoutRef(layout, ""), registry.PublishOptions{Key: key}); err != nil {
		b.Fatal(err)
	}
	be := lxctest.NewBackend(b)
	bridge, _ := lxctest.NewBridge(b)
	srv := testenv.Nginx(b)
	return &env{
		root: state.Root{Dir: filepath.Join(tmp, "root"), LogDir: filepath.Join(tmp, "log")},
		lxc:  be, be: be, bridge: bridge, nginx: srv,
		tmpl: signedTemplate{layout: layout, version: built.Manifest.Version, key: &key.PublicKey},
		edge: &edge.Nginx{Binary: srv.Binary, ConfigFile: srv.ConfigFile, PIDFile: srv.PIDFile,
			ConfDir: srv.ConfDir, UpstreamDir: filepath.Join(srv.Dir, "vkimg"), MainDir: srv.MainDir},
	}
}
