package hypervisor

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestMapID(t *testing.T) {
	for _, tc := range []struct {
		id, want int
		ok       bool
	}{{0, 100000, true}, {990, 100990, true}, {65535, 165535, true}, {65536, 0, false}, {-1, 0, false}} {
		got, err := MapID(tc.id)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("MapID(%d) = %d, %v; want %d, ok=%v", tc.id, got, err, tc.want, tc.ok)
		}
	}
}

func TestPrepareDataVolume(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown to mapped ids")
	}
	dir := filepath.Join(t.TempDir(), "instances", "x", "data")
	// Twice: an existing directory with another mode is fixed up too.
	for range 2 {
		if err := PrepareDataVolume(dir, 990, 991); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(dir, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 100990 || st.Gid != 100991 || st.Mode&0o7777 != 0o750 {
			t.Fatalf("data volume uid %d gid %d mode %o; want 100990 100991 750", st.Uid, st.Gid, st.Mode&0o7777)
		}
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	if err := PrepareDataVolume(dir, 70000, 0); err == nil {
		t.Error("PrepareDataVolume accepted an unmapped uid")
	}
}
