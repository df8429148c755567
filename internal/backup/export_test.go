package backup

// For the external tests, which tamper with archives.

// AppendTrailer is appendTrailer.
var AppendTrailer = appendTrailer

// SplitArchive returns a valid archive's compressed tar and its manifest
// trailer.
func SplitArchive(path string) (compressed, manifest []byte, err error) {
	a, err := openArchive(path)
	if err != nil {
		return nil, nil, err
	}
	defer a.Close()
	compressed = make([]byte, a.dataEnd)
	if _, err := a.f.ReadAt(compressed, 0); err != nil {
		return nil, nil, err
	}
	return compressed, a.raw, nil
}
