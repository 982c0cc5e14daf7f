// Command imagegate is the offline CLI: `imagegate check` decides the Pods and pod templates
// of manifests with the webhook's own engine, for CI pipelines.
package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/check"
	"github.com/imagegate/imagegate/internal/credentials"
	"github.com/imagegate/imagegate/internal/manifest"
	"github.com/imagegate/imagegate/internal/podspec"
	imagegateversion "github.com/imagegate/imagegate/internal/version"
)

// version is set at build time (-ldflags "-X main.version=v0.1.0"); otherwise it comes from
// the module or VCS information Go records.
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes the CLI and returns the exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	code := check.ExitAdmitted
	root := newRoot(stdin, &code)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.Execute(); err != nil {
		_, _ = fmt.Fprintf(stderr, "error: %v\n", err)
		return check.ExitBadInput
	}
	return code
}

func newRoot(stdin io.Reader, code *int) *cobra.Command {
	root := &cobra.Command{
		Use:           "imagegate",
		Short:         "Check Kubernetes manifests against imagegate image policies, offline",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newCheck(stdin, code), newTest(code), newVersion())
	return root
}

func newCheck(stdin io.Reader, code *int) *cobra.Command {
	var (
		policies  []string
		excluded  []string
		output    string
		namespace string
		maxSize   string
		offline   bool

		failOnWarn, failIfNothingChecked bool

		podTemplates                                     []string
		providerConfig, providerBinDir, cloudCredentials string

		fromCluster, running                 bool
		kubeconfig, kubeContext, imagegateNS string
	)
	cmd := &cobra.Command{
		Use:   "check --policy PATH [--policy PATH ...] [-n NAMESPACE] [-o text|json|sarif|junit|github] FILE_OR_DIR ...",
		Short: "Decide the Pods and pod templates of manifests as the imagegate webhook would",
		Long: `check reads ImagePolicies and ClusterImagePolicies from the --policy files and folders,
validates them as the apiserver would, and decides every Pod and the pod template of every
Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob and ReplicationController in the
given files and folders ("-" is standard input) with the webhook's own engine and messages.

Namespace objects among the manifests supply the labels that namespaceSelector matches;
objects without a namespace are in "default", or in --namespace. Other kinds, and objects in
the namespaces the installed webhook does not cover (--excluded-namespaces), are skipped and
counted; another group's kind with a pod template (Argo Rollouts, OpenKruise) gets a note.

Verify rules are checked as the webhooks check them for the Pods: each tag is resolved to the
digest it names now and the signatures are verified at that digest, in the registries, with
the local Docker credentials (what docker login writes). Keys, trusted roots and pull
secrets that the rules name are read from Secrets and ConfigMaps in the --policy files.
--offline contacts no registry and reports each image a verify rule covers as not verified.

ImagePolicyExceptions in the --policy files apply as in the cluster, judged at the time of the
check: an expired one exempts nothing. Each violation an exception lifts is reported as
"exempt", with the exception and its expiry.

Exit status: 0 when everything would be admitted, 1 when anything would be denied (or, with
--fail-on-warn, admitted with a warning), 2 when an input could not be read or a policy is
invalid (or, with --fail-if-nothing-checked, nothing was checked).`,
		Example: `  imagegate check --policy config/samples deploy/
  kustomize build overlays/prod | imagegate check --policy policies/ -
  imagegate check --policy policies/ -n argocd install.yaml
  imagegate check --policy policies/ -o json manifests/ > report.json`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && !running {
				return errors.New("name at least one manifest file or folder (or - for standard input), or check what runs with --cluster --running")
			}
			if running && !fromCluster {
				return errors.New("--running reads the cluster's Pods: it needs --cluster")
			}
			if !slices.Contains(check.Formats, output) {
				return fmt.Errorf("--output must be one of %s, not %q", strings.Join(check.Formats, ", "), output)
			}
			limit, err := resource.ParseQuantity(maxSize)
			if err != nil || limit.Value() <= 0 {
				return fmt.Errorf("--max-file-size must be a size such as 32Mi, not %q", maxSize)
			}
			templates, err := parsePodTemplates(podTemplates)
			if err != nil {
				return err
			}
			var cluster client.Reader
			var clusterName string
			if fromCluster {
				if cluster, clusterName, err = clusterClient(kubeconfig, kubeContext); err != nil {
					return err
				}
			}
			keychain, err := credentials.Keychain(providerConfig, providerBinDir, cloudCredentials, func(provider, stderr string) {
				_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "image credential provider %q: %s\n", provider, strings.TrimSpace(stderr))
			})
			if err != nil {
				return err
			}
			report, err := check.Run(cmd.Context(), check.Options{
				Keychain: keychain,
				Cluster:  cluster, ClusterName: clusterName, ClusterNamespace: imagegateNS,
				PolicyPaths: policies, Paths: args, Stdin: stdin, MaxFileSize: limit.Value(),
				ExcludedNamespaces: excluded, Offline: offline, Namespace: namespace, PodTemplates: templates,
				Running: running,
			})
			if err != nil {
				return err
			}
			report.Strict(failOnWarn, failIfNothingChecked)
			if err := report.Write(output, imagegateversion.Of(version), cmd.OutOrStdout(), cmd.ErrOrStderr()); err != nil {
				return fmt.Errorf("writing the report: %w", err)
			}
			*code = report.ExitCode()
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&policies, "policy", "p", nil, "a file or folder of ImagePolicies and ClusterImagePolicies (repeatable; required)")
	cmd.Flags().StringSliceVar(&excluded, podspec.ExcludedNamespacesFlag, podspec.DefaultExcludedNamespaces, "comma-separated namespaces whose objects are not checked, as the installed webhook does not cover them (repeatable; empty to check all); the manager's flag of the same name")
	// The name of earlier releases, kept so that existing pipelines keep working.
	cmd.Flags().StringSliceVar(&excluded, "exclude-namespace", podspec.DefaultExcludedNamespaces, "")
	if err := cmd.Flags().MarkDeprecated("exclude-namespace", "use --"+podspec.ExcludedNamespacesFlag); err != nil {
		panic(err)
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text, json, sarif (SARIF 2.1.0, for code scanning), junit (JUnit XML) or github (GitHub Actions annotations)")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", `the namespace of the manifests' objects that name none, as kubectl apply -n (default "default"); an object that names another is an input error`)
	cmd.Flags().BoolVar(&failOnWarn, "fail-on-warn", false, "exit 1 when anything would be admitted with a warning (Warn-mode violations), as when denied")
	cmd.Flags().BoolVar(&failIfNothingChecked, "fail-if-nothing-checked", false, "exit 2 when no Pod or workload was found to check (a wrong path, an empty render)")
	cmd.Flags().BoolVar(&offline, "offline", false, "skip verify rules: contact no registry, and report each image they cover as not verified")
	cmd.Flags().StringVar(&maxSize, "max-file-size", resource.NewQuantity(manifest.DefaultMaxFileSize, resource.BinarySI).String(), "the largest input file read")
	cmd.Flags().StringArrayVar(&podTemplates, "pod-template", nil, "KIND.GROUP=PATH: objects of that kind keep a pod template (metadata and spec) at PATH and are checked by it, e.g. Rollout.argoproj.io=spec.template (repeatable)")
	cmd.Flags().StringVar(&providerConfig, "image-credential-provider-config", "", "a kubelet CredentialProviderConfig file: its image credential provider plugins give the credentials of the registries they match, before the Docker credentials (as the manager's flag of the same name)")
	cmd.Flags().StringVar(&providerBinDir, "image-credential-provider-bin-dir", "", "the directory holding the plugins --image-credential-provider-config names")
	cmd.Flags().StringVar(&cloudCredentials, "cloud-registry-credentials", "", "comma-separated clouds whose registries are read with your cloud identity, before the Docker credentials: ecr, google, acr (as the manager's flag of the same name)")
	cmd.Flags().BoolVar(&fromCluster, "cluster", false, "also read the policies and exceptions in force, the Namespaces' labels and the Secrets and ConfigMaps of imagegate's namespace from the cluster of the current kubeconfig context (a policy in the --policy files replaces the cluster's of the same name)")
	cmd.Flags().BoolVar(&running, "running", false, "with --cluster: also check the Pods running in the cluster, at the digests their containers run: what the policies (those of the --policy files replacing the cluster's) would refuse among what runs now, at the Pods' next restart; no manifest argument is then needed")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "with --cluster: the kubeconfig file (default $KUBECONFIG, then ~/.kube/config)")
	cmd.Flags().StringVar(&kubeContext, "context", "", "with --cluster: the kubeconfig context (default its current one)")
	cmd.Flags().StringVar(&imagegateNS, "imagegate-namespace", "imagegate-system", "with --cluster: imagegate's namespace, whose Secrets and ConfigMaps verify rules name")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(check.Formats, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// parsePodTemplates reads --pod-template values: KIND.GROUP=PATH.
func parsePodTemplates(values []string) (map[schema.GroupKind]string, error) {
	out := map[schema.GroupKind]string{}
	for _, v := range values {
		kindGroup, path, ok := strings.Cut(v, "=")
		kind, group, dotted := strings.Cut(kindGroup, ".")
		if !ok || !dotted || kind == "" || group == "" || path == "" || strings.HasPrefix(path, ".") || strings.HasSuffix(path, ".") {
			return nil, fmt.Errorf("--pod-template must be KIND.GROUP=PATH, such as Rollout.argoproj.io=spec.template, not %q", v)
		}
		out[schema.GroupKind{Group: group, Kind: kind}] = path
	}
	return out, nil
}

// clusterClient returns a client for the cluster of kubeconfig's context (both may be
// empty: kubectl's defaults) and the context's name.
func clusterClient(kubeconfig, kubeContext string) (client.Reader, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext})
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, "", fmt.Errorf("--cluster: reading the kubeconfig: %w", err)
	}
	name := kubeContext
	if name == "" {
		name = raw.CurrentContext
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("--cluster: the kubeconfig context %q: %w", name, err)
	}
	cfg.Timeout = 30 * time.Second
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, "", err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, "", err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, "", fmt.Errorf("--cluster: the cluster of context %q: %w", name, err)
	}
	return c, name, nil
}

