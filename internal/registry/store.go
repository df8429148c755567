package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vkimg/vkimg/internal/signing"
)

// errNotFound is a missing tag, manifest or blob.
var errNotFound = errors.New("not found")

// maxManifest bounds manifests we read: real ones are a few KiB.
const maxManifest = 4 << 20

// store is where templates come from: a registry repository or a local OCI
// layout. Nothing it returns is trusted: callers check every digest.
type store interface {
	// identity is the docker-reference signatures must name ("" for a layout).
	identity() string
	// resolve returns the digest a tag points to.
	resolve(ctx context.Context, tag string) (v1.Hash, error)
	// manifest returns the raw manifest stored under digest (unverified).
	manifest(ctx context.Context, digest v1.Hash) ([]byte, error)
	// signatures returns the raw signature manifest for digest, or nil.
	signatures(ctx context.Context, digest v1.Hash) ([]byte, error)
	// blob opens a blob from offset; start is where the returned stream
	// actually begins (0 when the source cannot seek).
	blob(ctx context.Context, digest v1.Hash, offset int64) (rc io.ReadCloser, start int64, err error)
	// tags lists the tags.
	tags(ctx context.Context) ([]string, error)
}

// openStore opens the repository or layout ref names, for reading.
func openStore(ctx context.Context, ref Ref, o Options) (store, error) {
	if ref.Layout != "" {
		return openLayout(ref.Layout)
	}
	repo := o.repository(ref.Repo)
	rt, err := o.authTransport(ctx, repo, transport.PullScope)
	if err != nil {
		return nil, err
	}
	return &remoteStore{repo: repo, client: &http.Client{Transport: rt}, idle: o.timeout()}, nil
}

// remoteStore speaks the registry API directly (rather than through
// remote.Image) so that every digest check, Range request and error message
// is ours.
type remoteStore struct {
	repo   name.Repository
	client *http.Client
	idle   time.Duration
}

var manifestAccept = strings.Join([]string{
	string(types.OCIManifestSchema1), string(types.OCIImageIndex),
	string(types.DockerManifestSchema2), string(types.DockerManifestList),
}, ",")

func (s *remoteStore) identity() string { return s.repo.Name() }

func (s *remoteStore) url(kind, ref string) string {
	return fmt.Sprintf("%s://%s/v2/%s/%s/%s", s.repo.Scheme(), s.repo.RegistryStr(), s.repo.RepositoryStr(), kind, ref)
}

// do sends a request; the response body fails with errStalled when no data
// arrives for s.idle, and closing it releases the request.
func (s *remoteStore) do(ctx context.Context, method, url string, header http.Header) (*http.Response, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := s.client.Do(req)
	if err != nil {
		cancel()
		return nil, describeNetErr(fmt.Errorf("%s %s: %w", method, url, err))
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("%s %s: %w", method, url, errNotFound)
	case resp.StatusCode >= 300:
		err := transport.CheckError(resp, http.StatusOK, http.StatusPartialContent)
		resp.Body.Close()
		cancel()
		return nil, describeNetErr(fmt.Errorf("%s %s: %w", method, url, err))
	}
	resp.Body = newStallReader(resp.Body, s.idle, cancel)
	return resp, nil
}

func (s *remoteStore) resolve(ctx context.Context, tag string) (v1.Hash, error) {
	resp, err := s.do(ctx, http.MethodHead, s.url("manifests", tag), http.Header{"Accept": {manifestAccept}})
	if err != nil {
		return v1.Hash{}, fmt.Errorf("resolve tag %s: %w", tag, err)
	}
	resp.Body.Close()
	if h, err := v1.NewHash(resp.Header.Get("Docker-Content-Digest")); err == nil {
		return h, nil
	}
	// Registries need not send the header on HEAD: hash the manifest.
	raw, err := s.readManifest(ctx, tag)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("resolve tag %s: %w", tag, err)
	}
	if _, err := parseManifest(raw); err != nil {
		return v1.Hash{}, fmt.Errorf("resolve tag %s: registry sent something that is not a manifest: %w", tag, err)
	}
	return digestOf(raw), nil
}

func (s *remoteStore) readManifest(ctx context.Context, ref string) ([]byte, error) {
	resp, err := s.do(ctx, http.MethodGet, s.url("manifests", ref), http.Header{"Accept": {manifestAccept}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxManifest+1))
	if err != nil {
		return nil, describeNetErr(fmt.Errorf("read manifest %s: %w", ref, err))
	}
	if len(b) > maxManifest {
		return nil, fmt.Errorf("manifest %s is larger than %d bytes", ref, maxManifest)
	}
	return b, nil
}

func (s *remoteStore) manifest(ctx context.Context, digest v1.Hash) ([]byte, error) {
	return s.readManifest(ctx, digest.String())
}

func (s *remoteStore) signatures(ctx context.Context, digest v1.Hash) ([]byte, error) {
	b, err := s.readManifest(ctx, signing.SignatureTag(digest))
	if errors.Is(err, errNotFound) {
		return nil, nil
	}
	return b, err
}

