package verify_test

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/verify"
	"github.com/imagegate/imagegate/test/utils/cloudtest"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

func TestValidateKMSReference(t *testing.T) {
	for ref, want := range map[string]string{
		"awskms:///alias/release":                        "",
		"awskms:///1234abcd-12ab-34cd-56ef-1234567890ab": "",
		"awskms:///arn:aws:kms:us-east-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab": "",
		"awskms://attacker.example/alias/release":                                               "names an endpoint",
		"awskms:///not a key": "kms specification should be in the format awskms://",
		"gcpkms://projects/acme/locations/global/keyRings/release/cryptoKeys/cosign":                     "",
		"gcpkms://projects/acme/locations/global/keyRings/release/cryptoKeys/cosign/cryptoKeyVersions/1": "",
		"gcpkms://projects/acme":                         "kms specification should be in the format gcpkms://",
		"azurekms://acme-release.vault.azure.net/cosign": "",
		"azurekms://attacker.example/cosign":             `"attacker.example" is not an Azure Key Vault or Managed HSM host`,
		"azurekms://.vault.azure.net/cosign":             "is not an Azure Key Vault",
		"hashivault://release":                           "",
		"hashivault://../sys/seal":                       "kms specification should be in the format hashivault://",
		"openbao://release":                              `the scheme "openbao" is not one imagegate reads keys from`,
		"k8s://imagegate-system/release-key":             `the scheme "k8s" is not one imagegate reads keys from`,
		"plugin://anything":                              `the scheme "plugin" is not one`,
		"/etc/cosign.pub":                                "is not a key reference",
	} {
		err := verify.ValidateKMSReference(ref)
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: %v", ref, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%s: got %v, want it to say %q", ref, err, want)
		}
	}
}

// kmsFixture is a registry, and a policy whose one signer is a KMS key, compiled with a
// Remote that says when a key arrives.
type kmsFixture struct {
	reg     *registrytest.Registry
	keys    *verify.Remote
	changed chan struct{}
	mu      sync.Mutex
	clock   time.Time
}

// tick moves the clock on by d and runs a refresh tick then.
func (f *kmsFixture) tick(d time.Duration) {
	f.mu.Lock()
	f.clock = f.clock.Add(d)
	now := f.clock
	f.mu.Unlock()
	verify.RemoteTick(f.keys, now)
}

func newKMSFixture(t *testing.T) *kmsFixture {
	t.Helper()
	reg := registrytest.New(true)
	t.Cleanup(reg.Close)
	f := &kmsFixture{reg: reg, changed: make(chan struct{}, 16), clock: time.Now()}
	f.keys = &verify.Remote{Timeout: 5 * time.Second, OnChange: func() { f.changed <- struct{}{} }}
	verify.SetRemoteClock(f.keys, func() time.Time {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.clock
	})
	return f
}

func (f *kmsFixture) compile(ref string) *policy.Snapshot {
	rules := &v1alpha1.VerifyRules{Signers: []v1alpha1.Signer{{Name: "release", Key: v1alpha1.KeySigner{KMS: ref}}}, TransparencyLog: v1alpha1.TransparencyLogSkip}
	return policy.CompileWith([]v1alpha1.ClusterImagePolicy{clusterPolicy("kms", rules)}, nil,
		policy.Options{Trust: verify.Compiler(verify.NamespaceSources{Remote: f.keys})})
}

func policyError(snap *policy.Snapshot) string {
	return snap.PolicyError(policy.Ref{Kind: policy.KindClusterImagePolicy, Name: "kms"})
}

// wait waits for OnChange.
func (f *kmsFixture) wait(t *testing.T) {
	t.Helper()
	select {
	case <-f.changed:
	case <-time.After(30 * time.Second):
		t.Fatal("OnChange was not called")
	}
}

