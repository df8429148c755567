package deploy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/edge"
)

// BenchmarkDeploy deploys the signed stand-in template from the node's
// cache (uploaded once before the timer starts) until it is healthy through
// nginx over HTTPS, checks it, and removes it again, b.N times in a row. It
// prints the median of each step and of the whole deploy, and how many of
// the deploys succeeded.
func BenchmarkDeploy(b *testing.B) {
	e := newEnv(b)
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

// BenchmarkUpgradeRollback times upgrades and rollbacks under load through
// nginx (reads, writes, a 16 MB upload across each upgrade's flip): first
// N → N+1 with a schema migration and its rollback (a restore of the
// pre-upgrade backup), then b.N rounds of N+1 → N+1 patch (no migration)
// and back. It prints medians and the requests sent and failed.
func BenchmarkUpgradeRollback(b *testing.B) {
	e := newEnv(b)
	layout := e.channel(b)
	res := e.deployN(b, "bench")
	useInstance(b, e, res)
	ctx := context.Background()
	var sent, failed int64
	timed := func(what string, upload int64, op func() error) time.Duration {
		load := e.startLoad(b, res, upload, 10*time.Second)
		start := time.Now()
		err := op()
		took := time.Since(start)
		rep := load.Stop()
		if err != nil {
			b.Fatalf("%s: %v", what, err)
		}
		sent += rep.Sent
		failed += rep.Failed
		fmt.Printf("%-45s %6.2fs  %s\n", what, took.Seconds(), rep)
		return took
	}
	upgrade := func() error { _, err := Upgrade(ctx, "bench", e.upgradeOptions(io.Discard)); return err }
	rollback := func() error {
		_, err := Rollback(ctx, "bench", RollbackOptions{Options: e.upgradeOptions(io.Discard).Options, Yes: true})
		return err
	}
	e.publish(b, layout, vNext)
	timed("upgrade 1.0.0 → 1.1.0 (migration, first upload)", 16<<20, upgrade)
	timed("rollback 1.1.0 → 1.0.0 (restores the backup)", 0, rollback)
	timed("upgrade 1.0.0 → 1.1.0 (migration, template stored)", 16<<20, upgrade)
	e.publish(b, layout, vPatch)
	var ups, downs []time.Duration
	b.ResetTimer()
	for range b.N {
		ups = append(ups, timed("upgrade 1.1.0 → 1.1.1 (no migration)", 16<<20, upgrade))
		downs = append(downs, timed("rollback 1.1.1 → 1.1.0 (no migration)", 0, rollback))
	}
	b.StopTimer()
	fmt.Printf("upgrade without migration: median %.2fs of %d; rollback: median %.2fs of %d\n", median(ups).Seconds(), len(ups), median(downs).Seconds(), len(downs))
	fmt.Printf("requests under load: sent %d, failed %d\n", sent, failed)
	b.ReportMetric(median(ups).Seconds(), "upgrade-s")
	b.ReportMetric(median(downs).Seconds(), "rollback-s")
	b.ReportMetric(float64(failed), "failed-requests")
}
