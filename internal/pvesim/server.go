// Package pvesim is a Proxmox VE API simulator: an HTTPS server with API
// token auth that serves the part of /api2/json that vkimg's Proxmox client
// uses, on top of a hypervisor.Hypervisor (the LXC backend in practice), so
// that a container created through it is a real container. Every request
// is validated against Proxmox's own API schema and refused as Proxmox
// refuses it; long operations run as tasks with UPIDs.
//
// A local Unix socket serves the same API as root@pam, which is what the
// node's pvesh has: the pvesh/pct commands in cmd/pvesh talk to it.
package pvesim

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vkimg/vkimg/internal/hypervisor"
)

// RootUser is the user the Unix socket (and so pvesh) acts as.
const RootUser = "root@pam"

// Config configures a simulator.
type Config struct {
	// Backend runs the containers.
	Backend hypervisor.Hypervisor
	// Node is the node's name (default "pve").
	Node string
	// Version is the reported pve-manager version, e.g. "8.2.4" or "9.1.1"
	// (default "8.2.4"). oci-registry-pull exists from 9.1.
	Version string
	// Tokens maps full token IDs ("user@realm!name") to their secrets.
	Tokens map[string]string
	// Addr is the HTTPS listen address (default "127.0.0.1:0").
	Addr string
	// Socket, when set, is a Unix socket path serving the API as root@pam
	// (mode 0600, so only root reaches it), for the pvesh and pct commands.
	Socket string
	// InsecureRegistries are registries (host:port) oci-registry-pull
	// reaches over plain HTTP, like an "insecure" entry in
	// registries.conf: tests use a loopback registry.
	InsecureRegistries []string
	// UploadDir holds uploads while they arrive (default os.TempDir()).
	UploadDir string
}

// Server is a running simulator.
type Server struct {
	cfg    Config
	schema *schema
	tasks  taskList

	httpsSrv *http.Server
	unixSrv  *http.Server
	addr     string
	caPEM    []byte
	fp       string

	ctx    context.Context
	cancel context.CancelFunc

	// setMu orders config changes, so the stored configs end up as the
	// backend's containers do when two changes race.
	setMu sync.Mutex

	mu        sync.Mutex
	configs   map[int]map[string]any      // container configs as Proxmox stores them
	locks     map[int]string              // vmid → lock ("create", ...)
	templates map[string]map[string]int64 // storage → template name → size
}

