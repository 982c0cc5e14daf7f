// Package policy is imagegate's one engine. Compile turns ImagePolicies and
// ClusterImagePolicies into an immutable Snapshot; Evaluate decides a Subject (a Pod's
// namespace, labels and images) against it. The webhook, the CLI and every later adapter call
// it; it does no I/O and knows nothing of HTTP, clients or contexts.
package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/imageref"
)

// Kinds of policy, as users read them in messages.
const (
	KindClusterImagePolicy = "ClusterImagePolicy"
	KindImagePolicy        = "ImagePolicy"
)

// Ref names a policy.
type Ref struct {
	Kind      string
	Namespace string // empty for a ClusterImagePolicy
	Name      string
}

// String is Kind/name or Kind/namespace/name.
func (r Ref) String() string {
	if r.Namespace == "" {
		return r.Kind + "/" + r.Name
	}
	return r.Kind + "/" + r.Namespace + "/" + r.Name
}

// list says which list of a policy a pattern comes from.
type list uint8

const (
	listAllow list = iota
	listDeny
	listExempt
)

// compiledPolicy is one policy, ready to evaluate.
type compiledPolicy struct {
	ref           Ref
	idx           int32 // position in Snapshot.policies
	mode          v1alpha1.PolicyMode
	nsSelector    labels.Selector // nil: every namespace
	podSelector   labels.Selector // nil: every Pod
	hasAllow      bool
	denyPatterns  []string // as written, for messages
	tagDeny       []string
	requireTag    bool
	requireDigest bool
	// skipWorkloads: checkWorkloads is false, so workload templates are not checked.
	skipWorkloads bool
	// verify is the policy's verify section, nil without one.
	verify *VerifyRule
	// invalid, when set, is why the policy could not be compiled. Such a policy refuses (in
	// its mode) every Pod it may cover: a broken rule must not silently admit.
	invalid string
	// names is the policy's name rules, for NameRules (nil for an invalid policy).
	names *NameRules
}

// target is one use of a pattern: policy, list and position in that list.
type target struct {
	policy   int32
	list     list
	hasAllow bool // the policy has images.allow: an allow or exempt match satisfies it
	index    int32
}

// matcher is one distinct pattern tail below a trie node, shared by every policy that
// wrote the same pattern, so a pattern repeated across a thousand policies is matched once.
type matcher struct {
	rest    []string // segments left to match after the node; nil: the path ends at the node
	pattern imageref.Pattern
	targets []target
	// For the fast path (admit.go): the policies whose images.deny holds the pattern, and, when
	// many policies share it, the set of those whose images.allow it satisfies.
	denies    []int32
	satisfies bitset
}

// node is a level of the pattern trie: one literal path segment. Patterns hang at the node of
// their last leading literal segment, so an image is only matched against the patterns that
// share its registry and leading path, however many policies there are.
type node struct {
	children map[string]*node
	matchers []*matcher
}

// Snapshot is an immutable set of compiled policies. It is safe for concurrent use.
type Snapshot struct {
	policies    []compiledPolicy
	cluster     []int32            // indices of ClusterImagePolicies
	byNamespace map[string][]int32 // indices of ImagePolicies by namespace
	hosts       map[string]*node
	errors      map[Ref]string
	warnings    map[Ref][]string
	// Policies by tag and digest rule, so that an image that breaks none of them is cleared
	// without looking at every policy.
	requireDigest []int32
	requireTag    []int32
	tagDenied     map[string][]int32
	// verifying holds the valid policies with a verify section.
	verifying []int32
	refs      *imageref.Cache
	scratch   sync.Pool
	// selectsNamespaces: some ClusterImagePolicy has a namespaceSelector.
	selectsNamespaces bool
	// breakGlass holds the policies with allowBreakGlass.
	breakGlass map[Ref]bool
	uids       map[Ref]types.UID
	// awaiting are the policies acting as Audit until a clean audit (AwaitingCleanAudit).
	awaiting map[Ref]int64
	// exceptions are the valid ImagePolicyExceptions by namespace; exceptionErrors why the
	// others could not be compiled; noExceptions the policies with allowExceptions: false;
	// glassNeedsException those with breakGlassRequiresException.
	exceptions          map[string][]*compiledException
	exceptionErrors     map[Ref]string
	noExceptions        map[Ref]bool
	glassNeedsException map[Ref]bool
	now                 func() time.Time
	// fullEvaluation turns the fast paths off, so that tests can compare them with a full
	// evaluation of every covered policy.
	fullEvaluation bool
	// The admission fast path's sets (admit.go): the cluster policies that cover every Pod,
	// and every pod template; the other cluster policies; the policies with images.allow.
	fastPath                bool // tried first: the snapshot is large enough to gain by it
	everyPod, everyTemplate bitset
	conditional             []int32
	hasAllowSet             bitset
}

