// Package proxmox drives Proxmox VE through its API with go-proxmox. One
// Client type has two transports: HTTPS with an API token (off the node)
// and the node's own pvesh as root (on the node, with the rights that bind
// mounts need). Long operations return UPIDs; the client awaits them and
// puts Proxmox's own error text and the task log's tail in its errors.
package proxmox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	pve "github.com/luthermonson/go-proxmox"

	"github.com/vkimg/vkimg/internal/hypervisor"
)

// DefaultTaskTimeout bounds how long a task (create, start, upload, ...) is
// awaited when the options name no timeout.
const DefaultTaskTimeout = 5 * time.Minute

// ErrTaskTimeout is returned (wrapped) when a task outlives its timeout.
var ErrTaskTimeout = errors.New("task timed out")

// ErrExecNeedsNode is returned (wrapped) by Exec over HTTPS: the Proxmox
// API has no exec into containers; only pct on the node has.
var ErrExecNeedsNode = errors.New("exec in a container needs vkimg on the Proxmox node (pct exec): the API has no exec")

// HTTPSOptions configure a client that reaches the API over HTTPS.
type HTTPSOptions struct {
	// URL is the node's API address, e.g. https://pve.example:8006.
	URL string
	// TokenID is "user@realm!tokenid"; Secret the token's secret.
	TokenID string
	Secret  string
	// CACertPEM pins the CA that signed the node's certificate (Proxmox's
	// cluster CA, /etc/pve/pve-root-ca.pem). Fingerprint instead pins the
	// node certificate itself by its SHA-256 fingerprint, as shown in the
	// node's web UI. With neither, the system roots verify.
	CACertPEM   []byte
	Fingerprint string
	// Node is the node containers are created on.
	Node string
	// TaskTimeout bounds every awaited task (default DefaultTaskTimeout).
	TaskTimeout time.Duration
}

// NodeOptions configure a client running on the node as root.
type NodeOptions struct {
	// Node is this node's name.
	Node string
	// Pvesh and Pct are the commands' paths (default "pvesh" and "pct").
	Pvesh string
	Pct   string
	// TaskTimeout bounds every awaited task (default DefaultTaskTimeout).
	TaskTimeout time.Duration
}

// Client implements hypervisor.Hypervisor on a Proxmox VE node.
type Client struct {
	api         *pve.Client
	node        string
	pct         string // empty over HTTPS: no exec
	taskTimeout time.Duration
}

// pollInterval is how often a running task's status is asked for: most
// tasks vkimg runs take a second or less.
const pollInterval = 100 * time.Millisecond

var _ hypervisor.Hypervisor = (*Client)(nil)

// NewHTTPS returns a client on the HTTPS API with an API token.
func NewHTTPS(o HTTPSOptions) (*Client, error) {
	if o.URL == "" || o.TokenID == "" || o.Secret == "" || o.Node == "" {
		return nil, errors.New("proxmox client: URL, token ID, secret and node are required")
	}
	if !strings.Contains(o.TokenID, "!") {
		return nil, fmt.Errorf("proxmox client: token ID %q is not user@realm!tokenid", o.TokenID)
	}
	tc, err := tlsConfig(o.CACertPEM, o.Fingerprint)
	if err != nil {
		return nil, fmt.Errorf("proxmox client: %w", err)
	}
	transport := &http.Transport{TLSClientConfig: tc}
	api := pve.NewClient(strings.TrimRight(o.URL, "/")+"/api2/json",
		pve.WithHTTPClient(&http.Client{Transport: statusErrors{transport}}),
		pve.WithAPIToken(o.TokenID, o.Secret))
	return newClient(api, o.Node, "", o.TaskTimeout), nil
}

// NewNode returns a client that drives the API through the node's pvesh,
// as root@pam.
func NewNode(o NodeOptions) (*Client, error) {
	if o.Node == "" {
		return nil, errors.New("proxmox client: node is required")
	}
	if o.Pvesh == "" {
		o.Pvesh = "pvesh"
	}
	if o.Pct == "" {
		o.Pct = "pct"
	}
	// The URL is never dialled: PveshTransport only reads its path.
	api := pve.NewClient("https://"+o.Node+"/api2/json",
		pve.WithHTTPClient(&http.Client{Transport: statusErrors{&PveshTransport{Pvesh: o.Pvesh}}}))
	return newClient(api, o.Node, o.Pct, o.TaskTimeout), nil
}

func newClient(api *pve.Client, node, pct string, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = DefaultTaskTimeout
	}
	return &Client{api: api, node: node, pct: pct, taskTimeout: timeout}
}

