package main

import (
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/vkimg/vkimg/internal/registry"
	"github.com/vkimg/vkimg/internal/signing"
	"github.com/vkimg/vkimg/internal/state"
)

// registryFlags are shared by every command that talks to a registry.
// Credentials come only from the environment or a file: a flag value
// would be visible in ps(1).
func registryFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "registry-auth", EnvVars: []string{registry.EnvAuthConfig}, Usage: "docker config.json-style credentials `FILE` (or " + registry.EnvUsername + "/" + registry.EnvPassword + ")"},
		&cli.StringFlag{Name: "registry-ca", EnvVars: []string{registry.EnvCAFile}, Usage: "PEM `FILE` of CA certificates the registry's TLS certificate may chain to"},
		&cli.BoolFlag{Name: "plain-http", Usage: "allow HTTP without TLS for a non-loopback registry"},
		&cli.DurationFlag{Name: "timeout", Value: registry.DefaultTimeout, Usage: "per-request timeout (connect, response, stalled download)"},
	}
}

func registryOptions(c *cli.Context) registry.Options {
	o := registry.OptionsFromEnv()
	o.AuthConfig = c.String("registry-auth")
	o.CAFile = c.String("registry-ca")
	o.PlainHTTP = c.Bool("plain-http")
	o.Timeout = c.Duration("timeout")
	return o
}

var trustedKeyFlag = &cli.StringFlag{Name: "trusted-key", Value: state.FromEnv().TrustedKey(), Usage: "the pinned public key `FILE` templates must be signed with"}

func loadTrusted(c *cli.Context) (*ecdsa.PublicKey, error) {
	pub, err := signing.LoadPublicKey(c.String("trusted-key"))
	if err != nil {
		return nil, usageError{err}
	}
	return pub, nil
}

// parseRef reads a template reference argument; --layout DIR turns a bare
// tag (or nothing) into a reference into that layout.
func parseRef(c *cli.Context, arg string) (registry.Ref, error) {
	if dir := c.String("layout"); dir != "" {
		if strings.ContainsAny(arg, "/@") {
			return registry.Ref{}, usagef("with --layout, give only a tag (or nothing), not %q", arg)
		}
		return registry.LayoutRef(dir, arg), nil
	}
	ref, err := registry.ParseRef(arg)
	if err != nil {
		return registry.Ref{}, usageError{err}
	}
	return ref, nil
}

var layoutFlag = &cli.StringFlag{Name: "layout", Usage: "read from the local OCI image layout `DIR` (the argument is then a tag)"}

// verifyExit gives refused signature and digest checks their exit status.
func verifyExit(err error) error {
	if signing.IsRefused(err) {
		return cli.Exit("refused: "+err.Error(), exitVerify)
	}
	return err
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func templatesCommand() *cli.Command {
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON"}
	return &cli.Command{
		Name:  "templates",
		Usage: "list published templates, find the newest in a channel, show one",
		Description: `REPO is a registry repository (registry.example:5000/vikunja) or a local
layout (oci-layout:/var/lib/vkimg/templates, or --layout DIR).
A channel is "main" (the newest build of the main branch) or a semver
constraint such as "~2.5" (2.5.x) or "^1" (1.x).`,
		Subcommands: []*cli.Command{
			{
				Name:      "list",
				Usage:     "list the template versions in a repository (semver tags, then main)",
				ArgsUsage: "REPO",
				Flags:     append(registryFlags(), jsonFlag, layoutFlag),
				Action:    runTemplatesList,
			},
			{
				Name:      "latest",
				Usage:     "the newest template in a channel, and whether an installed version is behind",
				ArgsUsage: "REPO",
				Flags: append(registryFlags(), jsonFlag, layoutFlag,
					&cli.StringFlag{Name: "channel", Value: registry.MainTag, Usage: `"main" or a semver constraint like "~2.5"`},
					&cli.StringFlag{Name: "installed", Usage: "the installed template `VERSION`; exit 0 either way, say if it is behind"}),
				Action: runTemplatesLatest,
			},
			{
				Name:      "show",
				Usage:     "show a template's manifest from its config labels, without pulling the rootfs",
				ArgsUsage: "REF",
				Flags:     append(registryFlags(), jsonFlag, layoutFlag, trustedKeyFlag),
				Action:    runTemplatesShow,
			},
		},
	}
}

func runTemplatesList(c *cli.Context) error {
	if c.NArg() > 1 || (c.NArg() == 0 && c.String("layout") == "") {
		return usagef("templates list: want one REPO")
	}
	repo, err := parseRef(c, c.Args().First())
	if err != nil {
		return err
	}
	list, err := registry.List(c.Context, repo, registryOptions(c))
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, list)
	}
	for _, t := range list {
		fmt.Fprintln(c.App.Writer, t.Tag)
	}
	return nil
}

