package check

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/imagegate/imagegate/api/v1alpha1"
	"github.com/imagegate/imagegate/internal/manifest"
	"github.com/imagegate/imagegate/internal/podspec"
	"github.com/imagegate/imagegate/internal/policy"
)

// readCluster lists what the cluster enforces: its policies and exceptions, as documents
// named after the cluster; the Secrets and ConfigMaps of imagegate's namespace, which verify
// rules may name; and, into labels, the labels of its Namespaces. An error means the cluster
// could not be read at all; a Secret list that RBAC forbids is left out (verify rules that
// name one then fail, saying so).
func readCluster(ctx context.Context, opts Options, labels map[string]map[string]string) ([]manifest.Document, error) {
	var docs []manifest.Document
	add := func(gvk schema.GroupVersionKind, namespace string, optional bool) error {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		var opt []client.ListOption
		if namespace != "" {
			opt = append(opt, client.InNamespace(namespace))
		}
		if err := opts.Cluster.List(ctx, list, opt...); err != nil {
			if optional && (apierrors.IsForbidden(err) || apierrors.IsNotFound(err)) {
				return nil
			}
			return fmt.Errorf("reading the %s objects of cluster %s: %w", gvk.Kind, opts.ClusterName, err)
		}
		for i := range list.Items {
			obj := &list.Items[i]
			obj.SetManagedFields(nil)
			unstructured.RemoveNestedField(obj.Object, "status")
			name := obj.GetName()
			if obj.GetNamespace() != "" {
				name = obj.GetNamespace() + "/" + name
			}
			docs = append(docs, manifest.Document{File: fmt.Sprintf("cluster %s: %s/%s", opts.ClusterName, gvk.Kind, name), Index: 1, Item: -1, Object: obj})
		}
		return nil
	}
	for _, kind := range []string{policy.KindClusterImagePolicy, policy.KindImagePolicy, policy.KindImagePolicyException} {
		if err := add(v1alpha1.GroupVersion.WithKind(kind), "", false); err != nil {
			return nil, err
		}
	}
	for _, kind := range []string{"ConfigMap", "Secret"} {
		if opts.ClusterNamespace == "" {
			break // never every namespace's Secrets: verify rules name imagegate's own only
		}
		if err := add(corev1.SchemeGroupVersion.WithKind(kind), opts.ClusterNamespace, true); err != nil {
			return nil, err
		}
	}
	var namespaces corev1.NamespaceList
	if err := opts.Cluster.List(ctx, &namespaces); err == nil {
		for _, ns := range namespaces.Items {
			l := map[string]string{}
			for k, v := range ns.Labels {
				l[k] = v
			}
			l[corev1.LabelMetadataName] = ns.Name
			labels[ns.Name] = l
		}
	} else if !apierrors.IsForbidden(err) {
		return nil, fmt.Errorf("reading the Namespaces of cluster %s: %w", opts.ClusterName, err)
	}
	return docs, nil
}

// mergeCluster returns the policy files' documents followed by the cluster's, leaving out a
// cluster policy or exception that the files define too (the files' version is the one under
// review), with a note.
func (r *Report) mergeCluster(files, cluster []manifest.Document) []manifest.Document {
	if len(cluster) == 0 {
		return files
	}
	inFiles := map[policy.Ref]bool{}
	for i := range files {
		if ref, ok := refOf(&files[i]); ok {
			inFiles[ref] = true
		}
	}
	for i := range cluster {
		d := &cluster[i]
		if ref, ok := refOf(d); ok && inFiles[ref] {
			r.addNote(d, fmt.Sprintf("%s is replaced by the one in the --policy files", ref))
			continue
		}
		files = append(files, *d)
	}
	return files
}

// refOf names an imagegate policy or exception document.
func refOf(d *manifest.Document) (policy.Ref, bool) {
	if d.Object == nil || d.Object.GroupVersionKind().Group != v1alpha1.GroupVersion.Group {
		return policy.Ref{}, false
	}
	ref := policy.Ref{Kind: d.Object.GetKind(), Namespace: d.Object.GetNamespace(), Name: d.Object.GetName()}
	if ref.Kind == policy.KindClusterImagePolicy {
		ref.Namespace = ""
	} else if ref.Namespace == "" {
		ref.Namespace = DefaultNamespace
	}
	return ref, true
}

// readRunning lists the Pods running in the cluster (every namespace but the excluded ones),
// each reduced to what a decision needs, with the digests its containers run.
func readRunning(ctx context.Context, opts Options) ([]pendingObject, error) {
	var pods corev1.PodList
	if err := opts.Cluster.List(ctx, &pods); err != nil {
		return nil, fmt.Errorf("reading the running Pods of cluster %s: %w", opts.ClusterName, err)
	}
	var out []pendingObject
	for i := range pods.Items {
		pod := &pods.Items[i]
		sub, ok := podspec.RunningSubject(pod, nil)
		if !ok || slices.Contains(opts.ExcludedNamespaces, pod.Namespace) {
			continue
		}
		images := sub.Images
		p := pendingObject{
			result: ObjectResult{
				File: fmt.Sprintf("cluster %s: running Pods", opts.ClusterName), Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name,
				location: fmt.Sprintf("cluster %s: Pod %s/%s", opts.ClusterName, pod.Namespace, pod.Name),
			},
			podLabels: sub.PodLabels, images: images, breakGlass: sub.BreakGlass,
		}
		p.result.Images = make([]InventoryImage, len(images))
		for j, img := range images {
			p.result.Images[j] = InventoryImage{Field: img.Field, Image: img.Ref}
		}
		out = append(out, p)
	}
	return out, nil
}
