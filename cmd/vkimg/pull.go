package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/vkimg/vkimg/internal/registry"
	"github.com/vkimg/vkimg/internal/state"
)

func pullCommand() *cli.Command {
	return &cli.Command{
		Name:      "pull",
		Usage:     "fetch a template into the local cache, verifying signature and digests",
		ArgsUsage: "REF",
		Description: `Resolves REF (registry.example:5000/vikunja:2.5.0, …@sha256:…, or
oci-layout:DIR:TAG / --layout DIR TAG), verifies its cosign signature with
the pinned key before fetching anything else, then copies each blob into
$VKIMG_ROOT/cache (an OCI image layout keyed by digest), checking every
digest. Blobs already cached are re-hashed, not downloaded again. A failed
pull leaves no partial file. Exit status 4 when a check fails.`,
		Flags: append(registryFlags(), layoutFlag, trustedKeyFlag,
			&cli.BoolFlag{Name: "json", Usage: "print JSON"}),
		Action: runPull,
	}
}

func runPull(c *cli.Context) error {
	if c.NArg() > 1 || (c.NArg() == 0 && c.String("layout") == "") {
		return usagef("pull: want one REF")
	}
	ref, err := parseRef(c, c.Args().First())
	if err != nil {
		return err
	}
	trusted, err := loadTrusted(c)
	if err != nil {
		return err
	}
	res, err := registry.Pull(c.Context, ref, registry.PullOptions{
		Options: registryOptions(c),
		Cache:   state.FromEnv().Cache(),
		Trusted: trusted,
	})
	if err != nil {
		return verifyExit(err)
	}
	out := struct {
		Ref          string `json:"ref"`
		Digest       string `json:"digest"`
		Cache        string `json:"cache"`
		BlobsFetched int    `json:"blobsFetched"`
		BlobsCached  int    `json:"blobsCached"`
	}{ref.String(), res.Digest.String(), res.Cache, res.BlobsFetched, res.BlobsCached}
	if c.Bool("json") {
		return printJSON(c.App.Writer, out)
	}
	fmt.Fprintf(c.App.Writer, "pulled %s\n  digest %s (signature verified)\n  cache  %s (%d blobs fetched, %d already cached)\n",
		out.Ref, out.Digest, out.Cache, out.BlobsFetched, out.BlobsCached)
	return nil
}
