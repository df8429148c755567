package edge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"text/template"
	"time"
)

// Every value reaching these templates has been through Site.normalize:
// they interpolate no text that was not validated or generated here.

// siteTmpl is one instance's site, included in nginx's http context. It is
// written once per deploy; a flip only touches the upstream file it
// includes. TLS follows Mozilla's "intermediate" profile (TLS 1.2 and 1.3,
// ECDHE AEAD suites, no session tickets). Debian 12 ships nginx 1.22, where
// HTTP/2 is a parameter of listen (the `http2` directive came in 1.25.1).
var siteTmpl = template.Must(template.New("site").Parse(`{{.Header}}
# Managed by vkimg for instance {{.Site.Instance}}; edits are overwritten.
include {{.UpstreamFile}};

# WebSocket upgrades pass through; other requests keep the upstream
# connection alive (an empty Connection header).
map $http_upgrade $vkimg_{{.ID}}_connection {
    default upgrade;
    ""      "";
}

server {
{{- range .Listen}}
    listen {{.}}:{{$.Site.HTTPPort}};
{{- end}}
    server_name{{range .Site.Domains}} {{.}}{{end}};
    return 301 https://$host{{.HTTPSSuffix}}$request_uri;
}

server {
{{- range .Listen}}
    listen {{.}}:{{$.Site.HTTPSPort}} ssl http2;
{{- end}}
    server_name{{range .Site.Domains}} {{.}}{{end}};

    ssl_certificate     {{.Site.CertFile}};
    ssl_certificate_key {{.Site.KeyFile}};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ecdh_curve X25519:prime256v1:secp384r1;
    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;
    ssl_prefer_server_ciphers off;
    ssl_session_timeout 1d;
    ssl_session_cache shared:vkimg_tls:10m;
    ssl_session_tickets off;

    # Only the edge names the slot: a header from upstream is dropped.
    proxy_hide_header X-Vkimg-Slot;
    add_header X-Vkimg-Slot $vkimg_{{.ID}}_slot always;
{{- if .Site.HSTS}}
    add_header Strict-Transport-Security "max-age=63072000" always;
{{- end}}

    # Uploads stream straight to the slot instead of being spooled on the
    # node first: the slot sees them in flight, and its drain (and the edge's,
    # worker_shutdown_timeout) covers them across a flip.
    client_max_body_size {{.Site.MaxBodyMiB}}m;
    proxy_request_buffering off;

    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-Host $host;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $vkimg_{{.ID}}_connection;

    # The frontend (or the backend embedding it) sets its own cache headers,
    # e.g. no-cache on index.html and sw.js: nothing here overrides them.
    location / {
        proxy_pass http://vkimg_{{.ID}}_app;
    }
    location ~ ^/(api|dav|\.well-known)/ {
        proxy_pass http://vkimg_{{.ID}}_api;
    }
    location = /health {
        proxy_pass http://vkimg_{{.ID}}_api;
    }
    # MCP's streamable HTTP keeps responses (server-sent events) open.
    location /mcp {
        proxy_pass http://vkimg_{{.ID}}_mcp;
        proxy_buffering off;
        proxy_cache off;
        proxy_read_timeout 1h;
        proxy_send_timeout 1h;
    }
}
`))

// upstreamTmpl is the file a flip replaces: where the instance's traffic
// goes, and the slot name the edge reports in X-Vkimg-Slot.
var upstreamTmpl = template.Must(template.New("upstream").Parse(`{{.Header}}
# Managed by vkimg for instance {{.Instance}}: the active slot.
upstream vkimg_{{.ID}}_app {
    server {{.App}};
    keepalive 16;
}
upstream vkimg_{{.ID}}_api {
    server {{.API}};
    keepalive 16;
}
upstream vkimg_{{.ID}}_mcp {
    server {{.MCP}};
    keepalive 4;
}
map $host $vkimg_{{.ID}}_slot {
    default {{.Slot}};
}
`))

// mainTmpl goes into nginx's main context. Old workers keep serving the
// requests they hold after a reload; this bounds how long, and must exceed
// the longest upload a flip has to carry (5 minutes, issue 6).
var mainTmpl = template.Must(template.New("main").Parse(`# Managed by vkimg: how long nginx's old workers may finish in-flight
# requests after a reload (a flip).
worker_shutdown_timeout {{.Millis}}ms;
`))

const (
	siteHeader     = "# vkimg-site: "
	upstreamHeader = "# vkimg-upstream: "
)

// ident turns an instance name into a part of an nginx variable or upstream
// name, which allow no hyphen. Instance names have no underscore, so two
// instances never share an ident.
func ident(instance string) string { return strings.ReplaceAll(instance, "-", "_") }

func renderSite(s Site, upstreamFile string) ([]byte, error) {
	// The site header carries the site without its upstream: the upstream
	// file is the one truth about the active slot.
	header := s
	header.Upstream = Upstream{}
	h, err := headerLine(siteHeader, header)
	if err != nil {
		return nil, err
	}
	listen := []string{"0.0.0.0", "[::]"}
	switch {
	case s.Address.Is4():
		listen = []string{s.Address.String()}
	case s.Address.Is6():
		listen = []string{"[" + s.Address.String() + "]"}
	}
	suffix := ""
	if s.HTTPSPort != DefaultHTTPSPort {
		suffix = fmt.Sprintf(":%d", s.HTTPSPort)
	}
	return execute(siteTmpl, map[string]any{
		"Header": h, "Site": s, "ID": ident(s.Instance), "UpstreamFile": upstreamFile,
		"Listen": listen, "HTTPSSuffix": suffix,
	})
}

func renderUpstream(instance string, u Upstream) ([]byte, error) {
	h, err := headerLine(upstreamHeader, u)
	if err != nil {
		return nil, err
	}
	addr := func(port int) string { return netip.AddrPortFrom(u.Address, uint16(port)).String() }
	return execute(upstreamTmpl, map[string]any{
		"Header": h, "Instance": instance, "ID": ident(instance), "Slot": u.Slot,
		"App": addr(u.appPort()), "API": addr(u.APIPort), "MCP": addr(u.MCPPort),
	})
}

func renderMain(shutdown time.Duration) ([]byte, error) {
	return execute(mainTmpl, map[string]any{"Millis": shutdown.Milliseconds()})
}

func headerLine(prefix string, v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode %s: %w", strings.TrimSpace(prefix), err)
	}
	return prefix + string(b), nil
}

// parseHeader reads the JSON on the first line of a file rendered above.
func parseHeader(content []byte, prefix string, v any) error {
	line, _, _ := bytes.Cut(content, []byte("\n"))
	rest, ok := bytes.CutPrefix(line, []byte(prefix))
	if !ok {
		return fmt.Errorf("first line is not %q", strings.TrimSpace(prefix))
	}
	return json.Unmarshal(rest, v)
}

func execute(t *template.Template, data any) ([]byte, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("render %s: %w", t.Name(), err)
	}
	return b.Bytes(), nil
}
