package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/controller"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
	"github.com/imagegate/imagegate/internal/vap"
	"github.com/imagegate/imagegate/test/utils/localcluster"
)

// The interleaved layer: every configuration that can be scoped to a namespace is installed at
// once, each selecting only its own namespace, and the request stream visits them in rounds,
// in a new shuffled order each round. Whatever drifts over the run (the apiserver's caches,
// etcd's size, the machine) then falls on all of them alike, and the spread of the per-round
// medians says how far a difference can be trusted.

// ilvLabel selects a configuration's namespace in the interleaved layer.
const ilvLabel = "imagegate.io/bench-config"

// ilvMode is one kind of request stream.
type ilvMode struct {
	Name        string
	Concurrency int
	DryRun      bool
	PerRound    int
}

var ilvModes = []ilvMode{
	{"one at a time, dry-run", 1, true, 20},
	{"one at a time, stored", 1, false, 20},
	{"8 at a time, dry-run", 8, true, 48},
	{"8 at a time, stored", 8, false, 48},
}

// ilvResult is one configuration under one mode: every latency, and each round's median.
type ilvResult struct {
	Config  string
	Pooled  stats
	Medians []time.Duration // by round
}

// ilvReport is the interleaved layer's outcome.
type ilvReport struct {
	Rounds  int
	Configs []string
	Results map[string][]ilvResult // by mode name, in Configs' order
}

type ilvConfig struct {
	key, name string
	enforces  bool
	setup     func(context.Context, *benchEnv) (func() error, error)
	// images are what its Pods run; nil: admittedImages.
	images []string
	// labels are added to its namespace.
	labels map[string]string
}

