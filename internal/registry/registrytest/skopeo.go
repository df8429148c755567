package registrytest

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vkimg/vkimg/internal/testenv"
)

// SkopeoArchive copies docker://ref to an oci-archive the way Proxmox VE
// 9.1's OCI pull does, and returns the archive's member names (without
// "./" and trailing "/") and its index.json. args go before the source
// (e.g. --src-creds).
func SkopeoArchive(t testing.TB, ref string, args ...string) (map[string]bool, v1.IndexManifest) {
	t.Helper()
	skopeo := testenv.Need(t, "skopeo", "skopeo")
	archive := filepath.Join(t.TempDir(), "template.tar")
	argv := append(append([]string{"copy", "--src-tls-verify=false"}, args...), "docker://"+ref, "oci-archive:"+archive)
	if out, err := exec.Command(skopeo, argv...).CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy: %v\n%s", err, out)
	}
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	members := map[string]bool{}
	var idx v1.IndexManifest
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")
		members[name] = true
		if name == "index.json" {
			if err := json.NewDecoder(tr).Decode(&idx); err != nil {
				t.Fatalf("archive index.json: %v", err)
			}
		}
	}
	return members, idx
}
