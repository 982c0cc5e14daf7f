package verify

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/openvex/go-vex/pkg/vex"
	"github.com/sigstore/cosign/v3/pkg/cosign"
	"github.com/sigstore/cosign/v3/pkg/oci"
	ociremote "github.com/sigstore/cosign/v3/pkg/oci/remote"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"

	"github.com/imagegate/imagegate/internal/attest"
	"github.com/imagegate/imagegate/internal/text"
)

// attestationRule is an attestation rule with the signers it accepts.
type attestationRule struct {
	*attest.Rule
	signers []*signer
	// vexSigners are the signers whose VEX documents count (vulnerability rules only).
	vexSigners []*signer
}

// verifiedAttestation is an attestation whose signature, subject and predicate type checked.
type verifiedAttestation struct {
	*statement
	finished time.Time // the scan's finish time, for vulnerability predicates
}

// checkAttestations checks every attestation rule of trust for the image: each must find a
// verified attestation, and for vulnerability predicates the newest valid scan must pass.
func (v *Verifier) checkAttestations(ctx context.Context, trust *Trust, ref name.Digest, h v1.Hash, ropts []remote.Option, oopts []ociremote.Option,
	referrers []v1.Descriptor, referrersErr error) *Outcome {
	registry := ref.RegistryStr()
	start := time.Now()
	legacy, legacyErr := legacyLayers(ref, oopts, ociremote.AttestationTag, "attestations in its sha256-<hex>.att tag")
	v.metrics.registry("attestations", start)
	if legacyErr != nil && referrersErr != nil {
		return &Outcome{Reason: registryError(registry, "listing attestations", legacyErr).Error(), transient: isTransient(legacyErr) || isTransient(referrersErr)}
	}
	if errors.Is(legacyErr, errTooManyCandidates) {
		return &Outcome{Reason: text.Cut(legacyErr.Error(), maxReasonLength)}
	}
	out := &Outcome{}
	now := v.now()
	// Findings alone fail an image only once every other rule has been checked: an
	// exception may ignore them, and must not thereby skip the rest.
	var findingsReason string
	for _, r := range trust.attestations {
		var bundles []*sgbundle.Bundle
		bundleErr := referrersErr
		transient := isTransient(legacyErr) || isTransient(referrersErr)
		var unread []string // why the bundles that could not be read were not
		if referrersErr == nil {
			start = time.Now()
			var descs []v1.Descriptor
			descs, bundleErr = bundleDescriptors(referrers, r.PredicateType)
			if bundleErr != nil {
				out.Reason, out.Findings = text.Cut(bundleErr.Error(), maxReasonLength), nil
				return out
			}
			// Every candidate is read: the newest scan is chosen among the verified ones by
			// its signed time, so none may be left out.
			var unreadTransient bool
			unread, unreadTransient = eachBundle(ref, descs, ropts, func(b *sgbundle.Bundle) bool {
				bundles = append(bundles, b)
				return false
			})
			transient = transient || unreadTransient
			v.metrics.registry("bundles", start)
		}
		found, verified, problems := verifyAttestations(ctx, trust, r, h, oopts, legacy, bundles)
		found += len(unread) // found, though not read
		problems = append(problems, unread...)
		report := AttestationReport{Rule: r.Name, PredicateType: r.PredicateType}
		if len(verified) == 0 {
			out.Reason, out.Findings = noAttestation(r, found, problems, legacyErr, bundleErr, registry), nil
			out.transient = transient
			out.Attestations = append(out.Attestations, report)
			return out
		}
		if r.Inspects() {
			var why string
			verified, report.Provenance, why = admitted(ctx, r, verified)
			if len(verified) == 0 {
				out.Reason, out.Findings = why, nil
				out.Attestations = append(out.Attestations, report)
				return out
			}
		}
		if !r.Vulnerabilities() {
			out.Attestations = append(out.Attestations, report)
			continue
		}
		var vexDocs *attest.VEX
		if len(r.vexSigners) > 0 {
			vexDocs = v.vexDocuments(ctx, trust, r, ref, h, ropts, oopts, legacy, referrers, referrersErr)
		}
		scan, verdict := judgeScans(r, verified, now, vexDocs)
		report.Verdict = verdict
		if scan != nil {
			s := *scan
			s.Findings = nil // the verdict lists those that matter
			report.Scan = &s
		}
		out.Attestations = append(out.Attestations, report)
		if verdict.Problem != "" {
			if len(verdict.Refusing) == 0 {
				out.Reason, out.Findings = text.Cut(verdict.Problem, maxReasonLength), nil
				return out
			}
			if findingsReason == "" {
				findingsReason = text.Cut(verdict.Problem, maxReasonLength)
			}
			for _, f := range verdict.Refusing {
				out.Findings = append(out.Findings, f.ID)
			}
			continue
		}
		out.Expires = earliest(out.Expires, verdict.Expires)
		out.ScanExpires = earliest(out.ScanExpires, verdict.ScanExpires)
		if note := verdict.RuledOutNote(r.Name); note != "" {
			out.Notes = append(out.Notes, text.Cut(note, maxReasonLength))
		}
	}
	out.Reason = findingsReason
	return out
}

