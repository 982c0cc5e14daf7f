package attest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/types"
	"k8s.io/apimachinery/pkg/util/version"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/cel/environment"
	"k8s.io/apiserver/pkg/cel/library"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/text"
)

// The cost limits of conditions. A predicate has no schema to bound its lists and strings, as
// a CRD's maxItems and maxLength bound the kube-apiserver's estimate; the estimate assumes
// the sizes below, what the largest SBOM of an image holds. An expression whose estimated
// cost exceeds costLimit is refused when the policy is applied (as apiextensions refuses CEL
// above its StaticEstimatedCostLimit, the same figure); at admission, the conditions of one
// rule on one attestation may actually cost costLimit together (as a ValidatingAdmissionPolicy
// binding may, celconfig.RuntimeCELCostBudget), whatever the statement's real size.
const (
	costLimit = celconfig.RuntimeCELCostBudget
	// defaultEvalTimeout bounds the time of one rule's conditions on one attestation, about what
	// costLimit takes (the kube-apiserver's comment on RuntimeCELCostBudget: roughly one
	// second). It is needed besides the cost limit: cel-go's cost tracker (v0.29 to v0.31)
	// makes a comprehension's time grow with the square of its list (40,000 elements: 2 s),
	// while the cost it counts grows linearly.
	defaultEvalTimeout = time.Second
	// maxElements is the list and map size the estimate assumes.
	maxElements = 100_000
	// maxStringBytes is the string size it assumes.
	maxStringBytes = 1 << 20
)

// evalTimeout is defaultEvalTimeout; a test of the cost limit alone raises it.
var evalTimeout = defaultEvalTimeout

// ConditionError is a condition that does not compile or may cost too much: the API refuses
// the policy (the preflight webhook), and the reconciler marks it not Ready.
type ConditionError struct {
	Rule  string
	Index int
	Err   error
}

func (e *ConditionError) Error() string {
	return fmt.Sprintf("attestation %q: conditions[%d]: %v", e.Rule, e.Index, e.Err)
}

func (e *ConditionError) Unwrap() error { return e.Err }

// condition is one compiled condition.
type condition struct {
	expression, message string
	program             cel.Program
}

// conditionEnv is Kubernetes' base CEL environment (the libraries, the cost tracking of the
// kube-apiserver) with a statement's three fields as variables.
var conditionEnv = sync.OnceValues(func() (*cel.Env, error) {
	set, err := environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()).Extend(environment.VersionedOptions{
		IntroducedVersion: version.MajorMinor(1, 0),
		EnvOptions: []cel.EnvOption{
			cel.Variable("predicateType", cel.StringType),
			cel.Variable("subject", cel.ListType(cel.DynType)),
			cel.Variable("predicate", cel.DynType),
		},
	})
	if err != nil {
		return nil, err
	}
	return set.Env(environment.StoredExpressions)
})

// statementSizes bounds what the cost estimate assumes of a statement's lists, maps and
// strings, whose sizes the schema-less predicate does not say.
type statementSizes struct{}

func (statementSizes) EstimateSize(element checker.AstNode) *checker.SizeEstimate {
	if element.Path() == nil {
		return nil // a constant or a computed value: its size is known
	}
	switch element.Type().Kind() {
	case types.StringKind, types.BytesKind:
		return &checker.SizeEstimate{Min: 0, Max: maxStringBytes}
	default:
		return &checker.SizeEstimate{Min: 0, Max: maxElements}
	}
}

func (statementSizes) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}

// CheckConditions compiles the rule's conditions as the API does when a policy is applied:
// it returns a *ConditionError for the first that does not compile or may cost too much.
func CheckConditions(r *v1alpha1.AttestationRule) error {
	_, err := compileConditions(r)
	return err
}

func compileConditions(r *v1alpha1.AttestationRule) ([]*condition, error) {
	var out []*condition
	for i, cond := range r.Conditions {
		compiled, err := compileCondition(cond)
		if err != nil {
			return nil, &ConditionError{Rule: r.Name, Index: i, Err: err}
		}
		out = append(out, compiled)
	}
	return out, nil
}

