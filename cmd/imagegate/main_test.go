package main

import (
	"bytes"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	xsdvalidate "github.com/terminalstatic/go-xsd-validate"
	"sigs.k8s.io/yaml"

	"github.com/imagegate/imagegate/internal/check"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/test/utils/credentialtest"
	"github.com/imagegate/imagegate/test/utils/registrytest"
)

// imagegate runs the CLI in-process, exactly as main does, and returns its output.
func imagegate(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	// One convention for every golden file in the project: UPDATE_GOLDEN=1 rewrites it.
	if os.Getenv("UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(path, []byte(got), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run UPDATE_GOLDEN=1 make test to create it, and review the diff)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (UPDATE_GOLDEN=1 make test rewrites it: review the diff):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// A folder of realistic manifests: every workload kind, multi-document files, a List, JSON, a
// kustomize render, Namespaces with labels, kinds that are skipped, an excluded namespace.
func TestGoldenText(t *testing.T) {
	code, stdout, stderr := imagegate(t, "", "check", "--policy", "testdata/policies", "testdata/manifests")
	if code != check.ExitDenied {
		t.Errorf("exit code %d, want %d; stderr: %s", code, check.ExitDenied, stderr)
	}
	if stderr != "" {
		t.Errorf("unexpected stderr: %s", stderr)
	}
	golden(t, "check.txt", stdout)
}

func TestGoldenJSON(t *testing.T) {
	code, stdout, stderr := imagegate(t, "", "check", "--policy", "testdata/policies", "-o", "json", "testdata/manifests")
	if code != check.ExitDenied {
		t.Errorf("exit code %d, want %d; stderr: %s", code, check.ExitDenied, stderr)
	}
	golden(t, "check.json", stdout)
	var report check.Report
	if err := yaml.UnmarshalStrict([]byte(stdout), &report); err != nil {
		t.Fatalf("the JSON report does not decode into check.Report: %v", err)
	}
	if report.SchemaVersion != "v1" || report.Summary.Checked != len(report.Objects) {
		t.Errorf("schemaVersion %q, %d objects for checked=%d", report.SchemaVersion, len(report.Objects), report.Summary.Checked)
	}
}

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const admittedPod = `apiVersion: v1
kind: Pod
metadata: {name: ok}
spec:
  containers:
  - {name: c, image: "ghcr.io/acme/app:1.0"}
`

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	ok := write(t, dir, "ok.yaml", admittedPod)
	denied := write(t, dir, "denied.yaml", strings.ReplaceAll(admittedPod, "ghcr.io/acme/app:1.0", "quay.io/evil/app:1"))
	warned := write(t, dir, "warned.yaml", strings.ReplaceAll(admittedPod, "ghcr.io/acme/app:1.0", "ghcr.io/acme/app:latest"))
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		code  int
		out   string
	}{
		{"all admitted", "", []string{ok}, check.ExitAdmitted, "1 object checked against 4 policies: 0 denied, 1 admitted (0 with warnings)"},
		{"a warning is not a denial", "", []string{warned}, check.ExitAdmitted, "warning: spec.containers[0].image"},
		{"one denied among admitted", "", []string{ok, denied}, check.ExitDenied, `denied.yaml#1: Pod/default/ok: denied: spec.containers[0].image: image "quay.io/evil/app:1"`},
		{"standard input", admittedPod, []string{"-"}, check.ExitAdmitted, "1 object checked"},
		{"denied on standard input", strings.ReplaceAll(admittedPod, "ghcr.io/acme", "quay.io/evil"), []string{"-"}, check.ExitDenied, "<stdin>#1: Pod/default/ok: denied"},
		{"bad input wins over a denial", "", []string{denied, filepath.Join(dir, "missing.yaml")}, check.ExitBadInput, "1 denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := imagegate(t, tc.stdin, append([]string{"check", "--policy", "testdata/policies"}, tc.args...)...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			if !strings.Contains(stdout, tc.out) {
				t.Errorf("stdout lacks %q:\n%s", tc.out, stdout)
			}
		})
	}
}

