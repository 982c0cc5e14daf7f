package verify

// Keyless identities: the issuer and subject cosign matches, and the Fulcio certificate
// extensions imagegate matches itself once cosign has verified the certificate.

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"

	"github.com/sigstore/cosign/v3/pkg/cosign"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/text"
)

// attempt is one verification of a signature against a signer: cosign's check with ids (nil
// for a key), then, when the certificate verified, imagegate's own rule on it (Fulcio's
// extensions for keyless, the subject alternative names for a certificate signer).
type attempt struct {
	ids  []cosign.Identity
	rule certificateRule
}

// certificateRule is what imagegate checks on a certificate once cosign has verified it.
type certificateRule interface {
	check(*x509.Certificate) error
}

// accept says whether the certificate cosign verified under a.ids also satisfies the rule
// (nil when it does); certOf is called only when there is a rule.
func (a *attempt) accept(certOf func() (*x509.Certificate, error)) error {
	if a.rule == nil {
		return nil
	}
	cert, err := certOf()
	if err != nil {
		return fmt.Errorf("the signature's certificate cannot be read: %w", err)
	}
	if cert == nil {
		return errors.New("the signature has no certificate, so its extensions cannot be checked")
	}
	return a.rule.check(cert)
}

// attempts lists the verifications a signature gets for s: one for a key; for keyless, the
// identities without extension rules together (cosign matches any of them) unless perIdentity
// (bundles take one identity at a time), then each identity with extension rules alone, so
// that its extensions are checked on a certificate that matched its own issuer and subject.
func (s *signer) attempts(perIdentity bool) []attempt {
	switch {
	case s.key != nil:
		return []attempt{{}}
	case s.pki != nil:
		return []attempt{{ids: anyCertificate, rule: s.names}}
	}
	var out []attempt
	var plain []cosign.Identity
	for i := range s.identities {
		id := &s.identities[i]
		switch {
		case id.extensions != nil || perIdentity:
			a := attempt{ids: []cosign.Identity{id.match}}
			if id.extensions != nil {
				a.rule = id.extensions
			}
			out = append(out, a)
		default:
			plain = append(plain, id.match)
		}
	}
	if len(plain) > 0 {
		out = append([]attempt{{ids: plain}}, out...)
	}
	return out
}

// identity is one keyless identity, compiled.
type identity struct {
	match      cosign.Identity
	extensions *extensionRule // nil: none required
}

// extensionRule is what an identity requires of Fulcio's certificate extensions.
type extensionRule struct {
	github *v1alpha1.GitHubWorkflow
	exact  []exactExtension
}

// exactExtension is one extension that must have a value: name as the API spells it.
type exactExtension struct {
	name  string
	want  string
	value func(*certificate.Extensions) string
}

func compileIdentity(id *v1alpha1.Identity) (identity, error) {
	out := identity{match: cosign.Identity{
		Issuer: id.Issuer, IssuerRegExp: anchored(id.IssuerRegExp),
		Subject: id.Subject, SubjectRegExp: anchored(id.SubjectRegExp),
	}}
	var rule extensionRule
	if g := id.GitHubWorkflow; g.IsSet() {
		if g.Ref != "" {
			if _, err := path.Match(g.Ref, ""); err != nil {
				return identity{}, fmt.Errorf("githubWorkflow.ref %q is not a valid glob: %w", g.Ref, err)
			}
		}
		rule.github = &g
		if id.Subject == "" && id.SubjectRegExp == "" {
			// The repository identifies the signer; sigstore-go wants a SAN criterion.
			out.match.SubjectRegExp = "^.+$"
		}
	}
	e := &id.Extensions
	for _, x := range []exactExtension{
		{"buildSignerURI", e.BuildSignerURI, func(c *certificate.Extensions) string { return c.BuildSignerURI }},
		{"buildSignerDigest", e.BuildSignerDigest, func(c *certificate.Extensions) string { return c.BuildSignerDigest }},
		{"runnerEnvironment", e.RunnerEnvironment, func(c *certificate.Extensions) string { return c.RunnerEnvironment }},
		{"sourceRepositoryURI", e.SourceRepositoryURI, func(c *certificate.Extensions) string { return c.SourceRepositoryURI }},
		{"sourceRepositoryDigest", e.SourceRepositoryDigest, func(c *certificate.Extensions) string { return c.SourceRepositoryDigest }},
		{"sourceRepositoryRef", e.SourceRepositoryRef, func(c *certificate.Extensions) string { return c.SourceRepositoryRef }},
		{"sourceRepositoryIdentifier", e.SourceRepositoryIdentifier, func(c *certificate.Extensions) string { return c.SourceRepositoryIdentifier }},
		{"sourceRepositoryOwnerURI", e.SourceRepositoryOwnerURI, func(c *certificate.Extensions) string { return c.SourceRepositoryOwnerURI }},
		{"sourceRepositoryOwnerIdentifier", e.SourceRepositoryOwnerIdentifier, func(c *certificate.Extensions) string { return c.SourceRepositoryOwnerIdentifier }},
		{"buildConfigURI", e.BuildConfigURI, func(c *certificate.Extensions) string { return c.BuildConfigURI }},
		{"buildConfigDigest", e.BuildConfigDigest, func(c *certificate.Extensions) string { return c.BuildConfigDigest }},
		{"buildTrigger", e.BuildTrigger, func(c *certificate.Extensions) string { return c.BuildTrigger }},
		{"runInvocationURI", e.RunInvocationURI, func(c *certificate.Extensions) string { return c.RunInvocationURI }},
		{"sourceRepositoryVisibilityAtSigning", e.SourceRepositoryVisibilityAtSigning, func(c *certificate.Extensions) string { return c.SourceRepositoryVisibilityAtSigning }},
	} {
		if x.want != "" {
			rule.exact = append(rule.exact, x)
		}
	}
	if rule.github != nil || len(rule.exact) > 0 {
		out.extensions = &rule
	}
	return out, nil
}

