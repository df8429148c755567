package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/vkimg/vkimg/internal/signing"
)

func keysCommand() *cli.Command {
	return &cli.Command{
		Name:  "keys",
		Usage: "make and inspect cosign-compatible signing keys",
		Description: `Key files use cosign's formats: the private key is an encrypted PEM
(ENCRYPTED SIGSTORE PRIVATE KEY, scrypt + nacl/secretbox), the public key a
PKIX PEM. cosign and vkimg read each other's keys. The password comes from
the environment variable COSIGN_PASSWORD (unset means empty), never a flag.

Copy PREFIX.pub to /etc/vkimg/trusted.pub on each node; keep PREFIX.key as a
CI secret (VKIMG_SIGNING_KEY) and its password as COSIGN_PASSWORD.`,
		Subcommands: []*cli.Command{
			{
				Name:      "generate",
				Usage:     "write a new P-256 key pair PREFIX.key and PREFIX.pub",
				ArgsUsage: "[PREFIX]",
				Action:    runKeysGenerate,
			},
			{
				Name:      "public",
				Usage:     "print the public key of a private key file",
				ArgsUsage: "PRIVATE.key",
				Action:    runKeysPublic,
			},
			{
				Name:      "fingerprint",
				Usage:     "print the fingerprint vkimg uses to name a public key",
				ArgsUsage: "PUBLIC.pub",
				Action:    runKeysFingerprint,
			},
		},
	}
}

func runKeysGenerate(c *cli.Context) error {
	if c.NArg() > 1 {
		return usagef("keys generate: want at most one PREFIX")
	}
	prefix := c.Args().First()
	if prefix == "" {
		prefix = "cosign"
	}
	keyPath, pubPath := prefix+".key", prefix+".pub"
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Stat(p); err == nil {
			return usagef("keys generate: %s exists; refusing to overwrite a key", p)
		}
	}
	priv, pub, err := signing.GenerateKeyPair([]byte(os.Getenv(signing.PasswordEnv)))
	if err != nil {
		return err
	}
	if err := writeNew(keyPath, priv, 0o600); err != nil {
		return err
	}
	if err := writeNew(pubPath, pub, 0o644); err != nil {
		os.Remove(keyPath)
		return err
	}
	key, err := signing.ParsePublicKey(pub)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "private key %s (password from %s)\npublic key  %s\nfingerprint %s\n", keyPath, signing.PasswordEnv, pubPath, signing.Fingerprint(key))
	return nil
}

// writeNew creates path with data, failing if it exists.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

func runKeysPublic(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("keys public: want one private key file")
	}
	key, err := signing.LoadPrivateKey(c.Args().First())
	if err != nil {
		return usageError{err}
	}
	pub, err := signing.MarshalPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	_, err = c.App.Writer.Write(pub)
	return err
}

func runKeysFingerprint(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("keys fingerprint: want one public key file")
	}
	pub, err := signing.LoadPublicKey(c.Args().First())
	if err != nil {
		return usageError{err}
	}
	fmt.Fprintln(c.App.Writer, signing.Fingerprint(pub))
	return nil
}
