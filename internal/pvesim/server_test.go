package pvesim

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vkimg/vkimg/internal/lxc"
)

const (
	testToken  = "vkimg@pve!test"
	testSecret = "5f0b6c1e-0000-4000-8000-000000000001"
)

// startSim runs a simulator on an LXC backend that never gets to run a
// container: these tests stop at the API's edge or at template storage.
func startSim(t *testing.T, version string) (*Server, *http.Client) {
	t.Helper()
	b, err := lxc.New(lxc.Options{Root: t.TempDir(), Node: "pve"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(Config{Backend: b, Version: version, Tokens: map[string]string{testToken: testSecret}, UploadDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CACertPEM()) {
		t.Fatal("CA PEM holds no certificate")
	}
	return s, &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func do(t *testing.T, c *http.Client, s *Server, method, path, token, ctype string, body io.Reader) (*http.Response, map[string]json.RawMessage) {
	t.Helper()
	req, err := http.NewRequest(method, s.URL()+"/api2/json"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "PVEAPIToken="+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]json.RawMessage
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v", method, path, err)
	}
	return res, out
}

func TestTokenAuth(t *testing.T) {
	s, c := startSim(t, "8.2.4")
	for _, token := range []string{"", testToken + "=wrong", "root@pam!test=" + testSecret} {
		if res, _ := do(t, c, s, "GET", "/version", token, "", nil); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("token %q: %s, want 401", token, res.Status)
		}
	}
	res, out := do(t, c, s, "GET", "/version", testToken+"="+testSecret, "", nil)
	if res.StatusCode != http.StatusOK || !strings.Contains(string(out["data"]), `"version":"8.2.4"`) || !strings.Contains(string(out["data"]), `"release":"8.2"`) {
		t.Errorf("version: %s %s", res.Status, out["data"])
	}
}

func TestRefusalsLookLikeProxmox(t *testing.T) {
	s, c := startSim(t, "8.2.4")
	auth := testToken + "=" + testSecret
	res, out := do(t, c, s, "POST", "/nodes/pve/lxc", auth, "application/json",
		strings.NewReader(`{"vmid":100,"ostemplate":"local:vztmpl/x.tar.zst","bogus":1,"memory":"lots"}`))
	if res.Status != "400 Parameter verification failed." {
		t.Errorf("status line %q", res.Status)
	}
	var errs map[string]string
	if err := json.Unmarshal(out["errors"], &errs); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"bogus":  "property is not defined in schema and the schema does not allow additional properties\n",
		"memory": "type check ('integer') failed - got 'lots'\n",
	}
	for k, v := range want {
		if errs[k] != v {
			t.Errorf("errors[%s] = %q, want %q", k, errs[k], v)
		}
	}
	if string(out["data"]) != "null" {
		t.Errorf("data = %s, want null", out["data"])
	}

	if res, _ := do(t, c, s, "GET", "/nodes/pve/qemu", auth, "", nil); res.StatusCode != http.StatusNotImplemented {
		t.Errorf("path outside the schema: %s, want 501", res.Status)
	}
	if res, _ := do(t, c, s, "GET", "/nodes/other/status", auth, "", nil); res.StatusCode != http.StatusInternalServerError {
		t.Errorf("unknown node: %s, want 500", res.Status)
	}
	if res, _ := do(t, c, s, "GET", "/nodes/pve/lxc/100/status/current", auth, "", nil); res.Status != "500 Configuration file 'nodes/pve/lxc/100.conf' does not exist" {
		t.Errorf("unknown container: %q", res.Status)
	}
	// Proxmox 8 has no oci-registry-pull.
	res, _ = do(t, c, s, "POST", "/nodes/pve/storage/local/oci-registry-pull", auth, "application/json",
		strings.NewReader(`{"reference":"registry.example/app:1"}`))
	if res.StatusCode != http.StatusNotImplemented {
		t.Errorf("oci-registry-pull on 8.2.4: %s, want 501", res.Status)
	}
}

func TestSetConfigRefusals(t *testing.T) {
	s, c := startSim(t, "8.2.4")
	auth := testToken + "=" + testSecret
	put := func(body string) (*http.Response, map[string]json.RawMessage) {
		return do(t, c, s, "PUT", "/nodes/pve/lxc/100/config", auth, "application/x-www-form-urlencoded", strings.NewReader(body))
	}
	res, out := put("onboot=maybe")
	if res.Status != "400 Parameter verification failed." || !strings.Contains(string(out["errors"]), `"onboot":"type check ('boolean') failed - got 'maybe'`) {
		t.Errorf("onboot=maybe: %q %s", res.Status, out["errors"])
	}
	for body, want := range map[string]string{
		"memory=1024&onboot=1":     "501 the simulator does not implement config option(s) memory",
		"digest=0123abcd&onboot=0": "501 the simulator does not implement config option(s) digest",
		"delete=onboot":            "501 the simulator does not implement config option(s) delete",
		"delete=onboot,-x":         "400 Parameter verification failed.",
		"onboot=1":                 "500 Configuration file 'nodes/pve/lxc/100.conf' does not exist",
		"":                         "500 no options specified",
	} {
		if res, _ := put(body); res.Status != want {
			t.Errorf("PUT config %q: %q, want %q", body, res.Status, want)
		}
	}
}

var upidRE = regexp.MustCompile(`^UPID:pve:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:imgcopy::vkimg@pve!test:$`)

func TestUploadTask(t *testing.T) {
	s, c := startSim(t, "8.2.4")
	auth := testToken + "=" + testSecret
	upload := func(name string) (*http.Response, map[string]json.RawMessage) {
		var b bytes.Buffer
		w := multipart.NewWriter(&b)
		w.WriteField("content", "vztmpl")
		fw, _ := w.CreateFormFile("filename", name)
		fw.Write([]byte("not really a template"))
		w.Close()
		return do(t, c, s, "POST", "/nodes/pve/storage/local/upload", auth, w.FormDataContentType(), &b)
	}
	if res, out := upload("app.iso"); res.StatusCode != http.StatusBadRequest || !strings.Contains(string(out["errors"]), "wrong file extension") {
		t.Errorf("upload of app.iso as vztmpl: %s %s", res.Status, out["errors"])
	}
	res, out := upload("debian-12-app_1-1_amd64.tar.zst")
	var upid string
	if err := json.Unmarshal(out["data"], &upid); err != nil || res.StatusCode != http.StatusOK || !upidRE.MatchString(upid) {
		t.Fatalf("upload: %s %s (%v)", res.Status, out["data"], err)
	}
	var st struct {
		Status     string `json:"status"`
		ExitStatus string `json:"exitstatus"`
		Type       string `json:"type"`
	}
	for deadline := time.Now().Add(time.Minute); st.Status != "stopped"; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("upload task never stopped")
		}
		_, out := do(t, c, s, "GET", "/nodes/pve/tasks/"+upid+"/status", auth, "", nil)
		if err := json.Unmarshal(out["data"], &st); err != nil {
			t.Fatal(err)
		}
	}
	if st.ExitStatus != "OK" || st.Type != "imgcopy" {
		t.Errorf("upload task: %+v", st)
	}
	_, out = do(t, c, s, "GET", "/nodes/pve/tasks/"+upid+"/log?start=0&limit=50", auth, "", nil)
	var log []struct {
		N int    `json:"n"`
		T string `json:"t"`
	}
	if err := json.Unmarshal(out["data"], &log); err != nil || len(log) == 0 || log[0].N != 1 || log[len(log)-1].T != "TASK OK" {
		t.Errorf("task log %s (%v)", out["data"], err)
	}
	_, out = do(t, c, s, "GET", "/nodes/pve/storage/local/content?content=vztmpl", auth, "", nil)
	if !strings.Contains(string(out["data"]), `"volid":"local:vztmpl/debian-12-app_1-1_amd64.tar.zst"`) {
		t.Errorf("storage content after upload: %s", out["data"])
	}
}