// admitted keeps the verified attestations that meet the rule's provenance and conditions,
// with the provenance of the first; when none does, it says why the first does not (and how
// many others fail too).
func admitted(ctx context.Context, r *attestationRule, verified []verifiedAttestation) ([]verifiedAttestation, *attest.Provenance, string) {
	var kept []verifiedAttestation
	var prov *attest.Provenance
	var first string
	for _, a := range verified {
		p, why := r.Admits(ctx, &attest.RawStatement{PredicateType: a.PredicateType, Subject: a.Subject, Predicate: a.Predicate})
		if why != "" {
			if first == "" {
				first = why
			}
			continue
		}
		if prov == nil {
			prov = p
		}
		kept = append(kept, a)
	}
	if len(kept) == 0 && len(verified) > 1 {
		first = fmt.Sprintf("%s (and %d more verified attestation%s of that type fail%s the rule)", first, len(verified)-1, text.Plural(len(verified)-1, "", "s"), text.Plural(len(verified)-1, "s", ""))
	}
	return kept, prov, text.Cut(first, maxReasonLength)
}

// vexDocuments finds the image's OpenVEX documents that a VEX signer of the rule signed over
// its digest, in both storage formats. A document that cannot be found, verified or read
// does not count: VEX only ever removes findings, so what is not read refuses as before.
func (v *Verifier) vexDocuments(ctx context.Context, trust *Trust, r *attestationRule, ref name.Digest, h v1.Hash, ropts []remote.Option, oopts []ociremote.Option,
	legacy []oci.Signature, referrers []v1.Descriptor, referrersErr error) *attest.VEX {
	var docs []*vex.VEX
	for _, pt := range attest.VEXPredicateTypes {
		rule := &attestationRule{Rule: &attest.Rule{Name: r.Name + " (VEX)", PredicateType: pt}, signers: r.vexSigners}
		var bundles []*sgbundle.Bundle
		if referrersErr == nil {
			if descs, err := bundleDescriptors(referrers, pt); err == nil {
				start := time.Now()
				eachBundle(ref, descs, ropts, func(b *sgbundle.Bundle) bool {
					bundles = append(bundles, b)
					return false
				})
				v.metrics.registry("bundles", start)
			}
		}
		_, verified, _ := verifyAttestations(ctx, trust, rule, h, oopts, legacy, bundles)
		for _, a := range verified {
			if doc, err := attest.ReadVEXAs(pt, a.Predicate); err == nil {
				docs = append(docs, doc)
			}
		}
	}
	return attest.NewVEX(ref.Context().Name(), ref.DigestStr(), docs)
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// verifyAttestations returns how many candidates of the rule's predicate type were found and
// those that a signer the rule accepts signed, over the image's digest.
func verifyAttestations(ctx context.Context, trust *Trust, r *attestationRule, h v1.Hash, ropts []ociremote.Option,
	legacy []oci.Signature, bundles []*sgbundle.Bundle) (int, []verifiedAttestation, []string) {
	var verified []verifiedAttestation
	var problems []string
	found := len(bundles)
	var candidates []oci.Signature
	for _, att := range legacy {
		if st, err := legacyStatement(att); err == nil && st.PredicateType == r.PredicateType {
			candidates = append(candidates, att)
		}
	}
	found += len(candidates)
	for _, s := range r.signers {
		for _, a := range s.attempts(false) {
			if len(candidates) == 0 {
				break // no legacy attestation of this type: the bundles below
			}
			co := checkOpts(trust, s, a.ids, ropts)
			co.ClaimVerifier = cosign.IntotoSubjectClaimVerifier
			ok, _, err := cosign.VerifyImageAttestation(ctx, signatureList{list: candidates}, h, co)
			if err != nil {
				problems = append(problems, err.Error())
			}
			for _, att := range ok {
				if err := a.accept(att.Cert); err != nil {
					problems = append(problems, err.Error())
					continue
				}
				if st, err := legacyStatement(att); err == nil && st.PredicateType == r.PredicateType {
					verified = append(verified, verifiedAttestation{statement: st})
				}
			}
		}
		for _, b := range bundles {
			st, err := verifyBundle(ctx, trust, s, b, h, ropts, r.PredicateType)
			if err != nil {
				problems = append(problems, err.Error())
				continue
			}
			verified = append(verified, verifiedAttestation{statement: st})
		}
	}
	return found, verified, problems
}

// judgeScans reads the verified scans, keeps those of trusted scanners, and judges the newest:
// it decides, and an unreadable newest scan refuses.
func judgeScans(r *attestationRule, verified []verifiedAttestation, now time.Time, vexDocs *attest.VEX) (*attest.Scan, attest.Verdict) {
	var trusted []verifiedAttestation
	var untrusted []string
	for _, a := range verified {
		uri, finished := attest.ReadHeader(a.Predicate)
		if !r.TrustsScanner(uri) {
			untrusted = append(untrusted, fmt.Sprintf("%q", text.Cut(uri, 128)))
			continue
		}
		a.finished = finished
		trusted = append(trusted, a)
	}
	if len(trusted) == 0 {
		slices.Sort(untrusted)
		untrusted = slices.Compact(untrusted)
		return nil, attest.Verdict{Problem: fmt.Sprintf("its signed vulnerability scans (attestation %q) are by %s, none a trusted scanner", r.Name, strings.Join(untrusted, ", "))}
	}
	newest := slices.MaxFunc(trusted, func(a, b verifiedAttestation) int { return a.finished.Compare(b.finished) })
	scan, err := attest.ReadScan(r.PredicateType, newest.Predicate)
	if err != nil {
		return nil, attest.Verdict{Problem: fmt.Sprintf("attestation %q: %v", r.Name, err)}
	}
	return scan, r.Judge(scan, now, vexDocs)
}

func noAttestation(r *attestationRule, found int, problems []string, legacyErr, bundleErr error, registry string) string {
	var names []string
	for _, s := range r.signers {
		names = append(names, s.describe())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "no attestation %q (%s) signed by a signer it trusts (tried: %s", r.Name, r.PredicateType, strings.Join(names, ", "))
	switch {
	case found == 0 && legacyErr == nil && bundleErr == nil:
		b.WriteString("; found none of that type: neither in a sha256-<hex>.att tag nor a sigstore bundle among the referrers)")
	case found == 0:
		err := legacyErr
		if err == nil {
			err = bundleErr
		}
		fmt.Fprintf(&b, "; found none, and %s)", registryError(registry, "listing attestations", err))
	default:
		fmt.Fprintf(&b, "; found %d of that type, none verified: %s)", found, firstProblem(problems))
	}
	return text.Cut(b.String(), maxReasonLength)
}

// legacyStatement reads the in-toto statement of a legacy attestation layer (a DSSE envelope).
func legacyStatement(att oci.Signature) (*statement, error) {
	p, err := att.Payload()
	if err != nil {
		return nil, err
	}
	var env struct {
		Payload string `json:"payload"`
	}
	if err := json.Unmarshal(p, &env); err != nil {
		return nil, err
	}
	raw, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return nil, err
	}
	var st statement
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, err
	}
	if st.PredicateType == "" {
		return nil, errors.New("the statement has no predicate type")
	}
	return &st, nil
}

// signatureList is a list of signatures as cosign's oci.Signatures, for
// cosign.VerifyImageAttestation, which calls only Get.
type signatureList struct {
	v1.Image // nil: never called
	list     []oci.Signature
}

func (s signatureList) Get() ([]oci.Signature, error) { return s.list, nil }