func newTest(code *int) *cobra.Command {
	return &cobra.Command{
		Use:   "test FILE_OR_DIR ...",
		Short: "Run policy tests: the decision each object of a test file must get",
		Long: `test runs policy tests, as policy authors write them for their own CI. A test file
(folders are searched for files named ` + check.TestFileName + `) names policies and
resources, relative to itself, and the decision each object must get:

  policies: [../policies]
  resources: [pods.yaml]
  results:
  - kind: Pod
    name: miner
    decision: denied            # allowed, allowed-with-warnings, allowed-with-audit-violations
    messages: ["matches no pattern in images.allow"]   # optional, each in a violation

Objects are decided exactly as imagegate check decides them; verify rules are skipped unless
the file sets verify: true. Exit status: 0 when every expectation holds, 1 when one does not,
2 when an input could not be read.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var files []string
			for _, a := range args {
				info, err := os.Stat(a)
				if err != nil {
					return err
				}
				if !info.IsDir() {
					files = append(files, a)
					continue
				}
				if err := filepath.WalkDir(a, func(path string, d fs.DirEntry, err error) error {
					if err == nil && !d.IsDir() && d.Name() == check.TestFileName {
						files = append(files, path)
					}
					return err
				}); err != nil {
					return err
				}
			}
			if len(files) == 0 {
				return fmt.Errorf("no %s in %s", check.TestFileName, strings.Join(args, ", "))
			}
			outcomes := make([]check.TestOutcome, len(files))
			for i, f := range files {
				outcomes[i] = check.RunTest(cmd.Context(), f)
			}
			c, err := check.WriteTestOutcomes(cmd.OutOrStdout(), outcomes)
			*code = c
			return err
		},
	}
}

func newVersion() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "imagegate %s\n", imagegateversion.Of(version))
			return err
		},
	}
}
