// Package runtimeref models how a container runtime (containerd's CRI plugin) reads the image
// string of a Pod, written apart from internal/imageref with other code (go-digest, net/url,
// net), so that the fuzz targets of the parser and of the webhook can hold imagegate to what a
// node will actually run.
package runtimeref

import (
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// ErrUnreachable says that a reference parses but names no host a runtime can dial
// ([0]:0/x): nothing is pulled.
var ErrUnreachable = errors.New("no endpoint")

// Image is what the runtime makes of an image string.
type Image struct {
	// ImageID: the runtime may take the string as the ID (or an ID prefix) of an image
	// already on the node, whatever its name.
	ImageID bool
	// Endpoint is the host:port pulled from (HTTPS; Docker Hub's names are docker.io:443).
	Endpoint string
	// Repository is the repository asked for at that endpoint.
	Repository string
}

var dockerHub = map[string]bool{"docker.io": true, "index.docker.io": true, "registry-1.docker.io": true, "registry.hub.docker.com": true}

// View reads s as containerd does: a digest, or an algorithm it knows and hex digits, is an
// image ID looked up on the node (its digest set matches ID prefixes); anything else is a name
// read by the reference grammar and pulled over HTTPS.
func View(s string) (Image, error) {
	if _, err := digest.Parse(s); err == nil {
		return Image{ImageID: true}, nil
	}
	if alg, rest, ok := strings.Cut(s, ":"); ok && rest != "" && (digest.Algorithm(alg).Available() || alg == "blake3") {
		return Image{ImageID: true}, nil
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return Image{}, err
	}
	host, port, err := dialled(reference.Domain(named))
	if err != nil {
		return Image{}, ErrUnreachable
	}
	repo := reference.Path(named)
	if dockerHub[host] && port == "443" {
		host = "docker.io"
		if !strings.Contains(repo, "/") {
			repo = "library/" + repo
		}
	}
	return Image{Endpoint: net.JoinHostPort(host, port), Repository: repo}, nil
}

// dialled is the HTTPS host and port a registry host is dialled at.
func dialled(domain string) (host, port string, err error) {
	u, err := url.Parse("https://" + domain + "/")
	if err != nil {
		return "", "", err
	}
	host = strings.ToLower(u.Hostname())
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String()
	}
	port = u.Port()
	if port == "" {
		return host, "443", nil
	}
	// A port the dialer cannot use (past 65535) reaches nothing.
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", "", err
	}
	return host, strconv.FormatUint(n, 10), nil
}

// EndpointOf is the endpoint a registry host names.
func EndpointOf(host string) string {
	h, port, err := dialled(host)
	if err != nil {
		return "unparsable host " + host
	}
	if dockerHub[h] && port == "443" {
		h = "docker.io"
	}
	return net.JoinHostPort(h, port)
}