// refCacheSize bounds the parsed image references a snapshot keeps (about 200 bytes each).
const refCacheSize = 8192

// UID is the UID of a policy in the snapshot ("" if unknown).
func (s *Snapshot) UID(ref Ref) types.UID { return s.uids[ref] }

// Refs lists the policies in the snapshot, ClusterImagePolicies first, each sorted by name.
func (s *Snapshot) Refs() []Ref {
	out := make([]Ref, len(s.policies))
	for i := range s.policies {
		out[i] = s.policies[i].ref
	}
	return out
}

// Len is the number of policies in the snapshot.
func (s *Snapshot) Len() int { return len(s.policies) }

// Invalid is the number of policies that could not be compiled (see PolicyError).
func (s *Snapshot) Invalid() int { return len(s.errors) }

// Verifies reports whether any valid policy has a verify section: only then may an image
// need a registry call or pinning.
func (s *Snapshot) Verifies() bool { return len(s.verifying) > 0 }

// SelectsNamespaces reports whether any ClusterImagePolicy selects namespaces by label, that
// is, whether a Subject needs its namespace's labels at all.
func (s *Snapshot) SelectsNamespaces() bool { return s.selectsNamespaces }

// PolicyError returns why the named policy could not be compiled, or "" when it compiled
// (or is not in the snapshot).
func (s *Snapshot) PolicyError(ref Ref) string { return s.errors[ref] }

// PolicyWarnings are what in a valid policy can only be a mistake (a bare registry host as a
// pattern); the policy is in force as written.
func (s *Snapshot) PolicyWarnings(ref Ref) []string { return s.warnings[ref] }

// bareHost reports whether a pattern is a registry host alone (evil.io, registry:5000,
// localhost): by the reference grammar it names a Docker Hub image, which is surely not meant.
func bareHost(raw string) bool {
	if strings.Contains(raw, "/") {
		return false
	}
	name, _, _ := strings.Cut(raw, "@")
	name, _, _ = strings.Cut(name, ":") // a port, or a tag: redis:6 is an image
	return strings.Contains(name, ".") || name == "localhost"
}

// Compile builds a snapshot from every policy in force. Policies that do not compile are kept,
// marked invalid (see PolicyError); they never stop the others from compiling.
func Compile(cluster []v1alpha1.ClusterImagePolicy, namespaced []v1alpha1.ImagePolicy) *Snapshot {
	return CompileWith(cluster, namespaced, Options{})
}

// CompileWith is Compile with options.
func CompileWith(cluster []v1alpha1.ClusterImagePolicy, namespaced []v1alpha1.ImagePolicy, opts Options) *Snapshot {
	s := &Snapshot{
		byNamespace: map[string][]int32{},
		hosts:       map[string]*node{},
		errors:      map[Ref]string{},
		warnings:    map[Ref][]string{},
		breakGlass:  map[Ref]bool{},
		uids:        map[Ref]types.UID{},
		awaiting:    map[Ref]int64{},
		tagDenied:   map[string][]int32{},
		refs:        imageref.NewCache(refCacheSize),

		exceptions:          map[string][]*compiledException{},
		exceptionErrors:     map[Ref]string{},
		noExceptions:        map[Ref]bool{},
		glassNeedsException: map[Ref]bool{},
		now:                 opts.Now,
	}
	if s.now == nil {
		s.now = time.Now
	}
	for i := range opts.Exceptions {
		ex := &opts.Exceptions[i]
		c, problems := compileException(ex)
		if len(problems) > 0 {
			s.exceptionErrors[c.ref] = strings.Join(problems, "; ")
			continue
		}
		s.exceptions[ex.Namespace] = append(s.exceptions[ex.Namespace], c)
	}
	for _, list := range s.exceptions {
		slices.SortFunc(list, func(a, b *compiledException) int { return strings.Compare(a.ref.Name, b.ref.Name) })
	}
	// A stable order makes messages and status deterministic, whatever order the cache lists.
	cluster = append([]v1alpha1.ClusterImagePolicy(nil), cluster...)
	slices.SortFunc(cluster, func(a, b v1alpha1.ClusterImagePolicy) int { return strings.Compare(a.Name, b.Name) })
	namespaced = append([]v1alpha1.ImagePolicy(nil), namespaced...)
	slices.SortFunc(namespaced, func(a, b v1alpha1.ImagePolicy) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})

	shared := map[string]*matcher{}
	for i := range cluster {
		idx := s.next()
		ref := Ref{Kind: KindClusterImagePolicy, Name: cluster[i].Name}
		s.uids[ref] = cluster[i].UID
		s.add(ref, &cluster[i].ObjectMeta, &cluster[i].Spec, &cluster[i].Status, shared, &opts)
		s.cluster = append(s.cluster, idx)
		s.selectsNamespaces = s.selectsNamespaces || s.policies[idx].nsSelector != nil
	}
	for i := range namespaced {
		p := &namespaced[i]
		idx := s.next()
		ref := Ref{Kind: KindImagePolicy, Namespace: p.Namespace, Name: p.Name}
		s.uids[ref] = p.UID
		s.add(ref, &p.ObjectMeta, &p.Spec, &p.Status, shared, &opts)
		s.byNamespace[p.Namespace] = append(s.byNamespace[p.Namespace], idx)
	}
	s.prepareAdmit(opts.sparseOnly, opts.fastPathAlways)
	s.scratch.New = func() any {
		return &scratch{
			marks: make([]mark, len(s.policies)), coveredAt: make([]uint32, len(s.policies)),
			coveredSet: newBitset(len(s.policies)), satisfiedSet: newBitset(len(s.policies)),
		}
	}
	return s
}

