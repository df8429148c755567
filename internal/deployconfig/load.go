package deployconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads an answers file. Unknown keys and values of the wrong type
// are errors naming file:line.
func Load(path string) (*Answers, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read answers file: %w", err)
	}
	a := &Answers{}
	if err := decodeStrict(path, b, a); err != nil {
		return nil, err
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fileError(path, err)
	}
	a.origin = map[string]string{}
	recordLines(path, "", &root, a.origin)
	return a, nil
}

// decodeStrict decodes one YAML document into v, refusing unknown keys.
// An empty file is an empty document, not an error.
func decodeStrict(path string, b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return fileError(path, err)
	}
	return nil
}

var (
	yamlLine     = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)
	yamlUnknown  = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	yamlTypeHint = regexp.MustCompile(` into \S+$`)
)

// fileError rewrites the YAML library's "line N: field x not found in
// type deployconfig.Answers" into "answers.yaml:N: unknown key "x"", the
// form editors and people can jump to.
func fileError(path string, err error) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	out := make([]string, 0, len(msgs))
	for _, m := range msgs {
		loc := path
		if sm := yamlLine.FindStringSubmatch(m); sm != nil {
			loc = path + ":" + sm[1]
			m = m[len(sm[0]):]
		}
		if sm := yamlUnknown.FindStringSubmatch(m); sm != nil {
			m = fmt.Sprintf("unknown key %q", sm[1])
		} else {
			m = yamlTypeHint.ReplaceAllString(m, " (wrong type)")
		}
		out = append(out, loc+": "+m)
	}
	return errors.New(strings.Join(out, "\n"))
}

// recordLines walks a mapping and notes the line of every scalar value
// under its dotted key path.
func recordLines(path, prefix string, n *yaml.Node, into map[string]string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			recordLines(path, prefix, c, into)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			if prefix != "" {
				key = prefix + "." + key
			}
			into[key] = fmt.Sprintf("%s:%d", path, n.Content[i+1].Line)
			recordLines(path, key, n.Content[i+1], into)
		}
	}
}