func (e *benchEnv) interleavedLayer(ctx context.Context) error {
	configs := []ilvConfig{
		{key: "none", name: "no admission webhook", setup: func(context.Context, *benchEnv) (func() error, error) { return nil, nil }},
		{key: "vap", name: "ValidatingAdmissionPolicy (CEL)", enforces: true, setup: setupVAP},
		{key: "noop", name: "no-op webhook", setup: setupNoop},
		// As installed: the manager keeps the pinning webhook's verify-rules condition, and the
		// one verify rule in this cluster (ilvVerifyConfig's) covers other images than these.
		{key: "imagegate", name: ilvInstalledConfig, enforces: true, setup: func(ctx context.Context, e *benchEnv) (func() error, error) {
			return setupImagegateScoped(ctx, e, imagegateScope{startManager: true})
		}},
		// As installed in a cluster without any verify rule: the condition is what the manager
		// writes then (podspec.PinCondition of no rule), on a copy of the configuration (this
		// cluster has a verify rule, for ilvVerifyConfig).
		{key: "imagegate-noverify", name: ilvNoVerifyConfig, enforces: true, setup: func(ctx context.Context, e *benchEnv) (func() error, error) {
			return setupImagegateScoped(ctx, e, imagegateScope{suffix: "-noverify", pinCondition: podspec.PinCondition(nil)})
		}},
		// The pinning webhook without the condition: called for every Pod with an unpinned
		// image, as before the manager kept it.
		{key: "imagegate-unscoped", name: ilvUnscopedConfig, enforces: true, setup: func(ctx context.Context, e *benchEnv) (func() error, error) {
			return setupImagegateScoped(ctx, e, imagegateScope{suffix: "-unscoped"})
		}},
		// The same manager behind its validating webhook alone.
		{key: "imagegate-validating", name: ilvValidatingConfig, enforces: true, setup: func(ctx context.Context, e *benchEnv) (func() error, error) {
			return setupImagegateScoped(ctx, e, imagegateScope{suffix: "-validating-only", validatingOnly: true})
		}},
	}
	// The same manager as shipped, with a verify rule covering every image of the Pod: three
	// images signed in the harness's registry, verified once (the probe) and then served from
	// the verification cache.
	s, err := e.signing()
	if err != nil {
		return err
	}
	signedImages := make([]string, len(admittedImages))
	for i := range signedImages {
		if signedImages[i], err = s.signed(fmt.Sprintf("interleaved-%d", i)); err != nil {
			return err
		}
	}
	// Name rules in ValidatingAdmissionPolicies (--admission-policies): what the manager
	// writes in that mode (internal/vap), with the webhooks' conditions it keeps.
	configs = append(configs, ilvConfig{key: "imagegate-vap", name: ilvVAPConfig, enforces: true,
		setup: func(ctx context.Context, e *benchEnv) (func() error, error) {
			return setupImagegateVAP(ctx, e, s, vapBoth)
		}})
	// The same mode in its two parts, to say which costs what: the generated policies without
	// imagegate's webhooks, and the webhooks with the conditions the mode keeps (called for none
	// of these Pods) without the policies.
	configs = append(configs, ilvConfig{key: "imagegate-vap-policies", name: ilvVAPPoliciesConfig, enforces: true,
		setup: func(ctx context.Context, e *benchEnv) (func() error, error) {
			return setupImagegateVAP(ctx, e, s, vapPoliciesOnly)
		}})
	configs = append(configs, ilvConfig{key: "imagegate-vap-webhooks", name: ilvVAPWebhooksConfig,
		setup: func(ctx context.Context, e *benchEnv) (func() error, error) {
			return setupImagegateVAP(ctx, e, s, vapWebhooksOnly)
		}})
	// The mode in a cluster with name rules only: the webhooks keep the conditions the manager
	// writes when no verify rule is in force (the Pod webhook's for images CEL leaves to it,
	// the pinning webhook's "false").
	configs = append(configs, ilvConfig{key: "imagegate-vap-names", name: ilvVAPNamesConfig, enforces: true,
		setup: func(ctx context.Context, e *benchEnv) (func() error, error) {
			return setupImagegateVAP(ctx, e, s, vapNameRulesOnly)
		}})
	configs = append(configs, ilvConfig{key: "imagegate-verify", name: ilvVerifyConfig, images: signedImages,
		labels: map[string]string{signedLabel: "interleaved"},
		setup: func(ctx context.Context, e *benchEnv) (func() error, error) {
			return setupImagegateVerify(ctx, e, s, imagegateScope{suffix: "-verify"})
		}})
	progress("layer 4: interleaved, %d rounds over %d configurations installed at once", e.o.rounds, len(configs))
	for _, c := range configs {
		ns := "ilv-" + c.key
		if err := e.scopedNamespace(ctx, ns, c.key, c.labels); err != nil {
			return err
		}
		e.selector = map[string]string{ilvLabel: c.key}
		teardown, err := c.setup(ctx, e)
		e.selector = nil
		if teardown != nil {
			defer func() {
				if err := teardown(); err != nil {
					progress("interleaved: tearing down %s: %v", c.name, err)
				}
			}()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		var probe error
		if c.images != nil {
			probe = e.probeSigned(ctx, ns, c.images...)
		} else {
			probe = e.probe(ctx, ns, c.enforces)
		}
		if probe != nil {
			return fmt.Errorf("%s: %w", c.name, probe)
		}
	}
	// The manager has written the pinning webhook's condition for the verify rule in force.
	if err := e.waitPinCondition(ctx); err != nil {
		return err
	}
	// Each configuration still covers only its own namespace: the no-op webhook's namespace
	// admits what imagegate's refuses.
	if _, err := e.clientset.CoreV1().Pods("ilv-noop").Create(ctx, benchPod("scope", foreignImages...), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		return fmt.Errorf("the configurations are not scoped to their namespaces: %w", err)
	}
	time.Sleep(settle)

	rep := &ilvReport{Rounds: e.o.rounds, Results: map[string][]ilvResult{}}
	pooled := map[string]map[string][]stats{} // mode -> config -> the rounds' runs
	for _, c := range configs {
		rep.Configs = append(rep.Configs, c.name)
	}
	for _, m := range ilvModes {
		pooled[m.Name] = map[string][]stats{}
	}
	// A fixed seed: the same orders in every run.
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range e.o.rounds {
		for _, ci := range rng.Perm(len(configs)) {
			c := configs[ci]
			pods := e.clientset.CoreV1().Pods("ilv-" + c.key)
			images := c.images
			if images == nil {
				images = admittedImages
			}
			for mi, m := range ilvModes {
				opts := metav1.CreateOptions{}
				if m.DryRun {
					opts.DryRun = []string{metav1.DryRunAll}
				}
				s := run(ctx, m.PerRound, m.Concurrency, time.Minute, func(ctx context.Context, i int) error {
					_, err := pods.Create(ctx, benchPod(fmt.Sprintf("r%d-m%d-%d", round, mi, i), images...), opts)
					return err
				})
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if s.Errors > 0 {
					return fmt.Errorf("%s, %s, round %d: %d of %d creates failed, first: %s", c.name, m.Name, round, s.Errors, s.Requests, s.FirstError)
				}
				pooled[m.Name][c.name] = append(pooled[m.Name][c.name], s)
			}
		}
		if (round+1)%10 == 0 {
			progress("interleaved: %d of %d rounds", round+1, e.o.rounds)
		}
	}
	for _, m := range ilvModes {
		for _, c := range rep.Configs {
			runs := pooled[m.Name][c]
			r := ilvResult{Config: c, Pooled: merge(runs...)}
			for _, s := range runs {
				r.Medians = append(r.Medians, s.P50)
			}
			rep.Results[m.Name] = append(rep.Results[m.Name], r)
		}
	}
	e.rep.Interleaved = rep
	for _, m := range ilvModes {
		for _, ig := range ilvImagegateConfigs {
			if d, ok := rep.added(m.Name, ig, "no-op webhook"); ok {
				progress("interleaved: %-24s %s minus the no-op webhook: median %+.3f ms (IQR %+.3f to %+.3f)", m.Name, ig, ms(d.median), ms(d.q1), ms(d.q3))
			}
		}
		for _, ig := range ilvScopedConfigs {
			if d, ok := rep.added(m.Name, ig, ilvValidatingConfig); ok {
				progress("interleaved: %-24s %s minus the validating webhook alone: median %+.3f ms (IQR %+.3f to %+.3f)", m.Name, ig, ms(d.median), ms(d.q1), ms(d.q3))
			}
		}
		for _, ig := range []string{ilvVAPConfig, ilvVAPPoliciesConfig, ilvVAPWebhooksConfig, ilvVAPNamesConfig} {
			if d, ok := rep.added(m.Name, ig, "no admission webhook"); ok {
				progress("interleaved: %-24s %s minus no webhook: median %+.3f ms (IQR %+.3f to %+.3f)", m.Name, ig, ms(d.median), ms(d.q1), ms(d.q3))
			}
		}
	}
	return nil
}

// waitPinCondition waits until the manager has written the pinning webhook's verify-rules
// condition of the verify rules in force: before that, the installed configuration's Pods
// would be sent to the pinning webhook.
func (e *benchEnv) waitPinCondition(ctx context.Context) error {
	want := ""
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		cfg, err := e.clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, localcluster.PinWebhookConfiguration, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range cfg.Webhooks[0].MatchConditions {
			if c.Name == controller.PinConditionName && c.Expression != "true" {
				if c.Expression == "false" {
					want = "a condition naming the verify rule"
					break
				}
				progress("interleaved: the pinning webhook's %s condition is in place (%d characters)", c.Name, len(c.Expression))
				return nil
			}
		}
		time.Sleep(time.Second)
	}
	return fmt.Errorf("the manager did not write the pinning webhook's %s condition in 2 minutes (%s)", controller.PinConditionName, cmp.Or(want, "none"))
}

