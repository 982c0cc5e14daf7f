// Package registrytest runs a real OCI registry in process (go-containerregistry's
// pkg/registry) and signs images in it the way cosign does, with cosign's and sigstore-go's
// own libraries: legacy `.sig` signatures, sigstore bundles as OCI referrers, key-signed or
// keyless through sigstore-go's VirtualSigstore (a Fulcio, Rekor and CT log in memory). For
// tests and the demo; nothing here contacts the network.
package registrytest

import (
	"archive/tar"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	ggcrmutate "github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ggcrstatic "github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/sigstore/cosign/v3/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v3/pkg/oci/remote"
	"github.com/sigstore/cosign/v3/pkg/oci/static"
	ctypes "github.com/sigstore/cosign/v3/pkg/types"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore/pkg/signature/payload"
	"google.golang.org/protobuf/encoding/protojson"
)

// Registry is an in-process OCI registry on loopback that counts the requests it serves.
type Registry struct {
	*httptest.Server
	// Host is host:port, what image references name.
	Host string
	// Program, when set, is a static Linux program that every image Push writes runs (see
	// PushProgram): images a node can run, each push different content.
	Program string

	mu     sync.Mutex
	counts map[string]int
	// basic, when set, is the user and password every request must carry (Basic auth).
	basic    atomic.Pointer[[2]string]
	fault    atomic.Pointer[http.HandlerFunc]
	watch    atomic.Pointer[func(*http.Request)]
	requests atomic.Int64
	pushes   atomic.Int64
}

// New starts a registry on a loopback port; referrers says whether it serves the OCI 1.1
// Referrers API (without it, clients fall back to the sha256-<hex> tag).
func New(referrers bool) *Registry {
	r, err := Listen("127.0.0.1:0", referrers)
	if err != nil {
		panic(err)
	}
	return r
}

