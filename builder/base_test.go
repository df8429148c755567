package builder

import (
	"strings"
	"testing"
)

func TestParseDpkgStatus(t *testing.T) {
	status := `Package: zlib1g
Status: install ok installed
Architecture: amd64
Version: 1:1.2.13.dfsg-1
Description: compression library
 continuation line: not a field

Package: removed-pkg
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: base-files
Status: install ok installed
Architecture: amd64
Version: 12.4+deb12u11
`
	got, err := parseDpkgStatus(strings.NewReader(status))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "base-files" || got[0].Version != "12.4+deb12u11" || got[1].Name != "zlib1g" || got[1].Version != "1:1.2.13.dfsg-1" || got[1].Arch != "amd64" {
		t.Errorf("packages %+v", got)
	}
}

func TestRootfsName(t *testing.T) {
	if got := RootfsName("vikunja", "2.5.0"); got != "debian-12-vikunja_2.5.0-1_amd64.tar.zst" {
		t.Errorf("RootfsName = %s", got)
	}
}