// Start starts a simulator.
func Start(cfg Config) (*Server, error) {
	if cfg.Backend == nil {
		return nil, errors.New("start simulator: no backend")
	}
	if cfg.Node == "" {
		cfg.Node = "pve"
	}
	if cfg.Version == "" {
		cfg.Version = "8.2.4"
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.UploadDir == "" {
		cfg.UploadDir = os.TempDir()
	}
	sch, err := loadSchema(schemaJSON)
	if err != nil {
		return nil, fmt.Errorf("start simulator: %w", err)
	}
	cert, caPEM, fp, err := selfSigned()
	if err != nil {
		return nil, fmt.Errorf("start simulator: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg: cfg, schema: sch, caPEM: caPEM, fp: fp, ctx: ctx, cancel: cancel,
		configs: map[int]map[string]any{}, locks: map[int]string{}, templates: map[string]map[string]int64{},
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("start simulator: %w", err)
	}
	s.addr = ln.Addr().String()
	s.httpsSrv = &http.Server{
		Handler: s.handler(false),
		// HTTP/1.1 only: errors carry Proxmox's message in the status
		// line's reason phrase, which HTTP/2 cannot express.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		TLSConfig:    &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		// Clients that do not trust the certificate are refused; that
		// is their error to report, not the simulator's.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go s.httpsSrv.ServeTLS(ln, "", "") //nolint:errcheck // ends with ErrServerClosed on Close
	if cfg.Socket != "" {
		_ = os.Remove(cfg.Socket)
		ul, err := net.Listen("unix", cfg.Socket)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("start simulator: %w", err)
		}
		if err := os.Chmod(cfg.Socket, 0o600); err != nil {
			ul.Close()
			s.Close()
			return nil, fmt.Errorf("start simulator: %w", err)
		}
		s.unixSrv = &http.Server{Handler: s.handler(true)}
		go s.unixSrv.Serve(ul) //nolint:errcheck // ends with ErrServerClosed on Close
	}
	return s, nil
}

// URL is the HTTPS base URL, like https://host:8006 on a node.
func (s *Server) URL() string { return "https://" + s.addr }

// CACertPEM is the PEM of the self-signed certificate, to pin as CA.
func (s *Server) CACertPEM() []byte { return s.caPEM }

// Fingerprint is the certificate's SHA-256 fingerprint in Proxmox's form
// (upper-case hex pairs joined by colons).
func (s *Server) Fingerprint() string { return s.fp }

// Close stops serving and waits for running tasks.
func (s *Server) Close() error {
	ctx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	err := s.httpsSrv.Shutdown(ctx)
	if s.unixSrv != nil {
		err = errors.Join(err, s.unixSrv.Shutdown(ctx))
	}
	s.cancel()
	s.tasks.wg.Wait()
	return err
}

func selfSigned() (tls.Certificate, []byte, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, "", fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, nil, "", fmt.Errorf("serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "pvesim", Organization: []string{"PVE Cluster Manager CA (simulated)"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, "", fmt.Errorf("certificate: %w", err)
	}
	sum := sha256.Sum256(der)
	hexPairs := make([]string, len(sum))
	for i, b := range sum {
		hexPairs[i] = fmt.Sprintf("%02X", b)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), strings.Join(hexPairs, ":"), nil
}

// apiError is an error answer: Proxmox puts the message in the status
// line and parameter errors in the body.
type apiError struct {
	code   int
	msg    string
	params map[string]string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s", e.code, e.msg) }

func errorf(code int, format string, args ...any) *apiError {
	return &apiError{code: code, msg: fmt.Sprintf(format, args...)}
}

func paramError(params map[string]string) *apiError {
	return &apiError{code: http.StatusBadRequest, msg: "Parameter verification failed.", params: params}
}

// request is one validated API call.
type request struct {
	ctx    context.Context
	user   string
	params map[string]string
	// upload is the received file of an upload call, removed afterwards
	// unless a task took it over.
	upload string
}

type handlerFunc func(s *Server, r *request) (any, error)

// ExecPath is where the Unix socket serves exec for the pct command; it is
// not part of Proxmox's API (pct exec runs lxc-attach on the node).
const ExecPath = "/pvesim/exec"

// ExecRequest and ExecResponse are ExecPath's JSON body and answer.
type ExecRequest struct {
	VMID  int      `json:"vmid"`
	Argv  []string `json:"argv"`
	Stdin []byte   `json:"stdin"`
}

type ExecResponse struct {
	ExitCode int    `json:"exitcode"`
	Stdout   []byte `json:"stdout"`
	Stderr   []byte `json:"stderr"`
}

func (s *Server) exec(w http.ResponseWriter, hr *http.Request) {
	var req ExecRequest
	if err := json.NewDecoder(hr.Body).Decode(&req); err != nil {
		writeError(w, errorf(http.StatusBadRequest, "exec request: %v", err))
		return
	}
	res, err := s.cfg.Backend.Exec(hr.Context(), req.VMID, req.Argv, bytes.NewReader(req.Stdin))
	if err != nil {
		writeError(w, errorf(http.StatusInternalServerError, "%v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(ExecResponse{ExitCode: res.ExitCode, Stdout: res.Stdout, Stderr: res.Stderr}) //nolint:errcheck // the client went away
}

func (s *Server) handler(root bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, hr *http.Request) {
		if root && hr.URL.Path == ExecPath && hr.Method == http.MethodPost {
			s.exec(w, hr)
			return
		}
		data, err := s.serve(hr, root)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				ae = &apiError{code: http.StatusInternalServerError, msg: err.Error()}
			}
			writeError(w, ae)
			return
		}
		body, err := json.Marshal(map[string]any{"data": data})
		if err != nil {
			writeError(w, errorf(http.StatusInternalServerError, "encode answer: %v", err))
			return
		}
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		w.Write(body) //nolint:errcheck // the client went away
	})
}

// writeError answers with Proxmox's message as the reason phrase, which
// net/http cannot set: the connection is taken over to write the status
// line. go-proxmox (like every Proxmox client) reads errors from there.
func writeError(w http.ResponseWriter, e *apiError) {
	body, _ := json.Marshal(map[string]any{"errors": e.params, "data": nil})
	if e.params == nil {
		body = []byte(`{"data":null}`)
	}
	reason := strings.Join(strings.Fields(e.msg), " ")
	hj, ok := w.(http.Hijacker)
	if !ok {
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		w.WriteHeader(e.code)
		w.Write(body) //nolint:errcheck // the client went away
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		e.code, reason, len(body), body)
	buf.Flush() //nolint:errcheck // the client went away
}

func (s *Server) serve(hr *http.Request, root bool) (any, error) {
	user := RootUser
	if !root {
		var ok bool
		if user, ok = s.tokenUser(hr.Header.Get("Authorization")); !ok {
			return nil, errorf(http.StatusUnauthorized, "authentication failure")
		}
	}
	const prefix = "/api2/json/"
	esc := hr.URL.EscapedPath()
	if !strings.HasPrefix(esc, prefix) {
		return nil, errorf(http.StatusNotImplemented, "Method '%s %s' not implemented", hr.Method, hr.URL.Path)
	}
	var segs []string
	for _, e := range splitPath(strings.TrimPrefix(esc, prefix)) {
		seg, err := url.PathUnescape(e)
		if err != nil {
			return nil, errorf(http.StatusBadRequest, "bad path: %v", err)
		}
		segs = append(segs, seg)
	}
	tmpl, vars, methods, ok := s.schema.lookup(segs)
	m := methods[hr.Method]
	if !ok || m == nil {
		return nil, errorf(http.StatusNotImplemented, "Method '%s /%s' not implemented", hr.Method, strings.Join(segs, "/"))
	}
	if user != RootUser && !m.AllowToken {
		return nil, errorf(http.StatusForbidden, "Permission check failed (API tokens may not use this method)")
	}
	r := &request{ctx: hr.Context(), user: user}
	var err error
	if r.params, r.upload, err = s.readParams(hr); err != nil {
		return nil, err
	}
	if r.upload != "" {
		defer func() {
			if r.upload != "" {
				os.Remove(r.upload)
			}
		}()
	}
	for k, v := range vars {
		if prev, dup := r.params[k]; dup && prev != v {
			return nil, paramError(map[string]string{k: "duplicate parameter (path and body differ)"})
		}
		r.params[k] = v
	}
	if errs := m.validate(r.params); len(errs) > 0 {
		for k, v := range errs {
			errs[k] = v + "\n"
		}
		return nil, paramError(errs)
	}
	h, ok := handlers[hr.Method+" "+tmpl]
	if !ok {
		return nil, errorf(http.StatusNotImplemented, "Method '%s %s' not implemented by the simulator", hr.Method, tmpl)
	}
	if n, ok := r.params["node"]; ok && n != s.cfg.Node {
		return nil, errorf(http.StatusInternalServerError, "no such cluster node '%s'", n)
	}
	return h(s, r)
}

// tokenUser checks "PVEAPIToken=user@realm!name=secret" and returns the
// token's full ID.
func (s *Server) tokenUser(h string) (string, bool) {
	v, ok := strings.CutPrefix(h, "PVEAPIToken=")
	if !ok {
		return "", false
	}
	id, secret, ok := strings.Cut(v, "=")
	if !ok {
		return "", false
	}
	want, ok := s.cfg.Tokens[id]
	if !ok || want != secret {
		return "", false
	}
	return id, true
}

// readParams reads query and body parameters as the strings Proxmox's
// validator sees. A multipart body (upload) is streamed to a file whose
// name is returned; its file part is the "filename" parameter, as in
// Proxmox's HTTP server.
func (s *Server) readParams(hr *http.Request) (map[string]string, string, error) {
	params := map[string]string{}
	for k, v := range hr.URL.Query() {
		params[k] = v[len(v)-1]
	}
	if hr.Body == nil || hr.ContentLength == 0 {
		return params, "", nil
	}
	ct, _, _ := mime.ParseMediaType(hr.Header.Get("Content-Type"))
	switch ct {
	case "application/json":
		var body map[string]any
		dec := json.NewDecoder(hr.Body)
		dec.UseNumber()
		if err := dec.Decode(&body); err != nil {
			return nil, "", errorf(http.StatusBadRequest, "unable to parse JSON body: %v", err)
		}
		for k, v := range body {
			switch x := v.(type) {
			case string:
				params[k] = x
			case json.Number:
				params[k] = x.String()
			case bool:
				params[k] = map[bool]string{true: "1", false: "0"}[x]
			case nil:
			default:
				return nil, "", paramError(map[string]string{k: "type check failed - got a JSON array or object\n"})
			}
		}
	case "application/x-www-form-urlencoded":
		if err := hr.ParseForm(); err != nil {
			return nil, "", errorf(http.StatusBadRequest, "unable to parse form: %v", err)
		}
		for k, v := range hr.PostForm {
			params[k] = v[len(v)-1]
		}
	case "multipart/form-data":
		return s.readMultipart(hr, params)
	default:
		return nil, "", errorf(http.StatusUnsupportedMediaType, "unsupported content type '%s'", ct)
	}
	return params, "", nil
}

func (s *Server) readMultipart(hr *http.Request, params map[string]string) (map[string]string, string, error) {
	mr, err := hr.MultipartReader()
	if err != nil {
		return nil, "", errorf(http.StatusBadRequest, "multipart: %v", err)
	}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return params, "", nil
		}
		if err != nil {
			return nil, "", errorf(http.StatusBadRequest, "multipart: %v", err)
		}
		if part.FileName() == "" {
			v, err := io.ReadAll(io.LimitReader(part, 64<<10))
			if err != nil {
				return nil, "", errorf(http.StatusBadRequest, "multipart field %s: %v", part.FormName(), err)
			}
			params[part.FormName()] = string(v)
			continue
		}
		// The file is the last part, as Proxmox's upload handler requires.
		f, err := os.CreateTemp(s.cfg.UploadDir, "pveupload-")
		if err != nil {
			return nil, "", fmt.Errorf("store upload: %w", err)
		}
		_, err = io.Copy(f, part)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(f.Name())
			return nil, "", fmt.Errorf("store upload: %w", err)
		}
		params[part.FormName()] = part.FileName()
		return params, f.Name(), nil
	}
}
