package verify

// Bundles and referrers: sigstore bundles stored as OCI 1.1 referrers, read raw and bounded.

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sigstore/cosign/v3/pkg/cosign"
	ociremote "github.com/sigstore/cosign/v3/pkg/oci/remote"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/imagegate/imagegate/internal/text"
)

// listReferrers lists the image's referrers (the Referrers API, or the sha256-<hex> tag where
// the registry lacks it); none when there are none.
func listReferrers(ref name.Digest, ropts []ociremote.Option) ([]v1.Descriptor, error) {
	idx, err := ociremote.Referrers(ref, "", ropts...)
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
			return nil, nil
		}
		return nil, err
	}
	return idx.Manifests, nil
}

// bundleDescriptors picks the sigstore bundles among the referrers whose predicate type is
// predicateType (cosign annotates it; a bundle without the annotation is a candidate, and its
// statement is checked once verified), in the registry's order: nothing unsigned orders them,
// and more than maxCandidates is an error, not a cut.
func bundleDescriptors(referrers []v1.Descriptor, predicateType string) ([]v1.Descriptor, error) {
	var descs []v1.Descriptor
	for _, d := range referrers {
		// Registries report the manifest's artifactType or its config's media type; cosign
		// also annotates the predicate type, which tells signatures from attestations.
		pt, annotated := d.Annotations[ociremote.BundlePredicateType]
		if !annotated && !strings.HasPrefix(d.ArtifactType, "application/vnd.dev.sigstore.bundle") {
			continue
		}
		if annotated && pt != predicateType {
			continue
		}
		descs = append(descs, d)
	}
	if len(descs) > maxCandidates {
		return nil, tooMany(fmt.Sprintf("sigstore bundles of predicate type %s among its referrers", predicateType), len(descs))
	}
	return descs, nil
}

// errCompressed refuses a bundle layer whose bytes are compressed: its media type is JSON,
// and decompressing what a registry serves is how a few hundred kilobytes become gigabytes.
var errCompressed = errors.New("the bundle layer is compressed (gzip or zstd), but its media type is JSON: refused unread")

// readBundle reads the sigstore bundle one referrer holds: its manifest, then its one layer's
// bytes as stored (bounded by the transport, never decompressed).
func readBundle(ref name.Digest, d v1.Descriptor, ropts []remote.Option) (*sgbundle.Bundle, error) {
	img, err := remote.Image(ref.Context().Digest(d.Digest.String()), ropts...)
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	if len(layers) != 1 {
		return nil, fmt.Errorf("the bundle manifest has %d layers, not 1", len(layers))
	}
	mt, err := layers[0].MediaType()
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(string(mt), "application/vnd.dev.sigstore.bundle") {
		return nil, fmt.Errorf("the bundle layer's media type is %q, not a sigstore bundle's", text.Cut(string(mt), 128))
	}
	rc, err := layers[0].Compressed() // the bytes as stored, checked against their digest
	if err != nil {
		return nil, err
	}
	defer func() { _ = rc.Close() }()
	raw, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	if compressed(raw) {
		return nil, errCompressed
	}
	pb := &protobundle.Bundle{}
	if err := protojson.Unmarshal(raw, pb); err != nil {
		return nil, fmt.Errorf("the bundle does not parse: %w", err)
	}
	b, err := sgbundle.NewBundle(pb)
	if err != nil {
		return nil, err
	}
	if !b.MinVersion("v0.3") {
		return nil, errors.New("the bundle's version is older than v0.3")
	}
	return b, nil
}

// eachBundle reads the bundles descs name, one at a time, and hands each to use until use
// returns true. It returns why the bundles it could not read were not, and whether any of
// those failures was the registry's or the network's.
func eachBundle(ref name.Digest, descs []v1.Descriptor, ropts []remote.Option, use func(*sgbundle.Bundle) bool) (unread []string, transient bool) {
	for _, d := range descs {
		b, err := readBundle(ref, d, ropts)
		if err != nil {
			transient = transient || isTransient(err)
			unread = append(unread, "a bundle could not be read: "+err.Error())
			continue
		}
		if use(b) {
			break
		}
	}
	return unread, transient
}

// compressed reports whether b starts with the magic of gzip or zstd.
func compressed(b []byte) bool {
	return bytes.HasPrefix(b, []byte{0x1f, 0x8b}) || bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd})
}

// verifyBundle checks one sigstore bundle: signed by s (for keyless, any one identity), over
// an in-toto statement whose subject is the digest and whose predicate type is predicateType.
// It returns the statement.
func verifyBundle(ctx context.Context, trust *Trust, s *signer, b *sgbundle.Bundle, h v1.Hash, ropts []ociremote.Option, predicateType string) (*statement, error) {
	if s.notation != nil {
		return nil, errOtherFormat
	}
	want, err := hex.DecodeString(h.Hex)
	if err != nil {
		return nil, err
	}
	policyOpt := sgverify.WithArtifactDigest(h.Algorithm, want)
	var errs []error
	for _, a := range s.attempts(true) {
		if _, err := cosign.VerifyNewBundle(ctx, checkOpts(trust, s, a.ids, ropts), policyOpt, b); err != nil {
			if s.pki != nil {
				if vc, verr := b.VerificationContent(); verr == nil {
					err = s.pki.explain(err, vc.Certificate(), trust.tlog)
				}
			}
			errs = append(errs, err)
			continue
		}
		if err := a.accept(func() (*x509.Certificate, error) {
			vc, err := b.VerificationContent()
			if err != nil {
				return nil, err
			}
			return vc.Certificate(), nil
		}); err != nil {
			errs = append(errs, err)
			continue
		}
		return bundleStatement(b, predicateType)
	}
	return nil, errors.Join(errs...)
}

// statement is the part of an in-toto statement imagegate reads.
type statement struct {
	PredicateType string          `json:"predicateType"`
	Subject       json.RawMessage `json:"subject"`
	Predicate     json.RawMessage `json:"predicate"`
}

// bundleStatement accepts a verified bundle only when its DSSE statement has the predicate
// type wanted: a signed SBOM or scan of the same digest is not a signature of it, and a
// signature is not a scan.
func bundleStatement(b *sgbundle.Bundle, predicateType string) (*statement, error) {
	env, ok := b.Content.(*protobundle.Bundle_DsseEnvelope)
	if !ok || env.DsseEnvelope == nil {
		return nil, errors.New("the bundle holds no DSSE envelope, so it is not a cosign image signature or attestation")
	}
	var st statement
	if err := json.Unmarshal(env.DsseEnvelope.Payload, &st); err != nil {
		return nil, fmt.Errorf("the bundle's statement does not parse: %w", err)
	}
	if st.PredicateType != predicateType {
		return nil, fmt.Errorf("the bundle's predicate is %q, not %s", st.PredicateType, predicateType)
	}
	return &st, nil
}
