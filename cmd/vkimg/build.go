package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vkimg/vkimg/builder"
	"github.com/vkimg/vkimg/internal/recipe"
	"github.com/vkimg/vkimg/internal/state"
)

func buildCommand() *cli.Command {
	return &cli.Command{
		Name:      "build",
		Usage:     "build a template from a recipe into a local OCI image layout",
		ArgsUsage: "RECIPE.yaml",
		Description: `Builds the Debian 12 template a recipe describes: an OCI image (tagged with
the template version) appended to the local image layout, and the same rootfs
as debian-12-NAME_VERSION-1_amd64.tar.zst for Proxmox 8. Needs root and
mmdebstrap. The same inputs give the same image digest.

Any component's source, version or commit can be overridden:
   --source backend=file:/path/to/vikunja --version backend=2.5.0
   --source backend=oci:vikunja/vikunja:2.5.0#/app/vikunja/vikunja
   --source frontend=dir:./dist   --source mcp=dir:/path/to/my-mcp
   --source backend=url:https://example.org/vikunja#sha256=HEX
   --version template=1.1.0`,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "source", Usage: "override a component's source: KIND=file:PATH|dir:PATH|oci:IMAGE#PATH|url:URL#sha256=HEX"},
			&cli.StringSliceFlag{Name: "version", Usage: "override a version: KIND=VERSION or template=VERSION"},
			&cli.StringSliceFlag{Name: "commit", Usage: "record a component's source commit: KIND=COMMIT"},
			&cli.StringFlag{Name: "output", Usage: "OCI image layout to append to (default $VKIMG_ROOT/templates)"},
			&cli.StringFlag{Name: "rootfs-dir", Usage: "where the plain rootfs .tar.zst goes (default OUTPUT/rootfs)"},
			&cli.StringFlag{Name: "cache", Usage: "build cache: Debian bases, downloads (default $VKIMG_ROOT/build-cache)"},
			&cli.StringFlag{Name: "overlays", Usage: "rootfs overlays (default rootfs-overlays beside the recipe's directory)"},
			&cli.StringFlag{Name: "source-date-epoch", EnvVars: []string{"SOURCE_DATE_EPOCH"}, Usage: "every timestamp in the template (default: the recipe's last git commit)"},
			&cli.StringFlag{Name: "revision", Usage: "source revision for the image label (default: git HEAD of the recipe's repository)"},
		},
		Action: runBuild,
	}
}

func runBuild(c *cli.Context) error {
	if c.NArg() != 1 {
		// urfave/cli stops reading flags at the first argument.
		if c.NArg() > 1 && strings.HasPrefix(c.Args().Get(1), "-") {
			return usagef("build: put the flags before the recipe file: vkimg build [flags] RECIPE.yaml")
		}
		return usagef("build: want one recipe file")
	}
	r, err := recipe.Load(c.Args().First())
	if err != nil {
		return usageError{err}
	}
	var o recipe.Overrides
	if o.Sources, err = recipe.ParseAssignments("source", c.StringSlice("source")); err != nil {
		return usageError{err}
	}
	if o.Versions, err = recipe.ParseAssignments("version", c.StringSlice("version")); err != nil {
		return usageError{err}
	}
	if o.Commits, err = recipe.ParseAssignments("commit", c.StringSlice("commit")); err != nil {
		return usageError{err}
	}
	if err := r.Apply(o); err != nil {
		return usageError{err}
	}
	epoch, err := sourceDateEpoch(c.String("source-date-epoch"), r.Dir)
	if err != nil {
		return usageError{err}
	}
	root := state.FromEnv()
	output := c.String("output")
	if output == "" {
		output = root.Templates()
	}
	rootfsDir := c.String("rootfs-dir")
	if rootfsDir == "" {
		rootfsDir = filepath.Join(output, "rootfs")
	}
	cache := c.String("cache")
	if cache == "" {
		cache = filepath.Join(root.Dir, "build-cache")
	}
	overlays := c.String("overlays")
	if overlays == "" {
		overlays = filepath.Join(filepath.Dir(r.Dir), "rootfs-overlays")
	}
	revision := c.String("revision")
	if revision == "" {
		revision = gitOutput(r.Dir, "rev-parse", "HEAD")
	}
	b, err := builder.New(builder.Options{
		Overlays: overlays, CacheDir: cache, Layout: output, RootfsDir: rootfsDir,
		Epoch: epoch, Revision: revision, Log: c.App.ErrWriter,
	})
	if err != nil {
		return usageError{err}
	}
	res, err := b.Build(c.Context, r)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "%s %s\n  image   %s@%s (oci layout, ref %s)\n  rootfs  %s\n  migrations %d\n",
		res.Manifest.Name, res.Manifest.Version, res.Layout, res.Digest, res.RefName, res.Rootfs, len(res.Manifest.Migrations))
	return nil
}

// sourceDateEpoch parses the flag, or falls back to the time of the last
// commit of the recipe's repository, so a checkout builds reproducibly
// without anyone setting anything.
func sourceDateEpoch(flag, dir string) (time.Time, error) {
	if flag == "" {
		flag = gitOutput(dir, "log", "-1", "--format=%ct")
	}
	if flag == "" {
		return time.Time{}, fmt.Errorf("build: set SOURCE_DATE_EPOCH (or --source-date-epoch): the recipe is not in a git repository with commits")
	}
	n, err := strconv.ParseInt(flag, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, fmt.Errorf("build: SOURCE_DATE_EPOCH %q: want seconds since 1970", flag)
	}
	return time.Unix(n, 0).UTC(), nil
}

// gitOutput runs git in dir and returns its trimmed output, or "" when dir
// is not in a repository (then the caller falls back or leaves it out).
func gitOutput(dir string, args ...string) string {
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Stderr = nil
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
