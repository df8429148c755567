package lxc

import (
	"io"
	"os"
)

// FilteredTemplate writes the tar stream that Create would hand to tar in
// the user namespace, so the checks can be tested without root.
func FilteredTemplate(path string, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	layers, err := templateLayers(f)
	if err != nil {
		return err
	}
	return streamLayers(w, layers)
}
