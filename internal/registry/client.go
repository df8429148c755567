package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Environment variables read for registry access (CI secrets arrive this way).
const (
	EnvUsername   = "VKIMG_REGISTRY_USERNAME"
	EnvPassword   = "VKIMG_REGISTRY_PASSWORD"
	EnvAuthConfig = "VKIMG_REGISTRY_AUTH" // a docker config.json-style file
	EnvCAFile     = "VKIMG_REGISTRY_CA"
)

// DefaultTimeout bounds connecting, waiting for response headers, and any
// pause while a body is read.
const DefaultTimeout = 30 * time.Second

// Options say how to reach registries. The zero value uses anonymous access,
// the system CAs and DefaultTimeout.
type Options struct {
	// AuthConfig is a docker config.json-style file ({"auths": {HOST:
	// {"auth": base64(user:pass)}}}); Username/Password win over it.
	AuthConfig string
	Username   string
	Password   string
	CAFile     string // PEM CA certificates trusted in addition to the system's
	// PlainHTTP allows http:// for a registry that is not on loopback
	// (loopback and private addresses fall back to HTTP anyway).
	PlainHTTP bool
	Timeout   time.Duration
}

// OptionsFromEnv fills the credential and CA fields from the environment.
func OptionsFromEnv() Options {
	return Options{
		AuthConfig: os.Getenv(EnvAuthConfig),
		Username:   os.Getenv(EnvUsername),
		Password:   os.Getenv(EnvPassword),
		CAFile:     os.Getenv(EnvCAFile),
	}
}

func (o Options) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return DefaultTimeout
}

// baseTransport is plain HTTP(S) with our timeouts and CA; auth wraps it.
func (o Options) baseTransport() (http.RoundTripper, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	d := &net.Dialer{Timeout: o.timeout(), KeepAlive: 30 * time.Second}
	t.DialContext = d.DialContext
	t.TLSHandshakeTimeout = o.timeout()
	t.ResponseHeaderTimeout = o.timeout()
	t.Proxy = nil // registries on the host's network; never a proxy from env
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read registry CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("registry CA file %s holds no PEM certificate", o.CAFile)
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return t, nil
}

// authenticator picks the credentials for reg.
func (o Options) authenticator(reg name.Registry) (authn.Authenticator, error) {
	if o.Username != "" {
		return authn.FromConfig(authn.AuthConfig{Username: o.Username, Password: o.Password}), nil
	}
	if o.AuthConfig == "" {
		return authn.DefaultKeychain.Resolve(reg)
	}
	b, err := os.ReadFile(o.AuthConfig)
	if err != nil {
		return nil, fmt.Errorf("read registry auth config: %w", err)
	}
	var cfg struct {
		Auths map[string]authn.AuthConfig `json:"auths"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("registry auth config %s: %w", o.AuthConfig, err)
	}
	for _, key := range []string{reg.Name(), "https://" + reg.Name(), "http://" + reg.Name()} {
		if a, ok := cfg.Auths[key]; ok {
			return authn.FromConfig(a), nil
		}
	}
	return authn.Anonymous, nil
}

func (o Options) repository(repo name.Repository) name.Repository {
	if !o.PlainHTTP {
		return repo
	}
	r, err := name.NewRepository(repo.Name(), name.Insecure)
	if err != nil {
		return repo // it parsed before; keep it as it was
	}
	return r
}

// remoteOptions are the go-containerregistry options for pushing.
func (o Options) remoteOptions(ctx context.Context, repo name.Repository) ([]remote.Option, error) {
	base, err := o.baseTransport()
	if err != nil {
		return nil, err
	}
	auth, err := o.authenticator(repo.Registry)
	if err != nil {
		return nil, err
	}
	return []remote.Option{
		remote.WithContext(ctx), remote.WithTransport(base), remote.WithAuth(auth),
		remote.WithRetryBackoff(remote.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Steps: 2}),
	}, nil
}

// authTransport pings the registry and returns a transport carrying
// credentials for the given scope.
func (o Options) authTransport(ctx context.Context, repo name.Repository, scope string) (http.RoundTripper, error) {
	base, err := o.baseTransport()
	if err != nil {
		return nil, err
	}
	auth, err := o.authenticator(repo.Registry)
	if err != nil {
		return nil, err
	}
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, base, []string{repo.Scope(scope)})
	if err != nil {
		return nil, describeNetErr(fmt.Errorf("registry %s: %w", repo.RegistryStr(), err))
	}
	return rt, nil
}

// describeNetErr adds what an operator should check to the usual failures.
func describeNetErr(err error) error {
	var terr *transport.Error
	var nerr net.Error
	switch {
	case errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden):
		return fmt.Errorf("%w (check the registry credentials: %s/%s or %s)", err, EnvUsername, EnvPassword, EnvAuthConfig)
	case errors.As(err, &nerr) && nerr.Timeout():
		return fmt.Errorf("%w (registry too slow or unreachable; timeout is per request)", err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w (connection dropped)", err)
	}
	return err
}
