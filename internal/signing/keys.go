// Package signing makes and checks cosign-compatible signatures over OCI
// image digests: ECDSA P-256 key pairs in cosign's file formats, and
// signatures in cosign's classic layout (a "sha256-<hex>.sig" image beside the
// signed one), so that `cosign verify --key` accepts what vkimg signs and vkimg
// accepts what `cosign sign --key` signs.
package signing

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"
)

// PEM block types. cosign writes SigstorePrivateKeyType and still reads the
// older CosignPrivateKeyType, so do we.
const (
	SigstorePrivateKeyType = "ENCRYPTED SIGSTORE PRIVATE KEY"
	CosignPrivateKeyType   = "ENCRYPTED COSIGN PRIVATE KEY"
	PublicKeyType          = "PUBLIC KEY"
)

// PasswordEnv names the environment variable holding the private key's
// password, as cosign does; a flag would show the password in ps(1).
const PasswordEnv = "COSIGN_PASSWORD"

// The encrypted private key is the JSON envelope of
// github.com/secure-systems-lab/go-securesystemslib/encrypted, which cosign
// uses: scrypt derives a nacl/secretbox key from the password.
type encryptedKey struct {
	KDF struct {
		Name   string       `json:"name"`
		Params scryptParams `json:"params"`
		Salt   []byte       `json:"salt"`
	} `json:"kdf"`
	Cipher struct {
		Name  string `json:"name"`
		Nonce []byte `json:"nonce"`
	} `json:"cipher"`
	Ciphertext []byte `json:"ciphertext"`
}

type scryptParams struct {
	N int `json:"N"`
	R int `json:"r"`
	P int `json:"p"`
}

// acceptedScrypt are the parameter sets go-securesystemslib writes (legacy,
// standard, OWASP). Anything else is refused, as cosign does, so a crafted
// key file cannot make us burn unbounded memory in scrypt.
var acceptedScrypt = []scryptParams{{32768, 8, 1}, {65536, 8, 1}, {131072, 8, 1}}

// writeScrypt is cosign's current default ("standard").
var writeScrypt = scryptParams{65536, 8, 1}

// GenerateKeyPair makes a P-256 key pair and returns the password-encrypted
// private key and the public key, both PEM, in cosign's formats.
func GenerateKeyPair(password []byte) (privatePEM, publicPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate P-256 key: %w", err)
	}
	privatePEM, err = EncryptPrivateKey(key, password)
	if err != nil {
		return nil, nil, err
	}
	publicPEM, err = MarshalPublicKey(&key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	return privatePEM, publicPEM, nil
}

// EncryptPrivateKey encodes key as cosign's encrypted PKCS #8 PEM.
func EncryptPrivateKey(key *ecdsa.PrivateKey, password []byte) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	var env encryptedKey
	env.KDF.Name = "scrypt"
	env.KDF.Params = writeScrypt
	env.KDF.Salt = make([]byte, 32)
	env.Cipher.Name = "nacl/secretbox"
	env.Cipher.Nonce = make([]byte, 24)
	if _, err := rand.Read(env.KDF.Salt); err != nil {
		return nil, fmt.Errorf("random salt: %w", err)
	}
	if _, err := rand.Read(env.Cipher.Nonce); err != nil {
		return nil, fmt.Errorf("random nonce: %w", err)
	}
	boxKey, err := env.boxKey(password)
	if err != nil {
		return nil, err
	}
	env.Ciphertext = secretbox.Seal(nil, der, (*[24]byte)(env.Cipher.Nonce), boxKey)
	body, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("encode key envelope: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: SigstorePrivateKeyType, Bytes: body}), nil
}

func (e *encryptedKey) boxKey(password []byte) (*[32]byte, error) {
	k, err := scrypt.Key(password, e.KDF.Salt, e.KDF.Params.N, e.KDF.Params.R, e.KDF.Params.P, 32)
	if err != nil {
		return nil, fmt.Errorf("derive key from password: %w", err)
	}
	return (*[32]byte)(k), nil
}

// ErrWrongPassword means the private key did not decrypt with the password.
var ErrWrongPassword = errors.New("private key does not decrypt with this password (is " + PasswordEnv + " right?)")

// ParsePrivateKey decrypts a cosign private key PEM.
func ParsePrivateKey(data, password []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if block.Type != SigstorePrivateKeyType && block.Type != CosignPrivateKeyType {
		return nil, fmt.Errorf("PEM block is %q, want %q", block.Type, SigstorePrivateKeyType)
	}
	var env encryptedKey
	if err := json.Unmarshal(block.Bytes, &env); err != nil {
		return nil, fmt.Errorf("parse key envelope: %w", err)
	}
	if env.KDF.Name != "scrypt" || env.Cipher.Name != "nacl/secretbox" {
		return nil, fmt.Errorf("unsupported key encryption %s + %s", env.KDF.Name, env.Cipher.Name)
	}
	accepted := false
	for _, p := range acceptedScrypt {
		accepted = accepted || p == env.KDF.Params
	}
	if !accepted {
		return nil, fmt.Errorf("unsupported scrypt parameters %+v", env.KDF.Params)
	}
	if len(env.Cipher.Nonce) != 24 {
		return nil, fmt.Errorf("key envelope nonce is %d bytes, want 24", len(env.Cipher.Nonce))
	}
	boxKey, err := env.boxKey(password)
	if err != nil {
		return nil, err
	}
	der, ok := secretbox.Open(nil, env.Ciphertext, (*[24]byte)(env.Cipher.Nonce), boxKey)
	if !ok {
		return nil, ErrWrongPassword
	}
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse PKCS #8 private key: %w", err)
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("private key is %T, want ECDSA P-256", parsed)
	}
	return key, nil
}

// LoadPrivateKey reads and decrypts a cosign private key file with the
// password from $COSIGN_PASSWORD (unset means empty, as cosign treats it
// without a terminal).
func LoadPrivateKey(path string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	key, err := ParsePrivateKey(data, []byte(os.Getenv(PasswordEnv)))
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", path, err)
	}
	return key, nil
}

// MarshalPublicKey encodes pub as PKIX PEM, cosign.pub's format.
func MarshalPublicKey(pub *ecdsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: PublicKeyType, Bytes: der}), nil
}

// ParsePublicKey decodes a PKIX PEM ECDSA public key.
func ParsePublicKey(data []byte) (*ecdsa.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if block.Type != PublicKeyType {
		return nil, fmt.Errorf("PEM block is %q, want %q", block.Type, PublicKeyType)
	}
	parsed, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	pub, ok := parsed.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key is %T, want ECDSA", parsed)
	}
	return pub, nil
}

// LoadPublicKey reads a PKIX PEM public key file.
func LoadPublicKey(path string) (*ecdsa.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read public key: %w", err)
	}
	pub, err := ParsePublicKey(data)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	return pub, nil
}

// Fingerprint names a public key in messages: sha256 of its PKIX DER.
func Fingerprint(pub *ecdsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "unencodable key"
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}
