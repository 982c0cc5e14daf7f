// Package v1alpha1 contains the imagegate.io/v1alpha1 API: ImagePolicy and
// ClusterImagePolicy, the rules that decide which container images Pods may run.
// +kubebuilder:object:generate=true
// +groupName=imagegate.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the group and version of this API.
var GroupVersion = schema.GroupVersion{Group: "imagegate.io", Version: "v1alpha1"}

// AddToScheme adds the types of this API to a runtime.Scheme. It is a function rather than
// an init-time registration so that nothing happens on import.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&ImagePolicy{}, &ImagePolicyList{},
		&ClusterImagePolicy{}, &ClusterImagePolicyList{},
		&ImagePolicyException{}, &ImagePolicyExceptionList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
