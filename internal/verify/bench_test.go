package verify_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/verify"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

// BenchmarkColdVerification is the first admission of a new image, signed in each format, on
// the loopback registry: a Verifier with empty caches resolves nothing (the image is pinned)
// and fetches and verifies the signatures. It reports the p50 and p99 of the iterations and
// the registry requests each made. A real registry adds its round trips to this.
func BenchmarkColdVerification(b *testing.B) {
	for _, format := range []string{"bundle", "legacy"} {
		b.Run(format, func(b *testing.B) {
			reg := registrytest.New(true)
			defer reg.Close()
			key, err := registrytest.NewKey()
			if err != nil {
				b.Fatal(err)
			}
			img, err := reg.Push("acme/app", "1")
			if err != nil {
				b.Fatal(err)
			}
			if format == "bundle" {
				err = key.Sign(img)
			} else {
				err = key.SignLegacy(img, img)
			}
			if err != nil {
				b.Fatal(err)
			}
			rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{keySigner("release", key.PublicKeyPEM())}, TransparencyLog: v1alpha1.TransparencyLogSkip}
			snap := policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("signed", rules)}, nil, policy.Options{Trust: verify.Compiler(&sources{})})
			sub := &policy.Subject{Namespace: "default", Images: []policy.Image{{Field: "spec.containers[0].image", Ref: img.String()}}}
			d := snap.Evaluate(sub)
			if len(d.Pending) != 1 {
				b.Fatalf("%d pending", len(d.Pending))
			}
			var took []time.Duration
			requests := reg.Requests()
			for b.Loop() {
				v := verify.New(verify.Options{})
				start := time.Now()
				failures := v.VerifyAll(context.Background(), d.Pending)
				took = append(took, time.Since(start))
				v.Close()
				if failures[0] != "" {
					b.Fatal(failures[0])
				}
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(reg.Requests()-requests)/float64(b.N), "registry-requests/op")
		})
	}
}
