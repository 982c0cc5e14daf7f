package attest

import (
	"bytes"
	"fmt"
	"net/url"
	"strings"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/openvex/go-vex/pkg/vex"
)

// CycloneDX predicate types: a BOM as an in-toto attestation (`cosign attest --type
// cyclonedx`), and the type some tools give a BOM that holds only VEX.
const (
	PredicateCycloneDXBOM = "https://cyclonedx.org/bom"
	PredicateCycloneDXVEX = "https://cyclonedx.org/vex"
)

// cdxStatus maps CycloneDX's analysis states to OpenVEX's statuses, as the OpenVEX project
// maps them: false_positive and not_affected rule a finding out, resolved fixes it.
var cdxStatus = map[cdx.ImpactAnalysisState]vex.Status{
	cdx.IASNotAffected:          vex.StatusNotAffected,
	cdx.IASFalsePositive:        vex.StatusNotAffected,
	cdx.IASResolved:             vex.StatusFixed,
	cdx.IASResolvedWithPedigree: vex.StatusFixed,
	cdx.IASExploitable:          vex.StatusAffected,
	cdx.IASInTriage:             vex.StatusUnderInvestigation,
}

// ReadVEXAs reads a VEX document of the given predicate type: OpenVEX, or the
// vulnerabilities of a CycloneDX BOM (each with an analysis state is a statement about the
// components its affects name).
func ReadVEXAs(predicateType string, predicate []byte) (*vex.VEX, error) {
	switch predicateType {
	case PredicateCycloneDXBOM, PredicateCycloneDXVEX:
		return readCycloneDXVEX(predicate)
	default:
		return ReadVEX(predicate)
	}
}

// readCycloneDXVEX reads a CycloneDX BOM with CycloneDX's own library and turns its analysed
// vulnerabilities into OpenVEX statements. A ref of affects that names a component of the
// BOM (by bom-ref) stands for that component's package URL; any other ref (a package URL,
// an image reference) is taken as it is. A vulnerability without an analysis state, or with
// one CycloneDX does not define, says nothing.
func readCycloneDXVEX(predicate []byte) (*vex.VEX, error) {
	var bom cdx.BOM
	if err := cdx.NewBOMDecoder(bytes.NewReader(predicate), cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
		return nil, fmt.Errorf("its CycloneDX document cannot be read: %v", shortErr(err))
	}
	doc := &vex.VEX{Metadata: vex.Metadata{ID: bom.SerialNumber}}
	purls := map[string]string{}
	addComponent := func(c *cdx.Component) {
		if c != nil && c.BOMRef != "" && c.PackageURL != "" {
			purls[c.BOMRef] = c.PackageURL
		}
	}
	if bom.Metadata != nil {
		if t, err := time.Parse(time.RFC3339, bom.Metadata.Timestamp); err == nil {
			doc.Timestamp = &t
		}
		if bom.Metadata.Authors != nil && len(*bom.Metadata.Authors) > 0 {
			doc.Author = (*bom.Metadata.Authors)[0].Name
		}
		addComponent(bom.Metadata.Component)
	}
	if bom.Components != nil {
		for i := range *bom.Components {
			addComponent(&(*bom.Components)[i])
		}
	}
	if bom.Vulnerabilities == nil {
		return doc, nil
	}
	for _, v := range *bom.Vulnerabilities {
		if v.ID == "" || v.Analysis == nil || v.Affects == nil {
			continue
		}
		status, ok := cdxStatus[v.Analysis.State]
		if !ok {
			continue
		}
		st := vex.Statement{ID: v.BOMRef, Vulnerability: vex.Vulnerability{Name: vex.VulnerabilityID(v.ID)}, Status: status,
			Justification: vex.Justification(v.Analysis.Justification)}
		for _, when := range []string{v.Analysis.LastUpdated, v.Updated} {
			if t, err := time.Parse(time.RFC3339, when); err == nil {
				st.Timestamp = &t
				break
			}
		}
		for _, a := range *v.Affects {
			id := a.Ref
			// A BOM-Link (urn:cdx:<serial>/<version>#<bom-ref>) names a component by its
			// bom-ref, percent-encoded.
			if rest, ok := strings.CutPrefix(id, "urn:cdx:"); ok {
				if _, frag, ok := strings.Cut(rest, "#"); ok {
					if u, err := url.PathUnescape(frag); err == nil {
						id = u
					}
				}
			}
			if p, ok := purls[id]; ok {
				id = p
			}
			if id != "" {
				st.Products = append(st.Products, vex.Product{Component: vex.Component{ID: id}})
			}
		}
		if len(st.Products) > 0 {
			doc.Statements = append(doc.Statements, st)
		}
	}
	return doc, nil
}
