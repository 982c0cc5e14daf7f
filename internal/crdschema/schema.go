// Package crdschema validates imagegate policies offline the way the apiserver validates them
// on create: with the CustomResourceDefinitions' own OpenAPI schema and CEL rules (the
// generated files in config/crd/bases, embedded), through the apiextensions-apiserver code
// that the apiserver runs. A policy the CLI accepts is one `kubectl apply` accepts, with the
// same field messages.
package crdschema

import (
	"context"
	"fmt"
	"io/fs"
	"slices"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/api/meta"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"

	"github.com/imagegate/imagegate/config/crd"
)

// Validator validates objects of the kinds its CRDs define.
type Validator struct {
	kinds map[schema.GroupVersionKind]*kind
}

type kind struct {
	namespaced bool
	structural *structuralschema.Structural
	schema     apiservervalidation.SchemaValidator
	cel        *cel.Validator
}

// New builds a Validator from the embedded CRDs of config/crd/bases.
func New() (*Validator, error) {
	return fromFS(crd.Bases, "bases")
}

// fromFS builds a Validator from the CRD files (*.yaml) in dir of fsys.
func fromFS(fsys fs.FS, dir string) (*Validator, error) {
	files, err := fs.Glob(fsys, dir+"/*.yaml")
	if err != nil {
		return nil, err
	}
	v := &Validator{kinds: map[schema.GroupVersionKind]*kind{}}
	for _, f := range files {
		data, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		var c apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(data, &c); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, ver := range c.Spec.Versions {
			if !ver.Served || ver.Schema == nil || ver.Schema.OpenAPIV3Schema == nil {
				continue
			}
			k, err := newKind(ver.Schema.OpenAPIV3Schema, c.Spec.Scope == apiextensionsv1.NamespaceScoped)
			if err != nil {
				return nil, fmt.Errorf("%s, version %s: %w", f, ver.Name, err)
			}
			v.kinds[schema.GroupVersionKind{Group: c.Spec.Group, Version: ver.Name, Kind: c.Spec.Names.Kind}] = k
		}
	}
	if len(v.kinds) == 0 {
		return nil, fmt.Errorf("no CustomResourceDefinition with a schema in %s", dir)
	}
	return v, nil
}

func newKind(v1Schema *apiextensionsv1.JSONSchemaProps, namespaced bool) (*kind, error) {
	internal := &apiextensions.JSONSchemaProps{}
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v1Schema, internal, nil); err != nil {
		return nil, err
	}
	structural, err := structuralschema.NewStructural(internal)
	if err != nil {
		return nil, err
	}
	sv, _, err := apiservervalidation.NewSchemaValidator(internal)
	if err != nil {
		return nil, err
	}
	return &kind{
		namespaced: namespaced,
		structural: structural,
		schema:     sv,
		cel:        cel.NewValidator(structural, true, celconfig.PerCallLimit),
	}, nil
}

// Validate checks obj as the apiserver checks a create with kubectl's default strict field
// validation: unknown fields are errors; defaults are applied (obj is changed in place);
// then metadata, the OpenAPI schema, list types and the CEL rules. It returns every error,
// in the apiserver's wording.
func (v *Validator) Validate(ctx context.Context, obj *unstructured.Unstructured) field.ErrorList {
	gvk := obj.GroupVersionKind()
	k, ok := v.kinds[gvk]
	if !ok {
		return field.ErrorList{field.NotSupported(field.NewPath("kind"), gvk.String(), v.supported())}
	}

	// Strict field validation: the apiserver would prune these and kubectl would fail.
	opts := structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true}
	unknown := pruning.PruneWithOptions(obj.Object, k.structural, true, opts)
	var errs field.ErrorList
	for _, path := range unknown {
		errs = append(errs, field.Invalid(field.NewPath(path), nil, fmt.Sprintf("unknown field %q", path)))
	}
	defaulting.Default(obj.Object, k.structural)

	errs = append(errs, validateMeta(obj, k.namespaced)...)
	errs = append(errs, apiservervalidation.ValidateCustomResource(nil, obj.UnstructuredContent(), k.schema)...)
	errs = append(errs, listtype.ValidateListSetsAndMaps(nil, k.structural, obj.Object)...)
	if blocked, err := hasBlocking(errs); blocked {
		errs = append(errs, err)
	} else {
		celErrs, _ := k.cel.Validate(ctx, nil, k.structural, obj.Object, nil, celconfig.RuntimeCELCostBudget)
		errs = append(errs, celErrs...)
	}
	return errs
}

func validateMeta(obj *unstructured.Unstructured, namespaced bool) field.ErrorList {
	m := &metav1.ObjectMeta{}
	raw, _, _ := unstructured.NestedMap(obj.Object, "metadata")
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, m); err != nil {
		return field.ErrorList{field.Invalid(field.NewPath("metadata"), nil, err.Error())}
	}
	if _, err := meta.Accessor(obj); err != nil {
		return field.ErrorList{field.Invalid(field.NewPath("metadata"), nil, err.Error())}
	}
	return apimachineryvalidation.ValidateObjectMeta(m, namespaced, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
}

// hasBlocking reports the errors after which the apiserver skips the CEL rules, and the
// error it adds instead (as the apiserver's customresource strategy does).
func hasBlocking(errs field.ErrorList) (bool, *field.Error) {
	for _, e := range errs {
		switch e.Type {
		case field.ErrorTypeNotSupported, field.ErrorTypeRequired, field.ErrorTypeTooLong, field.ErrorTypeTooMany, field.ErrorTypeTypeInvalid:
			return true, field.Invalid(nil, nil, "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation")
		}
	}
	return false, nil
}

func (v *Validator) supported() []string {
	var out []string
	for gvk := range v.kinds {
		out = append(out, gvk.GroupVersion().String()+", Kind="+gvk.Kind)
	}
	slices.Sort(out)
	return out
}