// The interleaved configurations that are imagegate.
const (
	ilvInstalledConfig  = "imagegate as installed, a verify rule for other images"
	ilvNoVerifyConfig   = "imagegate as installed, no verify rule"
	ilvUnscopedConfig   = "imagegate, pinning webhook for every unpinned Pod"
	ilvValidatingConfig = "imagegate, validating webhook only"
	ilvVerifyConfig     = "imagegate, verify rule, warm cache"
	ilvVAPConfig        = "imagegate --admission-policies, a verify rule for other images"
	// ilvVAPPoliciesConfig and ilvVAPWebhooksConfig are ilvVAPConfig's two parts.
	ilvVAPPoliciesConfig = "imagegate --admission-policies, its policies alone"
	ilvVAPWebhooksConfig = "imagegate --admission-policies, its webhooks' conditions alone"
	// ilvVAPNamesConfig is the mode with no verify rule in force.
	ilvVAPNamesConfig = "imagegate --admission-policies, no verify rule"
)

// vapParts says which parts of what --admission-policies writes setupImagegateVAP registers.
type vapParts int

const (
	vapBoth vapParts = iota
	vapPoliciesOnly
	vapWebhooksOnly
	// vapNameRulesOnly is vapBoth with the conditions of a cluster without verify rules.
	vapNameRulesOnly
)

