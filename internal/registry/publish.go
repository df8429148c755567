package registry

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"regexp"

	"github.com/Masterminds/semver/v3"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/vkimg/vkimg/internal/manifest"
	"github.com/vkimg/vkimg/internal/signing"
)

// MainTag is the tag that follows the main branch.
const MainTag = "main"

// TagOptions choose the tags a published template gets.
type TagOptions struct {
	Version string // semver; default: the image's version label
	Commit  string // source commit; default: the image's revision label
	Main    bool   // also move the "main" tag
}

var commitRe = regexp.MustCompile(`^[0-9a-f]{12,64}$`)

// Tags returns "<version>", "sha-<commit12>" and (with Main) "main" for an
// image with the given config labels.
func (t TagOptions) Tags(labels map[string]string) ([]string, error) {
	version, commit := t.Version, t.Commit
	if version == "" {
		version = labels[manifest.LabelVersion]
	}
	if commit == "" {
		commit = labels[manifest.LabelRevision]
	}
	if _, err := semver.StrictNewVersion(version); err != nil {
		return nil, fmt.Errorf("template version %q is not semver (set the %s label or give the version): %w", version, manifest.LabelVersion, err)
	}
	tags := []string{version}
	if commit != "" {
		if !commitRe.MatchString(commit) {
			return nil, fmt.Errorf("commit %q is not a hex commit id of at least 12 digits", commit)
		}
		tags = append(tags, "sha-"+commit[:12])
	}
	if t.Main {
		tags = append(tags, MainTag)
	}
	return tags, nil
}

// PublishOptions configure Publish.
type PublishOptions struct {
	Options
	Key  *ecdsa.PrivateKey
	Tags TagOptions
	// Identity is the docker-reference signed for a layout destination
	// (a registry destination always signs its own repository name).
	Identity string
}

// Published says what Publish did.
type Published struct {
	Digest v1.Hash  `json:"digest"`
	Tags   []string `json:"tags"`
	Where  string   `json:"where"`
}

// Publish copies the template src (usually a build's OCI layout) to dst (a
// registry repository or a layout), sets its tags and signs its digest.
func Publish(ctx context.Context, src, dst Ref, o PublishOptions) (*Published, error) {
	if o.Key == nil {
		return nil, errors.New("publish: no signing key")
	}
	img, digest, err := sourceImage(ctx, src, o.Options)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config of %s: %w", src, err)
	}
	if raw, ok := cfg.Config.Labels[manifest.LabelManifest]; ok {
		if _, err := manifest.Parse([]byte(raw)); err != nil {
			return nil, fmt.Errorf("template %s: label %s: %w", src, manifest.LabelManifest, err)
		}
	} else {
		return nil, fmt.Errorf("template %s has no %s label: not a vkimg template", src, manifest.LabelManifest)
	}
	tags, err := o.Tags.Tags(cfg.Config.Labels)
	if err != nil {
		return nil, err
	}
	out := &Published{Digest: digest, Tags: tags, Where: dst.Where()}
	if dst.Layout != "" {
		return out, publishLayout(img, digest, tags, dst.Layout, o)
	}
	return out, publishRemote(ctx, img, digest, tags, dst, o)
}

// sourceImage opens the image ref names and checks its manifest digest.
func sourceImage(ctx context.Context, ref Ref, o Options) (v1.Image, v1.Hash, error) {
	st, err := openStore(ctx, ref, o)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	digest, err := resolveRef(ctx, st, ref)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	if _, err := verifiedManifest(ctx, st, digest, ref); err != nil {
		return nil, v1.Hash{}, err
	}
	var img v1.Image
	if ref.Layout != "" {
		img, err = layout.Path(ref.Layout).Image(digest)
	} else {
		var ropts []remote.Option
		if ropts, err = o.remoteOptions(ctx, ref.Repo); err == nil {
			img, err = remote.Image(o.repository(ref.Repo).Digest(digest.String()), ropts...)
		}
	}
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("open %s: %w", ref, err)
	}
	return img, digest, nil
}

func publishRemote(ctx context.Context, img v1.Image, digest v1.Hash, tags []string, dst Ref, o PublishOptions) error {
	repo := o.repository(dst.Repo)
	ropts, err := o.remoteOptions(ctx, repo)
	if err != nil {
		return err
	}
	for i, tag := range tags {
		if i == 0 {
			err = remote.Write(repo.Tag(tag), img, ropts...)
		} else {
			err = remote.Tag(repo.Tag(tag), img, ropts...)
		}
		if err != nil {
			return describeNetErr(fmt.Errorf("push %s:%s: %w", repo.Name(), tag, err))
		}
	}
	sigRef := repo.Tag(signing.SignatureTag(digest))
	existing, err := remoteImage(sigRef, ropts)
	if err != nil {
		return describeNetErr(fmt.Errorf("read existing signatures %s: %w", sigRef, err))
	}
	sig, err := signing.Sign(o.Key, repo.Name(), digest, existing)
	if err != nil {
		return err
	}
	if err := remote.Write(sigRef, sig, ropts...); err != nil {
		return describeNetErr(fmt.Errorf("push signature %s: %w", sigRef, err))
	}
	return nil
}

func publishLayout(img v1.Image, digest v1.Hash, tags []string, dir string, o PublishOptions) error {
	if err := ensureLayout(dir); err != nil {
		return err
	}
	p := layout.Path(dir)
	if err := p.WriteImage(img); err != nil {
		return fmt.Errorf("write %s to layout %s: %w", digest, dir, err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	size, err := img.Size()
	if err != nil {
		return err
	}
	var descs []v1.Descriptor
	for _, tag := range tags {
		descs = append(descs, v1.Descriptor{MediaType: mt, Size: size, Digest: digest,
			Annotations: map[string]string{refNameAnnotation: tag}})
	}
	retagged := func(d v1.Descriptor) bool {
		for _, t := range tags {
			if d.Annotations[refNameAnnotation] == t {
				return true
			}
		}
		return false
	}
	if err := updateIndex(dir, retagged, descs...); err != nil {
		return err
	}
	return SignLayout(dir, digest, o.Key, o.Identity)
}

// SignLayout signs digest inside the layout at dir the way a registry holds
// cosign signatures: a signature image in the layout whose index entry is
// named SignatureTag(digest). identity is the docker-reference to sign.
func SignLayout(dir string, digest v1.Hash, key *ecdsa.PrivateKey, identity string) error {
	tag := signing.SignatureTag(digest)
	st, err := openLayout(dir)
	if err != nil {
		return err
	}
	var existing v1.Image
	if d, err := st.resolve(context.Background(), tag); err == nil {
		if existing, err = layout.Path(dir).Image(d); err != nil {
			return fmt.Errorf("read existing signatures %s: %w", tag, err)
		}
	}
	sig, err := signing.Sign(key, identity, digest, existing)
	if err != nil {
		return err
	}
	if err := layout.Path(dir).WriteImage(sig); err != nil {
		return fmt.Errorf("write signature %s: %w", tag, err)
	}
	raw, err := sig.RawManifest()
	if err != nil {
		return err
	}
	mt, err := sig.MediaType()
	if err != nil {
		return err
	}
	desc := v1.Descriptor{MediaType: mt, Size: int64(len(raw)), Digest: digestOf(raw),
		Annotations: map[string]string{refNameAnnotation: tag}}
	return updateIndex(dir, func(d v1.Descriptor) bool { return d.Annotations[refNameAnnotation] == tag }, desc)
}
