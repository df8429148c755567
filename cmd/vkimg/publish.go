package main

import (
	"crypto/ecdsa"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vkimg/vkimg/internal/registry"
	"github.com/vkimg/vkimg/internal/signing"
)

// signingKeyEnv carries the private key PEM itself, as CI secrets arrive.
const signingKeyEnv = "VKIMG_SIGNING_KEY"

func publishCommand() *cli.Command {
	return &cli.Command{
		Name:      "publish",
		Usage:     "push a built template to a registry (or layout), tag it and sign it",
		ArgsUsage: "[SOURCE] DEST",
		Description: `Copies the template SOURCE (oci-layout:DIR[:TAG], or --layout DIR [TAG],
usually the output of vkimg build) to DEST, a registry repository such as
registry.example:5000/vikunja (or oci-layout:DIR), with the tags
VERSION and sha-COMMIT12 (from the image's labels, or --version/--commit),
plus "main" with --main, and signs its digest in cosign's format (tag
sha256-HEX.sig). The manifest digest is kept: what was built is what is
signed and what nodes pull.

The signing key is --key FILE, or the PEM itself in $VKIMG_SIGNING_KEY (a CI
secret); its password is $COSIGN_PASSWORD. Registry credentials:
$VKIMG_REGISTRY_USERNAME/$VKIMG_REGISTRY_PASSWORD or --registry-auth FILE.`,
		Flags: append(registryFlags(), layoutFlag,
			&cli.StringFlag{Name: "key", Usage: "cosign private key `FILE` (default: PEM in $" + signingKeyEnv + ")"},
			&cli.StringFlag{Name: "version", Usage: "template `VERSION` tag (default: the image's version label)"},
			&cli.StringFlag{Name: "commit", Usage: "source `COMMIT` for the sha- tag (default: the image's revision label)"},
			&cli.BoolFlag{Name: "main", Usage: `also move the "main" tag to this template`},
			&cli.StringFlag{Name: "identity", Usage: "docker-reference to sign when DEST is a layout (default: DEST's path)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		),
		Action: runPublish,
	}
}

func runPublish(c *cli.Context) error {
	var srcArg, dstArg string
	switch {
	case c.String("layout") != "" && c.NArg() == 1:
		dstArg = c.Args().Get(0)
	case c.String("layout") != "" && c.NArg() == 2, c.String("layout") == "" && c.NArg() == 2:
		srcArg, dstArg = c.Args().Get(0), c.Args().Get(1)
	default:
		return usagef("publish: want SOURCE DEST, or --layout DIR [TAG] DEST")
	}
	src, err := parseRef(c, srcArg)
	if err != nil {
		return err
	}
	dst, err := registry.ParseRef(dstArg)
	if err != nil {
		return usageError{err}
	}
	if dst.Tag != "" || dst.Digest != nil {
		return usagef("publish: DEST is a repository without tag (tags come from the template): %s", dstArg)
	}
	key, err := signingKey(c.String("key"))
	if err != nil {
		return err
	}
	identity := c.String("identity")
	if identity == "" {
		identity = dst.Layout
	}
	res, err := registry.Publish(c.Context, src, dst, registry.PublishOptions{
		Options:  registryOptions(c),
		Key:      key,
		Tags:     registry.TagOptions{Version: c.String("version"), Commit: c.String("commit"), Main: c.Bool("main")},
		Identity: identity,
	})
	if err != nil {
		return verifyExit(err)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, res)
	}
	fmt.Fprintf(c.App.Writer, "published %s@%s\n  tags %s\n  signature %s\n", res.Where, res.Digest, strings.Join(res.Tags, " "), signing.SignatureTag(res.Digest))
	return nil
}

// signingKey loads the private key from file, or from $VKIMG_SIGNING_KEY.
func signingKey(file string) (*ecdsa.PrivateKey, error) {
	if file != "" {
		key, err := signing.LoadPrivateKey(file)
		if err != nil {
			return nil, usageError{err}
		}
		return key, nil
	}
	pem := os.Getenv(signingKeyEnv)
	if pem == "" {
		return nil, usagef("publish: no signing key: give --key FILE or set $%s to the private key PEM", signingKeyEnv)
	}
	key, err := signing.ParsePrivateKey([]byte(pem), []byte(os.Getenv(signing.PasswordEnv)))
	if err != nil {
		return nil, usagef("private key in $%s: %w", signingKeyEnv, err)
	}
	return key, nil
}