// compileCondition compiles one condition and checks its estimated cost.
func compileCondition(c v1alpha1.AttestationCondition) (*condition, error) {
	env, err := conditionEnv()
	if err != nil {
		return nil, fmt.Errorf("the CEL environment: %w", err)
	}
	ast, issues := env.Compile(c.Expression)
	if issues.Err() != nil {
		return nil, fmt.Errorf("compilation failed: %w", issues.Err())
	}
	if !ast.OutputType().IsExactType(cel.BoolType) && !ast.OutputType().IsExactType(cel.DynType) {
		return nil, fmt.Errorf("the expression must evaluate to a bool, not %s", ast.OutputType())
	}
	cost, err := env.EstimateCost(ast, &library.CostEstimator{SizeEstimator: statementSizes{}})
	if err != nil {
		return nil, fmt.Errorf("estimating its cost: %w", err)
	}
	if cost.Max > costLimit {
		return nil, fmt.Errorf("its estimated cost exceeds the limit by a factor of %.1f (the kube-apiserver's limit for one CEL expression in a CRD, %d, assuming lists and maps of %d elements and strings of 1 MiB): read fewer elements, for example without a comprehension inside another or a list search inside one",
			float64(cost.Max)/costLimit, costLimit, maxElements)
	}
	prg, err := env.Program(ast, cel.CostLimit(costLimit), cel.InterruptCheckFrequency(celconfig.CheckFrequency))
	if err != nil {
		return nil, fmt.Errorf("building its program: %w", err)
	}
	return &condition{expression: c.Expression, message: c.Message, program: prg}, nil
}

// Statement is an in-toto statement as conditions see it: its predicate and subject as
// decoded JSON values.
type Statement struct {
	PredicateType string
	Subject       []any
	Predicate     any
}

// errBudget is an evaluation past the rule's runtime budget.
var errBudget = errors.New("the conditions ran out of their cost budget")

// evalConditions evaluates the rule's conditions on a statement, in order, within costLimit
// for all of them; it returns why the statement does not satisfy them ("" when it does).
func (r *Rule) evalConditions(ctx context.Context, st *Statement) string {
	if len(r.conditions) == 0 {
		return ""
	}
	vars := map[string]any{"predicateType": st.PredicateType, "subject": st.Subject, "predicate": st.Predicate}
	if st.Subject == nil {
		vars["subject"] = []any{}
	}
	ctx, cancel := context.WithTimeout(ctx, evalTimeout)
	defer cancel()
	var spent uint64
	for i, c := range r.conditions {
		val, details, err := c.program.ContextEval(ctx, vars)
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("the conditions took longer than %v (the statement is too large for them)", evalTimeout)
		}
		if details != nil && details.ActualCost() != nil {
			spent += *details.ActualCost()
		}
		if err == nil && spent > costLimit {
			err = errBudget
		}
		if err != nil {
			return text.Cut(fmt.Sprintf("attestation %q: conditions[%d] (%s) could not be evaluated: %v", r.Name, i, printable(c.expression), err), maxProblemLength)
		}
		if b, ok := val.Value().(bool); !ok || !b {
			if !ok {
				return text.Cut(fmt.Sprintf("attestation %q: conditions[%d] (%s) is not a bool but %s", r.Name, i, printable(c.expression), val.Type().TypeName()), maxProblemLength)
			}
			if c.message != "" {
				return text.Cut(fmt.Sprintf("attestation %q: %s", r.Name, c.message), maxProblemLength)
			}
			return text.Cut(fmt.Sprintf("attestation %q: conditions[%d] is false: %s", r.Name, i, printable(c.expression)), maxProblemLength)
		}
	}
	return ""
}

// maxProblemLength bounds one problem's text.
const maxProblemLength = 1024