// ilvImagegateConfigs are the interleaved configurations that are imagegate.
var ilvImagegateConfigs = []string{ilvInstalledConfig, ilvNoVerifyConfig, ilvUnscopedConfig, ilvValidatingConfig, ilvVerifyConfig}

// ilvScopedConfigs are the installed configurations whose pinning webhook is not called for
// their Pods: each must cost what the validating webhook alone costs.
var ilvScopedConfigs = []string{ilvInstalledConfig, ilvNoVerifyConfig}

// scopedNamespace makes the namespace of one interleaved configuration, labelled for it
// only (and with labels).
func (e *benchEnv) scopedNamespace(ctx context.Context, name, key string, labels map[string]string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{ilvLabel: key}}}
	maps.Copy(ns.Labels, labels)
	_, err := e.clientset.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	return err
}

// imagegateScope says how setupImagegateScoped registers the manager's webhooks.
type imagegateScope struct {
	// suffix is added to the names of the webhook configurations, so that several can be
	// registered with one manager.
	suffix string
	// validatingOnly registers the validating webhook configuration alone.
	validatingOnly bool
	// startManager starts the manager (and the teardown stops it).
	startManager bool
	// pinCondition, when set, is added to the pinning webhook as its verify-rules condition
	// (a copy under suffix is not the configuration the manager keeps).
	pinCondition string
	// validatingCondition, when set, is added to the Pod webhook as the condition the manager
	// keeps with --admission-policies.
	validatingCondition string
}

// setupImagegateVAP registers what the manager writes with --admission-policies for the
// bench policy: its ValidatingAdmissionPolicies (bound to e.selector's namespaces), and the
// webhooks with the conditions the manager keeps for the policies in force (the bench policy,
// and the verify rule of ilvVerifyConfig, which covers other images).
func setupImagegateVAP(ctx context.Context, e *benchEnv, s *signing, parts vapParts) (func() error, error) {
	var verifying v1alpha1.ClusterImagePolicy
	if err := yaml.Unmarshal([]byte(s.imagegatePolicy()), &verifying); err != nil {
		return nil, err
	}
	inForce := policy.Compile(append(imagegatePolicies(1), verifying), nil)
	if parts == vapNameRulesOnly {
		inForce = policy.Compile(imagegatePolicies(1), nil)
	}
	plan := vap.Build(policy.Compile(imagegatePolicies(1), nil).NameRules(time.Now()), vap.Options{})
	var out []byte
	var names []string
	for i := range plan.Policies {
		p := plan.Policies[i]
		p.TypeMeta = metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicy"}
		p.Name += "-bench-" + e.selector[ilvLabel]
		p.Labels = nil // not the manager's: it removes its own when it starts without the mode
		b, err := yaml.Marshal(p)
		if err != nil {
			return nil, err
		}
		out = append(append(out, b...), "---\n"...)
		names = append(names, p.Name)
	}
	for i := range plan.Bindings {
		b := plan.Bindings[i]
		b.TypeMeta = metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicyBinding"}
		b.Name += "-bench-" + e.selector[ilvLabel]
		b.Spec.PolicyName += "-bench-" + e.selector[ilvLabel]
		b.Labels = nil
		b.Spec.MatchResources.NamespaceSelector = &metav1.LabelSelector{MatchLabels: e.selector}
		y, err := yaml.Marshal(b)
		if err != nil {
			return nil, err
		}
		out = append(append(out, y...), "---\n"...)
	}
	teardown, err := func() error { return nil }, error(nil)
	if parts != vapPoliciesOnly {
		teardown, err = setupImagegateScoped(ctx, e, imagegateScope{suffix: "-" + e.selector[ilvLabel],
			pinCondition: podspec.PinCondition(inForce.PinScope()), validatingCondition: vap.WebhookCondition(&plan, inForce.PinScope())})
	}
	remove := func() error {
		err := teardown()
		if parts == vapWebhooksOnly {
			return err
		}
		for _, n := range names {
			err = errors.Join(err, e.kubectl(nil, "delete", "validatingadmissionpolicy,validatingadmissionpolicybinding", n, "--ignore-not-found"))
		}
		return err
	}
	if err != nil || parts == vapWebhooksOnly {
		return remove, err
	}
	return remove, e.kubectl(out, "apply", "-f", "-")
}

