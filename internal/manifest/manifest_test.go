package manifest

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func valid() Manifest {
	return Manifest{
		SchemaVersion: SchemaVersion, Name: "vikunja", Version: "2.5.0",
		Components: []Component{{Name: "backend", Kind: KindBackend, Version: "2.5.0"}},
		Migrations: []string{"a", "b"},
		DataVolume: DataVolume{Path: "/data", UID: 990, GID: 990},
	}
}

func TestParseRefusesWhatConsumersCannotUse(t *testing.T) {
	cases := map[string]func(*Manifest){
		"schema version": func(m *Manifest) { m.SchemaVersion = 99 },
		"no name":        func(m *Manifest) { m.Name = "" },
		"not semver":     func(m *Manifest) { m.Version = "2.5" },
		"no backend":     func(m *Manifest) { m.Components[0].Kind = KindMCP },
		"no data volume": func(m *Manifest) { m.DataVolume.Path = "" },
	}
	for name, breakIt := range cases {
		t.Run(name, func(t *testing.T) {
			m := valid()
			breakIt(&m)
			b, _ := json.Marshal(m)
			if _, err := Parse(b); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	b, _ := json.Marshal(valid())
	m, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.Component(KindBackend) == nil || m.Component(KindFrontend) != nil {
		t.Fatal("Component lookup wrong")
	}
	if _, err := Parse([]byte("{")); err == nil || !strings.Contains(err.Error(), "parse template manifest") {
		t.Fatalf("broken JSON: %v", err)
	}
}

func TestNewMigrations(t *testing.T) {
	installed, next := valid(), valid()
	next.Migrations = []string{"a", "b", "c", "d"}
	if got := next.NewMigrations(&installed); !slices.Equal(got, []string{"c", "d"}) {
		t.Fatalf("new migrations = %v, want [c d]", got)
	}
	if got := installed.NewMigrations(&installed); len(got) != 0 {
		t.Fatalf("same template: %v", got)
	}
}