// Every bad input exits 2 with a message that names the file (and the document when there
// is one), and never panics or hangs.
func TestBadInputs(t *testing.T) {
	dir := t.TempDir()
	binary := write(t, dir, "binary.yaml", "apiVersion: v1\x00\x01\x02\xff")
	deep := write(t, dir, "deep.yaml", "a: "+strings.Repeat("[", 100000)+strings.Repeat("]", 100000))
	deepJSON := write(t, dir, "deep.json", `{"a":`+strings.Repeat("[", 100000)+strings.Repeat("]", 100000)+"}")
	bomb := write(t, dir, "bomb.yaml", `a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
`)
	big := filepath.Join(dir, "big.yaml")
	{
		f, err := os.Create(big)
		if err != nil {
			t.Fatal(err)
		}
		doc := []byte(admittedPod + "---\n")
		for written := 0; written < 50<<20; written += len(doc) {
			if _, err := f.Write(doc); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	empty := write(t, dir, "empty.yaml", "")
	comments := write(t, dir, "comments.yaml", "# nothing here\n---\n")
	badYAML := write(t, dir, "bad.yaml", admittedPod+"---\nkind: Pod\n  metadata: [\n")
	dupKeys := write(t, dir, "dup.yaml", "apiVersion: v1\nkind: Pod\nkind: Pod\nmetadata: {name: x}\n")
	badType := write(t, dir, "badtype.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers: nope\n")
	noYAMLDir := filepath.Join(dir, "nothing")
	if err := os.Mkdir(noYAMLDir, 0o700); err != nil {
		t.Fatal(err)
	}
	write(t, noYAMLDir, "README.md", "# not a manifest")
	ok := write(t, dir, "ok.yaml", admittedPod)
	oldAPI := write(t, dir, "old.yaml", "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers: [{name: c, image: quay.io/x/y:1}]\n")

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"binary file", []string{binary}, "binary.yaml: not a text file"},
		{"deeply nested YAML", []string{deep}, "deep.yaml#1: yaml: exceeded max depth"},
		{"deeply nested JSON", []string{deepJSON}, "deep.json#1: yaml: exceeded max depth"},
		{"YAML alias bomb", []string{bomb}, "bomb.yaml#1: yaml: document contains excessive aliasing"},
		{"50 MB file", []string{big}, "big.yaml: larger than 32 MiB"},
		{"file over --max-file-size", []string{"--max-file-size=100", ok}, "ok.yaml: larger than 100 bytes"},
		{"missing file", []string{filepath.Join(dir, "missing.yaml")}, "missing.yaml: no such file or directory"},
		{"empty file", []string{empty}, "no documents in " + empty},
		{"only comments", []string{comments}, "no documents in " + comments},
		{"invalid YAML in the second document", []string{badYAML}, "bad.yaml#2: "},
		{"duplicate keys", []string{dupKeys}, `dup.yaml#1: yaml: unmarshal errors:`},
		{"wrong field type", []string{badType}, `badtype.yaml#1: Pod "x" cannot be read as v1: json: cannot unmarshal string into Go struct field PodSpec.spec.containers`},
		{"folder without manifests", []string{noYAMLDir}, "nothing: the folder holds no .yaml, .yml or .json file"},
		{"a Deployment at an API version no longer served", []string{oldAPI}, `old.yaml#1: Deployment "web" has apiVersion "extensions/v1beta1", which Kubernetes does not serve: use apps/v1`},
		{"bad output format", []string{"-o", "xml", ok}, `--output must be one of text, json, sarif, junit, github, not "xml"`},
		{"bad size", []string{"--max-file-size", "lots", ok}, `--max-file-size must be a size such as 32Mi, not "lots"`},
		{"no manifest argument", nil, "name at least one manifest file or folder"},
		{"standard input twice", []string{"-", "-"}, "standard input is named more than once"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := imagegate(t, admittedPod, append([]string{"check", "--policy", "testdata/policies"}, tc.args...)...)
			if code != check.ExitBadInput {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, check.ExitBadInput, stdout, stderr)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, stderr)
			}
		})
	}
}

// Every policy the apiserver refuses (the corpus the envtest suite applies to a real
// apiserver) is bad input for the CLI, with the apiserver's message.
func TestInvalidPolicies(t *testing.T) {
	files, err := filepath.Glob("../../test/policies/invalid/*.yaml")
	if err != nil || len(files) < 10 {
		t.Fatalf("corpus not found: %v %d", err, len(files))
	}
	dir := t.TempDir()
	ok := write(t, dir, "ok.yaml", admittedPod)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			want := strings.TrimPrefix(strings.SplitN(string(data), "\n", 2)[0], "# error: ")
			code, _, stderr := imagegate(t, "", "check", "--policy", f, ok)
			if code != check.ExitBadInput {
				t.Errorf("exit code %d, want %d", code, check.ExitBadInput)
			}
			if !strings.Contains(stderr, filepath.Base(f)+"#1: ") || !strings.Contains(stderr, want) {
				t.Errorf("stderr lacks %s#1 and %q:\n%s", filepath.Base(f), want, stderr)
			}
		})
	}
}