// setupImagegateScoped is setupImagegate with config/local's webhooks narrowed to the
// namespaces e.selector picks (in addition to the shipped exclusions).
func setupImagegateScoped(ctx context.Context, e *benchEnv, scope imagegateScope) (func() error, error) {
	if scope.startManager {
		if err := e.manager.Start(ctx); err != nil {
			return nil, err
		}
	}
	teardown := func() error {
		err := e.kubectl(nil, "delete", "validatingwebhookconfiguration", "imagegate-local-validating-webhook-configuration"+scope.suffix, "--ignore-not-found")
		if !scope.validatingOnly {
			err = errors.Join(err, e.kubectl(nil, "delete", "mutatingwebhookconfiguration", "imagegate-local-mutating-webhook-configuration"+scope.suffix, "--ignore-not-found"))
		}
		if scope.startManager {
			err = errors.Join(err, e.manager.Stop())
		}
		return err
	}
	rendered, err := e.manager.RenderWebhook(e.o.root)
	if err != nil {
		return teardown, err
	}
	var out []byte
	docs, err := localcluster.SplitYAML(rendered)
	if err != nil {
		return teardown, err
	}
	for _, doc := range docs {
		var cfg map[string]any
		if err := yaml.Unmarshal(doc, &cfg); err != nil {
			return teardown, err
		}
		if scope.validatingOnly && cfg["kind"] != "ValidatingWebhookConfiguration" {
			continue
		}
		if scope.suffix != "" {
			meta, _ := cfg["metadata"].(map[string]any)
			meta["name"] = fmt.Sprint(meta["name"]) + scope.suffix
		}
		webhooks, _ := cfg["webhooks"].([]any)
		for _, w := range webhooks {
			wh, _ := w.(map[string]any)
			sel, _ := wh["namespaceSelector"].(map[string]any)
			if sel == nil {
				sel = map[string]any{}
			}
			sel["matchLabels"] = e.selector
			wh["namespaceSelector"] = sel
			if scope.validatingCondition != "" && cfg["kind"] == "ValidatingWebhookConfiguration" && wh["name"] == controller.PodWebhookName {
				conds, _ := wh["matchConditions"].([]any)
				wh["matchConditions"] = append(conds, map[string]any{"name": controller.ScopeConditionName, "expression": scope.validatingCondition})
			}
			if scope.pinCondition != "" && cfg["kind"] == "MutatingWebhookConfiguration" {
				conds, _ := wh["matchConditions"].([]any)
				wh["matchConditions"] = append(conds, map[string]any{"name": controller.PinConditionName, "expression": scope.pinCondition})
				if sel := controller.PinObjectSelector(scope.pinCondition); sel != nil {
					wh["objectSelector"] = sel // as the manager's PinScopeSyncer writes it
				}
			}
		}
		b, err := yaml.Marshal(cfg)
		if err != nil {
			return teardown, err
		}
		out = append(append(out, b...), []byte("---\n")...)
	}
	return teardown, e.kubectl(out, "apply", "-f", "-")
}

// spread is the median and quartiles of a set of durations.
type spread struct{ median, q1, q3 time.Duration }

func spreadOf(ds []time.Duration) spread {
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration {
		if len(s) == 0 {
			return 0
		}
		return s[int(q*float64(len(s)-1)+0.5)]
	}
	return spread{at(0.5), at(0.25), at(0.75)}
}

func (r *ilvReport) result(mode, config string) (ilvResult, bool) {
	for _, res := range r.Results[mode] {
		if res.Config == config {
			return res, true
		}
	}
	return ilvResult{}, false
}

// added is the spread, over rounds, of config's round median minus base's in the same round.
func (r *ilvReport) added(mode, config, base string) (spread, bool) {
	a, ok1 := r.result(mode, config)
	b, ok2 := r.result(mode, base)
	if !ok1 || !ok2 || len(a.Medians) != len(b.Medians) {
		return spread{}, false
	}
	diffs := make([]time.Duration, len(a.Medians))
	for i := range diffs {
		diffs[i] = a.Medians[i] - b.Medians[i]
	}
	return spreadOf(diffs), true
}