func tlsConfig(caPEM []byte, fingerprint string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(caPEM) > 0 && fingerprint != "" {
		return nil, errors.New("pin either a CA or a certificate fingerprint, not both")
	}
	if len(caPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("pinned CA: no certificate in PEM")
		}
		tc.RootCAs = pool
	}
	if fingerprint != "" {
		want, err := hex.DecodeString(strings.ReplaceAll(fingerprint, ":", ""))
		if err != nil || len(want) != sha256.Size {
			return nil, fmt.Errorf("fingerprint %q is not a SHA-256 fingerprint", fingerprint)
		}
		// The fingerprint replaces chain verification (Proxmox node
		// certificates are self-signed by the cluster CA): the leaf
		// must be exactly the pinned certificate.
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server sent no certificate")
			}
			got := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if !bytes.Equal(got[:], want) {
				return fmt.Errorf("server certificate fingerprint %X does not match the pinned one", got)
			}
			return nil
		}
	}
	return tc, nil
}

// APIError is a refused API call: Proxmox's status and its message.
type APIError struct {
	Code    int
	Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("proxmox: %d %s", e.Code, e.Message) }

// statusErrors turns 401 and 403 answers into an *APIError: go-proxmox
// reduces both to "not authorized" and so would drop Proxmox's reason
// (e.g. "Permission check failed (mount point type bind is only allowed
// for root@pam)"), which the user needs to see.
type statusErrors struct{ next http.RoundTripper }

func (s statusErrors) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := s.next.RoundTrip(req)
	if err != nil || (res.StatusCode != http.StatusUnauthorized && res.StatusCode != http.StatusForbidden) {
		return res, err
	}
	res.Body.Close()
	return nil, &APIError{Code: res.StatusCode, Message: strings.TrimSpace(strings.TrimPrefix(res.Status, strconv.Itoa(res.StatusCode)))}
}

// notExist is Proxmox's answer for a container ID it does not have.
var notExist = regexp.MustCompile(`Configuration file '[^']*/lxc/\d+\.conf' does not exist`)

// wrap adds context to an API error and maps "no such container" to
// hypervisor.ErrNotFound.
func wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	// http.Client wraps transport errors in *url.Error; the APIError
	// inside is what the user needs.
	var ae *APIError
	if errors.As(err, &ae) {
		err = ae
	}
	what := fmt.Sprintf(format, args...)
	if notExist.MatchString(err.Error()) {
		return fmt.Errorf("%s: %w (%v)", what, hypervisor.ErrNotFound, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// flexInt decodes integers that Proxmox sends as numbers or strings (its
// Perl backend does both, e.g. /cluster/nextid).
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	v, err := parseFlex(b)
	*f = flexInt(v)
	return err
}

// flexFloat is flexInt for fractions.
type flexFloat float64

func (f *flexFloat) UnmarshalJSON(b []byte) error {
	v, err := parseFlex(b)
	*f = flexFloat(v)
	return err
}

func parseFlex(b []byte) (float64, error) {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		return 0, nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("number %s: %w", b, err)
	}
	return v, nil
}

// await polls a task until it stops, fails with Proxmox's exit status and
// the log tail, or runs out of time.
func (c *Client) await(ctx context.Context, upid pve.UPID, timeout time.Duration) error {
	if upid == "" {
		return errors.New("no task ID (UPID) in the answer")
	}
	t := pve.NewTask(upid, c.api)
	deadline := time.Now().Add(timeout)
	for {
		if err := t.Ping(ctx); err != nil {
			return fmt.Errorf("task %s: %w", upid, err)
		}
		if t.IsCompleted {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("task %s still running after %s%s: %w", upid, timeout, c.logTail(ctx, t), ErrTaskTimeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("task %s: %w", upid, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
	if t.IsFailed {
		return fmt.Errorf("%s (task %s)%s", t.ExitStatus, upid, c.logTail(ctx, t))
	}
	return nil
}

// logTail is the end of a task's log, for errors; the final
// "TASK ERROR" line repeats the exit status and is left out.
func (c *Client) logTail(ctx context.Context, t *pve.Task) string {
	const tail = 10
	log, err := t.Log(ctx, 0, 1000)
	if err != nil {
		return fmt.Sprintf("; task log unavailable: %v", err)
	}
	var lines []string
	for i := 0; i < len(log); i++ {
		if l, ok := log[i]; ok && !strings.HasPrefix(l, "TASK ERROR:") && l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	if len(lines) == 0 {
		return ""
	}
	return "; task log:\n  " + strings.Join(lines, "\n  ")
}

// task starts a task with POST or DELETE and awaits it.
func (c *Client) task(ctx context.Context, method, path string, params map[string]any, timeout time.Duration) error {
	var upid pve.UPID
	var err error
	switch method {
	case http.MethodPost:
		err = c.api.Post(ctx, path, params, &upid)
	case http.MethodDelete:
		err = c.api.DeleteWithParams(ctx, path, params, &upid)
	default:
		return fmt.Errorf("task method %s", method)
	}
	if err != nil {
		return err
	}
	return c.await(ctx, upid, timeout)
}

func (c *Client) ctPath(id int, rest string) string {
	return fmt.Sprintf("/nodes/%s/lxc/%d%s", c.node, id, rest)
}