// cleanAudited reports whether the audit found, for the policy's current spec, no running Pod
// that it would refuse (status.enforcement, which the audit writes).
func cleanAudited(meta *metav1.ObjectMeta, status *v1alpha1.ImagePolicyStatus) bool {
	e := status.Enforcement
	return e != nil && e.Mode == v1alpha1.ModeEnforce && e.ObservedGeneration == meta.Generation
}

// AwaitingCleanAudit lists the policies with enforcement AfterCleanAudit that act as Audit
// until an audit pass finds no running Pod they would refuse, with the generation of the spec
// that pass must be of.
func (s *Snapshot) AwaitingCleanAudit() map[Ref]int64 { return s.awaiting }

// next is the index the next policy added gets.
func (s *Snapshot) next() int32 {
	return int32(len(s.policies)) //nolint:gosec // bounded: policies are apiserver objects, far fewer than 2^31
}

// add compiles one policy into the snapshot.
func (s *Snapshot) add(ref Ref, meta *metav1.ObjectMeta, spec *v1alpha1.ImagePolicySpec, status *v1alpha1.ImagePolicyStatus, shared map[string]*matcher, opts *Options) {
	idx := s.next()
	cp := compiledPolicy{ref: ref, idx: idx, mode: spec.Mode, hasAllow: len(spec.Images.Allow) > 0}
	if ptr.Deref(spec.AllowBreakGlass, false) {
		s.breakGlass[ref] = true
		if ptr.Deref(spec.BreakGlassRequiresException, false) {
			s.glassNeedsException[ref] = true
		}
	}
	if !ptr.Deref(spec.AllowExceptions, true) {
		s.noExceptions[ref] = true
	}
	cp.skipWorkloads = spec.CheckWorkloads != nil && !*spec.CheckWorkloads
	var problems []string
	switch cp.mode {
	case v1alpha1.ModeEnforce, v1alpha1.ModeWarn, v1alpha1.ModeAudit:
	case "":
		cp.mode = v1alpha1.ModeEnforce
	default:
		// An unknown mode must not turn a rule into a silent one: refuse, as Enforce would.
		problems = append(problems, fmt.Sprintf("spec.mode: %q is not Enforce, Warn or Audit", cp.mode))
		cp.mode = v1alpha1.ModeEnforce
	}
	if cp.mode == v1alpha1.ModeEnforce && spec.Enforcement == v1alpha1.EnforceAfterCleanAudit && !opts.AsWritten && !cleanAudited(meta, status) {
		// It refuses only once an audit pass of this very spec found nothing to refuse.
		cp.mode = v1alpha1.ModeAudit
		s.awaiting[ref] = meta.Generation
	}
	type use struct {
		p imageref.Pattern
		t target
	}
	var uses []use
	collect := func(field string, l list, patterns []v1alpha1.ImagePattern) {
		for i, raw := range patterns {
			p, err := imageref.ParsePattern(string(raw))
			if err != nil {
				problems = append(problems, fmt.Sprintf("spec.%s[%d]: invalid pattern %q: %v", field, i, raw, err))
				continue
			}
			uses = append(uses, use{p, target{policy: idx, list: l, index: int32(i), hasAllow: cp.hasAllow}})
			if bareHost(string(raw)) {
				s.warnings[ref] = append(s.warnings[ref], fmt.Sprintf("spec.%s[%d]: %q names the Docker Hub image %s, not the registry %s: did you mean %q?",
					field, i, raw, p.Normalized, strings.Split(string(raw), "@")[0], strings.Split(string(raw), "@")[0]+"/**"))
			}
		}
	}
	collect("images.allow", listAllow, spec.Images.Allow)
	collect("images.deny", listDeny, spec.Images.Deny)
	for _, d := range spec.Images.Deny {
		cp.denyPatterns = append(cp.denyPatterns, string(d))
	}
	collect("exemptImages", listExempt, spec.ExemptImages)
	names := &NameRules{Ref: ref, NamespaceSelector: spec.NamespaceSelector, PodSelector: spec.PodSelector, BreakGlass: ptr.Deref(spec.AllowBreakGlass, false)}
	for _, u := range uses {
		switch u.t.list {
		case listAllow:
			names.Allow = append(names.Allow, u.p)
		case listDeny:
			names.Deny = append(names.Deny, u.p)
		default:
			names.Exempt = append(names.Exempt, u.p)
		}
	}
	for _, t := range spec.Tags.Deny {
		cp.tagDeny = append(cp.tagDeny, string(t))
	}
	cp.requireTag = ptr.Deref(spec.Tags.RequireTag, false)
	cp.requireDigest = ptr.Deref(spec.RequireDigest, false)
	var err error
	if cp.nsSelector, err = selector(spec.NamespaceSelector); err != nil {
		problems = append(problems, "spec.namespaceSelector: "+err.Error())
	}
	if ref.Kind == KindImagePolicy && spec.NamespaceSelector != nil {
		problems = append(problems, "spec.namespaceSelector: not allowed on ImagePolicy, which covers only its own namespace")
	}
	if cp.podSelector, err = selector(spec.PodSelector); err != nil {
		problems = append(problems, "spec.podSelector: "+err.Error())
	}
	if spec.Verify.IsSet() {
		var vp []string
		cp.verify, vp = compileVerify(ref, meta.UID, &spec.Verify, opts)
		problems = append(problems, vp...)
	}
	if !cp.hasAllow && len(cp.denyPatterns) == 0 && len(cp.tagDeny) == 0 && !cp.requireTag && !cp.requireDigest && cp.verify == nil {
		problems = append(problems, "spec: the policy restricts nothing")
	}
	if len(problems) > 0 {
		// A selector that does not parse cannot say which Pods it covers: cover them all.
		cp.invalid = strings.Join(problems, "; ")
		cp.nsSelector, cp.podSelector = nil, nil
		s.errors[ref] = cp.invalid
		s.policies = append(s.policies, cp)
		return
	}
	names.Mode, names.DenyWritten, names.TagDeny = cp.mode, cp.denyPatterns, cp.tagDeny
	names.RequireTag, names.RequireDigest, names.Verifies = cp.requireTag, cp.requireDigest, cp.verify != nil
	cp.names = names
	s.policies = append(s.policies, cp)
	if cp.requireDigest {
		s.requireDigest = append(s.requireDigest, idx)
	}
	if cp.requireTag {
		s.requireTag = append(s.requireTag, idx)
	}
	if cp.verify != nil {
		s.verifying = append(s.verifying, idx)
	}
	for _, t := range cp.tagDeny {
		s.tagDenied[t] = append(s.tagDenied[t], idx)
	}
	for _, u := range uses {
		s.insert(u.p, u.t, shared)
	}
}

func selector(ls *metav1.LabelSelector) (labels.Selector, error) {
	if ls == nil || (len(ls.MatchLabels) == 0 && len(ls.MatchExpressions) == 0) {
		return nil, nil
	}
	return metav1.LabelSelectorAsSelector(ls)
}

// insert hangs a pattern in the trie below the node of its leading literal segments.
func (s *Snapshot) insert(p imageref.Pattern, t target, shared map[string]*matcher) {
	n := s.hosts[p.Host]
	if n == nil {
		n = &node{}
		s.hosts[p.Host] = n
	}
	segs := p.Segments
	for len(segs) > 0 && !imageref.HasGlob(segs[0]) {
		child := n.children[segs[0]]
		if child == nil {
			child = &node{}
			if n.children == nil {
				n.children = map[string]*node{}
			}
			n.children[segs[0]] = child
		}
		n, segs = child, segs[1:]
	}
	// The normalized pattern fixes both the node and the tail, so it is the key.
	m := shared[p.Normalized]
	if m == nil {
		m = &matcher{pattern: p}
		if len(segs) > 0 {
			m.rest = segs
		}
		shared[p.Normalized] = m
		n.matchers = append(n.matchers, m)
	}
	m.targets = append(m.targets, t)
}