// check matches the certificate's extensions; the error names the first that differs, with
// both values.
func (r *extensionRule) check(cert *x509.Certificate) error {
	ext, err := certificate.ParseExtensions(cert.Extensions)
	if err != nil {
		return fmt.Errorf("the certificate's extensions do not parse: %w", err)
	}
	for _, x := range r.exact {
		if got := x.value(&ext); got != x.want {
			return mismatch("extensions."+x.name, x.want, got)
		}
	}
	if g := r.github; g != nil {
		return checkGitHub(g, &ext)
	}
	return nil
}

// checkGitHub matches a GitHub Actions certificate. The extensions Fulcio has written since
// 2023 are read; a certificate without them is read from the older GitHub ones.
func checkGitHub(g *v1alpha1.GitHubWorkflow, ext *certificate.Extensions) error {
	repo := ext.GithubWorkflowRepository
	if ext.SourceRepositoryURI != "" {
		u, err := url.Parse(ext.SourceRepositoryURI)
		if err != nil {
			return fmt.Errorf("the certificate's source repository URI %q does not parse", text.Cut(ext.SourceRepositoryURI, 256))
		}
		repo = strings.TrimPrefix(u.Path, "/")
	}
	if repo != g.Repository {
		return mismatch("githubWorkflow.repository", g.Repository, repo)
	}
	if g.Workflow != "" {
		// https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1
		workflow := ""
		if rest, ok := strings.CutPrefix(ext.BuildConfigURI, ext.SourceRepositoryURI+"/"); ok && ext.SourceRepositoryURI != "" {
			workflow, _, _ = strings.Cut(rest, "@")
		}
		if workflow != g.Workflow {
			return mismatch("githubWorkflow.workflow", g.Workflow, workflow)
		}
	}
	if g.Ref != "" {
		ref := or(ext.SourceRepositoryRef, ext.GithubWorkflowRef)
		if ok, _ := path.Match(g.Ref, ref); !ok || ref == "" {
			return fmt.Errorf("githubWorkflow.ref: the certificate says %s, which does not match %q", quoteOrNone(ref), g.Ref)
		}
	}
	if g.Trigger != "" {
		if got := or(ext.BuildTrigger, ext.GithubWorkflowTrigger); got != g.Trigger {
			return mismatch("githubWorkflow.trigger", g.Trigger, got)
		}
	}
	if g.SHA != "" {
		if got := or(ext.SourceRepositoryDigest, ext.GithubWorkflowSHA); got != g.SHA {
			return mismatch("githubWorkflow.sha", g.SHA, got)
		}
	}
	if g.RunnerEnvironment != "" && ext.RunnerEnvironment != string(g.RunnerEnvironment) {
		return mismatch("githubWorkflow.runnerEnvironment", string(g.RunnerEnvironment), ext.RunnerEnvironment)
	}
	return nil
}

func mismatch(field, want, got string) error {
	return fmt.Errorf("%s: the certificate says %s, not %q", field, quoteOrNone(got), want)
}

func quoteOrNone(s string) string {
	if s == "" {
		return "nothing (the extension is absent)"
	}
	return fmt.Sprintf("%q", text.Cut(s, 256))
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
