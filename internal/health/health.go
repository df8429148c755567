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
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/vkimg/vkimg/internal/manifest"
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
		return p.mcpInitialize(ctx, url)
	}
	resp, body, err := p.do(ctx, http.MethodGet, url, nil, nil)
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

// mcpInitialize performs the MCP initialize handshake over Streamable HTTP.
func (p Prober) mcpInitialize(ctx context.Context, url string) error {
	req := []byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"vkimg-health","version":"1"}}}`)
	resp, body, err := p.do(ctx, http.MethodPost, url, req, http.Header{
		"Content-Type": {"application/json"},
		"Accept":       {"application/json, text/event-stream"},
	})
	if err != nil {
		return fmt.Errorf("MCP initialize: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("MCP initialize: status %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	payload := body
	// Streamable HTTP answers with JSON or with an SSE stream of events.
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		payload = nil
		for _, line := range bytes.Split(body, []byte("\n")) {
			if d, ok := bytes.CutPrefix(line, []byte("data:")); ok {
				payload = bytes.TrimSpace(d)
				break
			}
		}
	}
	var rpc struct {
		ID     int `json:"id"`
		Result struct {
			ProtocolVersion string                `json:"protocolVersion"`
			ServerInfo      struct{ Name string } `json:"serverInfo"`
			Capabilities    map[string]any        `json:"capabilities"`
		} `json:"result"`
		Error *struct{ Message string } `json:"error"`
	}
	if err := json.Unmarshal(payload, &rpc); err != nil {
		return fmt.Errorf("MCP initialize: answer is not JSON-RPC: %w", err)
	}
	if rpc.Error != nil {
		return fmt.Errorf("MCP initialize: %s", rpc.Error.Message)
	}
	if rpc.ID != 1 || rpc.Result.ProtocolVersion == "" || rpc.Result.ServerInfo.Name == "" {
		return errors.New("MCP initialize: incomplete answer")
	}
	if rpc.Result.Capabilities["tools"] == nil {
		return errors.New("MCP initialize: server offers no tools")
	}
	return nil
}

func (p Prober) do(ctx context.Context, method, url string, body []byte, h http.Header) (*http.Response, []byte, error) {
	client := p.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp, b, err
}
