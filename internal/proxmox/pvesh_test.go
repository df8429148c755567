package proxmox

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestPveshArgs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		method string
		url    string
		ctype  string
		body   string
		want   []string
	}{
		{"get with query", "GET", "https://pve/api2/json/nodes/pve/tasks/UPID:pve:1:2:3:vzstart:100:root@pam:/log?start=0&limit=50", "", "",
			[]string{"get", "/nodes/pve/tasks/UPID:pve:1:2:3:vzstart:100:root@pam:/log", "--limit", "50", "--start", "0", "--output-format", "json"}},
		{"create from JSON", "POST", "https://pve/api2/json/nodes/pve/lxc", "application/json",
			`{"vmid":101,"onboot":true,"unprivileged":false,"net0":"name=eth0,bridge=vmbr0,ip=dhcp","memory":1024}`,
			[]string{"create", "/nodes/pve/lxc", "--memory", "1024", "--net0", "name=eth0,bridge=vmbr0,ip=dhcp", "--onboot", "1",
				"--unprivileged", "0", "--vmid", "101", "--output-format", "json"}},
		{"set from form", "PUT", "https://pve/api2/json/nodes/pve/lxc/101/config", "application/x-www-form-urlencoded", "description=a+b&tags=x%3By",
			[]string{"set", "/nodes/pve/lxc/101/config", "--description", "a b", "--tags", "x;y", "--output-format", "json"}},
		{"delete with query", "DELETE", "https://pve/api2/json/nodes/pve/lxc/101?purge=1", "", "",
			[]string{"delete", "/nodes/pve/lxc/101", "--purge", "1", "--output-format", "json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req, err := http.NewRequest(tc.method, tc.url, body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			got, upload, err := pveshArgs(req)
			if err != nil {
				t.Fatal(err)
			}
			if upload != "" {
				t.Errorf("upload file %q for a plain request", upload)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("args\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestPveshArgsUpload(t *testing.T) {
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	if err := w.WriteField("content", "vztmpl"); err != nil {
		t.Fatal(err)
	}
	fw, err := w.CreateFormFile("filename", "debian-12-x_1-1_amd64.tar.zst")
	if err != nil {
		t.Fatal(err)
	}
	fw.Write([]byte("template bytes"))
	w.Close()
	req, _ := http.NewRequest("POST", "https://pve/api2/json/nodes/pve/storage/local/upload", &b)
	req.Header.Set("Content-Type", w.FormDataContentType())
	args, upload, err := pveshArgs(req)
	if err != nil {
		if os.IsPermission(err) {
			t.Skipf("needs write access to %s: %v", uploadDir, err)
		}
		t.Fatal(err)
	}
	defer os.Remove(upload)
	if !strings.HasPrefix(upload, "/var/tmp/pveupload-") {
		t.Errorf("upload file %q is not where Proxmox puts uploads", upload)
	}
	data, err := os.ReadFile(upload)
	if err != nil || string(data) != "template bytes" {
		t.Errorf("upload file holds %q, %v", data, err)
	}
	want := []string{"create", "/nodes/pve/storage/local/upload", "--content", "vztmpl", "--filename", "debian-12-x_1-1_amd64.tar.zst",
		"--tmpfilename", upload, "--output-format", "json"}
	if !reflect.DeepEqual(args, want) {
		t.Errorf("args\n got %q\nwant %q", args, want)
	}
}

func TestPveshResponse(t *testing.T) {
	req, _ := http.NewRequest("POST", "https://pve/api2/json/nodes/pve/lxc", nil)
	decode := func(res *http.Response) map[string]json.RawMessage {
		t.Helper()
		var m map[string]json.RawMessage
		if err := json.NewDecoder(res.Body).Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}

	res, err := pveshResponse(req, []byte("extracting archive\nTotal bytes read: 1\n\"UPID:pve:1:2:3:vzcreate:101:root@pam:\"\n"), nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || string(decode(res)["data"]) != `"UPID:pve:1:2:3:vzcreate:101:root@pam:"` {
		t.Errorf("success: %d", res.StatusCode)
	}

	res, err = pveshResponse(req, nil, []byte("400 Parameter verification failed.\nmemory: type check ('integer') failed - got 'x'\npvesh create <api_path> [OPTIONS] [FORMAT_OPTIONS]\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 400 || res.Status != "400 Parameter verification failed." {
		t.Errorf("parameter error: %q", res.Status)
	}
	if got := string(decode(res)["errors"]); got != `{"memory":"type check ('integer') failed - got 'x'"}` {
		t.Errorf("parameter errors %s", got)
	}

	res, err = pveshResponse(req, nil, []byte("Configuration file 'nodes/pve/lxc/999.conf' does not exist\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 500 || res.Status != "500 Configuration file 'nodes/pve/lxc/999.conf' does not exist" {
		t.Errorf("plain failure: %q", res.Status)
	}
	if !notExist.MatchString(res.Status) {
		t.Error("a missing container's message is not recognised")
	}

	if _, err := pveshResponse(req, []byte("not json\n"), nil, false); err == nil {
		t.Error("non-JSON output accepted")
	}
}
