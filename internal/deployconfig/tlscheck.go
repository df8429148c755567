package deployconfig

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

// expiryWarning is how close to expiry a certificate earns a warning:
// long enough to renew before users see errors.
const expiryWarning = 14 * 24 * time.Hour

// CheckTLS checks a certificate file and its key file for nginx: both
// parse, the key belongs to the certificate, the certificate covers
// domain (empty: not checked) and is valid at now, and any intermediates
// follow in order. It returns an *InvalidError listing every problem.
func CheckTLS(certFile, keyFile, domain string, now time.Time) error {
	a := &Answers{TLS: TLS{Certificate: certFile, Key: keyFile}}
	var ps Problems
	checkTLS(&ps, a, domain, now)
	return ps.Err()
}

func checkTLS(ps *Problems, a *Answers, domain string, now time.Time) {
	const certKey, keyKey = "tls.certificate", "tls.key"
	certs, certErr := readCertificates(a.TLS.Certificate)
	ps.check(a, certKey, certErr)
	key, keyErr := readPrivateKey(a.TLS.Key)
	ps.check(a, keyKey, keyErr)
	if certErr != nil {
		return
	}
	leaf := certs[0]
	if keyErr == nil {
		pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
		if !ok || !pub.Equal(leaf.PublicKey) {
			ps.add(a, keyKey, "%s is not the key of the certificate in %s (%s)", a.TLS.Key, a.TLS.Certificate, leaf.Subject)
		}
	}
	if domain != "" {
		if err := leaf.VerifyHostname(domain); err != nil {
			ps.add(a, certKey, "does not cover %s (it covers %v)", domain, names(leaf))
		}
	}
	for i, c := range certs {
		what := "the certificate"
		if i > 0 {
			what = fmt.Sprintf("intermediate certificate %d (%s)", i, c.Subject)
		}
		switch {
		case now.Before(c.NotBefore):
			ps.add(a, certKey, "%s is not valid before %s", what, c.NotBefore.UTC().Format(time.RFC3339))
		case now.After(c.NotAfter):
			ps.add(a, certKey, "%s expired on %s", what, c.NotAfter.UTC().Format(time.RFC3339))
		case c.NotAfter.Sub(now) < expiryWarning:
			ps.warn(a, certKey, "%s expires on %s: renew it soon", what, c.NotAfter.UTC().Format(time.RFC3339))
		}
		if i+1 < len(certs) {
			if err := c.CheckSignatureFrom(certs[i+1]); err != nil {
				ps.add(a, certKey, "certificate %d (%s) is not signed by the next one (%s): put the server certificate first, then each intermediate in order",
					i, c.Subject, certs[i+1].Subject)
			}
		}
	}
}

func names(c *x509.Certificate) []string {
	n := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		n = append(n, ip.String())
	}
	if len(n) == 0 && c.Subject.CommonName != "" {
		n = append(n, "only the common name "+c.Subject.CommonName+", which browsers ignore")
	}
	return n
}

func readCertificates(path string) ([]*x509.Certificate, error) {
	if path == "" {
		return nil, errors.New("is required (or use a self-signed certificate)")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", err)
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s holds a %q block: only certificates belong there (the key goes in its own file)", path, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d does not parse: %v", path, len(certs), err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	if len(bytes.TrimSpace(b)) > 0 {
		return nil, fmt.Errorf("%s has data after its last certificate that is not PEM", path)
	}
	return certs, nil
}

func readPrivateKey(path string) (crypto.Signer, error) {
	if path == "" {
		return nil, errors.New("is required (or use a self-signed certificate)")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM private key", path)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "ENCRYPTED PRIVATE KEY":
		return nil, fmt.Errorf("%s is encrypted: nginx needs it without a passphrase", path)
	default:
		return nil, fmt.Errorf("%s holds a %q block, not a private key", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: private key does not parse: %v", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: unsupported private key type %T", path, key)
	}
	return signer, nil
}

// SelfSigned makes a certificate and key (PEM) for domain, valid from now
// for 397 days (the longest browsers accept), for instances without a
// certificate of their own.
func SelfSigned(domain string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("generate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: domain, Organization: []string{"vkimg self-signed"}},
		NotBefore:             now.Add(-time.Hour), // tolerate a node clock slightly behind
		NotAfter:              now.Add(397 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if ip := net.ParseIP(domain); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{domain}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-sign certificate for %s: %w", domain, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}
