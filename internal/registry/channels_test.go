package registry

import (
	"context"
	"slices"
	"testing"
)

func TestChannels(t *testing.T) {
	ctx := context.Background()
	key := testKey(t)
	repo := LayoutRef(t.TempDir(), "")
	for _, v := range []string{"1.0.0", "2.6.0", "1.2.0", "2.5.3", "2.5.0"} {
		src, _ := templateLayout(t, v, 1024)
		// The last published is what main points to.
		if _, err := Publish(ctx, src, repo, PublishOptions{Key: key, Tags: TagOptions{Main: true}}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := List(ctx, repo, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var tags []string
	for _, tpl := range list {
		tags = append(tags, tpl.Tag)
	}
	if want := []string{"2.6.0", "2.5.3", "2.5.0", "1.2.0", "1.0.0", "main"}; !slices.Equal(tags, want) {
		t.Errorf("List = %v, want %v", tags, want)
	}
	for channel, want := range map[string]string{"~2.5": "2.5.3", "^1": "1.2.0", ">=2": "2.6.0", "main": "2.5.0"} {
		got, err := Latest(ctx, repo, channel, Options{})
		if err != nil {
			t.Errorf("Latest(%q): %v", channel, err)
			continue
		}
		if got.Version.String() != want || got.Digest == nil {
			t.Errorf("Latest(%q) = %v (digest %v), want %s", channel, got.Version, got.Digest, want)
		}
	}
	if _, err := Latest(ctx, repo, "^3", Options{}); err == nil {
		t.Error("Latest(^3) found a template")
	}
	if _, err := Latest(ctx, repo, "stable!", Options{}); err == nil {
		t.Error("Latest accepted a channel that is neither main nor a constraint")
	}
	latest, _ := Latest(ctx, repo, "~2.5", Options{})
	for installed, want := range map[string]bool{"2.5.0": true, "2.5.3": false, "2.6.0": false} {
		if got, err := Behind(installed, latest); err != nil || got != want {
			t.Errorf("Behind(%s, 2.5.3) = %v, %v; want %v", installed, got, err, want)
		}
	}
	if _, err := Behind("two", latest); err == nil {
		t.Error("Behind accepted a non-semver installed version")
	}
}