func TestPolicyInputs(t *testing.T) {
	dir := t.TempDir()
	ok := write(t, dir, "ok.yaml", admittedPod)
	trusted, err := os.ReadFile("testdata/policies/trusted.yaml")
	if err != nil {
		t.Fatal(err)
	}
	twice := write(t, dir, "twice.yaml", string(trusted)+"---\n"+string(trusted))
	none := write(t, dir, "none.yaml", admittedPod)
	unknownKind := write(t, dir, "unknown.yaml", "apiVersion: imagegate.io/v1alpha1\nkind: ImageRule\nmetadata: {name: x}\n")
	unknownField := write(t, dir, "field.yaml", string(trusted)+"  mdoe: Warn\n")
	noAPIVersion := write(t, dir, "noapi.yaml", string(trusted)+"---\n"+strings.Replace(strings.Replace(string(trusted), "apiVersion: imagegate.io/v1alpha1\n", "", 1), "trusted-registries", "typo", 1))
	for _, tc := range []struct {
		name, policy, want string
	}{
		{"the same policy twice", twice, `twice.yaml#2: ClusterImagePolicy/trusted-registries is defined twice (first at ` + twice + `#1)`},
		{"no policy at all", none, "no ImagePolicy or ClusterImagePolicy in " + none},
		{"an unknown imagegate kind", unknownKind, `unknown.yaml#1: ImageRule "x" is invalid: kind: Unsupported value: "imagegate.io/v1alpha1, Kind=ImageRule"`},
		{"a policy without apiVersion is not silently skipped", noAPIVersion, `noapi.yaml#2: ClusterImagePolicy "typo" has apiVersion ""; imagegate policies are imagegate.io/v1alpha1`},
		{"an unknown field (kubectl's strict validation)", unknownField, `field.yaml#1: ClusterImagePolicy "trusted-registries" is invalid: spec.mdoe: Invalid value: null: unknown field "spec.mdoe"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := imagegate(t, "", "check", "--policy", tc.policy, ok)
			if code != check.ExitBadInput || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit code %d (want 2), stderr lacks %q:\n%s", code, tc.want, stderr)
			}
		})
	}
	// One document with two problems is one bad input, reported with both messages.
	twoFields := write(t, dir, "two.yaml", string(trusted)+"  mdoe: Warn\n  tgas: {}\n")
	code, stdout, stderr := imagegate(t, "", "check", "--policy", twoFields, ok)
	if code != check.ExitBadInput || strings.Count(stderr, "two.yaml#1:") != 2 || !strings.Contains(stdout, "; 1 input error\n") {
		t.Errorf("two errors in one document: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	code, _, stderr = imagegate(t, "", "check", ok)
	if code != check.ExitBadInput || !strings.Contains(stderr, `no --policy given: name the files or folders that hold the policies, or read them with --cluster`) {
		t.Errorf("without --policy: exit code %d, stderr %s", code, stderr)
	}
}

// The CLI skips the namespaces the shipped webhook configuration does not cover, under the
// manager's flag name and default (podspec ties those to config/webhook).
func TestExcludedNamespacesFlag(t *testing.T) {
	var code int
	cmd, _, err := newRoot(strings.NewReader(""), &code).Find([]string{"check"})
	if err != nil {
		t.Fatal(err)
	}
	f := cmd.Flags().Lookup(podspec.ExcludedNamespacesFlag)
	if f == nil {
		t.Fatalf("imagegate check has no --%s", podspec.ExcludedNamespacesFlag)
	}
	if want := "[" + podspec.DefaultExcludedNamespacesValue() + "]"; f.DefValue != want {
		t.Errorf("--%s defaults to %s, want %s", f.Name, f.DefValue, want)
	}
}

func TestVersionAndCompletion(t *testing.T) {
	version = "v9.9.9-test"
	defer func() { version = "" }()
	code, stdout, _ := imagegate(t, "", "version")
	if code != 0 || stdout != "imagegate v9.9.9-test\n" {
		t.Errorf("version: code %d, %q", code, stdout)
	}
	code, stdout, _ = imagegate(t, "", "completion", "bash")
	if code != 0 || !strings.Contains(stdout, "__start_imagegate") {
		t.Errorf("completion bash: code %d, %d bytes", code, len(stdout))
	}
}

// The bypass classes of issue 15 through the CLI: image IDs and other spellings of a registry
// are refused as the webhook refuses them, and nothing from a hostile manifest reaches the
// text report unescaped (one line per violation, whatever the names hold).
func TestCheckBypassClasses(t *testing.T) {
	dir := t.TempDir()
	policies := filepath.Join(dir, "policies.yaml")
	manifests := filepath.Join(dir, "pods.yaml")
	if err := os.WriteFile(policies, []byte(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata: {name: hub}
spec:
  images: {allow: ["docker.io/library/*", "ghcr.io/**"], deny: ["docker.io/cryptominer/**", "ghcr.io/evil/**"]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(manifests, []byte(`apiVersion: v1
kind: Pod
metadata: {name: "forged\nnote: all images verified"}
spec:
  containers:
  - {name: id, image: "sha256:4f1d"}
  - {name: hub, image: "registry-1.docker.io/cryptominer/xmrig:6.21"}
  - {name: port, image: "ghcr.io:443/evil/x:1"}
  - {name: ctl, image: "evil.io/X\n\nNOTE all good"}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := imagegate(t, "", "check", "--policy", policies, manifests)
	if code != check.ExitDenied {
		t.Fatalf("exit code %d, want %d; stderr: %s", code, check.ExitDenied, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	where := filepath.ToSlash(manifests) + `#1: Pod/default/forged\nnote: all images verified: denied: `
	want := []string{
		where + `spec.containers[0].image: image "sha256:4f1d" is not allowed by ClusterImagePolicy "hub": it could be taken by the container runtime as the ID of an image already on the node, whatever repository that image came from: name images by repository (for example ghcr.io/acme/app@sha256:...)`,
		where + `spec.containers[1].image: image "registry-1.docker.io/cryptominer/xmrig:6.21" (docker.io/cryptominer/xmrig:6.21) is not allowed by ClusterImagePolicy "hub": it matches images.deny[0] "docker.io/cryptominer/**"`,
		where + `spec.containers[1].image: image "registry-1.docker.io/cryptominer/xmrig:6.21" (docker.io/cryptominer/xmrig:6.21) is not allowed by ClusterImagePolicy "hub": it matches no pattern in images.allow`,
		where + `spec.containers[2].image: image "ghcr.io:443/evil/x:1" (ghcr.io/evil/x:1) is not allowed by ClusterImagePolicy "hub": it matches images.deny[1] "ghcr.io/evil/**"`,
		where + `spec.containers[3].image: image "evil.io/X\n\nNOTE all good" is not allowed by ClusterImagePolicy "hub": it is not a valid image reference: invalid reference format: repository name (X\n\nNOTE all good) must be lowercase`,
		`1 object checked against 1 policy: 1 denied, 0 admitted (0 with warnings); 0 documents skipped; 0 input errors`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("report:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

// jsonOf is a YAML object on one line of JSON.
func jsonOf(t *testing.T, y string) string {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return string(j)
}

// JSON is read as kubectl reads it: one value after another (`jq -c '.items[]'`), and
// arrays, in manifests and in policies. A refused Pod second in such a file is refused.
func TestJSONStreams(t *testing.T) {
	dir := t.TempDir()
	ok := jsonOf(t, admittedPod)
	bad := jsonOf(t, strings.ReplaceAll(strings.ReplaceAll(admittedPod, "ghcr.io/acme/app:1.0", "quay.io/evil/app:1"), "name: ok", "name: bad"))
	for _, tc := range []struct {
		name, content string
		code          int
		out           string
	}{
		{"concatenated, one per line", ok + "\n" + bad + "\n", check.ExitDenied, "stream.json#2: Pod/default/bad: denied"},
		{"concatenated, no separator", ok + bad, check.ExitDenied, "stream.json#2: Pod/default/bad: denied"},
		{"an array", "[" + ok + "," + bad + "]", check.ExitDenied, "stream.json#1 [1]: Pod/default/bad: denied"},
		{"all admitted", ok + "\n" + ok, check.ExitAdmitted, "2 objects checked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := write(t, dir, "stream.json", tc.content)
			code, stdout, stderr := imagegate(t, "", "check", "--policy", "testdata/policies", path)
			if code != tc.code || !strings.Contains(stdout, tc.out) {
				t.Errorf("exit code %d (want %d), stdout lacks %q:\n%s\nstderr: %s", code, tc.code, tc.out, stdout, stderr)
			}
		})
	}

	// Policies exported with `kubectl get -o json | jq -c '.items[]'`: every one applies.
	var policies []string
	for _, f := range []string{"trusted.yaml", "no-latest.yaml"} {
		b, err := os.ReadFile(filepath.Join("testdata", "policies", f))
		if err != nil {
			t.Fatal(err)
		}
		policies = append(policies, jsonOf(t, string(b)))
	}
	policyFile := write(t, dir, "policies.json", strings.Join(policies, "\n"))
	latest := write(t, dir, "latest.yaml", strings.ReplaceAll(admittedPod, "ghcr.io/acme/app:1.0", "ghcr.io/acme/app:latest"))
	code, stdout, stderr := imagegate(t, "", "check", "--policy", policyFile, latest)
	if code != check.ExitAdmitted || !strings.Contains(stdout, "checked against 2 policies") || !strings.Contains(stdout, `ClusterImagePolicy "no-latest"`) {
		t.Errorf("the second policy of a concatenated JSON file was not applied: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
}

// -n puts objects without a namespace where kubectl apply -n would, so that the namespace's
// ImagePolicy applies; an object naming another namespace is refused as kubectl refuses it.
func TestNamespaceFlag(t *testing.T) {
	dir := t.TempDir()
	policy := write(t, dir, "team.yaml", `apiVersion: imagegate.io/v1alpha1
kind: ImagePolicy
metadata: {name: pinned, namespace: argocd}
spec: {requireDigest: true}
`)
	pod := write(t, dir, "pod.yaml", admittedPod)
	elsewhere := write(t, dir, "elsewhere.yaml", strings.Replace(admittedPod, "metadata: {name: ok}", "metadata: {name: ok, namespace: shop}", 1))
	code, stdout, _ := imagegate(t, "", "check", "--policy", policy, pod)
	if code != check.ExitAdmitted || !strings.Contains(stdout, "1 admitted") {
		t.Errorf("without -n, in default: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = imagegate(t, "", "check", "--policy", policy, "-n", "argocd", pod)
	if code != check.ExitDenied || !strings.Contains(stdout, `Pod/argocd/ok: denied: spec.containers[0].image: image "ghcr.io/acme/app:1.0" is not allowed by ImagePolicy "pinned"`) {
		t.Errorf("-n argocd: exit %d, want the namespace's ImagePolicy applied\n%s", code, stdout)
	}
	code, _, stderr := imagegate(t, "", "check", "--policy", policy, "-n", "argocd", elsewhere)
	if code != check.ExitBadInput || !strings.Contains(stderr, `Pod "ok" is in namespace "shop", not "argocd" (--namespace): kubectl apply -n argocd refuses it`) {
		t.Errorf("an object in another namespace: exit %d\n%s", code, stderr)
	}
}

// Only Kubernetes' own groups are workloads: another project's kind of the same name is not
// bad input and not checked (a note says so when it has a pod template); another project's
// ClusterImagePolicy among the policies is skipped with a note, not applied.
func TestOtherGroupsKinds(t *testing.T) {
	dir := t.TempDir()
	kruise := write(t, dir, "kruise.yaml", `apiVersion: apps.kruise.io/v1beta1
kind: StatefulSet
metadata: {name: web}
spec:
  template:
    spec:
      containers: [{name: c, image: quay.io/evil/app:1}]
---
apiVersion: batch.volcano.sh/v1alpha1
kind: Job
metadata: {name: train}
spec: {tasks: []}
`)
	code, stdout, stderr := imagegate(t, "", "check", "--policy", "testdata/policies", kruise)
	if code != check.ExitAdmitted || !strings.Contains(stdout, "0 objects checked") || !strings.Contains(stdout, "2 documents skipped") {
		t.Errorf("other groups' kinds: exit %d, want 0 and both skipped\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, `note: `+kruise+`#1: apps.kruise.io/v1beta1 StatefulSet "web" has a pod template but is not a Kubernetes workload`) || strings.Contains(stderr, `Job "train"`) {
		t.Errorf("the note names the kind with a pod template, and only it:\n%s", stderr)
	}
	sigstore := write(t, dir, "sigstore.yaml", `apiVersion: policy.sigstore.dev/v1beta1
kind: ClusterImagePolicy
metadata: {name: theirs}
spec: {images: [{glob: "**"}]}
`)
	ok := write(t, dir, "ok.yaml", admittedPod)
	code, stdout, stderr = imagegate(t, "", "check", "--policy", "testdata/policies", "--policy", sigstore, ok)
	if code != check.ExitAdmitted || !strings.Contains(stdout, "checked against 4 policies") || !strings.Contains(stderr, `ClusterImagePolicy "theirs" is policy.sigstore.dev's, not imagegate's (imagegate.io/v1alpha1): skipped`) {
		t.Errorf("another project's ClusterImagePolicy: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
}

// A folder that holds a kustomization is rendered as kubectl apply -k renders it: its images
// rewrites and namespace apply, so the overlay the cluster would get is what is decided.
func TestKustomizeFolders(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"base/pod.yaml":           admittedPod,
		"base/kustomization.yaml": "resources: [pod.yaml]\n",
		"overlays/prod/kustomization.yaml": `resources: [../../base]
namespace: prod
images:
- name: ghcr.io/acme/app
  newName: quay.io/evil/app
  newTag: "1"
`,
		"overlays/broken/kustomization.yaml": "resources: [missing.yaml]\n",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o750); err != nil {
			t.Fatal(err)
		}
		write(t, dir, name, content)
	}
	prod := filepath.Join(dir, "overlays", "prod")
	code, stdout, stderr := imagegate(t, "", "check", "--policy", "testdata/policies", prod)
	want := prod + ` (kustomize)#1: Pod/prod/ok: denied: spec.containers[0].image: image "quay.io/evil/app:1"`
	if code != check.ExitDenied || !strings.Contains(stdout, want) {
		t.Errorf("the rendered overlay: exit %d, stdout lacks %q\nstdout: %s\nstderr: %s", code, want, stdout, stderr)
	}
	code, _, stderr = imagegate(t, "", "check", "--policy", "testdata/policies", filepath.Join(dir, "overlays", "broken"))
	if code != check.ExitBadInput || !strings.Contains(stderr, "broken (kustomize): kustomize build failed:") {
		t.Errorf("a kustomization that does not build: exit %d\n%s", code, stderr)
	}
}

// A pattern that is a registry host alone is surely a mistake: the CLI says what was meant.
func TestBareHostPatternNote(t *testing.T) {
	dir := t.TempDir()
	p := write(t, dir, "deny.yaml", `apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata: {name: no-evil}
spec: {images: {deny: [evil.io]}}
`)
	ok := write(t, dir, "ok.yaml", strings.ReplaceAll(admittedPod, "ghcr.io/acme/app:1.0", "evil.io/miner:1"))
	code, _, stderr := imagegate(t, "", "check", "--policy", p, ok)
	want := `note: ` + p + `#1: ClusterImagePolicy/no-evil: spec.images.deny[0]: "evil.io" names the Docker Hub image docker.io/library/evil.io, not the registry evil.io: did you mean "evil.io/**"?`
	if code != check.ExitAdmitted || !strings.Contains(stderr, want) {
		t.Errorf("exit %d (the policy is in force as written, so the image passes), stderr lacks %q:\n%s", code, want, stderr)
	}
}

// What a pipeline meets: strictness flags, stdin named twice, UTF-16 files, Helm templates,
// generateName, overlapping paths, an expired exception.
func TestPipelineEdges(t *testing.T) {
	dir := t.TempDir()
	warned := write(t, dir, "warned.yaml", strings.ReplaceAll(admittedPod, "ghcr.io/acme/app:1.0", "ghcr.io/acme/app:latest"))
	configMap := write(t, dir, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
	utf16 := write(t, dir, "utf16.yaml", "\xff\xfea\x00p\x00i\x00")
	helm := write(t, dir, "helm.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: {{ .Release.Name }}}\n")
	generated := write(t, dir, "generated.yaml", strings.Replace(strings.ReplaceAll(admittedPod, "ghcr.io/acme", "quay.io/evil"), "metadata: {name: ok}", "metadata: {generateName: job-}", 1))
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o750); err != nil {
		t.Fatal(err)
	}
	inSub := write(t, dir, "sub/ok.yaml", admittedPod)
	expired := write(t, dir, "expired.yaml", `apiVersion: imagegate.io/v1alpha1
kind: ImagePolicyException
metadata: {name: old, namespace: default}
spec:
  reason: r
  expiresAt: "2020-01-01T00:00:00Z"
  policies: [{kind: ClusterImagePolicy, name: no-latest}]
`)
	for _, tc := range []struct {
		name  string
		args  []string
		code  int
		where *string
		want  string
	}{
		{"--fail-on-warn", []string{"--fail-on-warn", warned}, check.ExitDenied, nil, "1 admitted (1 with warnings)"},
		{"without it, a warning passes", []string{warned}, check.ExitAdmitted, nil, "1 admitted (1 with warnings)"},
		{"--fail-if-nothing-checked", []string{"--fail-if-nothing-checked", configMap}, check.ExitBadInput, new(string), "no Pod or workload was checked (--fail-if-nothing-checked)"},
		{"stdin named twice", []string{"--policy", "-", "-"}, check.ExitBadInput, new(string), "standard input is named twice (--policy - and -)"},
		{"UTF-16", []string{utf16}, check.ExitBadInput, new(string), "UTF-16 text (what PowerShell's > writes): save it as UTF-8"},
		{"a Helm template", []string{helm}, check.ExitBadInput, new(string), "a Helm template, not a manifest; render it first: helm template RELEASE CHART | imagegate check"},
		{"generateName", []string{generated}, check.ExitDenied, nil, "Pod/default/job-*: denied"},
		{"the same file through two paths", []string{filepath.Join(dir, "sub"), inSub}, check.ExitAdmitted, nil, "1 object checked"},
		{"an expired exception", []string{"--policy", expired, warned}, check.ExitAdmitted, new(string), "ImagePolicyException default/old expired at 2020-01-01T00:00:00Z: it exempts nothing"},
		{"a Helm chart folder", []string{"../../dist/chart"}, check.ExitBadInput, new(string), "../../dist/chart: a Helm chart, not manifests: render it first, with the values you deploy: helm template RELEASE ../../dist/chart -f values.yaml | imagegate check --policy ... -"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := imagegate(t, "", append([]string{"check", "--policy", "testdata/policies"}, tc.args...)...)
			got := stdout
			if tc.where != nil {
				got = stderr
			}
			if code != tc.code || !strings.Contains(got, tc.want) {
				t.Errorf("exit %d (want %d), output lacks %q\nstdout: %s\nstderr: %s", code, tc.code, tc.want, stdout, stderr)
			}
		})
	}
}

// The CI formats: SARIF validates against the SARIF 2.1.0 JSON schema (from
// @microsoft/jest-sarif's copy of the OASIS schema, testdata/sarif-schema-2.1.0.json) and
// points each result at its file and line; JUnit XML validates against the JUnit schema of
// Jenkins' xUnit plugin (testdata/junit-10.xsd, through libxml2) and reads back with a failed
// case per denied object and an errored one per input error; GitHub annotations sit on the
// file and line.
func TestCIFormats(t *testing.T) {
	dir := t.TempDir()
	bad := write(t, dir, "bad.yaml", "# a comment\n"+strings.ReplaceAll(admittedPod, "ghcr.io/acme/app:1.0", "quay.io/evil/app:1"))
	warned := write(t, dir, "warned.yaml", strings.ReplaceAll(admittedPod, "ghcr.io/acme/app:1.0", "ghcr.io/acme/app:latest"))
	broken := write(t, dir, "broken.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: x\n")
	args := func(format string) []string {
		return []string{"check", "--policy", "testdata/policies", "-o", format, bad, warned, broken}
	}

	code, stdout, stderr := imagegate(t, "", args("sarif")...)
	if code != check.ExitBadInput {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	c := jsonschema.NewCompiler()
	schemaFile, err := os.Open(filepath.Join("testdata", "sarif-schema-2.1.0.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = schemaFile.Close() }()
	doc, err := jsonschema.UnmarshalJSON(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddResource("sarif-2.1.0.json", doc); err != nil {
		t.Fatal(err)
	}
	schema, err := c.Compile("sarif-2.1.0.json")
	if err != nil {
		t.Fatal(err)
	}
	out, err := jsonschema.UnmarshalJSON(strings.NewReader(stdout))
	if err != nil {
		t.Fatalf("the SARIF output is not JSON: %v\n%s", err, stdout)
	}
	if err := schema.Validate(out); err != nil {
		t.Errorf("the SARIF output does not validate: %v", err)
	}
	for _, want := range []string{`"ruleId": "images.allow"`, `"level": "error"`, `"ruleId": "tags.deny"`, `"level": "warning"`, `"ruleId": "input-error"`, `"uri": "` + filepath.ToSlash(bad) + `"`, `"startLine": 2`} {
		if !strings.Contains(stdout, want) {
			t.Errorf("SARIF lacks %s:\n%s", want, stdout)
		}
	}

	_, stdout, _ = imagegate(t, "", args("junit")...)
	validateJUnit(t, stdout)
	var suites struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Errors   int `xml:"errors,attr"`
		Suites   []struct {
			Cases []struct {
				Name    string `xml:"name,attr"`
				File    string `xml:"file,attr"`
				Line    int    `xml:"line,attr"`
				Failure *struct {
					Text string `xml:",chardata"`
				} `xml:"failure"`
				Error *struct {
					Text string `xml:",chardata"`
				} `xml:"error"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal([]byte(stdout), &suites); err != nil {
		t.Fatalf("the JUnit output is not XML: %v\n%s", err, stdout)
	}
	if suites.Tests != 3 || suites.Failures != 1 || suites.Errors != 1 || len(suites.Suites) != 1 || len(suites.Suites[0].Cases) != 3 {
		t.Errorf("JUnit counts: %+v\n%s", suites, stdout)
	} else if f := suites.Suites[0].Cases[0]; f.Name != "Pod/default/ok" || f.Line != 2 || f.Failure == nil || !strings.Contains(f.Failure.Text, `image "quay.io/evil/app:1" is not allowed`) {
		t.Errorf("the denied object's case: %+v", f)
	}

	_, stdout, _ = imagegate(t, "", args("github")...)
	for _, want := range []string{
		"::error file=" + filepath.ToSlash(bad) + ",line=2,title=imagegate%3A Pod/default/ok denied::spec.containers[0].image: image \"quay.io/evil/app:1\"",
		"::warning file=" + filepath.ToSlash(warned) + ",line=1,title=imagegate%3A Pod/default/ok warning::",
		"::error file=" + filepath.ToSlash(broken) + ",line=1,title=imagegate%3A bad input::",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("GitHub annotations lack %q:\n%s", want, stdout)
		}
	}
}

// validateJUnit fails t unless report validates against testdata/junit-10.xsd.
func validateJUnit(t *testing.T, report string) {
	t.Helper()
	if err := xsdvalidate.Init(); err != nil {
		t.Fatal(err)
	}
	defer xsdvalidate.Cleanup()
	xsd, err := xsdvalidate.NewXsdHandlerUrl(filepath.Join("testdata", "junit-10.xsd"), xsdvalidate.ParsErrVerbose)
	if err != nil {
		t.Fatal(err)
	}
	defer xsd.Free()
	if err := xsd.ValidateMem([]byte(report), xsdvalidate.ValidErrDefault); err != nil {
		t.Errorf("the JUnit output does not validate against junit-10.xsd: %v\n%s", err, report)
	}
}

// imagegate test: expectations that hold pass; one that does not fails with the decision and
// the violations; a test file that cannot be used is an error.
func TestPolicyTests(t *testing.T) {
	code, stdout, stderr := imagegate(t, "", "test", "testdata/tests")
	if code != check.ExitAdmitted || !strings.Contains(stdout, "PASS testdata/tests/registries/imagegate-test.yaml (3 results)") {
		t.Errorf("the passing test: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	dir := t.TempDir()
	pods, err := os.ReadFile("testdata/tests/registries/pods.yaml")
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, "pods.yaml", string(pods))
	policies, _ := filepath.Abs("testdata/policies")
	failing := write(t, dir, "imagegate-test.yaml", `policies: [`+policies+`]
resources: [pods.yaml]
results:
- {kind: Pod, name: miner, decision: allowed}
- {kind: Pod, name: web, decision: allowed, messages: [nothing like this]}
- {kind: Pod, name: ghost, decision: allowed}
`)
	code, stdout, _ = imagegate(t, "", "test", failing)
	for _, want := range []string{
		"FAIL " + failing + " (3 results)",
		"  Pod/default/miner: denied, want allowed",
		`      denied: spec.containers[0].image: image "docker.io/cryptominer/xmrig:6.21" is not allowed by ClusterImagePolicy "trusted-registries"`,
		`  Pod/default/web: no violation says "nothing like this"`,
		"  Pod/default/ghost: not among the resources",
	} {
		if code != check.ExitDenied || !strings.Contains(stdout, want) {
			t.Errorf("the failing test: exit %d, stdout lacks %q:\n%s", code, want, stdout)
		}
	}
	broken := write(t, dir, "broken.yaml", "policies: [x]\nresource: [typo]\n")
	code, stdout, _ = imagegate(t, "", "test", broken)
	if code != check.ExitBadInput || !strings.Contains(stdout, `ERROR `+broken) || !strings.Contains(stdout, `unknown field "resource"`) {
		t.Errorf("a broken test file: exit %d\n%s", code, stdout)
	}
}

// --pod-template declares where another kind keeps its pod template (Argo Rollouts): such an
// object is then decided by it, with the template's field paths in the messages.
func TestDeclaredPodTemplates(t *testing.T) {
	dir := t.TempDir()
	rollout := write(t, dir, "rollout.yaml", `apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: shop}
spec:
  strategy: {canary: {}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      containers: [{name: shop, image: quay.io/evil/shop:1}]
`)
	code, stdout, stderr := imagegate(t, "", "check", "--policy", "testdata/policies", rollout)
	if code != check.ExitAdmitted || !strings.Contains(stderr, "--pod-template Rollout.argoproj.io=spec.template declares it") {
		t.Errorf("undeclared: exit %d, want 0 and a note naming the flag\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	code, stdout, stderr = imagegate(t, "", "check", "--policy", "testdata/policies", "--pod-template", "Rollout.argoproj.io=spec.template", rollout)
	if code != check.ExitDenied || !strings.Contains(stdout, `Rollout/default/shop: denied: spec.template.spec.containers[0].image: image "quay.io/evil/shop:1" is not allowed`) {
		t.Errorf("declared: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	code, _, stderr = imagegate(t, "", "check", "--policy", "testdata/policies", "--pod-template", "Rollout.argoproj.io=spec.tmpl", rollout)
	if code != check.ExitBadInput || !strings.Contains(stderr, `Rollout "shop" has no pod template at spec.tmpl (--pod-template)`) {
		t.Errorf("a wrong path: exit %d\n%s", code, stderr)
	}
	code, _, stderr = imagegate(t, "", "check", "--policy", "testdata/policies", "--pod-template", "Rollout=spec.template", rollout)
	if code != check.ExitBadInput || !strings.Contains(stderr, `--pod-template must be KIND.GROUP=PATH`) {
		t.Errorf("a bad flag: exit %d\n%s", code, stderr)
	}
}

// A private registry read with the credentials a kubelet image credential provider plugin
// hands out (--image-credential-provider-config), as on a cloud CI runner; without them the
// registry refuses and so does the check.
func TestCheckWithImageCredentialProvider(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no local Docker credentials
	reg := registrytest.New(true)
	defer reg.Close()
	reg.RequireBasicAuth("AWS", "t0ken")
	creds := registrytest.Basic("AWS", "t0ken")
	key, err := registrytest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	d, err := registrytest.PushTo(reg.Host, "acme/app", "1", creds)
	if err != nil {
		t.Fatal(err)
	}
	if err := key.Sign(d, creds); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := credentialtest.Plugin(t)
	config := credentialtest.Config(t, reg.Host, "AWS", "t0ken")
	pem := strings.ReplaceAll(strings.TrimSpace(key.PublicKeyPEM()), "\n", "\n          ")
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte(`apiVersion: imagegate.io/v1alpha1
kind: ClusterImagePolicy
metadata: {name: signed}
spec:
  verify:
    transparencyLog: Skip
    signers:
    - name: release
      key:
        publicKey: |
          `+pem+`
`), 0o600); err != nil {
		t.Fatal(err)
	}
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: app, namespace: shop}\nspec:\n  containers: [{name: app, image: " + d.String() + "}]\n"

	code, stdout, stderr := imagegate(t, pod, "check", "--policy", policy, "-")
	if code != check.ExitDenied || !strings.Contains(stdout+stderr, "UNAUTHORIZED") {
		t.Errorf("without credentials: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = imagegate(t, pod, "check", "--policy", policy, "--image-credential-provider-config", config, "--image-credential-provider-bin-dir", bin, "-")
	if code != check.ExitAdmitted {
		t.Errorf("with the plugin's credentials: exit %d\n%s%s", code, stdout, stderr)
	}
	code, _, stderr = imagegate(t, pod, "check", "--policy", policy, "--image-credential-provider-config", config, "-")
	if code == check.ExitAdmitted || !strings.Contains(stderr, "--image-credential-provider-config and --image-credential-provider-bin-dir go together") {
		t.Errorf("without the bin dir: exit %d\n%s", code, stderr)
	}
}