func runTemplatesLatest(c *cli.Context) error {
	if c.NArg() > 1 || (c.NArg() == 0 && c.String("layout") == "") {
		return usagef("templates latest: want one REPO")
	}
	repo, err := parseRef(c, c.Args().First())
	if err != nil {
		return err
	}
	latest, err := registry.Latest(c.Context, repo, c.String("channel"), registryOptions(c))
	if err != nil {
		return err
	}
	out := struct {
		Channel   string `json:"channel"`
		Tag       string `json:"tag"`
		Version   string `json:"version"`
		Digest    string `json:"digest"`
		Installed string `json:"installed,omitempty"`
		Behind    *bool  `json:"behind,omitempty"`
	}{Channel: c.String("channel"), Tag: latest.Tag, Version: latest.Version.String(), Digest: latest.Digest.String()}
	if inst := c.String("installed"); inst != "" {
		behind, err := registry.Behind(inst, latest)
		if err != nil {
			return usageError{err}
		}
		out.Installed, out.Behind = inst, &behind
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, out)
	}
	fmt.Fprintf(c.App.Writer, "%s %s (%s)\n", out.Version, out.Digest, out.Tag)
	if out.Behind != nil {
		state := "up to date"
		if *out.Behind {
			state = "behind: " + out.Version + " is available"
		}
		fmt.Fprintf(c.App.Writer, "installed %s: %s\n", out.Installed, state)
	}
	return nil
}

func runTemplatesShow(c *cli.Context) error {
	if c.NArg() > 1 || (c.NArg() == 0 && c.String("layout") == "") {
		return usagef("templates show: want one REF")
	}
	ref, err := parseRef(c, c.Args().First())
	if err != nil {
		return err
	}
	trusted, err := loadTrusted(c)
	note := ""
	if err != nil {
		// Showing an unverified manifest is harmless; using it is not.
		if c.IsSet("trusted-key") || !errors.Is(err, os.ErrNotExist) {
			return err
		}
		trusted, note = nil, "not checked (no "+c.String("trusted-key")+")"
	}
	info, err := registry.Inspect(c.Context, ref, registryOptions(c), trusted)
	if err != nil {
		return verifyExit(err)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, info)
	}
	if info.Verified {
		note = "verified with " + signing.Fingerprint(trusted)
	}
	m := info.Manifest
	w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "template\t%s %s\n", m.Name, m.Version)
	fmt.Fprintf(w, "digest\t%s\n", info.Digest)
	fmt.Fprintf(w, "signature\t%s\n", note)
	fmt.Fprintf(w, "created\t%s\n", m.Created)
	fmt.Fprintf(w, "base\t%s %s (%s) %s, %d packages\n", m.Base.Distribution, m.Base.Release, m.Base.Suite, m.Base.Arch, len(m.Base.Packages))
	for _, comp := range m.Components {
		fmt.Fprintf(w, "%s\t%s %s %s\n", comp.Kind, comp.Name, comp.Version, comp.Source)
	}
	fmt.Fprintf(w, "migrations\t%d\n", len(m.Migrations))
	fmt.Fprintf(w, "needs\t%d cores, %d MB memory, %d GB disk\n", m.Resources.MinCores, m.Resources.MinMemoryMB, m.Resources.MinDiskGB)
	return w.Flush()
}
