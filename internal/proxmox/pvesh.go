package proxmox

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// PveshTransport is an http.RoundTripper that performs each API request
// with the node's own pvesh (as root@pam), so go-proxmox works unchanged
// on the node:
//
//	GET    /api2/json/p?a=1  →  pvesh get    /p --a 1 --output-format json
//	POST   (JSON or form)    →  pvesh create /p --k v ... --output-format json
//	PUT                      →  pvesh set    ...
//	DELETE                   →  pvesh delete ...
//
// An upload (multipart) is written to /var/tmp/pveupload-<hex> and passed
// as tmpfilename, which is what Proxmox's HTTP server does with an upload
// before it calls the same API method. pvesh's output is wrapped as
// {"data": ...}; its failures become the status and message Proxmox's HTTP
// server would send.
type PveshTransport struct {
	// Pvesh is the command's path.
	Pvesh string
}

// uploadDir is fixed by the upload method's schema: tmpfilename must match
// /var/tmp/pveupload-[0-9a-f]+.
const uploadDir = "/var/tmp"

var verbs = map[string]string{http.MethodGet: "get", http.MethodPost: "create", http.MethodPut: "set", http.MethodDelete: "delete"}

// RoundTrip implements http.RoundTripper.
func (t *PveshTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	args, upload, err := pveshArgs(req)
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(req.Context(), t.Pvesh, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var exit *exec.ExitError
	if runErr != nil && upload != "" {
		// Only a started upload task removes its file.
		os.Remove(upload)
	}
	if runErr != nil && !errors.As(runErr, &exit) {
		return nil, fmt.Errorf("run %s: %w", t.Pvesh, runErr)
	}
	return pveshResponse(req, stdout.Bytes(), stderr.Bytes(), runErr != nil)
}

// pveshArgs maps a request to pvesh's arguments. It returns the upload
// file it wrote, if any.
func pveshArgs(req *http.Request) ([]string, string, error) {
	verb, ok := verbs[req.Method]
	if !ok {
		return nil, "", fmt.Errorf("pvesh: no verb for HTTP %s", req.Method)
	}
	_, path, ok := strings.Cut(req.URL.Path, "/api2/json")
	if !ok || path == "" {
		return nil, "", fmt.Errorf("pvesh: %s is not an API path", req.URL.Path)
	}
	params := map[string]string{}
	for k, v := range req.URL.Query() {
		params[k] = v[len(v)-1]
	}
	upload, err := readBody(req, params)
	if err != nil {
		return nil, "", err
	}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := []string{verb, path}
	for _, k := range keys {
		args = append(args, "--"+k, params[k])
	}
	return append(args, "--output-format", "json"), upload, nil
}

func readBody(req *http.Request, params map[string]string) (string, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return "", nil
	}
	defer req.Body.Close()
	ct, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
	switch ct {
	case "application/json":
		var body map[string]any
		dec := json.NewDecoder(req.Body)
		dec.UseNumber()
		if err := dec.Decode(&body); err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("pvesh: request body: %w", err)
		}
		for k, v := range body {
			switch x := v.(type) {
			case string:
				params[k] = x
			case json.Number:
				params[k] = x.String()
			case bool:
				// pvesh takes Proxmox's boolean spelling.
				params[k] = map[bool]string{true: "1", false: "0"}[x]
			case nil:
			default:
				return "", fmt.Errorf("pvesh: parameter %s: arrays and objects are not supported", k)
			}
		}
	case "application/x-www-form-urlencoded":
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return "", fmt.Errorf("pvesh: request body: %w", err)
		}
		form, err := url.ParseQuery(string(b))
		if err != nil {
			return "", fmt.Errorf("pvesh: request body: %w", err)
		}
		for k, v := range form {
			params[k] = v[len(v)-1]
		}
	case "multipart/form-data":
		return readUpload(req, params)
	default:
		return "", fmt.Errorf("pvesh: unsupported request body type %q", ct)
	}
	return "", nil
}

// readUpload stores a multipart upload's file part where Proxmox's HTTP
// server would and passes its name as tmpfilename.
func readUpload(req *http.Request, params map[string]string) (string, error) {
	mr, err := req.MultipartReader()
	if err != nil {
		return "", fmt.Errorf("pvesh: upload: %w", err)
	}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return "", errors.New("pvesh: upload without a file")
		}
		if err != nil {
			return "", fmt.Errorf("pvesh: upload: %w", err)
		}
		if part.FileName() == "" {
			v, err := io.ReadAll(part)
			if err != nil {
				return "", fmt.Errorf("pvesh: upload field %s: %w", part.FormName(), err)
			}
			params[part.FormName()] = string(v)
			continue
		}
		rnd := make([]byte, 8)
		if _, err := rand.Read(rnd); err != nil {
			return "", err
		}
		name := filepath.Join(uploadDir, "pveupload-"+hex.EncodeToString(rnd))
		f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return "", fmt.Errorf("pvesh: upload: %w", err)
		}
		_, err = io.Copy(f, part)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(name)
			return "", fmt.Errorf("pvesh: upload to %s: %w", name, err)
		}
		params[part.FormName()] = part.FileName()
		params["tmpfilename"] = name
		return name, nil
	}
}

// statusLine is how pvesh prints an HTTP exception ("400 Parameter
// verification failed."); a plain die is printed as the message alone.
var statusLine = regexp.MustCompile(`^(\d{3}) (.*)$`)

// pveshResponse wraps pvesh's output as the HTTP answer Proxmox's server
// would give.
func pveshResponse(req *http.Request, stdout, stderr []byte, failed bool) (*http.Response, error) {
	res := &http.Response{
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  http.Header{"Content-Type": {"application/json;charset=UTF-8"}},
		Request: req,
	}
	if failed {
		lines := strings.Split(strings.TrimSpace(string(stderr)), "\n")
		code, msg := http.StatusInternalServerError, strings.Join(lines, "; ")
		errs := map[string]string{}
		if m := statusLine.FindStringSubmatch(lines[0]); m != nil {
			fmt.Sscan(m[1], &code)
			msg = m[2]
			for _, l := range lines[1:] {
				// "param: message" lines; pvesh's usage line has no colon.
				if k, v, ok := strings.Cut(l, ": "); ok && !strings.Contains(k, " ") {
					errs[k] = v
				}
			}
		}
		if msg == "" {
			msg = "pvesh failed without a message"
		}
		body, _ := json.Marshal(map[string]any{"data": nil, "errors": errs})
		res.StatusCode, res.Status = code, fmt.Sprintf("%d %s", code, msg)
		res.Body, res.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		return res, nil
	}
	// In a CLI context a worker may print its log before pvesh prints the
	// result, which is one line of JSON: take the last line.
	data := []byte("null")
	out := strings.Split(strings.TrimSpace(string(stdout)), "\n")
	if last := strings.TrimSpace(out[len(out)-1]); last != "" {
		data = []byte(last)
	}
	if !json.Valid(data) {
		return nil, fmt.Errorf("pvesh %s: output is not JSON: %.200s", req.URL.Path, data)
	}
	body := append(append([]byte(`{"data":`), data...), '}')
	res.StatusCode, res.Status = http.StatusOK, "200 OK"
	res.Body, res.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	return res, nil
}
