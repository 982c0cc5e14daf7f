package main

import (
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/imagegate/imagegate/api/v1alpha1"
)

// imagegate's verify rule and Kyverno's verifyImages rule must name the same key and the
// same images, or section 5 compares different work.
func TestVerifyPoliciesAgree(t *testing.T) {
	s, err := (&benchEnv{}).signing()
	if err != nil {
		t.Fatal(err)
	}
	defer s.reg.Close()
	want := strings.TrimSpace(s.key.PublicKeyPEM())

	var ig v1alpha1.ClusterImagePolicy
	if err := yaml.UnmarshalStrict([]byte(s.imagegatePolicy()), &ig); err != nil {
		t.Fatalf("imagegate's policy: %v", err)
	}
	v := ig.Spec.Verify
	if len(v.Signers) != 1 || strings.TrimSpace(v.Signers[0].Key.PublicKey) != want {
		t.Fatalf("imagegate's policy does not name the key: %+v", v)
	}
	if len(v.Images) != 1 || string(v.Images[0]) != s.reg.Host+"/acme/**" {
		t.Errorf("imagegate's policy covers %v", v.Images)
	}

	var ky struct {
		Spec struct {
			Rules []struct {
				VerifyImages []struct {
					ImageReferences []string `json:"imageReferences"`
					Attestors       []struct {
						Entries []struct {
							Keys struct {
								PublicKeys string `json:"publicKeys"`
							} `json:"keys"`
						} `json:"entries"`
					} `json:"attestors"`
				} `json:"verifyImages"`
			} `json:"rules"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal([]byte(s.kyvernoPolicy()), &ky); err != nil {
		t.Fatalf("Kyverno's policy: %v", err)
	}
	vi := ky.Spec.Rules[0].VerifyImages[0]
	if got := strings.TrimSpace(vi.Attestors[0].Entries[0].Keys.PublicKeys); got != want {
		t.Errorf("Kyverno's policy names the key\n%s\nwant\n%s", got, want)
	}
	if len(vi.ImageReferences) != 1 || vi.ImageReferences[0] != s.reg.Host+"/acme/*" {
		t.Errorf("Kyverno's policy covers %v", vi.ImageReferences)
	}
}

// The Notation rows trust the same CA: imagegate's notation signer (any identity) and
// Kyverno's Notary attestor.
func TestVerifyNotationPoliciesAgree(t *testing.T) {
	s, err := (&benchEnv{}).signing()
	if err != nil {
		t.Fatal(err)
	}
	defer s.reg.Close()
	want := strings.TrimSpace(s.ca.PEM())
	var ig v1alpha1.ClusterImagePolicy
	if err := yaml.UnmarshalStrict([]byte(s.imagegateNotationPolicy()), &ig); err != nil {
		t.Fatalf("imagegate's policy: %v", err)
	}
	n := ig.Spec.Verify.Signers[0].Notation
	if len(n.TrustStores) != 1 || strings.TrimSpace(n.TrustStores[0].Certificates) != want || len(n.TrustedIdentities) != 1 || n.TrustedIdentities[0] != "*" {
		t.Fatalf("imagegate's policy does not trust the CA for any identity: %+v", n)
	}
	var ky struct {
		Spec struct {
			Rules []struct {
				VerifyImages []struct {
					Type            string   `json:"type"`
					ImageReferences []string `json:"imageReferences"`
					Attestors       []struct {
						Entries []struct {
							Certificates struct {
								Cert string `json:"cert"`
							} `json:"certificates"`
						} `json:"entries"`
					} `json:"attestors"`
				} `json:"verifyImages"`
			} `json:"rules"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal([]byte(s.kyvernoNotationPolicy()), &ky); err != nil {
		t.Fatalf("Kyverno's policy: %v", err)
	}
	vi := ky.Spec.Rules[0].VerifyImages[0]
	if vi.Type != "Notary" || strings.TrimSpace(vi.Attestors[0].Entries[0].Certificates.Cert) != want {
		t.Errorf("Kyverno's policy is not a Notary attestor of the CA: %+v", vi)
	}
}

// "added" pairs each round's median with the same round's median without a Pod watch.
func TestPodWatchAdded(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	rep := &podWatchReport{Results: []podWatchResult{
		{Name: "none", Medians: map[string][]time.Duration{"m": {ms(1), ms(5), ms(2), ms(1), ms(4)}}},
		{Name: "w", Medians: map[string][]time.Duration{"m": {ms(2), ms(5.5), ms(4), ms(4), ms(3)}}},
	}}
	got := rep.added("w", "m")
	if got.median != ms(1) || got.q1 != ms(0.5) || got.q3 != ms(2) {
		t.Errorf("added = %v [%v, %v], want 1ms [500µs, 2ms]", got.median, got.q1, got.q3)
	}
}
