package localcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ContainerdOptions configures StartContainerd.
type ContainerdOptions struct {
	// Binary is the containerd binary (hack/setup-node.sh builds it under bin/node/).
	Binary string
	// Dir is the working folder: containerd's root and state, its sockets, its registry
	// configuration and its log. Empty: a new temporary folder, removed by Stop.
	Dir string
	// Registry is the host:port of a plain-HTTP registry that answers for every registry
	// host: containerd sends it each pull, with the host the image names in the query
	// parameter ns (containerd's mirror protocol) unless the image names Registry itself.
	Registry string
}

// Containerd is a running containerd with its CRI plugin on a socket of its own: the
// container runtime a kubelet would pass each Pod's image strings to, as they are stored.
type Containerd struct {
	// Dir is the working folder.
	Dir string
	// Socket is the path of containerd's gRPC socket (the CRI endpoint is unix://Socket).
	Socket string
	// Images is the CRI image service: what the kubelet calls to pull and look up images.
	Images runtimeapi.ImageServiceClient

	proc      *process
	conn      *grpc.ClientConn
	removeDir bool
}

// containerdConfig keeps containerd to its folder: root, state, sockets, registry hosts,
// CNI and NRI paths there, never /etc, /var/lib/containerd, /opt or /run/containerd. The
// native snapshotter unpacks layers with plain file copies, so a pull leaves no mount behind.
// Arguments 10 and 11 add lines to the CRI image and runtime sections (a node's, below).
const containerdConfig = `version = 3
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = %[5]q
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'native'
%[10]s    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = %[6]q
  [plugins.'io.containerd.cri.v1.runtime']
    cdi_spec_dirs = []
%[11]s    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = [%[7]q]
      conf_dir = %[8]q
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
  [plugins.'io.containerd.transfer.v1.local']
    [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
      platform = %[9]q
      snapshotter = 'native'
`

// registryHosts sends every registry host's pulls to one plain-HTTP registry (containerd's
// hosts.toml in the _default folder, which applies to every host without a folder of its own).
const registryHosts = `server = "http://%[1]s"

[host."http://%[1]s"]
  capabilities = ["pull", "resolve"]
`

// StartContainerd starts containerd as a child process and returns once its CRI image service
// answers. It must run as root. Stop ends it.
func StartContainerd(ctx context.Context, opts ContainerdOptions) (_ *Containerd, err error) {
	if _, err := os.Stat(opts.Binary); err != nil {
		return nil, fmt.Errorf("containerd not found: run `make setup-node` first: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("containerd must run as root")
	}
	c := &Containerd{Dir: opts.Dir}
	if c.Dir == "" {
		// A short path: unix socket paths are limited to 107 bytes.
		if c.Dir, err = os.MkdirTemp("", "imagegate-node-"); err != nil {
			return nil, err
		}
		c.removeDir = true
	}
	defer func() {
		if err != nil {
			_ = c.Stop()
		}
	}()
	dir := func(parts ...string) string { return filepath.Join(append([]string{c.Dir}, parts...)...) }
	for _, d := range []string{dir("root"), dir("state"), dir("opt"), dir("certs.d", "_default"), dir("cni", "bin"), dir("cni", "conf")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	c.Socket = dir("containerd.sock")
	config := fmt.Sprintf(containerdConfig, dir("root"), dir("state"), c.Socket, dir("containerd.sock.ttrpc"),
		dir("opt"), dir("certs.d"), dir("cni", "bin"), dir("cni", "conf"), "linux/"+runtime.GOARCH, "", "")
	if err := os.WriteFile(dir("config.toml"), []byte(config), 0o600); err != nil {
		return nil, err
	}
	if opts.Registry != "" {
		if err := os.WriteFile(dir("certs.d", "_default", "hosts.toml"), []byte(fmt.Sprintf(registryHosts, opts.Registry)), 0o600); err != nil {
			return nil, err
		}
	}
	if c.proc, err = startProcess(c.Dir, "containerd", opts.Binary, []string{"--config", dir("config.toml"), "--log-level", "info"}, nil); err != nil {
		return nil, err
	}
	if c.conn, err = criClient(c.Socket); err != nil {
		return nil, err
	}
	c.Images = runtimeapi.NewImageServiceClient(c.conn)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if ended, werr := c.proc.exited(); ended {
			return nil, fmt.Errorf("containerd exited at start (%w): %s", werr, c.proc.tail())
		}
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, lerr := c.Images.ListImages(callCtx, &runtimeapi.ListImagesRequest{})
		cancel()
		if lerr == nil {
			return c, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("containerd's CRI image service did not answer within 60s (%w): %s", lerr, c.proc.tail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// criClient is a gRPC connection to the CRI services on a unix socket.
func criClient(socket string) (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		}))
}

// Pull pulls image exactly as a kubelet passes a container's image string to the runtime,
// and returns the image reference the runtime answers with (containerd: the image ID).
func (c *Containerd) Pull(ctx context.Context, image string, auth *runtimeapi.AuthConfig) (string, error) {
	resp, err := c.Images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}, Auth: auth})
	if err != nil {
		return "", err
	}
	return resp.GetImageRef(), nil
}

// Status is the image the runtime has under image (a name, an ID or an ID prefix), as the
// kubelet asks before deciding whether to pull; nil when it has none.
func (c *Containerd) Status(ctx context.Context, image string) (*runtimeapi.Image, error) {
	resp, err := c.Images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: image}})
	if err != nil {
		return nil, err
	}
	return resp.GetImage(), nil
}

// Remove deletes the image the runtime has under image, so that the next Pull fetches it.
func (c *Containerd) Remove(ctx context.Context, image string) error {
	_, err := c.Images.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: image}})
	return err
}

// Log is the end of containerd's log, for failure messages.
func (c *Containerd) Log() string {
	if c.proc == nil {
		return ""
	}
	return c.proc.tail()
}

// Stop stops containerd and removes the working folder if StartContainerd created it. It can
// be called more than once.
func (c *Containerd) Stop() error {
	var errs []error
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
	if c.proc != nil {
		errs = append(errs, c.proc.stop(10*time.Second))
		c.proc = nil
	}
	if c.removeDir && c.Dir != "" && strings.Contains(c.Dir, "imagegate-node-") {
		errs = append(errs, os.RemoveAll(c.Dir))
		c.Dir = ""
	}
	return errors.Join(errs...)
}
