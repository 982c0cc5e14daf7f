package controller

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
)

func TestNodePlatforms(t *testing.T) {
	node := func(name, os, arch string) *metav1.PartialObjectMetadata {
		labels := map[string]string{}
		if os != "" {
			labels[corev1.LabelOSStable] = os
		}
		if arch != "" {
			labels[corev1.LabelArchStable] = arch
		}
		return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	var n NodePlatforms
	if n.Platforms() != nil {
		t.Fatal("platforms before any node")
	}
	n.set(node("a", "linux", "amd64"), false)
	n.set(node("b", "linux", "arm64"), false)
	n.set(node("c", "linux", "amd64"), false)
	n.set(node("d", "", "amd64"), false) // no OS label: unknown, left out
	if got := n.Platforms(); len(got) != 2 || got[0] != "linux/amd64" || got[1] != "linux/arm64" {
		t.Fatalf("platforms = %v", got)
	}
	n.set(toolscache.DeletedFinalStateUnknown{Key: "b", Obj: node("b", "linux", "arm64")}, true)
	if got := n.Platforms(); len(got) != 1 || got[0] != "linux/amd64" {
		t.Fatalf("after b left: %v", got)
	}
}
