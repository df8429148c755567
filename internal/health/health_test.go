package health

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vkimg/vkimg/internal/manifest"
)

const page = `<!doctype html><html><head><title>Vikunja</title></head><body>` +
	`<div id="app">Log in to Vikunja: username, password, and a button that says log in. ` +
	`This page is long enough to be a real page rather than an empty placeholder.</div></body></html>`

// server answers like a healthy template whose parts can be broken one by one.
func server(t *testing.T, version, pageBody, cacheControl, mcpAnswer string) string {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("OK")) })
	mux.HandleFunc("GET /api/v1/info", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"version":"` + version + `","frontend_url":"x"}`))
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", cacheControl)
		w.Write([]byte(pageBody))
	})
	mux.HandleFunc("POST /mcp", func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
			http.Error(w, "client must accept text/event-stream", http.StatusNotAcceptable)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("event: message\ndata: " + mcpAnswer + "\n\n"))
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

const goodMCP = `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-03-26","capabilities":{"tools":{}},"serverInfo":{"name":"vkimg-mcp","version":"0.1.0"}}}`

func testManifest(port string) *manifest.Manifest {
	p, _ := strconv.Atoi(port)
	return &manifest.Manifest{Components: []manifest.Component{
		{Name: "backend", Kind: manifest.KindBackend, Version: "2.5.0", Health: []manifest.Health{
			{Kind: manifest.HealthHTTP, Port: p, Path: "/health", Contains: "OK"},
			{Kind: manifest.HealthVersion, Port: p, Path: "/api/v1/info"},
		}},
		{Name: "frontend", Kind: manifest.KindFrontend, Health: []manifest.Health{{Kind: manifest.HealthPage, Port: p, Path: "/"}}},
		{Name: "mcp", Kind: manifest.KindMCP, Health: []manifest.Health{{Kind: manifest.HealthMCP, Port: p, Path: "/mcp"}}},
	}}
}

func split(addr string) (string, string) {
	i := strings.LastIndex(addr, ":")
	return addr[:i], addr[i+1:]
}

func TestCheckAll(t *testing.T) {
	cases := []struct {
		name                        string
		version, page, cache, mcp   string
		wantFailed, wantMsgContains string
	}{
		{"healthy", "v2.5.0", page, "no-cache", goodMCP, "", ""},
		{"wrong version", "v2.4.0", page, "no-cache", goodMCP, "backend", `want "2.5.0"`},
		{"empty page", "v2.5.0", "", "no-cache", goodMCP, "frontend", "not a real page"},
		{"cached page", "v2.5.0", page, "max-age=3600", goodMCP, "frontend", "no-cache"},
		{"mcp error", "v2.5.0", page, "no-cache", `{"jsonrpc":"2.0","id":1,"error":{"code":-32600,"message":"bad request"}}`, "mcp", "bad request"},
		{"mcp without tools", "v2.5.0", page, "no-cache", strings.Replace(goodMCP, `"tools":{}`, `"x":{}`, 1), "mcp", "no tools"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			host, port := split(server(t, tc.version, tc.page, tc.cache, tc.mcp))
			failed := Failed(Prober{}.CheckAll(context.Background(), testManifest(port), Direct(host)))
			if tc.wantFailed == "" {
				if len(failed) != 0 {
					t.Fatalf("healthy server failed: %v", failed)
				}
				return
			}
			if len(failed) != 1 || failed[0].Component != tc.wantFailed || !strings.Contains(failed[0].Err.Error(), tc.wantMsgContains) {
				t.Fatalf("failed = %v, want one %s failure containing %q", failed, tc.wantFailed, tc.wantMsgContains)
			}
		})
	}
}

func TestWaitHealthyReportsWhatFailed(t *testing.T) {
	host, port := split(server(t, "v2.4.0", page, "no-cache", goodMCP))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := Prober{}.WaitHealthy(ctx, testManifest(port), Direct(host), 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "backend version") {
		t.Fatalf("err = %v, want the backend version failure", err)
	}
}
