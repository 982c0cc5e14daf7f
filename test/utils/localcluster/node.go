package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// NodeOptions configures StartNode.
type NodeOptions struct {
	// BinDir holds containerd, containerd-shim-runc-v2, runc, kubelet, pause and cni/
	// (hack/setup-node.sh builds them and prints the folder).
	BinDir string
	// Registry is the host:port of the plain-HTTP registry that answers for every registry
	// host (ContainerdOptions.Registry). It must hold the sandbox image, SandboxImage.
	Registry string
	// SandboxImage is the image of every Pod's sandbox (its "pause" container), pulled from
	// Registry: an image of the pause program (registrytest.PushProgram).
	SandboxImage string
	// Name is the node's name; empty: "imagegate-node".
	Name string
	// Taint, when set, is the key of a NoSchedule taint the node registers with: only Pods
	// that tolerate it are placed on it (a test's own), not every Pending Pod of the cluster.
	Taint string
	// Progress, when set, is told what is happening.
	Progress func(format string, args ...any)
}

// Node is a kubelet with containerd and runc, and the kube-scheduler that places Pods on it,
// running Pods for a local control plane. The kubelet and containerd run in a PID and mount
// namespace of their own (unshare): when the node stops, or this program dies, the kernel
// ends every process of it (shims and containers included) and drops every mount it made (the kubelet's volumes, the Pods' network namespaces, a tmpfs
// over /var/log, where the kubelet writes at fixed paths). Nothing is written outside its
// temporary folder but the cgroups the containers ran in, all under a cgroup named after that
// folder, which Stop removes. A node whose program was killed leaves its folder and that
// cgroup (empty: the kernel ended its processes); the next StartNode removes both.
type Node struct {
	// Name is the node's name.
	Name string
	// Dir is the node's folder: configurations, state, sockets, logs.
	Dir string
	// Images is containerd's CRI image service, which the kubelet pulls with: a test can pull
	// image strings through it as the kubelet would, and ask what the node holds.
	Images ImageService

	proc      *process
	scheduler *process
	conn      *grpc.ClientConn
	progress  func(string, ...any)
}

// nodeImages and nodeRuntime are what a kubelet needs of containerdConfig: the sandbox image
// pinned, runc from BinDir, network namespaces under containerd's state (not /run/netns), and
// no OOM score adjustment below containerd's own (the sandbox may not lower it: "failed to
// update /proc/self/oom_score_adj: Permission denied").
const (
	nodeImages = `    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = %q
`
	nodeRuntime = `    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = %q
`
)

// cniConfig gives each Pod an eth0 of its own (the tap plugin: a device inside the Pod's
// network namespace, nothing on the host, no route, no forwarding) with an address from
// host-local, whose state stays in the node's folder.
const cniConfig = `{
  "cniVersion": "1.0.0",
  "name": "imagegate-node",
  "plugins": [
    {"type": "tap", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "dataDir": %q}},
    {"type": "loopback"}
  ]
}
`

