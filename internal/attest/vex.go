package attest

import (
	"fmt"
	"strings"
	"time"

	"github.com/openvex/go-vex/pkg/vex"
	"github.com/package-url/packageurl-go"

	"github.com/imagegate/imagegate/internal/text"
)

// VEX predicate types: OpenVEX documents as in-toto attestations (`vexctl attest`, `cosign
// attest --type openvex`).
const (
	PredicateOpenVEX   = vex.TypeURI
	PredicateOpenVEX02 = vex.TypeURI + "/v" + vex.SpecVersion
)

// VEXPredicateTypes are the predicate types VEX documents are read from (ReadVEXAs).
var VEXPredicateTypes = []string{PredicateOpenVEX, PredicateOpenVEX02, PredicateCycloneDXVEX, PredicateCycloneDXBOM}

// VEXDecision is what VEX says of one finding: the newest statement about it for the image.
type VEXDecision struct {
	// ID is the finding's ID.
	ID string `json:"id"`
	// Status is the statement's: not_affected or fixed (the finding does not count),
	// affected or under_investigation (it does).
	Status string `json:"status"`
	// Justification is a not_affected statement's justification.
	Justification string `json:"justification,omitempty"`
	// Document and Statement are the @id of the document and of the statement, when set;
	// Author is the document's author; Timestamp the statement's time.
	Document  string    `json:"document,omitempty"`
	Statement string    `json:"statement,omitempty"`
	Author    string    `json:"author,omitempty"`
	Timestamp time.Time `json:"timestamp"`
}

// RulesOut reports whether the decision removes the finding.
func (d *VEXDecision) RulesOut() bool {
	return d.Status == string(vex.StatusNotAffected) || d.Status == string(vex.StatusFixed)
}

// describe says which statement decided, for messages.
func (d *VEXDecision) describe() string {
	by := d.Statement
	if by == "" {
		by = d.Document
	}
	if by == "" {
		by = "a statement by " + d.Author
	}
	return fmt.Sprintf("%s (%s, %s)", printable(d.ID), d.Status, printable(by))
}

// VEX is the verified VEX documents of one image, for its product identifiers.
type VEX struct {
	docs     []*vex.VEX
	products []string
	// byID indexes the statements by vulnerability name and alias.
	byID map[string][]stmtRef
}

type stmtRef struct{ doc, st int }

// ReadVEX reads an OpenVEX document, as go-vex does.
func ReadVEX(predicate []byte) (*vex.VEX, error) {
	doc, err := vex.Parse(predicate)
	if err != nil {
		return nil, fmt.Errorf("its OpenVEX document cannot be read: %v", shortErr(err))
	}
	for i := range doc.Statements {
		st := &doc.Statements[i]
		if st.Status != vex.StatusNotAffected && st.Status != vex.StatusAffected && st.Status != vex.StatusFixed && st.Status != vex.StatusUnderInvestigation {
			return nil, fmt.Errorf("its OpenVEX document has a statement with status %q", printable(string(st.Status)))
		}
	}
	return doc, nil
}

// NewVEX is the documents that apply to an image of this repository (registry/path) and
// digest (sha256:<hex>). A statement applies when one of its products is the image: its
// package URL (pkg:oci/<name>@<digest>, matched as go-vex matches package URLs), its
// reference (<repository>@<digest>), or its digest among the product's hashes.
func NewVEX(repository, digest string, docs []*vex.VEX) *VEX {
	name := repository[strings.LastIndexByte(repository, '/')+1:]
	_, hexDigest, _ := strings.Cut(digest, ":")
	x := &VEX{docs: docs, byID: map[string][]stmtRef{}}
	repositories := []string{repository}
	if rest, ok := strings.CutPrefix(repository, "index.docker.io/"); ok {
		repositories = append(repositories, "docker.io/"+rest) // as people write it
	}
	for _, repo := range repositories {
		purl := packageurl.NewPackageURL(packageurl.TypeOCI, "", name, digest,
			packageurl.QualifiersFromMap(map[string]string{"repository_url": repo}), "").ToString()
		x.products = append(x.products, purl, repo+"@"+digest)
	}
	x.products = append(x.products, hexDigest)
	for d, doc := range docs {
		for i := range doc.Statements {
			v := &doc.Statements[i].Vulnerability
			for _, id := range append([]vex.VulnerabilityID{v.Name}, v.Aliases...) {
				if id != "" {
					x.byID[string(id)] = append(x.byID[string(id)], stmtRef{d, i})
				}
			}
		}
	}
	return x
}

// Decide returns the newest statement about the finding for the image, or nil. Statements
// without a timestamp take their document's, as the OpenVEX specification says; of two at
// the same time, the one read last wins. A statement that names subcomponents applies only
// when each package the scanner found the finding in is one of them.
func (x *VEX) Decide(f *Finding) *VEXDecision {
	if x == nil {
		return nil
	}
	var best *VEXDecision
	for _, ref := range x.byID[f.ID] {
		doc := x.docs[ref.doc]
		st := &doc.Statements[ref.st]
		if !x.applies(st, f) {
			continue
		}
		var t time.Time
		if doc.Timestamp != nil {
			t = *doc.Timestamp
		}
		if st.Timestamp != nil && !st.Timestamp.IsZero() {
			t = *st.Timestamp
		}
		if best != nil && t.Before(best.Timestamp) {
			continue
		}
		best = &VEXDecision{ID: f.ID, Status: string(st.Status), Justification: string(st.Justification),
			Document: doc.ID, Statement: st.ID, Author: doc.Author, Timestamp: t}
	}
	return best
}

// applies reports whether one of the statement's products is the image, with the finding's
// packages among its subcomponents when it names any.
func (x *VEX) applies(st *vex.Statement, f *Finding) bool {
	for i := range st.Products {
		p := &st.Products[i]
		matched := false
		for _, id := range x.products {
			if p.Component.Matches(id) {
				matched = true
				break
			}
		}
		if !matched {
			continue
		}
		if len(p.Subcomponents) == 0 {
			return true
		}
		// Subcomponents: every package the finding is in must be one (a scanner that names
		// no package gives nothing to match, and the statement does not apply).
		if len(f.Packages) == 0 {
			continue
		}
		all := true
		for _, pkg := range f.Packages {
			found := false
			for j := range p.Subcomponents {
				if p.Subcomponents[j].Matches(pkg) {
					found = true
					break
				}
			}
			all = all && found
		}
		if all {
			return true
		}
	}
	return false
}

// RuledOutNote says what VEX ruled out of a passing scan, for a warning: "" when nothing.
func (v *Verdict) RuledOutNote(rule string) string {
	if len(v.RuledOut) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "attestation %q: VEX ruled out %d %s above maxSeverity: ", rule, len(v.RuledOut), text.Plural(len(v.RuledOut), "finding", "findings"))
	writeRuledOut(&b, v.RuledOut)
	return b.String()
}

// writeRuledOut lists the decisions, each with its statement, cut after maxListed.
func writeRuledOut(b *strings.Builder, ds []VEXDecision) {
	for i := range ds {
		if i == maxListed {
			fmt.Fprintf(b, " and %d more", len(ds)-maxListed)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(ds[i].describe())
	}
}
