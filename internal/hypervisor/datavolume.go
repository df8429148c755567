package hypervisor

import (
	"fmt"
	"os"
)

// Unprivileged containers see host uid/gid IDMapBase+N as their N, as on
// Proxmox (/etc/subuid root:100000:65536).
const (
	IDMapBase  = 100000
	IDMapRange = 65536
)

// MapID returns the host id that a container's uid or gid id appears as.
func MapID(id int) (int, error) {
	if id < 0 || id >= IDMapRange {
		return 0, fmt.Errorf("id %d is outside the container's mapped range 0..%d", id, IDMapRange-1)
	}
	return IDMapBase + id, nil
}

// PrepareDataVolume makes the host directory that is bind-mounted into a
// container as its data volume, owned by the host ids that the container's
// uid and gid map to, so its service user can write it. Mode 0750 keeps
// other host users out. An existing directory is re-owned, not emptied.
func PrepareDataVolume(path string, uid, gid int) error {
	hu, err := MapID(uid)
	if err != nil {
		return fmt.Errorf("prepare data volume %s: uid: %w", path, err)
	}
	hg, err := MapID(gid)
	if err != nil {
		return fmt.Errorf("prepare data volume %s: gid: %w", path, err)
	}
	if err := os.MkdirAll(path, 0o750); err != nil {
		return fmt.Errorf("prepare data volume: %w", err)
	}
	// MkdirAll honours the umask and leaves an existing directory's mode
	// alone: set both explicitly.
	if err := os.Chmod(path, 0o750); err != nil {
		return fmt.Errorf("prepare data volume: %w", err)
	}
	if err := os.Lchown(path, hu, hg); err != nil {
		return fmt.Errorf("prepare data volume: %w", err)
	}
	return nil
}