// kubeletConfig runs the kubelet on this machine as it is: cgroup v1 allowed (Kubernetes
// 1.35 and later refuse it unless failCgroupV1 is false), cgroupfs with every cgroup of the
// node (kubepods and the QoS classes, each Pod's, each container's, which containerd puts
// under the Pod's) under a cgroup named after the node's folder (cgroupRoot), no node
// allocatable enforcement, swap allowed, no seccomp default, its server on loopback only, its
// folders in the node's.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
cgroupsPerQOS: true
cgroupRoot: %[5]q
enforceNodeAllocatable: []
containerRuntimeEndpoint: unix://%[1]s
authentication: {anonymous: {enabled: false}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
podLogsDir: %[2]q
volumePluginDir: %[3]q
resolvConf: ""
address: 127.0.0.1
port: %[4]d
readOnlyPort: 0
healthzPort: 0
localStorageCapacityIsolation: false
evictionHard: {}
imageGCHighThresholdPercent: 100
makeIPTablesUtilChains: false
seccompDefault: false
registerNode: true
`

// nodeScript runs inside the node's namespaces: a tmpfs over /var/log (the kubelet's
// /var/log/containers links), containerd, and the kubelet once containerd's socket exists.
// It is PID 1 of the namespace: when it ends, the kernel ends the rest.
const nodeScript = `set -eu
mount -t tmpfs -o mode=0755 imagegate-node /var/log
"$NODE_BIN/containerd" --config "$NODE_DIR/containerd.toml" --log-level info >"$NODE_DIR/containerd.log" 2>&1 &
i=0
while [ ! -S "$NODE_DIR/containerd.sock" ]; do
  i=$((i + 1))
  if [ "$i" -gt 300 ]; then echo "containerd did not open its socket" >&2; exit 1; fi
  sleep 0.2
done
"$NODE_BIN/kubelet" "$@" >"$NODE_DIR/kubelet.log" 2>&1 &
wait
`

// StartNode starts kube-scheduler, containerd and a kubelet registered as opts.Name against
// the cluster (with its admin kubeconfig), and returns once the node is Ready. It must run as
// root, on Linux, with unshare (util-linux).
func (c *Cluster) StartNode(ctx context.Context, opts NodeOptions) (_ *Node, err error) {
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		return nil, errors.New("a node runs containers: it needs Linux and root")
	}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "runc", "kubelet", "kube-scheduler", "cni/tap", "cni/host-local", "cni/loopback"} {
		if _, err := os.Stat(filepath.Join(opts.BinDir, b)); err != nil {
			return nil, fmt.Errorf("%s not found in %s: run `make setup-node` first: %w", b, opts.BinDir, err)
		}
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return nil, fmt.Errorf("a node needs unshare (util-linux): %w", err)
	}
	ip := HostIPv4()
	if ip == nil {
		return nil, errors.New("the kubelet needs a non-loopback IPv4 address on this machine, and there is none")
	}
	n := &Node{Name: opts.Name, progress: opts.Progress}
	if n.Name == "" {
		n.Name = "imagegate-node"
	}
	if n.progress == nil {
		n.progress = func(string, ...any) {}
	}
	if err := removeStale(); err != nil {
		n.progress("what an earlier node left could not all be removed: %v", err)
	}
	// A short path: unix socket paths are limited to 107 bytes.
	if n.Dir, err = os.MkdirTemp("", "imagegate-node-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if stopErr := n.Stop(); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
		}
	}()
	dir := func(parts ...string) string { return filepath.Join(append([]string{n.Dir}, parts...)...) }
	for _, d := range []string{dir("root"), dir("state"), dir("opt"), dir("certs.d", "_default"), dir("cni", "conf"), dir("cni", "ipam"),
		dir("kubelet"), dir("pod-logs"), dir("volume-plugins")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	socket := dir("containerd.sock")
	files := map[string]string{
		"containerd.toml": fmt.Sprintf(containerdConfig, dir("root"), dir("state"), socket, dir("containerd.sock.ttrpc"), dir("opt"),
			dir("certs.d"), filepath.Join(opts.BinDir, "cni"), dir("cni", "conf"), "linux/"+runtime.GOARCH,
			fmt.Sprintf(nodeImages, opts.SandboxImage), fmt.Sprintf(nodeRuntime, filepath.Join(opts.BinDir, "runc"))),
		"certs.d/_default/hosts.toml":    fmt.Sprintf(registryHosts, opts.Registry),
		"cni/conf/10-imagegate.conflist": fmt.Sprintf(cniConfig, dir("cni", "ipam")),
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	kubelet := fmt.Sprintf(kubeletConfig, socket, dir("pod-logs"), dir("volume-plugins"), port, "/"+filepath.Base(n.Dir))
	if opts.Taint != "" {
		kubelet += fmt.Sprintf("registerWithTaints: [{key: %q, effect: NoSchedule}]\n", opts.Taint)
	}
	files["kubelet.yaml"] = kubelet
	for name, content := range files {
		if err := os.WriteFile(dir(name), []byte(content), 0o600); err != nil {
			return nil, err
		}
	}
	args := []string{"--pid", "--fork", "--kill-child", "--mount", "--propagation", "private", "--mount-proc",
		"/bin/sh", "-c", nodeScript, "imagegate-node",
		"--config", dir("kubelet.yaml"), "--kubeconfig", c.Kubeconfig,
		"--root-dir", dir("kubelet"), "--cert-dir", dir("kubelet", "pki"),
		"--hostname-override", n.Name, "--node-ip", ip.String(), "--v", "1"}
	env := []string{"NODE_BIN=" + opts.BinDir, "NODE_DIR=" + n.Dir,
		// containerd finds containerd-shim-runc-v2 on its PATH.
		"PATH=" + opts.BinDir + string(os.PathListSeparator) + os.Getenv("PATH")}
	n.progress("starting kube-scheduler")
	if n.scheduler, err = startProcess(n.Dir, "kube-scheduler", filepath.Join(opts.BinDir, "kube-scheduler"), []string{
		"--kubeconfig=" + c.Kubeconfig, "--authentication-kubeconfig=" + c.Kubeconfig, "--authorization-kubeconfig=" + c.Kubeconfig,
		"--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false", "--v=1",
	}, nil); err != nil {
		return nil, err
	}
	if err := makeCgroups(filepath.Base(n.Dir)); err != nil {
		return nil, err
	}
	n.progress("starting containerd and a kubelet (node %s, %s) in their own PID and mount namespaces", n.Name, ip)
	if n.proc, err = startProcess(n.Dir, "node", unshare, args, env); err != nil {
		return nil, err
	}
	if err := os.WriteFile(dir("node.pid"), []byte(strconv.Itoa(n.proc.cmd.Process.Pid)), 0o600); err != nil {
		return nil, err
	}
	if n.conn, err = criClient(socket); err != nil {
		return nil, err
	}
	n.Images = ImageService{runtimeapi.NewImageServiceClient(n.conn)}
	deadline := time.Now().Add(120 * time.Second)
	for {
		if ended, werr := n.proc.exited(); ended {
			return nil, fmt.Errorf("the node exited at start (%w): %s\n%s", werr, n.proc.tail(), n.Log())
		}
		if ready, _ := c.Kubectl("get", "node", n.Name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`).Output(); string(ready) == "True" {
			n.progress("node %s is Ready", n.Name)
			return n, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("node %s was not Ready within 120s: %s", n.Name, n.Log())
		}
		time.Sleep(time.Second)
	}
}