func (s *remoteStore) blob(ctx context.Context, digest v1.Hash, offset int64) (io.ReadCloser, int64, error) {
	h := http.Header{}
	if offset > 0 {
		h.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := s.do(ctx, http.MethodGet, s.url("blobs", digest.String()), h)
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode == http.StatusPartialContent {
		return resp.Body, offset, nil
	}
	return resp.Body, 0, nil
}

func (s *remoteStore) tags(ctx context.Context) ([]string, error) {
	resp, err := s.do(ctx, http.MethodGet, s.url("tags", "list"), nil)
	if err != nil {
		return nil, fmt.Errorf("list tags of %s: %w", s.repo.Name(), err)
	}
	defer resp.Body.Close()
	var list struct {
		Tags []string `json:"tags"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxManifest)).Decode(&list); err != nil {
		return nil, fmt.Errorf("list tags of %s: registry sent no tag list: %w", s.repo.Name(), err)
	}
	return list.Tags, nil
}

// stallReader fails a read after no progress for idle: a stalled connection
// must not hang a pull forever. Cancelling the request unblocks the read.
type stallReader struct {
	body    io.ReadCloser
	idle    time.Duration
	timer   *time.Timer
	stalled atomic.Bool
	cancel  func()
}

var errStalled = errors.New("no data received within the timeout")

func newStallReader(body io.ReadCloser, idle time.Duration, cancel func()) *stallReader {
	s := &stallReader{body: body, idle: idle, cancel: cancel}
	s.timer = time.AfterFunc(idle, func() { s.stalled.Store(true); cancel() })
	return s
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.body.Read(p)
	if s.stalled.Load() {
		return n, fmt.Errorf("%w (%s)", errStalled, s.idle)
	}
	s.timer.Reset(s.idle)
	return n, err
}

func (s *stallReader) Close() error {
	s.timer.Stop()
	err := s.body.Close()
	s.cancel()
	return err
}

// layoutStore reads an OCI image layout directory.
type layoutStore struct {
	dir   string
	index v1.IndexManifest
}

// refNameAnnotation tags an entry of a layout's index.json.
const refNameAnnotation = "org.opencontainers.image.ref.name"

func openLayout(dir string) (*layoutStore, error) {
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		return nil, fmt.Errorf("%s is not an OCI image layout: %w", dir, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return nil, fmt.Errorf("read layout index: %w", err)
	}
	s := &layoutStore{dir: dir}
	if err := json.Unmarshal(b, &s.index); err != nil {
		return nil, fmt.Errorf("layout index %s/index.json: %w", dir, err)
	}
	return s, nil
}

func (s *layoutStore) identity() string { return "" }

func (s *layoutStore) resolve(_ context.Context, tag string) (v1.Hash, error) {
	var images []v1.Descriptor
	for _, d := range s.index.Manifests {
		if tag != "" && d.Annotations[refNameAnnotation] == tag {
			return d.Digest, nil
		}
		if !strings.HasSuffix(d.Annotations[refNameAnnotation], ".sig") {
			images = append(images, d)
		}
	}
	if tag == "" && len(images) == 1 {
		return images[0].Digest, nil
	}
	if tag == "" {
		return v1.Hash{}, fmt.Errorf("layout %s holds %d images: name one with :TAG or @DIGEST", s.dir, len(images))
	}
	return v1.Hash{}, fmt.Errorf("tag %s in layout %s: %w", tag, s.dir, errNotFound)
}

func (s *layoutStore) path(digest v1.Hash) string {
	return filepath.Join(s.dir, "blobs", digest.Algorithm, digest.Hex)
}

func (s *layoutStore) manifest(_ context.Context, digest v1.Hash) ([]byte, error) {
	f, err := os.Open(s.path(digest))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("manifest %s in layout %s: %w", digest, s.dir, errNotFound)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxManifest+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxManifest {
		return nil, fmt.Errorf("manifest %s is larger than %d bytes", digest, maxManifest)
	}
	return b, nil
}

func (s *layoutStore) signatures(ctx context.Context, digest v1.Hash) ([]byte, error) {
	d, err := s.resolve(ctx, signing.SignatureTag(digest))
	if errors.Is(err, errNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return s.manifest(ctx, d)
}

func (s *layoutStore) blob(_ context.Context, digest v1.Hash, offset int64) (io.ReadCloser, int64, error) {
	f, err := os.Open(s.path(digest))
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, fmt.Errorf("blob %s in layout %s: %w", digest, s.dir, errNotFound)
	}
	if err != nil {
		return nil, 0, err
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, offset, nil
}

func (s *layoutStore) tags(context.Context) ([]string, error) {
	var out []string
	for _, d := range s.index.Manifests {
		if t := d.Annotations[refNameAnnotation]; t != "" {
			out = append(out, t)
		}
	}
	return out, nil
}

// parseManifest parses an image manifest, refusing indexes and anything
// that is not a manifest.
func parseManifest(raw []byte) (*v1.Manifest, error) {
	var probe struct {
		MediaType types.MediaType `json:"mediaType"`
		Layers    json.RawMessage `json:"layers"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	switch probe.MediaType {
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
	case types.OCIImageIndex, types.DockerManifestList:
		return nil, fmt.Errorf("%s is an index; vkimg templates are single linux/amd64 images", probe.MediaType)
	case "":
		if probe.Layers == nil {
			return nil, errors.New("no mediaType and no layers: not an image manifest")
		}
	default:
		return nil, fmt.Errorf("unsupported manifest media type %q", probe.MediaType)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	return m, nil
}

// digestOf is the sha256 digest of b.
func digestOf(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sum)}
}

// remoteImage fetches ref for publishing, or nil when the tag does not exist.
func remoteImage(ref name.Reference, opts []remote.Option) (v1.Image, error) {
	img, err := remote.Image(ref, opts...)
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	return img, err
}