// settle waits until no fetch is running (the AWS SDK retries a failing KMS for seconds).
func (f *kmsFixture) settle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for verify.RemoteFetching(f.keys) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("a fetch is still running after a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (f *kmsFixture) signed(t *testing.T, tag string, k *registrytest.Key) name.Digest {
	t.Helper()
	d := mustPush(t, f.reg, "acme/kms", tag)
	if err := k.Sign(d); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestKMSKeyAWS(t *testing.T) {
	f := newKMSFixture(t)
	aws := cloudtest.NewAWS("AKIAIMAGEGATESTATIC1")
	t.Cleanup(aws.Close)
	aws.Environment(t, true)
	release, _ := registrytest.NewKey()
	aws.SetKey("alias/release", release)
	const ref = "awskms:///alias/release"

	if e := policyError(f.compile(ref)); !strings.Contains(e, "the public key of awskms:///alias/release is being fetched from the KMS") {
		t.Fatalf("before the key arrives: %q", e)
	}
	f.wait(t)
	snap := f.compile(ref)
	if e := policyError(snap); e != "" {
		t.Fatalf("with the key: %s", e)
	}
	calls := aws.Requests()
	other, _ := registrytest.NewKey()
	good, bad := f.signed(t, "good", release), f.signed(t, "bad", other)
	v := verify.New(verify.Options{})
	expectVerdict(t, messages(ptr(decide(t, snap, v, good.String()))), "")
	expectVerdict(t, messages(ptr(decide(t, snap, v, bad.String()))), `no signature by a trusted signer (tried: key "release"`)
	if aws.Requests() != calls {
		t.Errorf("admissions called the KMS: %d requests, %d before", aws.Requests(), calls)
	}

	// The KMS fails: the key in the cache stays in use, and the policy stays in force.
	aws.Fail(true)
	f.tick(time.Hour)
	f.wait(t) // the round compiles again
	f.settle(t)
	snap = f.compile(ref)
	if e := policyError(snap); e != "" {
		t.Fatalf("a KMS outage made the policy invalid: %s", e)
	}
	expectVerdict(t, messages(ptr(decide(t, snap, verify.New(verify.Options{}), good.String()))), "")

	// The key is rotated: the next refresh fetches the new one and compiles again.
	aws.Fail(false)
	rotated, _ := registrytest.NewKey()
	aws.SetKey("alias/release", rotated)
	f.tick(time.Hour)
	f.wait(t) // the round
	f.wait(t) // the changed key
	snap = f.compile(ref)
	v = verify.New(verify.Options{})
	expectVerdict(t, messages(ptr(decide(t, snap, v, good.String()))), `no signature by a trusted signer`)
	expectVerdict(t, messages(ptr(decide(t, snap, v, f.signed(t, "rotated", rotated).String()))), "")

	// A key no policy names any more is dropped at the round after next.
	f.tick(time.Hour)
	f.settle(t)
	f.tick(time.Hour)
	if n := f.keys.Len(); n != 0 {
		t.Errorf("%d keys cached after no policy named them for a round", n)
	}
}

func TestKMSKeyAWSWebIdentity(t *testing.T) {
	f := newKMSFixture(t)
	aws := cloudtest.NewAWS(cloudtest.AssumedAccessKeyID)
	t.Cleanup(aws.Close)
	aws.Environment(t, false)
	// IRSA: the projected service account token and the role, as EKS's webhook sets them.
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("eks-projected-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	aws.WebIdentityToken, aws.RoleARN = "eks-projected-token", "arn:aws:iam::111122223333:role/imagegate"
	t.Setenv("AWS_ROLE_ARN", aws.RoleARN)
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", token)
	release, _ := registrytest.NewKey()
	aws.SetKey("alias/release", release)

	_ = f.compile("awskms:///alias/release")
	f.wait(t)
	if e := policyError(f.compile("awskms:///alias/release")); e != "" {
		t.Fatalf("with the web identity: %s", e)
	}

	// A token STS refuses: the policy is not Ready, saying why.
	f2 := newKMSFixture(t)
	aws.WebIdentityToken = "another-token"
	_ = f2.compile("awskms:///alias/release")
	f2.wait(t)
	if e := policyError(f2.compile("awskms:///alias/release")); !strings.Contains(e, "could not be fetched") || !strings.Contains(e, "AccessDenied") {
		t.Errorf("with a refused web identity: %q", e)
	}
}

func TestKMSKeyVault(t *testing.T) {
	f := newKMSFixture(t)
	vault := cloudtest.NewVault("s.imagegate")
	t.Cleanup(vault.Close)
	t.Setenv("VAULT_ADDR", vault.URL)
	t.Setenv("VAULT_TOKEN", "s.imagegate")
	release, _ := registrytest.NewKey()
	vault.SetKey("release", release)

	_ = f.compile("hashivault://release")
	f.wait(t)
	snap := f.compile("hashivault://release")
	if e := policyError(snap); e != "" {
		t.Fatalf("with the key: %s", e)
	}
	expectVerdict(t, messages(ptr(decide(t, snap, verify.New(verify.Options{}), f.signed(t, "vault", release).String()))), "")

	// A key Vault does not have: not Ready, with Vault's answer.
	_ = f.compile("hashivault://missing")
	f.wait(t)
	if e := policyError(f.compile("hashivault://missing")); !strings.Contains(e, "the public key of hashivault://missing could not be fetched") {
		t.Errorf("a missing key: %q", e)
	}
}

func ptr[T any](v T) *T { return &v }
