package backup

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// List describes the archives in dir, newest first. It reads only each
// archive's manifest trailer, not its content: Verify checks that. An
// archive whose trailer cannot be read is listed last, with Err set. Work
// directories (hidden) are not listed. A missing dir has no archives.
func List(dir string) ([]Info, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".tar.zst") || !e.Type().IsRegular() {
			continue
		}
		info := Info{Path: filepath.Join(dir, name)}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		info.Size = fi.Size()
		if a, err := openArchive(info.Path); err != nil {
			info.Err = err
		} else {
			info.Manifest = *a.m
			a.Close()
		}
		out = append(out, info)
	}
	// Unreadable archives have no time to trust: they come last.
	slices.SortFunc(out, func(a, b Info) int {
		if (a.Err == nil) != (b.Err == nil) {
			if a.Err == nil {
				return -1
			}
			return 1
		}
		if c := b.Manifest.Created.Compare(a.Manifest.Created); c != 0 {
			return c
		}
		return strings.Compare(b.Path, a.Path)
	})
	return out, nil
}
