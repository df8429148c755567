package registry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vkimg/vkimg/internal/registry/registrytest"
)

// templateLayout writes a template image into a fresh layout (as the
// builder does) and returns the layout reference.
func templateLayout(t testing.TB, version string, layerBytes int64) (Ref, v1.Hash) {
	t.Helper()
	dir, d := registrytest.TemplateLayout(t, version, layerBytes)
	return LayoutRef(dir, version), d
}

// testKey makes a signing key. Key files (and their slow scrypt) are the
// signing package's tests' business; here only the key matters.
func testKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func mustRef(t testing.TB, s string) Ref {
	t.Helper()
	r, err := ParseRef(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// proxy is a loopback reverse proxy in front of a registry that counts blob
// GETs and can drop or de-range blob downloads.
type proxy struct {
	Host string
	mu   sync.Mutex
	// blobGETs counts GET requests per blob digest; ranged records the
	// Range headers seen.
	blobGETs map[string]int
	ranged   []string
	// dropAfter, when > 0, cuts the first download of every blob larger
	// than it after that many bytes.
	dropAfter int64
	dropped   map[string]bool
	noRange   bool // strip Range headers: the registry then restarts from 0
	stall     bool // answer blob GETs with a few bytes, then nothing
}

func newProxy(t testing.TB, upstream string) *proxy {
	t.Helper()
	p := &proxy{blobGETs: map[string]int{}, dropped: map[string]bool{}}
	target, _ := url.Parse("http://" + upstream)
	rp := httputil.NewSingleHostReverseProxy(target)
	director := rp.Director
	rp.Director = func(r *http.Request) {
		director(r)
		if p.noRange {
			r.Header.Del("Range")
		}
	}
	rp.ModifyResponse = func(resp *http.Response) error {
		d := blobDigest(resp.Request)
		if d == "" || resp.Request.Method != http.MethodGet {
			return nil
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.dropAfter > 0 && resp.ContentLength > p.dropAfter && !p.dropped[d] {
			p.dropped[d] = true
			resp.Body = &cutBody{r: resp.Body, left: p.dropAfter}
		}
		return nil
	}
	rp.ErrorLog = log.New(io.Discard, "", 0) // cut downloads are the point
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := blobDigest(r); d != "" && r.Method == http.MethodGet {
			p.mu.Lock()
			p.blobGETs[d]++
			if rg := r.Header.Get("Range"); rg != "" {
				p.ranged = append(p.ranged, rg)
			}
			stall := p.stall
			p.mu.Unlock()
			if stall {
				w.Header().Set("Content-Length", "1000000")
				w.Write([]byte("partial"))
				w.(http.Flusher).Flush()
				<-r.Context().Done()
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	p.Host = l.Addr().String()
	return p
}

func blobDigest(r *http.Request) string {
	if i := strings.Index(r.URL.Path, "/blobs/sha256:"); i >= 0 {
		return r.URL.Path[i+len("/blobs/"):]
	}
	return ""
}

func (p *proxy) totalBlobGETs() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.blobGETs {
		n += c
	}
	return n
}

func (p *proxy) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blobGETs = map[string]int{}
	p.ranged = nil
}

// cutBody ends with an error after left bytes: the proxy then aborts the
// response mid-body, as a dropped connection would.
type cutBody struct {
	r    io.ReadCloser
	left int64
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errors.New("connection cut by test proxy")
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *cutBody) Close() error { return c.r.Close() }

// assertCacheClean fails when the cache holds temporary files or, with
// wantEntries == 0, any index entry.
func assertCacheClean(t *testing.T, cache string, wantEntries int) {
	t.Helper()
	filepath.WalkDir(cache, func(path string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".") && d.Name() != ".lock" {
			t.Errorf("leftover temporary file %s", path)
		}
		return nil
	})
	b, err := os.ReadFile(filepath.Join(cache, "index.json"))
	if errors.Is(err, os.ErrNotExist) && wantEntries == 0 {
		return
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatalf("cache index: %v", err)
	}
	images := 0
	for _, d := range idx.Manifests {
		if d.Annotations[sourceAnnotation] != "" {
			images++
		}
	}
	if images != wantEntries {
		t.Errorf("cache holds %d images, want %d", images, wantEntries)
	}
}
