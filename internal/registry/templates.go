package registry

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"fmt"
	"io"
	"slices"

	"github.com/Masterminds/semver/v3"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vkimg/vkimg/internal/manifest"
	"github.com/vkimg/vkimg/internal/signing"
)

// Info is what a template says about itself, read from its config blob
// alone: no layer is fetched.
type Info struct {
	Ref      string             `json:"ref"`
	Digest   v1.Hash            `json:"digest"`
	Verified bool               `json:"verified"` // signature checked with the trusted key
	Labels   map[string]string  `json:"labels"`
	Manifest *manifest.Manifest `json:"manifest"`
}

// Inspect reads ref's manifest and config (digests checked) and the
// template manifest label. With a trusted key the signature is verified
// first; with nil it is not looked at (Info.Verified says which).
func Inspect(ctx context.Context, ref Ref, o Options, trusted *ecdsa.PublicKey) (*Info, error) {
	st, err := openStore(ctx, ref, o)
	if err != nil {
		return nil, err
	}
	digest, err := resolveRef(ctx, st, ref)
	if err != nil {
		return nil, err
	}
	info := &Info{Ref: ref.String(), Digest: digest}
	if trusted != nil {
		sig, err := st.signatures(ctx, digest)
		if err != nil {
			return nil, fmt.Errorf("fetch signatures of %s: %w", ref, err)
		}
		blob := func(ctx context.Context, d v1.Hash) (io.ReadCloser, error) {
			rc, _, err := st.blob(ctx, d, 0)
			return rc, err
		}
		if err := signing.Verify(ctx, sig, blob, trusted, signing.Expect{Digest: digest, Repository: st.identity(), Ref: ref.Where()}); err != nil {
			return nil, err
		}
		info.Verified = true
	}
	raw, err := verifiedManifest(ctx, st, digest, ref)
	if err != nil {
		return nil, err
	}
	m, err := parseManifest(raw)
	if err != nil {
		return nil, signing.Refusedf(signing.Tampered, "manifest %s of %s: %v", digest, ref, err)
	}
	if m.Config.Size > maxManifest {
		return nil, fmt.Errorf("config of %s is %d bytes: not a template config", ref, m.Config.Size)
	}
	rc, _, err := st.blob(ctx, m.Config.Digest, 0)
	if err != nil {
		return nil, fmt.Errorf("fetch config of %s: %w", ref, err)
	}
	b, err := io.ReadAll(io.LimitReader(rc, maxManifest+1))
	rc.Close()
	if err != nil {
		return nil, describeNetErr(fmt.Errorf("read config of %s: %w", ref, err))
	}
	if digestOf(b) != m.Config.Digest {
		return nil, signing.Refusedf(signing.Tampered, "config blob digest mismatch for %s: manifest says %s, content is %s", ref, m.Config.Digest, digestOf(b))
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("config of %s: %w", ref, err)
	}
	info.Labels = cfg.Config.Labels
	label, ok := info.Labels[manifest.LabelManifest]
	if !ok {
		return nil, fmt.Errorf("%s has no %s label: not a vkimg template", ref, manifest.LabelManifest)
	}
	if info.Manifest, err = manifest.Parse([]byte(label)); err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	return info, nil
}

// Template is one available template version in a repository.
type Template struct {
	Tag     string          `json:"tag"`
	Version *semver.Version `json:"version,omitempty"` // nil for "main" until resolved
	Digest  *v1.Hash        `json:"digest,omitempty"`  // set by Latest
}

// List returns the repository's templates: tags that are semver versions
// (newest first), then "main" when present. Other tags (sha-…, .sig) are
// not channels.
func List(ctx context.Context, repo Ref, o Options) ([]Template, error) {
	st, err := openStore(ctx, repo, o)
	if err != nil {
		return nil, err
	}
	tags, err := st.tags(ctx)
	if err != nil {
		return nil, err
	}
	var out []Template
	hasMain := false
	for _, t := range tags {
		if t == MainTag {
			hasMain = true
			continue
		}
		if v, err := semver.StrictNewVersion(t); err == nil {
			out = append(out, Template{Tag: t, Version: v})
		}
	}
	slices.SortFunc(out, func(a, b Template) int { return b.Version.Compare(a.Version) })
	if hasMain {
		out = append(out, Template{Tag: MainTag})
	}
	return out, nil
}

// Latest returns the newest template in channel: "main" (whatever the main
// tag points to; its version comes from the image's label) or a semver
// constraint such as "~2.5" or "^1". The digest is resolved.
func Latest(ctx context.Context, repo Ref, channel string, o Options) (*Template, error) {
	var pick *Template
	if channel == MainTag {
		ref := repo
		ref.Tag, ref.Digest = MainTag, nil
		info, err := Inspect(ctx, ref, o, nil)
		if err != nil {
			return nil, err
		}
		v, err := semver.StrictNewVersion(info.Manifest.Version)
		if err != nil {
			return nil, fmt.Errorf("main of %s: %w", repo.Where(), err)
		}
		return &Template{Tag: MainTag, Version: v, Digest: &info.Digest}, nil
	}
	c, err := semver.NewConstraint(channel)
	if err != nil {
		return nil, fmt.Errorf("channel %q is neither %q nor a semver constraint: %w", channel, MainTag, err)
	}
	all, err := List(ctx, repo, o)
	if err != nil {
		return nil, err
	}
	for i := range all {
		if all[i].Version != nil && c.Check(all[i].Version) {
			pick = &all[i]
			break // List is newest first
		}
	}
	if pick == nil {
		return nil, fmt.Errorf("no template in %s matches channel %q", repo.Where(), channel)
	}
	st, err := openStore(ctx, repo, o)
	if err != nil {
		return nil, err
	}
	d, err := st.resolve(ctx, pick.Tag)
	if err != nil {
		return nil, fmt.Errorf("resolve %s:%s: %w", repo.Where(), pick.Tag, err)
	}
	pick.Digest = &d
	return pick, nil
}

// Behind reports whether installed (a semver version) is older than latest.
func Behind(installed string, latest *Template) (bool, error) {
	v, err := semver.StrictNewVersion(installed)
	if err != nil {
		return false, fmt.Errorf("installed version %q is not semver: %w", installed, err)
	}
	return latest.Version.GreaterThan(v), nil
}