// Listen is New on a given address (the demo's registry, which another process reaches).
func Listen(addr string, referrers bool) (*Registry, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &Registry{counts: map[string]int{}}
	h := specReferrers(registry.New(registry.WithReferrersSupport(referrers), registry.Logger(log.New(io.Discard, "", 0))))
	r.Server = &httptest.Server{Listener: l, Config: &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.requests.Add(1)
		r.mu.Lock()
		r.counts[Kind(req)]++
		r.mu.Unlock()
		if w := r.watch.Load(); w != nil {
			(*w)(req)
		}
		if f := r.fault.Load(); f != nil {
			(*f)(w, req)
			return
		}
		if b := r.basic.Load(); b != nil {
			if u, p, ok := req.BasicAuth(); !ok || u != b[0] || p != b[1] {
				w.Header().Set("WWW-Authenticate", `Basic realm="registrytest"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
		}
		h.ServeHTTP(w, req)
	})}}
	r.Start()
	r.Host = l.Addr().String()
	return r, nil
}

// Kind names what a request asks for: "HEAD manifest", "GET referrers", "GET blob", ...
func Kind(req *http.Request) string {
	p := req.URL.Path
	switch {
	case strings.Contains(p, "/manifests/") && strings.Contains(p, ".sig"):
		return req.Method + " signature manifest"
	case strings.Contains(p, "/manifests/"):
		return req.Method + " manifest"
	case strings.Contains(p, "/referrers/"):
		return req.Method + " referrers"
	case strings.Contains(p, "/blobs/"):
		return req.Method + " blob"
	default:
		return req.Method + " " + p
	}
}

// Count is how many requests of a kind (see Kind) the registry served.
func (r *Registry) Count(kind string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[kind]
}

// Requests is how many requests the registry served.
func (r *Registry) Requests() int64 { return r.requests.Load() }

// RequireBasicAuth makes every request need this user and password.
func (r *Registry) RequireBasicAuth(user, password string) {
	r.basic.Store(&[2]string{user, password})
}

// Fault makes every request answered by f until Fault(nil).
func (r *Registry) Fault(f http.HandlerFunc) {
	if f == nil {
		r.fault.Store(nil)
		return
	}
	r.fault.Store(&f)
}

// Watch makes f see every request before it is served, until Watch(nil).
func (r *Registry) Watch(f func(*http.Request)) {
	if f == nil {
		r.watch.Store(nil)
		return
	}
	r.watch.Store(&f)
}

// Push writes a small random image as repo:tag (an image of Program when it is set) and
// returns its digest reference.
func (r *Registry) Push(repo, tag string) (name.Digest, error) {
	if r.Program != "" {
		return PushProgram(r.Host, repo, tag, r.Program, fmt.Sprintf("%s:%s #%d", repo, tag, r.pushes.Add(1)), Anonymous)
	}
	return PushTo(r.Host, repo, tag, Anonymous)
}

// Credentials are how this package writes to a registry.
type Credentials struct{ authn.Authenticator }

// Anonymous writes without credentials, as to New's registries.
var Anonymous = Credentials{authn.Anonymous}

// Basic writes with a user name and password.
func Basic(user, password string) Credentials {
	return Credentials{&authn.Basic{Username: user, Password: password}}
}

func (c Credentials) oci() ociremote.Option {
	return ociremote.WithRemoteOptions(remote.WithAuth(c.Authenticator))
}

// PushTo writes a small random image as host/repo:tag and returns its digest reference.
func PushTo(host, repo, tag string, c Credentials) (name.Digest, error) {
	img, err := random.Image(512, 1)
	if err != nil {
		return name.Digest{}, err
	}
	return write(host, repo, tag, img, c)
}

// write writes img as host/repo:tag and returns its digest reference.
func write(host, repo, tag string, img v1.Image, c Credentials) (name.Digest, error) {
	ref, err := name.NewTag(host + "/" + repo + ":" + tag)
	if err != nil {
		return name.Digest{}, err
	}
	if err := remote.Write(ref, img, remote.WithAuth(c.Authenticator)); err != nil {
		return name.Digest{}, err
	}
	d, err := img.Digest()
	if err != nil {
		return name.Digest{}, err
	}
	return ref.Context().Digest(d.String()), nil
}

// PushProgram writes an image that runs a program as host/repo:tag and returns its digest
// reference: one layer holding the file program as /program, its entrypoint, for the
// platform linux/GOARCH. label makes images of the same program differ.
func PushProgram(host, repo, tag, program, label string, c Credentials) (name.Digest, error) {
	b, err := os.ReadFile(program)
	if err != nil {
		return name.Digest{}, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "program", Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
		return name.Digest{}, err
	}
	if _, err := tw.Write(b); err != nil {
		return name.Digest{}, err
	}
	if err := tw.Close(); err != nil {
		return name.Digest{}, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		return name.Digest{}, err
	}
	img, err := ggcrmutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return name.Digest{}, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return name.Digest{}, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Config = v1.Config{Entrypoint: []string{"/program"}, Labels: map[string]string{"imagegate.test/label": label}}
	if img, err = ggcrmutate.ConfigFile(img, cfg); err != nil {
		return name.Digest{}, err
	}
	return write(host, repo, tag, img, c)
}

// Key is a signing key pair, as `cosign generate-key-pair` makes (ECDSA P-256).
type Key struct {
	priv *ecdsa.PrivateKey
}

// NewKey generates a key.
func NewKey() (*Key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return &Key{priv: priv}, nil
}

// Public is the public key.
func (k *Key) Public() crypto.PublicKey { return &k.priv.PublicKey }

// PublicKeyPEM is the public key as cosign.pub holds it.
func (k *Key) PublicKeyPEM() string {
	der, err := x509.MarshalPKIXPublicKey(&k.priv.PublicKey)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func (k *Key) sign(data []byte) ([]byte, error) {
	sum := sha256.Sum256(data)
	return ecdsa.SignASN1(rand.Reader, k.priv, sum[:])
}

// SignLegacy signs the image at digest the way `cosign sign --key` did before bundles: a
// simple-signing payload naming payloadDigest (normally the same digest), stored under the
// sha256-<hex>.sig tag. No transparency log entry.
func (k *Key) SignLegacy(digest, payloadDigest name.Digest, c ...Credentials) error {
	return k.signLegacy(digest, payloadDigest, credentials(c))
}

// signLegacy writes a simple-signing payload naming payloadDigest, signed with k, to
// digest's .sig tag, with the static options (a certificate and chain) given.
func (k *Key) signLegacy(digest, payloadDigest name.Digest, c Credentials, opts ...static.Option) error {
	o := c.oci()
	p, err := (&payload.Cosign{Image: payloadDigest}).MarshalJSON()
	if err != nil {
		return err
	}
	sig, err := k.sign(p)
	if err != nil {
		return err
	}
	s, err := static.NewSignature(p, base64.StdEncoding.EncodeToString(sig), opts...)
	if err != nil {
		return err
	}
	se, err := ociremote.SignedEntity(digest, o)
	if err != nil {
		return err
	}
	se, err = mutate.AttachSignatureToEntity(se, s)
	if err != nil {
		return err
	}
	return ociremote.WriteSignatures(digest.Repository, se, o)
}

// Statement is the in-toto statement cosign v3 signs for an image: subject the digest,
// predicate type predicateType (cosign's image signature for SignBundle).
func Statement(subject name.Digest, predicateType string) []byte {
	alg, hexDigest, _ := strings.Cut(subject.DigestStr(), ":")
	return fmt.Appendf(nil, `{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{%q:%q}}],"predicateType":%q,"predicate":{}}`, alg, hexDigest, predicateType)
}

// SignBundle signs the image at digest the way `cosign sign --key` does in cosign v3: a
// sigstore bundle holding a DSSE envelope over the statement, stored as an OCI referrer of
// the image (or under the sha256-<hex> tag when the registry has no Referrers API).
func (k *Key) SignBundle(digest name.Digest, statement []byte, c ...Credentials) error {
	b, err := k.bundle(statement)
	if err != nil {
		return err
	}
	return writeBundle(digest, b, statement, credentials(c))
}

// BundleJSON is the sigstore bundle SignBundle writes for statement, as the bytes of its
// layer: for tests that store it in a referrer of their own making (PushReferrer).
func (k *Key) BundleJSON(statement []byte) ([]byte, error) {
	b, err := k.bundle(statement)
	if err != nil {
		return nil, err
	}
	return protojson.Marshal(b)
}

func (k *Key) bundle(statement []byte) (*protobundle.Bundle, error) {
	pae := dssePAE("application/vnd.in-toto+json", statement)
	sig, err := k.sign(pae)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(&k.priv.PublicKey)
	if err != nil {
		return nil, err
	}
	hint := sha256.Sum256(der)
	b := &protobundle.Bundle{
		MediaType: "application/vnd.dev.sigstore.bundle.v0.3+json",
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_PublicKey{PublicKey: &protocommon.PublicKeyIdentifier{Hint: base64.StdEncoding.EncodeToString(hint[:])}},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
			Payload: statement, PayloadType: "application/vnd.in-toto+json", Signatures: []*protodsse.Signature{{Sig: sig}},
		}},
	}
	return b, nil
}

// BundleMediaType is the media type of a sigstore bundle v0.3, the artifact type and layer
// media type cosign gives the referrers that hold one.
const BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"

// PushReferrer pushes a referrer of digest with one layer of the given media type and bytes,
// and the given annotations, as anyone who can push to the repository could: nothing in it
// need be signed or true.
func PushReferrer(digest name.Digest, artifactType, layerMediaType string, layer []byte, annotations map[string]string, c ...Credentials) error {
	return ociremote.WriteReferrer(digest, artifactType, []v1.Layer{ggcrstatic.NewLayer(layer, types.MediaType(layerMediaType))}, annotations, credentials(c).oci())
}

func credentials(c []Credentials) Credentials {
	if len(c) > 0 {
		return c[0]
	}
	return Anonymous
}

// Sign signs the image at digest as `cosign sign --key` does in cosign v3 (SignBundle with
// cosign's image-signature statement).
func (k *Key) Sign(digest name.Digest, c ...Credentials) error {
	return k.SignBundle(digest, Statement(digest, ctypes.CosignSignPredicateType), c...)
}

// dssePAE is DSSE's pre-authentication encoding, what a DSSE signature signs.
func dssePAE(payloadType string, payload []byte) []byte {
	return fmt.Appendf(nil, "DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(payload), payload)
}

// Sigstore is a Fulcio, Rekor and CT log in memory (sigstore-go's VirtualSigstore).
type Sigstore struct {
	*ca.VirtualSigstore
	fulcio *fulcio
}

// NewSigstore makes one.
func NewSigstore() (*Sigstore, error) {
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		return nil, err
	}
	f, err := newFulcio()
	if err != nil {
		return nil, err
	}
	return &Sigstore{VirtualSigstore: vs, fulcio: f}, nil
}

// TrustedRootJSON is its trusted_root.json, as `cosign trusted-root create` writes one.
func (s *Sigstore) TrustedRootJSON() ([]byte, error) {
	// VirtualSigstore's logs carry their hex log ID as the ID's bytes; the file holds the raw
	// ID, as Sigstore's own trusted root does.
	raw := func(logs map[string]*root.TransparencyLog) (map[string]*root.TransparencyLog, error) {
		out := map[string]*root.TransparencyLog{}
		for k, l := range logs {
			id, err := hex.DecodeString(k)
			if err != nil {
				return nil, err
			}
			c := *l
			c.ID = id
			out[k] = &c
		}
		return out, nil
	}
	rekor, err := raw(s.RekorLogs())
	if err != nil {
		return nil, err
	}
	// No CT log: VirtualSigstore's certificates carry no SCTs, like those of a private
	// Fulcio without a CT log, and a trusted root without CT logs says so.
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, append(s.FulcioCertificateAuthorities(), s.fulcio.authority()), nil, s.TimestampingAuthorities(), rekor)
	if err != nil {
		return nil, err
	}
	return tr.MarshalJSON()
}

// SignBundle signs the image at digest keylessly, as `cosign sign` with an OIDC identity
// does: a Fulcio certificate for subject and issuer, a Rekor entry, in a sigstore bundle
// stored as a referrer of the image.
func (s *Sigstore) SignBundle(digest name.Digest, statement []byte, subject, issuer string) error {
	// As Attest does (the certificate is valid then).
	return s.SignBundleAt(digest, statement, subject, issuer, time.Now().Add(5*time.Minute))
}

// SignBundleAt is SignBundle with the log entry integrated at the given time: outside the
// certificate's validity (about ten minutes from now) the signature must not count.
func (s *Sigstore) SignBundleAt(digest name.Digest, statement []byte, subject, issuer string, integrated time.Time) error {
	// With an inclusion proof, which bundles from v0.2 on must carry.
	ent, err := s.AttestAtTime(subject, issuer, statement, integrated, true)
	if err != nil {
		return err
	}
	vc, err := ent.VerificationContent()
	if err != nil {
		return err
	}
	sc, err := ent.SignatureContent()
	if err != nil {
		return err
	}
	entries, err := ent.TlogEntries()
	if err != nil {
		return err
	}
	return s.writeSigned(digest, statement, vc.Certificate(), sc.EnvelopeContent().RawEnvelope(), entries)
}

// writeSigned stores a keyless DSSE signature as cosign does: a v0.3 bundle with the
// certificate and the log entries, as a referrer of the image.
func (s *Sigstore) writeSigned(digest name.Digest, statement []byte, cert *x509.Certificate, env *dsse.Envelope, entries []*tlog.Entry) error {
	pl, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return err
	}
	sig, err := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	if err != nil {
		return err
	}
	var tles []*protorekor.TransparencyLogEntry
	for _, e := range entries {
		tle := e.TransparencyLogEntry()
		// What Rekor returns and the bundle carries besides what the entry holds: the
		// entry's kind and version (VirtualSigstore logs DSSE entries) and its promise.
		tle.KindVersion = &protorekor.KindVersion{Kind: "dsse", Version: "0.0.1"}
		set, err := s.RekorSignPayload(tlog.RekorPayload{
			Body: base64.StdEncoding.EncodeToString(tle.CanonicalizedBody), IntegratedTime: tle.IntegratedTime,
			LogIndex: tle.LogIndex, LogID: hex.EncodeToString(tle.LogId.KeyId),
		})
		if err != nil {
			return err
		}
		tle.InclusionPromise = &protorekor.InclusionPromise{SignedEntryTimestamp: set}
		tles = append(tles, tle)
	}
	b := &protobundle.Bundle{
		MediaType: "application/vnd.dev.sigstore.bundle.v0.3+json",
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content:     &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: cert.Raw}},
			TlogEntries: tles,
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
			Payload: pl, PayloadType: env.PayloadType, Signatures: []*protodsse.Signature{{Sig: sig}},
		}},
	}
	return writeBundle(digest, b, statement, Anonymous)
}

func writeBundle(digest name.Digest, b *protobundle.Bundle, statement []byte, c Credentials) error {
	raw, err := protojson.Marshal(b)
	if err != nil {
		return err
	}
	pt := ctypes.CosignSignPredicateType
	if i := strings.Index(string(statement), `"predicateType":"`); i >= 0 {
		rest := string(statement[i+len(`"predicateType":"`):])
		pt, _, _ = strings.Cut(rest, `"`)
	}
	return ociremote.WriteAttestationNewBundleFormat(digest, raw, pt, c.oci())
}

// PushIndex writes a multi-architecture image as repo:tag: an OCI image index with a small
// random image per platform ("linux/amd64"), and, as BuildKit writes provenance, an
// attestation manifest for platform unknown/unknown. It returns the index's digest and each
// platform manifest's.
func (r *Registry) PushIndex(repo, tag string, platforms ...string) (name.Digest, map[string]name.Digest, error) {
	return PushIndexTo(r.Host, repo, tag, Anonymous, platforms...)
}

// PushIndexTo is PushIndex to host/repo:tag, with these credentials.
func PushIndexTo(host, repo, tag string, c Credentials, platforms ...string) (name.Digest, map[string]name.Digest, error) {
	ref, err := name.NewTag(host + "/" + repo + ":" + tag)
	if err != nil {
		return name.Digest{}, nil, err
	}
	var idx v1.ImageIndex = empty.Index
	idx = ggcrmutate.IndexMediaType(idx, types.OCIImageIndex)
	digests := map[string]name.Digest{}
	for _, p := range append(platforms, "unknown/unknown") {
		img, err := random.Image(256, 1)
		if err != nil {
			return name.Digest{}, nil, err
		}
		img = ggcrmutate.MediaType(img, types.OCIManifestSchema1)
		os, arch, _ := strings.Cut(p, "/")
		idx = ggcrmutate.AppendManifests(idx, ggcrmutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: os, Architecture: arch}}})
		if p != "unknown/unknown" {
			d, err := img.Digest()
			if err != nil {
				return name.Digest{}, nil, err
			}
			digests[p] = ref.Context().Digest(d.String())
		}
	}
	if err := remote.WriteIndex(ref, idx, remote.WithAuth(c.Authenticator)); err != nil {
		return name.Digest{}, nil, err
	}
	d, err := idx.Digest()
	if err != nil {
		return name.Digest{}, nil, err
	}
	return ref.Context().Digest(d.String()), digests, nil
}
