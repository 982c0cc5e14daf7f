package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
)

// The policy every engine evaluates, n times over (policy i): allow the shared registry
// ghcr.io/acme and the team's own registry-i.corp, and refuse the tag latest.
const sharedRepo = "ghcr.io/acme/"

func teamRepo(i int) string { return fmt.Sprintf("registry-%d.corp/", i) }

func imagegatePolicies(n int) []v1alpha1.ClusterImagePolicy {
	out := make([]v1alpha1.ClusterImagePolicy, n)
	for i := range out {
		out[i] = v1alpha1.ClusterImagePolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "ClusterImagePolicy"},
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%04d", i)},
			Spec: v1alpha1.ImagePolicySpec{
				Images: v1alpha1.ImageRules{Allow: []v1alpha1.ImagePattern{
					sharedRepo + "**", v1alpha1.ImagePattern(teamRepo(i) + "**"),
				}},
				Tags: v1alpha1.TagRules{Deny: []v1alpha1.TagName{"latest"}},
			},
		}
	}
	return out
}

// benchPod is the 3-container Pod every layer admits (or, with bad, refuses).
func benchPod(name string, images ...string) *corev1.Pod {
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "bench"}},
	}
	for i, img := range images {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: img})
	}
	return pod
}

var (
	admittedImages = []string{"ghcr.io/acme/web:1.4.2", "ghcr.io/acme/sidecar/proxy:2.0",
		"ghcr.io/acme/tools@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
	latestImages  = []string{"ghcr.io/acme/web:1.4.2", "ghcr.io/acme/sidecar/proxy:latest", "ghcr.io/acme/tools:1"}
	foreignImages = []string{"ghcr.io/acme/web:1.4.2", "quay.io/evil/miner:6.21", "ghcr.io/acme/tools:1"}
)

// evaluator is one engine with n policies loaded: it returns how many policies refuse pod.
type evaluator interface {
	violations(pod *corev1.Pod, obj map[string]any) int
}

// --- imagegate -------------------------------------------------------------------------

type imagegateEngine struct{ snap *policy.Snapshot }

func newImagegate(n int) (*imagegateEngine, error) {
	snap := policy.Compile(imagegatePolicies(n), nil)
	if snap.Invalid() > 0 {
		return nil, fmt.Errorf("imagegate: %d invalid policies", snap.Invalid())
	}
	return &imagegateEngine{snap}, nil
}

func (e *imagegateEngine) violations(pod *corev1.Pod, _ map[string]any) int {
	sub := policy.Subject{Namespace: "bench", Images: podspec.PodImages(&pod.Spec, "spec")}
	d := e.snap.Evaluate(&sub)
	refusing := 0
	for i := range d.Violations {
		if d.FirstOfPolicy(i) {
			refusing++
		}
	}
	return refusing
}

// --- OPA with Gatekeeper's Rego --------------------------------------------------------

// disallowedTagsRego is the tag rule in the style of the gatekeeper-library template
// k8sdisallowedtags (which is not in the gatekeeper module): written here, Rego v0 like the
// K8sAllowedRepos template it runs beside.
const disallowedTagsRego = `package k8sdisallowedtags

violation[{"msg": msg}] {
  container := input_containers[_]
  tags := [sprintf(":%v", [tag]) | tag := input.parameters.tags[_]]
  strings.any_suffix_match(container.image, tags)
  msg := sprintf("container <%v> uses a disallowed tag <%v>; disallowed tags are %v", [container.name, container.image, input.parameters.tags])
}

input_containers[c] {
  c := input.review.object.spec.containers[_]
}

input_containers[c] {
  c := input.review.object.spec.initContainers[_]
}
`

// allowedReposTemplate reads Gatekeeper's K8sAllowedRepos ConstraintTemplate from the
// gatekeeper module (demo/agilebank), as the issue asks: the Rego Gatekeeper users run.
func allowedReposTemplate(gatekeeperDir string) (path, rego string, err error) {
	if gatekeeperDir == "" {
		return "", "", errors.New("the gatekeeper module's folder is not set (-gatekeeper-module; make bench sets it)")
	}
	path = filepath.Join(gatekeeperDir, "demo", "agilebank", "templates", "k8sallowedrepos_template.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", err
	}
	var tpl struct {
		Spec struct {
			Targets []struct {
				Rego string `json:"rego"`
			} `json:"targets"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &tpl); err != nil || len(tpl.Spec.Targets) == 0 || tpl.Spec.Targets[0].Rego == "" {
		return "", "", fmt.Errorf("%s: no spec.targets[0].rego (%v)", path, err)
	}
	return path, tpl.Spec.Targets[0].Rego, nil
}

type opaEngine struct {
	repos, tags rego.PreparedEvalQuery
	params      [][2]*ast.Term // per policy: repos parameters, tags parameters
}

func newOPA(n int, allowedRepos string) (*opaEngine, error) {
	ctx := context.Background()
	prepare := func(query, name, module string) (rego.PreparedEvalQuery, error) {
		return rego.New(rego.Query(query), rego.Module(name, module), rego.SetRegoVersion(ast.RegoV0)).PrepareForEval(ctx)
	}
	e := &opaEngine{}
	var err error
	if e.repos, err = prepare("data.k8sallowedrepos.violation", "k8sallowedrepos.rego", allowedRepos); err != nil {
		return nil, fmt.Errorf("OPA: K8sAllowedRepos: %w", err)
	}
	if e.tags, err = prepare("data.k8sdisallowedtags.violation", "k8sdisallowedtags.rego", disallowedTagsRego); err != nil {
		return nil, fmt.Errorf("OPA: k8sdisallowedtags: %w", err)
	}
	for i := range n {
		repos, err := ast.InterfaceToValue(map[string]any{"repos": []any{sharedRepo, teamRepo(i)}})
		if err != nil {
			return nil, err
		}
		tags, err := ast.InterfaceToValue(map[string]any{"tags": []any{"latest"}})
		if err != nil {
			return nil, err
		}
		e.params = append(e.params, [2]*ast.Term{ast.NewTerm(repos), ast.NewTerm(tags)})
	}
	return e, nil
}

// violations converts the Pod to OPA's value once per review, then evaluates the two
// constraints of every policy, as Gatekeeper evaluates each constraint with its parameters.
func (e *opaEngine) violations(_ *corev1.Pod, obj map[string]any) int {
	ctx := context.Background()
	podVal, err := ast.InterfaceToValue(obj)
	if err != nil {
		panic(err)
	}
	review := ast.NewTerm(ast.NewObject(ast.Item(ast.StringTerm("object"), ast.NewTerm(podVal))))
	refusing := 0
	for _, p := range e.params {
		bad := false
		for j, q := range []rego.PreparedEvalQuery{e.repos, e.tags} {
			input := ast.NewObject(ast.Item(ast.StringTerm("review"), review), ast.Item(ast.StringTerm("parameters"), p[j]))
			rs, err := q.Eval(ctx, rego.EvalParsedInput(input))
			if err != nil {
				panic(err)
			}
			if len(rs) > 0 && len(rs[0].Expressions) > 0 {
				if v, ok := rs[0].Expressions[0].Value.([]any); ok && len(v) > 0 {
					bad = true
				}
			}
		}
		if bad {
			refusing++
		}
	}
	return refusing
}

// --- cel-go with a ValidatingAdmissionPolicy expression --------------------------------

// vapExpression is what a ValidatingAdmissionPolicy with a parameter resource would say.
const vapExpression = `object.spec.containers.all(c, params.repos.exists(r, c.image.startsWith(r)) && !params.tags.exists(t, c.image.endsWith(':' + t))) &&
(!has(object.spec.initContainers) || object.spec.initContainers.all(c, params.repos.exists(r, c.image.startsWith(r)) && !params.tags.exists(t, c.image.endsWith(':' + t))))`

type celEngine struct {
	prg    cel.Program
	params []ref.Val
}

func newCEL(n int) (*celEngine, error) {
	env, err := cel.NewEnv(cel.Variable("object", cel.DynType), cel.Variable("params", cel.DynType))
	if err != nil {
		return nil, err
	}
	compiled, iss := env.Compile(vapExpression)
	if iss.Err() != nil {
		return nil, fmt.Errorf("cel: %w", iss.Err())
	}
	prg, err := env.Program(compiled, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, err
	}
	e := &celEngine{prg: prg}
	for i := range n {
		e.params = append(e.params, types.DefaultTypeAdapter.NativeToValue(map[string]any{
			"repos": []any{sharedRepo, teamRepo(i)}, "tags": []any{"latest"},
		}))
	}
	return e, nil
}

// activation holds the two variables of one evaluation, as the apiserver's own does.
type activation struct{ object, params ref.Val }

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "object":
		return a.object, true
	case "params":
		return a.params, true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

func (e *celEngine) violations(_ *corev1.Pod, obj map[string]any) int {
	act := &activation{object: types.DefaultTypeAdapter.NativeToValue(obj)}
	refusing := 0
	for _, p := range e.params {
		act.params = p
		out, _, err := e.prg.Eval(act)
		if err != nil {
			panic(err)
		}
		if out != types.True {
			refusing++
		}
	}
	return refusing
}

// --- the layer ------------------------------------------------------------------------

type engineResult struct {
	Engine   string
	Policies int
	Case     string // admitted or denied
	NsPerOp  float64
	Allocs   int64
}

var policyCounts = []int{1, 10, 100, 1000}

type podCase struct {
	name string
	pod  *corev1.Pod
	obj  map[string]any
	bad  bool
}

// podCases are the Pods every engine decides: admitted, refused for its tag, refused for a
// registry.
func podCases() ([]podCase, error) {
	var cases []podCase
	for _, c := range []struct {
		name   string
		images []string
		bad    bool
	}{{"admitted", admittedImages, false}, {"denied (tag latest)", latestImages, true}, {"denied (registry)", foreignImages, true}} {
		pod := benchPod("bench", c.images...)
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(pod)
		if err != nil {
			return nil, err
		}
		cases = append(cases, podCase{c.name, pod, obj, c.bad})
	}
	return cases, nil
}

type namedEngine struct {
	name string
	e    evaluator
}

// enginesAgreeing loads n policies into the three engines and checks that they decide every
// case alike: the comparison means something only then.
func enginesAgreeing(n int, allowedRepos string, cases []podCase) ([]namedEngine, error) {
	ig, err := newImagegate(n)
	if err != nil {
		return nil, err
	}
	opa, err := newOPA(n, allowedRepos)
	if err != nil {
		return nil, err
	}
	cl, err := newCEL(n)
	if err != nil {
		return nil, err
	}
	engines := []namedEngine{{"imagegate", ig}, {"OPA (Gatekeeper Rego)", opa}, {"cel-go (VAP CEL)", cl}}
	for _, c := range cases {
		want := 0
		if c.bad {
			want = n
		}
		for _, en := range engines {
			if got := en.e.violations(c.pod, c.obj); got != want {
				return nil, fmt.Errorf("%s with %d policies: %d policies refuse the %s Pod, want %d", en.name, n, got, c.name, want)
			}
		}
	}
	return engines, nil
}

// runEngines checks that the three engines agree on every Pod, then measures each.
func runEngines(gatekeeperDir string, progress func(string, ...any)) ([]engineResult, string, error) {
	tplPath, allowedRepos, err := allowedReposTemplate(gatekeeperDir)
	if err != nil {
		return nil, "", err
	}
	cases, err := podCases()
	if err != nil {
		return nil, "", err
	}
	var out []engineResult
	for _, n := range policyCounts {
		engines, err := enginesAgreeing(n, allowedRepos, cases)
		if err != nil {
			return nil, "", err
		}
		for _, c := range cases[:2] {
			for _, en := range engines {
				r := testing.Benchmark(func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						en.e.violations(c.pod, c.obj)
					}
				})
				caseName := "admitted"
				if c.bad {
					caseName = "denied"
				}
				res := engineResult{Engine: en.name, Policies: n, Case: caseName,
					NsPerOp: float64(r.T.Nanoseconds()) / float64(r.N), Allocs: r.AllocsPerOp()}
				progress("engine: %-22s %5d policies %-8s %12.0f ns/op %8d allocs/op", res.Engine, n, caseName, res.NsPerOp, res.Allocs)
				out = append(out, res)
			}
		}
	}
	return out, tplPath, nil
}
