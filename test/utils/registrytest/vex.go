package registrytest

import (
	"time"

	"github.com/openvex/go-vex/pkg/vex"
)

// OpenVEXType is the predicate type `vexctl attest` and `cosign attest --type openvex` give
// OpenVEX documents.
const OpenVEXType = vex.TypeURI

// VEXStatement is one statement of an OpenVEX fixture.
type VEXStatement struct {
	Vulnerability string
	Aliases       []string
	// Product is the product's @id (a package URL such as pkg:oci/app@sha256%3A...);
	// Subcomponents their package URLs.
	Product       string
	Subcomponents []string
	Status        vex.Status
	Justification vex.Justification
	Timestamp     time.Time // zero: the document's
}

// OpenVEX is an OpenVEX document with these statements, written by go-vex as vexctl writes
// it.
func OpenVEX(id string, timestamp time.Time, statements ...VEXStatement) []byte {
	doc := vex.New()
	doc.ID, doc.Author, doc.Timestamp = id, "Acme Security <security@acme.example>", &timestamp
	for _, s := range statements {
		st := vex.Statement{
			Vulnerability: vex.Vulnerability{Name: vex.VulnerabilityID(s.Vulnerability)},
			Products:      []vex.Product{{Component: vex.Component{ID: s.Product}}},
			Status:        s.Status,
			Justification: s.Justification,
		}
		for _, a := range s.Aliases {
			st.Vulnerability.Aliases = append(st.Vulnerability.Aliases, vex.VulnerabilityID(a))
		}
		for _, sc := range s.Subcomponents {
			st.Products[0].Subcomponents = append(st.Products[0].Subcomponents, vex.Subcomponent{Component: vex.Component{ID: sc}})
		}
		if s.Status == vex.StatusAffected {
			st.ActionStatement = "Upgrade"
		}
		if !s.Timestamp.IsZero() {
			t := s.Timestamp
			st.Timestamp = &t
		}
		doc.Statements = append(doc.Statements, st)
	}
	b, err := doc.MarshalJSON()
	if err != nil {
		panic(err)
	}
	return b
}
