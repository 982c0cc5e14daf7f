package localcluster

import (
	"context"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// containerdConfig keeps containerd to its folder: root, state, sockets, registry hosts,
// CNI and NRI paths there, never /etc, /var/lib/containerd, /opt or /run/containerd. The
// native snapshotter unpacks layers with plain file copies, so a pull leaves no mount behind.
// Arguments 10 and 11 add lines to the CRI image and runtime sections (nodeImages, nodeRuntime).
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

// criClient is a gRPC connection to the CRI services on a unix socket.
func criClient(socket string) (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		}))
}

// ImageService is containerd's CRI image service, as the kubelet calls it.
type ImageService struct {
	runtimeapi.ImageServiceClient
}

// Pull pulls image exactly as a kubelet passes a container's image string to the runtime,
// and returns the image reference the runtime answers with (containerd: the image ID).
func (c ImageService) Pull(ctx context.Context, image string, auth *runtimeapi.AuthConfig) (string, error) {
	resp, err := c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}, Auth: auth})
	if err != nil {
		return "", err
	}
	return resp.GetImageRef(), nil
}

// Status is the image the runtime has under image (a name, an ID or an ID prefix), as the
// kubelet asks before deciding whether to pull; nil when it has none.
func (c ImageService) Status(ctx context.Context, image string) (*runtimeapi.Image, error) {
	resp, err := c.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: image}})
	if err != nil {
		return nil, err
	}
	return resp.GetImage(), nil
}

// Remove deletes the image the runtime has under image, so that the next Pull fetches it.
func (c ImageService) Remove(ctx context.Context, image string) error {
	_, err := c.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: image}})
	return err
}
