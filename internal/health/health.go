// Package health runs a template's health checks (from its manifest)
// against a running container, directly or through the edge proxy. The
// same checks gate a deploy, an upgrade's flip, and the status command:
// the backend answers and reports the version that was deployed, the
// frontend page really renders, and the MCP server completes a real
// initialize handshake.
package health

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/vkimg/vkimg/internal/manifest"
	"github.com/vkimg/vkimg/internal/mcpclient"
)

// Target maps a health check to the URL that reaches it.
type Target func(h manifest.Health) string

// Direct reaches a container's ports at its address.
func Direct(addr string) Target {
	return func(h manifest.Health) string { return fmt.Sprintf("http://%s:%d%s", addr, h.Port, h.Path) }
}

// Prober runs health checks.
type Prober struct {
	Client *http.Client
}

// Result is the outcome of one check.
type Result struct {
	Component string
	Check     manifest.Health
	URL       string
	Err       error
}

func (r Result) String() string {
	if r.Err == nil {
		return fmt.Sprintf("%s %s %s: ok", r.Component, r.Check.Kind, r.URL)
	}
	return fmt.Sprintf("%s %s %s: %v", r.Component, r.Check.Kind, r.URL, r.Err)
}

// CheckAll runs every check of every component once.
func (p Prober) CheckAll(ctx context.Context, m *manifest.Manifest, to Target) []Result {
	var out []Result
	for _, c := range m.Components {
		for _, h := range c.Health {
			url := to(h)
			out = append(out, Result{Component: c.Name, Check: h, URL: url, Err: p.Check(ctx, url, c, h)})
		}
	}
	return out
}

// Failed returns the failed results.
func Failed(rs []Result) []Result {
	var out []Result
	for _, r := range rs {
		if r.Err != nil {
			out = append(out, r)
		}
	}
	return out
}

// WaitHealthy repeats CheckAll until every check passes or ctx ends, then
// returns an error listing what still failed.
func (p Prober) WaitHealthy(ctx context.Context, m *manifest.Manifest, to Target, every time.Duration) error {
	for {
		failed := Failed(p.CheckAll(ctx, m, to))
		if len(failed) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			msgs := make([]string, len(failed))
			for i, r := range failed {
				msgs[i] = r.String()
			}
			return fmt.Errorf("not healthy: %s", strings.Join(msgs, "; "))
		case <-time.After(every):
		}
	}
}

// Check runs one health check of component c at url.
func (p Prober) Check(ctx context.Context, url string, c manifest.Component, h manifest.Health) error {
	if h.Kind == manifest.HealthMCP {
		return mcpclient.Initialize(ctx, p.client(), url)
	}
	resp, body, err := p.get(ctx, url)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	switch h.Kind {
	case manifest.HealthHTTP:
		if h.Contains != "" && !strings.Contains(string(body), h.Contains) {
			return fmt.Errorf("answer does not contain %q", h.Contains)
		}
	case manifest.HealthVersion:
		var info struct{ Version string }
		if err := json.Unmarshal(body, &info); err != nil {
			return fmt.Errorf("version answer is not JSON: %w", err)
		}
		if strings.TrimPrefix(info.Version, "v") != strings.TrimPrefix(c.Version, "v") {
			return fmt.Errorf("runs version %q, want %q", info.Version, c.Version)
		}
	case manifest.HealthPage:
		// An empty 200 is what a backend built without its frontend serves:
		// only a page with content counts.
		if len(bytes.TrimSpace(body)) < 200 || !bytes.Contains(bytes.ToLower(body), []byte("<html")) {
			return fmt.Errorf("not a real page (%d bytes)", len(body))
		}
		if c.EmbeddedIn == "" && !strings.Contains(resp.Header.Get("Cache-Control"), "no-cache") {
			return fmt.Errorf("page served with Cache-Control %q, want no-cache (the service worker would pin old versions)", resp.Header.Get("Cache-Control"))
		}
	default:
		return fmt.Errorf("unknown health check kind %q", h.Kind)
	}
	return nil
}

func (p Prober) client() *http.Client {
	if p.Client != nil {
		return p.Client
	}
	return &http.Client{Timeout: 10 * time.Second}
}

func (p Prober) get(ctx context.Context, url string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := p.client().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp, b, err
}