// Log is the end of the kubelet's and containerd's logs, for failure messages.
func (n *Node) Log() string {
	var b strings.Builder
	for _, name := range []string{"kubelet.log", "containerd.log"} {
		fmt.Fprintf(&b, "--- %s ---\n%s\n", name, tailFile(filepath.Join(n.Dir, name), 3000))
	}
	return b.String()
}

// Stop ends the node (the kernel ends every process and mount of its namespaces), removes the
// cgroups its containers left and its folder. It can be called more than once.
func (n *Node) Stop() error {
	var errs []error
	if n.conn != nil {
		_ = n.conn.Close()
		n.conn = nil
	}
	if n.proc != nil {
		// unshare --fork ignores SIGTERM while it waits, and nothing of the node needs to
		// shut down cleanly: SIGKILL. With --kill-child the namespace's first process gets
		// SIGKILL when unshare ends, and with it every process of the namespace.
		n.proc.kill()
		n.proc = nil
	}
	if n.scheduler != nil {
		errs = append(errs, n.scheduler.stop(10*time.Second))
		n.scheduler = nil
	}
	if n.Dir != "" {
		errs = append(errs, removeCgroups(filepath.Base(n.Dir)))
	}
	if n.Dir != "" && strings.Contains(n.Dir, "imagegate-node-") {
		errs = append(errs, os.RemoveAll(n.Dir))
		n.Dir = ""
	}
	return errors.Join(errs...)
}

// removeCgroups removes the cgroup named name from every hierarchy of /sys/fs/cgroup (v1 and
// v2), with the cgroups under it, deepest first. A cgroup can be removed once no process is in
// it, which may take a moment after the kill.
func removeCgroups(name string) error {
	roots, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", name))
	roots = append(roots, filepath.Join("/sys/fs/cgroup", name))
	var dirs []string
	for _, root := range roots {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	var errs []error
	for _, d := range dirs {
		var err error
		for range 50 {
			if err = os.Remove(d); err == nil || errors.Is(err, fs.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("removing the cgroup the node left: %w", err))
		}
	}
	return errors.Join(errs...)
}

// makeCgroups creates the cgroup named name in every hierarchy of /sys/fs/cgroup: the
// kubelet's cgroupRoot, which must exist.
func makeCgroups(name string) error {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil { // v2
		return os.Mkdir(filepath.Join("/sys/fs/cgroup", name), 0o750)
	}
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hierarchies {
		if fi, err := os.Lstat(h); err != nil || !fi.IsDir() {
			continue // cpu and cpuacct can be links to cpu,cpuacct
		}
		if err := os.Mkdir(filepath.Join(h, name), 0o750); err != nil {
			return fmt.Errorf("creating the node's cgroup: %w", err)
		}
	}
	return nil
}

// removeStale removes what nodes killed with their program left: each imagegate-node-*
// folder whose node.pid names no running process, and its cgroups.
func removeStale() error {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "imagegate-node-*"))
	var errs []error
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "node.pid"))
		if err != nil {
			continue // starting, or not a node's
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || syscall.Kill(pid, 0) == nil {
			continue
		}
		errs = append(errs, removeCgroups(filepath.Base(d)), os.RemoveAll(d))
	}
	return errors.Join(errs...)
}
